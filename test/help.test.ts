/**
 * Help reads like a man page: for `tocfs --help` and for EVERY registered command (and its
 * subcommands), exit 0, a synopsis line, options with their defaults, and at least one
 * example. A command without examples fails here on purpose: add them with withExamples().
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commands } from '../src/cli/commands/index.js';
import { runCli } from './helpers/cli.js';

function commandName(c: { command?: string | readonly string[] }): string {
  const first = Array.isArray(c.command) ? c.command[0] : c.command;
  return String(first).split(' ')[0]!;
}

/** The subcommands a help text lists under "Commands:" (`tocfs config show  …` → `show`). */
function subcommands(help: string, path: string[]): string[] {
  const section = help.split(/^Commands:$/m)[1]?.split(/^\S/m)[0] ?? '';
  const prefix = ['tocfs', ...path].join(' ');
  return [...section.matchAll(/^ {2}(\S.*?)(?: {2,}|$)/gm)]
    .map((m) => m[1]!)
    .filter((l) => l.startsWith(`${prefix} `))
    .map((l) => l.slice(prefix.length + 1).split(' ')[0]!)
    .filter((name) => /^[a-z][\w-]*$/.test(name)); // not a default command's [positional]
}

async function checkHelp(path: string[]): Promise<string> {
  const res = await runCli([...path, '--help'], { env: { TOCFS_CONFIG: '', XDG_CONFIG_HOME: '/nonexistent' } });
  const out = res.stdout.toString();
  assert.equal(res.code, 0, `tocfs ${path.join(' ')} --help exited ${res.code}: ${res.stderr}`);
  const synopsis = out.split('\n')[0]!;
  assert.ok(synopsis.startsWith(`tocfs ${path.join(' ')}`), `no synopsis line for ${path.join(' ')}: ${synopsis}`);
  const examples = out.split(/^Examples:$/m)[1];
  assert.ok(examples, `tocfs ${path.join(' ')} --help has no examples: add them with withExamples() from src/cli/help.ts`);
  assert.match(examples, new RegExp(`^ {2}(\\S+=\\S+ )*tocfs ${path[0]}`, 'm'), `tocfs ${path.join(' ')}: an example should run the command itself`);
  assert.match(out, /--log-level .*\n?.*\[default: info\]/, 'global options show their defaults');
  return out;
}

describe('help', () => {
  it('tocfs --help: synopsis, every command, examples, configuration and exit status', async () => {
    const res = await runCli(['--help']);
    assert.equal(res.code, 0, res.stderr);
    const out = res.stdout.toString();
    assert.match(out, /^Usage: tocfs <command> \[options\]$/m);
    for (const c of commands) assert.match(out, new RegExp(`^ {2}tocfs ${commandName(c)}\\b`, 'm'), `${commandName(c)} missing from tocfs --help`);
    assert.match(out, /^Examples:$/m);
    assert.match(out, /^Configuration:$/m);
    assert.match(out, /TOCFS_<SECTION>_<KEY>/);
    assert.match(out, /^Exit status:$/m);
  });

  for (const c of commands) {
    const name = commandName(c);
    it(`tocfs ${name} --help (and its subcommands)`, async () => {
      const out = await checkHelp([name]);
      for (const sub of subcommands(out, [name])) await checkHelp([name, sub]);
    });
  }
});
