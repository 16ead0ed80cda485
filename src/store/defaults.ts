/** The store's lookup defaults, apart from the store so the CLI's option parser can show them cheaply. */
export const DEFAULT_LOOKUP_TIMEOUT_MS = 30_000;
export const DEFAULT_NEGATIVE_TTL_MS = 10_000;
