// Before anything is loaded: the store keeps V8's young generation at its initial size, and
// daemons bound glibc's arenas (cli/daemon-flags.ts, daemon/memory.ts).
import { tuneMalloc } from '../daemon/memory.js';
import { isDaemon, isStoreDaemon, keepYoungGenerationSmallFromStart } from './daemon-flags.js';

const args = process.argv.slice(2);
// The daemon `tocfs mount` starts gets its settings parsed already (cli/mount-daemon.ts).
const daemon = process.env.TOCFSD_MOUNT;
if (isStoreDaemon(args)) keepYoungGenerationSmallFromStart();
if (daemon !== undefined || isDaemon(args)) tuneMalloc();
if (daemon !== undefined) void import('./mount-daemon.js').then((m) => m.runMountDaemon(daemon));
else void import('./main.js').then((m) => m.main(args));
