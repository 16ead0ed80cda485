/**
 * Help reads like a man page: for `tocfs --help` and for EVERY registered command (and its
 * subcommands), exit 0, a synopsis line, options with their defaults, and at least one
 * example. A command without examples fails here on purpose: add them with withExamples().
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commands } from '../src/cli/commands/index.js';
import { COMMAND_LOADERS } from '../src/cli/main.js';
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
  assert.match(out, /--log-level (?:.*\n){0,3}.*\[default: info\]/, 'global options show their defaults');
  return out;
}

/** Every whitespace-separated word of a text, with how often it occurs. */
function wordCounts(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const w of text.split(/\s+/).filter(Boolean)) counts.set(w, (counts.get(w) ?? 0) + 1);
  return counts;
}

/** NODE_OPTIONS that make the CLI believe stdout is a terminal this many columns wide. */
const terminalOf = (columns: number): string => `--import=data:text/javascript,Object.defineProperty(process.stdout,'isTTY',{value:true});process.stdout.columns=${columns}`;

async function helpText(path: string[], nodeOptions?: string): Promise<string> {
  const res = await runCli([...path, '--help'], { env: { TOCFS_CONFIG: '', XDG_CONFIG_HOME: '/nonexistent', ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}) } });
  assert.equal(res.code, 0, res.stderr);
  return res.stdout.toString();
}

describe('help wraps at word boundaries', () => {
  // yargs' ES module build cut lines every N characters ("written as a ne / w OCI layout").
  for (const path of [[], ...commands.map((c) => [commandName(c)])]) {
    it(`tocfs ${[...path, '--help'].join(' ')}: 80 columns without a terminal, every word whole`, async () => {
      const [narrow, wide] = await Promise.all([helpText(path), helpText(path, terminalOf(1000))]);
      const long = narrow.split('\n').filter((l) => l.length > 80);
      assert.deepEqual(long, [], 'lines wider than 80 columns when stdout is no terminal');
      // On a terminal 1000 columns wide nothing wraps: the same words must come out either way.
      assert.deepEqual(wordCounts(narrow), wordCounts(wide), 'a word was cut where the help wrapped');
    });
  }

  it("wraps to the terminal's width on a terminal", async () => {
    const lines = (await helpText(['mount'], terminalOf(120))).split('\n');
    assert.ok(lines.every((l) => l.length <= 120), 'a line wider than the 120-column terminal');
    assert.ok(lines.some((l) => l.length > 100), 'nothing used the width of the 120-column terminal');
    assert.ok((await helpText(['mount'], terminalOf(60))).split('\n').every((l) => l.length <= 60), 'a line wider than a 60-column terminal');
  });
});

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

  it('a command line naming a command loads that command alone, the one tocfs --help lists', async () => {
    const byName = new Map<string, unknown>();
    for (const c of commands) {
      byName.set(commandName(c), c);
      for (const alias of [(c as { aliases?: string | readonly string[] }).aliases ?? []].flat()) byName.set(alias, c);
    }
    assert.deepEqual(Object.keys(COMMAND_LOADERS).sort(), [...byName.keys()].sort(), 'every command and alias has a loader');
    for (const [name, load] of Object.entries(COMMAND_LOADERS)) assert.equal(await load(), byName.get(name), name);
  });
});
