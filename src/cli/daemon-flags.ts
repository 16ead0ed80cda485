/**
 * V8 settings a daemon needs before it loads anything. Loading the CLI and the read path grows
 * V8's young generation from its initial 1 MiB semispaces to 8 MiB ones (16 MiB of new space,
 * about 15 MB resident in a store after a container start, 2-3 MB of it in use), and V8 never
 * shrinks it again; daemon/memory.ts's keepYoungGenerationSmall at the start of serving came
 * too late for that. Set here, first thing in cli/entry.ts, it holds the young generation at
 * its initial size for the whole life of the daemon.
 */
import { setFlagsFromString } from 'node:v8';

/** `tocfs store --foreground …` or `tocfs mount … --foreground` (or the mount daemon, TOCFSD_MOUNT): a process that serves. */
export function isDaemonInvocation(args: readonly string[], env: NodeJS.ProcessEnv): boolean {
  if (env.TOCFSD_MOUNT !== undefined) return true;
  // Options may come before the command (`--log-level warn store …`): any word `store` or `mount`
  // with --foreground will do. A command taken for a daemon by mistake only keeps a small young generation.
  return args.includes('--foreground') && (args.includes('store') || args.includes('mount'));
}

export function keepYoungGenerationSmallFromStart(): void {
  try {
    setFlagsFromString('--semi-space-growth-factor=1');
  } catch {
    // An older or newer V8 without the flag: only memory is at stake.
  }
}
