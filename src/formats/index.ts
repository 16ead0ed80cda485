/** Layer formats: TOC readers, detection and chunk extraction. */
export { readLayerToc, readLayerTocParsed, NoTocError, type ParsedLayerToc, type ReadTocOptions } from './read.js';
export { probeLayer, sniffCodec, type Codec, type LayerProbe } from './detect.js';
export { extractChunk } from './chunk.js';
export { parseFooter, describeFooter, type Footer } from './footer.js';
export { Annotations, parseLayerAnnotations, type LayerAnnotations } from './annotations.js';
export * from './toc.js';
