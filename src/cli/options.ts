import type { Argv } from 'yargs';
import { parsePlatform } from '../image/manifest.js';
import type { SourceOptions } from '../image/open.js';

/** Options shared by every command that reads images. */
export function withImageOptions<T>(y: Argv<T>) {
  return y
    .option('tls-verify', { type: 'boolean', default: true, describe: 'Require HTTPS and verify certificates when talking to registries (like podman --tls-verify)' })
    .option('platform', { type: 'string', describe: 'Platform to pick from a multi-platform image, os/arch[/variant] (default: this host)' });
}

export function sourceOptions(argv: { 'tls-verify'?: boolean; platform?: string }): SourceOptions {
  return {
    tlsVerify: argv['tls-verify'] !== false,
    ...(argv.platform ? { platform: parsePlatform(argv.platform) } : {}),
  };
}
