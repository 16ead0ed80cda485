/**
 * TOC entry names as the model wants them: relative to the root, no `./` prefix, no trailing
 * `/`, `''` for the root. Returns a reason string instead of throwing so the caller can name
 * the layer and entry in its error.
 */
export type NormalisedName = { path: string } | { error: string };

export function normaliseName(name: string): NormalisedName {
  if (name.indexOf('\0') >= 0) return { error: 'name contains a NUL byte' };
  // No real tar writer keeps a leading `/`; a TOC that has one was crafted or is corrupt.
  if (name.charCodeAt(0) === 0x2f) return { error: 'absolute name' };
  let s = name;
  while (s.startsWith('./')) s = s.slice(2);
  while (s.endsWith('/')) s = s.slice(0, -1);
  if (s === '' || s === '.') return { path: '' };
  // Fast path: nothing that needs cleaning.
  if (s.indexOf('//') < 0 && s.indexOf('/.') < 0 && !s.startsWith('.')) return { path: s };
  const out: string[] = [];
  for (const part of s.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) return { error: 'name climbs out of the root' };
      out.pop();
    } else out.push(part);
  }
  return { path: out.join('/') };
}
