// The daemon `tocfs mount` starts gets its settings parsed already (cli/mount-daemon.ts).
const daemon = process.env.TOCFSD_MOUNT;
if (daemon !== undefined) void import('./mount-daemon.js').then((m) => m.runMountDaemon(daemon));
else void import('./main.js').then((m) => m.main(process.argv.slice(2)));
