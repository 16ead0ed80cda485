/**
 * systemd readiness (sd_notify). Node has no unix datagram sockets, so the message is sent
 * by systemd's own `systemd-notify` (installed wherever systemd runs). Since systemd 246 it
 * waits until the manager has processed the message (a notify barrier), so the message is
 * not lost when the short-lived sender exits; the unit needs `NotifyAccess=all` because the
 * sender is a child of the main process. `--pid` names this process as the main PID.
 */
import { execFile } from 'node:child_process';
import type { Logger } from 'pino';

export interface NotifyState {
  ready?: boolean;
  stopping?: boolean;
  status?: string;
}

/** Sends `state` to $NOTIFY_SOCKET; false when not run by systemd (or the message could not be sent, logged). */
export function sdNotify(state: NotifyState, log: Logger, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  if (!env.NOTIFY_SOCKET) return Promise.resolve(false);
  const args: string[] = [];
  if (state.ready) args.push('--ready', `--pid=${process.pid}`);
  if (state.status) args.push(`--status=${state.status}`);
  if (state.stopping) args.push('STOPPING=1');
  return new Promise((resolve) => {
    execFile('systemd-notify', args, { env, timeout: 10_000 }, (err, _stdout, stderr) => {
      if (err) {
        log.warn({ err: err.message, stderr: String(stderr).trim(), socket: env.NOTIFY_SOCKET }, 'cannot notify systemd (is systemd-notify installed, and NotifyAccess=all set?)');
        return resolve(false);
      }
      log.debug({ state }, 'notified systemd');
      resolve(true);
    });
  });
}
