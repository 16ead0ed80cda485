import type { LayerWriterOptions, TarInput, WrittenLayer } from './types.js';

export async function writeEstargzLayer(_tar: TarInput, _outPath: string, _opts: LayerWriterOptions = {}): Promise<WrittenLayer> {
  throw new Error('eStargz writer: not implemented yet');
}
