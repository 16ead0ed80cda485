/**
 * Docker credential helpers: `docker-credential-NAME get` reads a server name on stdin and
 * prints `{"ServerURL", "Username", "Secret"}`; Username `<token>` means Secret is an
 * identity token. What the helper prints is never logged or put into an error.
 */
import { spawn } from 'node:child_process';
import { SourceError } from '../errors.js';

export interface HelperCredentials {
  username: string;
  password: string;
  identityToken?: string;
}

/** Longest a helper may take (a keyring may prompt; a hung one must not hang a mount forever). */
const HELPER_TIMEOUT_MS = 60_000;
const MAX_OUTPUT = 1024 * 1024;
/** What docker-credential-helpers print when they hold nothing for the server. */
const NOT_FOUND = /credentials not found/i;

export class CredentialHelperError extends SourceError {
  constructor(message: string) {
    super(message);
    this.name = 'CredentialHelperError';
  }
}

/** The program a helper name stands for; names are suffixes, not paths. */
export function helperProgram(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new CredentialHelperError(`credential helper name ${JSON.stringify(name)} is not valid (expected the part after "docker-credential-", e.g. "secretservice")`);
  return `docker-credential-${name}`;
}

/**
 * Asks helper `name` for `server`'s credentials; undefined when it has none.
 * `from` says where the helper was named (for errors).
 */
export async function helperGet(name: string, server: string, from: string): Promise<HelperCredentials | undefined> {
  const program = helperProgram(name);
  const what = `credential helper ${program} (${from})`;
  const { code, stdout, stderr, error, timedOut } = await run(program, server);
  if (error) {
    const why = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'is not installed (not found on PATH)' : `could not be run: ${error.message}`;
    throw new CredentialHelperError(`${what} ${why}`);
  }
  if (timedOut) throw new CredentialHelperError(`${what} did not answer for ${server} within ${HELPER_TIMEOUT_MS / 1000} s`);
  if (code !== 0) {
    // Helpers report "not found" (and other errors) on stdout with a non-zero exit.
    if (NOT_FOUND.test(stdout)) return undefined;
    const said = firstLine(stderr) || firstLine(stdout);
    throw new CredentialHelperError(`${what} failed for ${server}: exit code ${code}${said ? `: ${said}` : ''}`);
  }
  let doc: { Username?: unknown; Secret?: unknown };
  try {
    doc = JSON.parse(stdout);
  } catch {
    // Its output may hold the secret: say only that it was not JSON.
    throw new CredentialHelperError(`${what} printed something that is not JSON for ${server}`);
  }
  if (!doc || typeof doc !== 'object' || typeof doc.Secret !== 'string')
    throw new CredentialHelperError(`${what} answered ${server} without a "Secret" string`);
  const username = typeof doc.Username === 'string' ? doc.Username : '';
  if (username === '<token>') return { username: '', password: '', identityToken: doc.Secret };
  if (!username && !doc.Secret) return undefined;
  return { username, password: doc.Secret };
}

/** A helper's own error text, cut to one short line (helpers print errors, not secrets, on failure). */
function firstLine(s: string): string {
  const line = s.trim().split('\n')[0]!.trim();
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

function run(program: string, input: string): Promise<{ code: number | null; stdout: string; stderr: string; error?: Error; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(program, ['get'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, HELPER_TIMEOUT_MS);
    const collect = (into: Buffer[]) => (d: Buffer) => {
      size += d.length;
      if (size > MAX_OUTPUT) child.kill('SIGKILL');
      else into.push(d);
    };
    child.stdout.on('data', collect(out));
    child.stderr.on('data', collect(err));
    let settled = false;
    const finish = (code: number | null, error?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ...(error ? { error } : {}), timedOut });
    };
    child.on('error', (e) => finish(null, e));
    child.on('close', (code) => finish(code));
    // A helper that exits without reading its input must not fail us with EPIPE.
    child.stdin.on('error', () => undefined);
    // As Docker's client sends it: the bare server name, no newline.
    child.stdin.end(input);
  });
}
