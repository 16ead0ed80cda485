import type { CommandModule } from 'yargs';
import { cacheCommand } from './cache.js';
import { convertCommand } from './convert.js';
import { configCommand } from './config.js';
import { indexCommand } from './index-layers.js';
import { inspectCommand } from './inspect.js';
import { catCommand } from './cat.js';
import { lsCommand } from './ls.js';
import { mountCommand } from './mount.js';
import { unmountCommand } from './unmount.js';
import { storeCommand } from './store.js';
import { profileCommand } from './profile.js';

/** Every CLI command; each lives in its own module next to this file. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [cacheCommand, configCommand, convertCommand, indexCommand, inspectCommand, lsCommand, catCommand, mountCommand, unmountCommand, storeCommand, profileCommand];
