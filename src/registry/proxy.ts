/**
 * Which proxy a registry request goes through, from the environment, by the rules Podman
 * follows (Go's ProxyFromEnvironment): HTTPS_PROXY for https:// and HTTP_PROXY for http://
 * URLs (upper case first, then lower case); NO_PROXY lists hosts reached directly (`*`, IP
 * addresses, CIDR ranges, domains matching themselves and their subdomains, `.domain` its
 * subdomains only, each optionally with `:port`); localhost and loopback addresses are
 * never proxied.
 */
import { BlockList, isIP } from 'node:net';
import { SourceError } from '../errors.js';

function envAny(env: NodeJS.ProcessEnv, name: string): string {
  return env[name.toUpperCase()] || env[name.toLowerCase()] || '';
}

/** The proxy's address for messages: never its credentials. */
export function proxyLabel(proxy: URL): string {
  return `${proxy.protocol}//${proxy.host}`;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

function ipType(host: string): 'ipv4' | 'ipv6' | undefined {
  const v = isIP(host);
  return v === 4 ? 'ipv4' : v === 6 ? 'ipv6' : undefined;
}

/** `host[:port]` or `[v6]:port` of a NO_PROXY entry. */
function splitHostPort(entry: string): { host: string; port?: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  if (v6) return { host: v6[1]!, ...(v6[2] ? { port: Number(v6[2]) } : {}) };
  const m = /^([^:]+):(\d+)$/.exec(entry);
  return m ? { host: m[1]!, port: Number(m[2]) } : { host: entry };
}

function excluded(noProxy: string, host: string, port: number): boolean {
  const hostType = ipType(host);
  for (let entry of noProxy.split(',')) {
    entry = entry.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return true;
    if (entry.includes('/')) {
      const [addr, bits] = entry.split('/') as [string, string];
      const type = ipType(addr);
      if (!type || !hostType || !/^\d+$/.test(bits)) continue;
      const range = new BlockList();
      try {
        range.addSubnet(addr, Number(bits), type);
      } catch {
        continue;
      }
      if (range.check(host, hostType)) return true;
      continue;
    }
    const e = splitHostPort(entry);
    if (e.port !== undefined && e.port !== port) continue;
    if (ipType(e.host)) {
      if (hostType && e.host === host) return true;
      continue;
    }
    const domain = e.host.startsWith('*.') ? e.host.slice(1) : e.host;
    if (domain.startsWith('.') ? host.endsWith(domain) : host === domain || host.endsWith(`.${domain}`)) return true;
  }
  return false;
}

/** The proxy for `url`, or undefined to connect directly. Throws for a proxy setting tocfs cannot use. */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv = process.env): URL | undefined {
  const variable = url.protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY';
  const value = envAny(env, variable);
  if (!value) return undefined;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  const type = ipType(host);
  if (host === 'localhost' || (type && LOOPBACK.check(host, type))) return undefined;
  const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
  if (excluded(envAny(env, 'NO_PROXY'), host, port)) return undefined;
  let proxy: URL;
  try {
    proxy = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`);
  } catch {
    // The value may hold credentials: do not repeat it.
    throw new SourceError(`${variable} is not a URL`);
  }
  if (proxy.protocol !== 'http:' && proxy.protocol !== 'https:')
    throw new SourceError(`${variable}: ${proxy.protocol}// proxies are not supported (use an http:// or https:// proxy)`);
  return proxy;
}
