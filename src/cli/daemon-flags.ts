/**
 * V8 settings the store daemon needs before it loads anything. Loading the CLI and the read
 * path grows V8's young generation from its initial 1 MiB semispaces to 8 MiB ones (16.8 MB of
 * new space, 14.7 MB of it resident in a store after a container start, 2.9 MB in use), and
 * V8 never shrinks it again; daemon/memory.ts's keepYoungGenerationSmall at the start of
 * serving came too late for that. Set here, first thing in cli/entry.ts, it holds the young
 * generation at its initial size for the whole life of the store.
 *
 * A mount daemon is left to grow it while it loads: decoding a large TOC with 1 MiB semispaces
 * took it some 35 ms longer to mount a cached 100k-entry TOC (serveMount stops the growth
 * once it starts serving).
 */
import { setFlagsFromString } from 'node:v8';

/**
 * `tocfs store --foreground …`, as systemd, the benchmark and `tocfs store` start it. Options may
 * come before the command (`--log-level warn store …`): any word `store` with --foreground will
 * do; a command taken for the store by mistake only keeps a small young generation.
 */
export function isStoreDaemon(args: readonly string[]): boolean {
  return args.includes('--foreground') && args.includes('store');
}

/** `tocfs store --foreground …` or `tocfs mount --foreground …`: a process that will serve (same leniency as isStoreDaemon). */
export function isDaemon(args: readonly string[]): boolean {
  return args.includes('--foreground') && (args.includes('store') || args.includes('mount'));
}

/**
 * `tocfs mount …` that will start a daemon: the command first, and no --foreground, --takeover
 * (its successor appends to the log of the daemon it replaces), help or version. Anything
 * unusual is left to the usual start, after parsing.
 */
export function startsMountDaemon(args: readonly string[]): boolean {
  return args[0] === 'mount' && !args.some((a) => /^(--foreground|--takeover|--help|-h|--version)(=|$)/.test(a));
}

export function keepYoungGenerationSmallFromStart(): void {
  try {
    setFlagsFromString('--semi-space-growth-factor=1');
  } catch {
    // An older or newer V8 without the flag: only memory is at stake.
  }
}
