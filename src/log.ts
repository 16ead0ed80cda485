/**
 * One process-wide pino logger.
 *
 * Where logs go: the daemons (`tocfs mount --foreground`, `tocfs store --foreground`, as run
 * by systemd or by their own background start) write them to stdout, which carries nothing
 * else for them. Every other command writes them to stderr: its stdout carries command output
 * (`inspect --json`, `cat`, `config show`) that scripts pipe and parse, and a log line mixed
 * into it would corrupt it. `logFd()` says which.
 *
 * Forms: JSON lines by default; pretty (pino-pretty) when that stream is a terminal; under
 * systemd (JOURNAL_STREAM names that stream) JSON lines with a `<N>` syslog priority prefix
 * that journald strips and keeps as the entry's PRIORITY, so `journalctl -p warning` works.
 *
 * Credentials never reach the output: values under credential-like keys are replaced at any
 * depth, and every written line is scrubbed of URL userinfo and Authorization schemes.
 */
import { fstatSync } from 'node:fs';
import { createRequire } from 'node:module';
import pino, { type DestinationStream, type Logger } from 'pino';
import type PinoPrettyModule from 'pino-pretty';

/** pino-pretty is loaded only when a log is shown pretty (a terminal): daemons and scripts never pay for it. */
const loadPinoPretty = (): typeof PinoPrettyModule => createRequire(import.meta.url)('pino-pretty') as typeof PinoPrettyModule;

export type LogFormat = 'auto' | 'json' | 'pretty';

export interface LoggerOptions {
  level?: string;
  format?: LogFormat;
  /** Where lines go; default the file descriptor `fd`. Tests pass a collecting stream. */
  destination?: DestinationStream;
  /** 1 (stdout, for daemons) or 2 (stderr, the default); see logFd(). */
  fd?: 1 | 2;
  env?: NodeJS.ProcessEnv;
}

/** Kept for callers that build their own pino: paths pino's own redaction should censor. */
export const REDACT_PATHS = ['password', 'auth', 'token', 'authorization', 'headers.authorization', '*.password', '*.auth', '*.token', '*.authorization', '*.identitytoken', '*.registrytoken'];

const REDACTED = '[redacted]';
/** Keys whose values are credentials wherever they appear (compared case-insensitively). */
const SECRET_KEYS = ['password', 'passwd', 'secret', 'client_secret', 'token', 'access_token', 'accesstoken', 'refresh_token', 'refreshtoken', 'id_token', 'identitytoken', 'identity_token', 'registrytoken', 'registry_token', 'bearer', 'auth', 'authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-registry-auth', 'credential', 'credentials'];
const SECRET_KEY = new Set(SECRET_KEYS);
const MAX_DEPTH = 8;

/** A copy of `value` with credential-like keys censored at any depth (Errors and other class instances pass as-is). */
export function redactSecrets(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object' || depth > MAX_DEPTH) return value;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1));
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.has(k.toLowerCase()) && v !== undefined && v !== null && v !== '' ? REDACTED : redactSecrets(v, depth + 1);
  return out;
}

const URL_USERINFO = /([a-z][a-z0-9+.-]*:\/\/)[^/\s"'@]+@/gi;
const AUTH_SCHEME = /\b(Bearer|Basic|Token)(\s+|%20)[A-Za-z0-9._~+/=-]{4,}/g;
const HEADER_PAIR = /("(?:authorization|proxy-authorization|cookie|x-registry-auth)",\s*")[^"]*"/gi;

/** Scrubs a serialized log line of credentials that hide inside strings (messages, error stacks, URLs, header arrays). */
export function scrubLine(line: string): string {
  return line.replace(URL_USERINFO, `$1${REDACTED}@`).replace(AUTH_SCHEME, `$1 ${REDACTED}`).replace(HEADER_PAIR, `$1${REDACTED}"`);
}

const JOURNAL_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };

/** The log stream of a command: stdout for a daemon serving in the foreground, stderr for every other command. */
export function logFd(command: { _?: Array<string | number>; foreground?: unknown }): 1 | 2 {
  const [name, sub] = command._ ?? [];
  const daemon = name === 'mount' || (name === 'store' && sub !== 'status');
  return daemon && command.foreground === true ? 1 : 2;
}

/** Whether `fd` is connected to the journal (systemd sets JOURNAL_STREAM=DEV:INODE of that stream). */
export function isJournal(fd: 1 | 2 = 2, env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1]!) && st.ino === BigInt(m[2]!);
  } catch {
    return false;
  }
}

/** The stream pino writes to: scrubs each line, optionally prefixes its journald priority. */
function scrubbing(inner: DestinationStream & { flush?: () => void }, journald: boolean): DestinationStream & { flush(): void } {
  return {
    write(line: string) {
      const clean = scrubLine(line);
      if (!journald) return inner.write(clean);
      const level = Number(/^\{"level":(\d+)/.exec(clean)?.[1] ?? 30);
      inner.write(`<${JOURNAL_PRIORITY[level] ?? 6}>${clean}`);
    },
    flush() {
      inner.flush?.();
    },
  };
}

const isTerminal = (fd: 1 | 2): boolean => (fd === 1 ? process.stdout.isTTY : process.stderr.isTTY) === true;

function chooseForm(format: LogFormat, env: NodeJS.ProcessEnv, fd: 1 | 2): 'json' | 'pretty' | 'journald' {
  if (format === 'json' || env.TOCFS_LOG_JSON) return isJournal(fd, env) ? 'journald' : 'json';
  if (format === 'pretty') return 'pretty';
  if (isJournal(fd, env)) return 'journald';
  return isTerminal(fd) ? 'pretty' : 'json';
}

/**
 * pino's error serializer, except that a cause is appended to the message only when the
 * message does not quote it already: tocfs errors carry their cause's message in their own
 * ("cannot fetch …: 503"), and pino appending every cause again doubled each one.
 */
function serializeError(err: unknown): unknown {
  const out = pino.stdSerializers.err(err as Error) as unknown;
  if (!(err instanceof Error) || typeof out !== 'object' || out === null) return out;
  let message = err.message;
  const seen = new Set<unknown>([err]);
  for (let c = err.cause; c instanceof Error && !seen.has(c); c = c.cause) {
    seen.add(c);
    if (c.message && !message.includes(c.message)) message += `: ${c.message}`;
  }
  (out as { message: string }).message = message;
  return out;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const env = opts.env ?? process.env;
  const level = opts.level ?? env.TOCFS_LOG_LEVEL ?? 'info';
  const fd = opts.fd ?? 2;
  const form = opts.destination ? (opts.format === 'pretty' ? 'pretty' : 'json') : chooseForm(opts.format ?? 'auto', env, fd);
  let inner: DestinationStream;
  if (form === 'pretty') {
    inner = loadPinoPretty()({
      destination: opts.destination ?? fd,
      sync: true,
      colorize: !opts.destination && isTerminal(fd),
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,name',
    });
  } else {
    inner = opts.destination ?? pino.destination({ fd, sync: false });
  }
  return pino(
    {
      level,
      base: { name: 'tocfs' },
      // pino's own redaction covers child bindings (pino skips formatters for those).
      redact: { paths: SECRET_KEYS.filter((k) => /^\w+$/.test(k)).flatMap((k) => [k, `*.${k}`]), censor: REDACTED },
      formatters: { log: (obj) => redactSecrets(obj) as Record<string, unknown> },
      serializers: { err: serializeError },
    },
    scrubbing(inner, form === 'journald'),
  );
}

let root: Logger | undefined;

export function logger(): Logger {
  root ??= createLogger();
  return root;
}

export function setLogger(l: Logger): void {
  root = l;
}

/** Sets up the process logger from the effective `log.level` and `log.format` settings, writing to `fd` (default stderr). */
export function configureLogging(settings: { level: string; format: LogFormat; fd?: 1 | 2 }): Logger {
  root = createLogger(settings);
  return root;
}

/** A logger whose every line names the image reference. */
export function imageLogger(ref: string, parent: Logger = logger()): Logger {
  return parent.child({ image: ref });
}

/** A logger whose every line names the layer digest (child of an image logger, so both show). */
export function layerLogger(layer: string, parent: Logger = logger()): Logger {
  return parent.child({ layer });
}

/** A logger whose every line names the path inside the image (child of a layer or image logger). */
export function pathLogger(path: string, parent: Logger = logger()): Logger {
  return parent.child({ path });
}
