// Before anything is loaded: the store keeps V8's young generation at its initial size,
// daemons bound glibc's arenas (cli/daemon-flags.ts, daemon/memory.ts), and `tocfs mount`
// spawns its daemon, which loads its code while this process parses (daemon/spawn-daemon.ts).
import { tuneMalloc } from '../daemon/memory.js';
import { startEarlyDaemon } from '../daemon/spawn-daemon.js';
import { isDaemon, isStoreDaemon, keepYoungGenerationSmallFromStart, startsMountDaemon } from './daemon-flags.js';
import { MOUNT_DAEMON_ENV, OPTIONS_ON_READY_FD, runMountDaemon } from './mount-daemon.js';

const args = process.argv.slice(2);
// The daemon `tocfs mount` starts gets its settings parsed already (cli/mount-daemon.ts).
const daemon = process.env[MOUNT_DAEMON_ENV];
if (isStoreDaemon(args)) keepYoungGenerationSmallFromStart();
if (daemon !== undefined || isDaemon(args)) tuneMalloc();
if (daemon === undefined && startsMountDaemon(args)) startEarlyDaemon(args, { ...process.env, [MOUNT_DAEMON_ENV]: OPTIONS_ON_READY_FD });
if (daemon !== undefined) void runMountDaemon(daemon);
else void import('./main.js').then((m) => m.main(args));
