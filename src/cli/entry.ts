// Before anything is loaded: the store keeps V8's young generation at its initial size (cli/daemon-flags.ts).
import { isStoreDaemon, keepYoungGenerationSmallFromStart } from './daemon-flags.js';

const args = process.argv.slice(2);
if (isStoreDaemon(args)) keepYoungGenerationSmallFromStart();
// The daemon `tocfs mount` starts gets its settings parsed already (cli/mount-daemon.ts).
const daemon = process.env.TOCFSD_MOUNT;
if (daemon !== undefined) void import('./mount-daemon.js').then((m) => m.runMountDaemon(daemon));
else void import('./main.js').then((m) => m.main(args));
