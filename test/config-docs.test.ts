/**
 * The docs say what the code does: docs/guide.md embeds the settings reference generated from
 * the schema (every key, its env name, default and flag), and docs/metrics.md lists every
 * tocfs metric the registry exports.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { defaultText, envName, SETTING_KEYS, setting } from '../src/config/index.js';
import { REFERENCE_END, REFERENCE_START, renderConfigReference } from '../src/config/reference.js';
import { registry } from '../src/metrics/index.js';

const guide = readFileSync(new URL('../docs/guide.md', import.meta.url), 'utf8');
const metricsDoc = readFileSync(new URL('../docs/metrics.md', import.meta.url), 'utf8');

describe('docs', () => {
  it('guide.md embeds the current settings reference (regenerate with `tocfs config reference`)', () => {
    const start = guide.indexOf(REFERENCE_START);
    const end = guide.indexOf(REFERENCE_END);
    assert.ok(start >= 0 && end > start, 'guide.md has no settings reference markers');
    assert.equal(guide.slice(start, end + REFERENCE_END.length + 1), renderConfigReference());
  });

  it('every setting is documented with its env name, default and flag', () => {
    for (const key of SETTING_KEYS) {
      const entry = guide.split(`- **\`${key}\`**`)[1]?.split('\n- **')[0];
      assert.ok(entry, `${key} is not documented in docs/guide.md`);
      assert.ok(entry.includes(`\`${envName(key)}\``), `${key}: env name missing`);
      assert.ok(entry.includes(`Default: \`${defaultText(key)}\``), `${key}: default missing`);
      const flag = setting(key).flag;
      if (flag) assert.ok(entry.includes(`\`--${flag}\``), `${key}: flag missing`);
    }
  });

  it('metrics.md lists every tocfs metric the registry exports', async () => {
    const names = (await registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => n.startsWith('tocfs_'));
    assert.ok(names.length >= 10);
    for (const name of names) assert.ok(metricsDoc.includes(`| \`${name}\` |`), `${name} missing from docs/metrics.md`);
  });
});
