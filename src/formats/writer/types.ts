/** What every layer writer takes and returns. */

/**
 * The uncompressed source tar, as a fresh stream each call (`prioritize` reads it more than
 * once): a file stream, an async generator, or `[buffer]`.
 */
export type TarInput = () => AsyncIterable<Buffer> | Iterable<Buffer>;

export interface WrittenLayer {
  mediaType: string;
  digest: string;
  size: number;
  /** sha256 of the decompressed blob: the image config's DiffID. */
  diffId: string;
  /** Length of the decompressed blob. */
  uncompressedSize: number;
  annotations: Record<string, string>;
  /** With `prioritize`: the normalised paths placed first, in order (parents and hard-link targets included). */
  front?: string[];
}

export interface LayerWriterOptions {
  /** eStargz: fixed chunk size in bytes (default 4 MiB). */
  chunkSize?: number;
  /**
   * Paths moved to the front of the layer, in this order, each after its parent directories
   * and hard-link target (front-order.ts); paths the layer lacks and whiteouts are left out.
   * eStargz follows them with `.prefetch.landmark`.
   */
  prioritize?: string[];
  /**
   * zstd:chunked: also write the `io.containers.zstd-chunked.*` position/checksum keys, so
   * containers/storage ≤ 1.43 (podman 4.x, skopeo 1.9) pulls the layer partially too; newer
   * versions read only the `io.github...` keys.
   */
  legacyAnnotations?: boolean;
  /** Called with the number of source bytes consumed so far. */
  onProgress?: (sourceBytes: number) => void;
}

export const LayerMediaTypes = {
  tar: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
} as const;
