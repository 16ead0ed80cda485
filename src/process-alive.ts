import { readFileSync } from 'node:fs';

/**
 * The process exists and is not a zombie. A killed daemon stays a zombie until its parent
 * reaps it, and an orphan's parent (PID 1 of a container, say) may never do so, so
 * `kill(pid, 0)` alone would call it alive forever.
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}
