/** `WWW-Authenticate` challenges (RFC 7235): `Bearer realm="…",service="…",scope="…"`, `Basic realm="…"`. */

export interface Challenge {
  /** Lower-case scheme: `bearer`, `basic`, … */
  scheme: string;
  params: Record<string, string>;
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const text = Array.isArray(header) ? header.join(', ') : header ?? '';
  const out: Challenge[] = [];
  let i = 0;
  const skipSpace = (): void => {
    while (i < text.length && /[\s,]/.test(text[i]!)) i++;
  };
  const token = (): string => {
    const m = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/.exec(text.slice(i));
    if (!m) return '';
    i += m[0].length;
    return m[0];
  };
  const quoted = (): string => {
    let v = '';
    i++; // opening quote
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\' && i + 1 < text.length) i++;
      v += text[i++];
    }
    i++; // closing quote
    return v;
  };
  skipSpace();
  while (i < text.length) {
    const scheme = token();
    if (!scheme) break;
    const ch: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(ch);
    for (;;) {
      skipSpace();
      const save = i;
      const name = token();
      if (!name || text[i] !== '=') {
        // Not a parameter: the start of the next challenge.
        i = save;
        break;
      }
      i++;
      ch.params[name.toLowerCase()] = text[i] === '"' ? quoted() : token();
    }
  }
  return out;
}
