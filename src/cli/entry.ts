// Before anything is loaded: a daemon keeps V8's young generation at its initial size (cli/daemon-flags.ts).
import { isDaemonInvocation, keepYoungGenerationSmallFromStart } from './daemon-flags.js';

const args = process.argv.slice(2);
// The daemon `tocfs mount` starts gets its settings parsed already (cli/mount-daemon.ts).
const daemon = process.env.TOCFSD_MOUNT;
if (isDaemonInvocation(args, process.env)) keepYoungGenerationSmallFromStart();
if (daemon !== undefined) void import('./mount-daemon.js').then((m) => m.runMountDaemon(daemon));
else void import('./main.js').then((m) => m.main(args));
