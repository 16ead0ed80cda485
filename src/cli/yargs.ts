/**
 * yargs as the CLI uses it: its CommonJS build, and help wrapped to the terminal.
 *
 * yargs' ES module build wraps help with cliui's stand-in for wrap-ansi, which cuts lines every
 * N characters, in the middle of words ("written as a ne / w OCI layout"). Its CommonJS build
 * uses wrap-ansi itself and breaks lines between words: the same yargs 17, loaded that way.
 */
import { createRequire } from 'node:module';
import type yargsType from 'yargs';

const require = createRequire(import.meta.url);
const fromYargs = createRequire(require.resolve('yargs/yargs'));

export const yargs = require('yargs/yargs') as typeof yargsType;

interface CliuiLine {
  text: string;
  span?: boolean;
}
interface CliuiProto {
  renderInline(this: unknown, source: string, previousLine: CliuiLine): string;
}

// cliui (the CommonJS one yargs loads) puts an option's right-aligned "[string] [required]" on the
// line of its description when it fits, and also when it exactly fills the gap, with no space
// left between them ("…[@DIGEST][string]"). Then it belongs on the next line, as when it does not fit.
const ui = fromYargs('cliui') as (opts: object) => object;
const proto = Object.getPrototypeOf(ui({})) as CliuiProto;
const renderInline = proto.renderInline;
proto.renderInline = function (this: unknown, source: string, previousLine: CliuiLine): string {
  const leading = /^ */.exec(source)![0].length;
  if (previousLine.span && leading > 0 && leading === [...previousLine.text.trimEnd()].length) return source;
  return renderInline.call(this, source, previousLine);
};

/** Help wraps to the terminal's width, or to 80 columns when stdout is no terminal (a pipe, a file). */
export function helpWidth(stdout: { isTTY?: boolean; columns?: number } = process.stdout): number {
  return stdout.isTTY && stdout.columns ? stdout.columns : 80;
}
