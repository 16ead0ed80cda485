import pino, { type Logger } from 'pino';

/**
 * One process-wide logger. JSON lines to stderr by default (stdout is for command output);
 * pretty when stderr is a terminal. Anything that may hold a credential is redacted.
 */
let root: Logger | undefined;

export const REDACT_PATHS = ['password', 'auth', 'token', 'authorization', 'headers.authorization', '*.password', '*.auth', '*.token', '*.authorization', '*.identitytoken', '*.registrytoken'];

export function createLogger(level = process.env.TOCFS_LOG_LEVEL ?? 'info', destinationFd = 2): Logger {
  const pretty = process.stderr.isTTY && destinationFd === 2 && !process.env.TOCFS_LOG_JSON;
  const opts = { level, base: { name: 'tocfs' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } };
  if (pretty) {
    return pino(opts, pino.transport({ target: 'pino-pretty', options: { destination: destinationFd, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' } }));
  }
  return pino(opts, pino.destination({ fd: destinationFd, sync: false }));
}

export function logger(): Logger {
  root ??= createLogger();
  return root;
}

export function setLogger(l: Logger): void {
  root = l;
}
