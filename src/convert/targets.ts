/** The layer formats `tocfs convert` writes. */
export type TargetFormat = 'zstd:chunked' | 'estargz';
export const TARGET_FORMATS: readonly TargetFormat[] = ['zstd:chunked', 'estargz'];
