/**
 * A full garbage collection on demand, without starting Node with --expose-gc: the flag is
 * set at run time and `gc` taken from a fresh context. Undefined when V8 refuses.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let collect: (() => void) | undefined;

export function fullGc(): (() => void) | undefined {
  if (!collect) {
    try {
      setFlagsFromString('--expose-gc');
      collect = runInNewContext('gc') as () => void;
    } catch {
      return undefined;
    }
  }
  return collect;
}
