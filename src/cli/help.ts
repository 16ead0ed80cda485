/** Man-page-like help for commands: examples and an epilogue, in one call per command. */
import type { Argv } from 'yargs';

export type Example = [command: string, description: string];

/**
 * Adds `examples` (shown under "Examples:" in `--help`) and an optional epilogue (free text at
 * the end: environment, files, exit status, see also). Use it in every command's builder:
 *
 *   builder: (y) => withExamples(y.positional(...).option(...), [
 *     ['$0 inspect docker://quay.io/podman/hello', 'Show the layers of an image'],
 *   ]),
 */
export function withExamples<T>(y: Argv<T>, examples: readonly Example[], epilogue?: string): Argv<T> {
  let out = y;
  for (const [command, description] of examples) out = out.example(command, description);
  return epilogue ? out.epilogue(epilogue) : out;
}
