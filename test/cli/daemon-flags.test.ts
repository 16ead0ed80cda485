import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isStoreDaemon } from '../../src/cli/daemon-flags.js';

test('the store daemon is recognised before anything is parsed', () => {
  assert.equal(isStoreDaemon(['store', '--foreground', '/var/lib/tocfs/store']), true);
  // The benchmark puts global options first.
  assert.equal(isStoreDaemon(['--log-level', 'warn', 'store', '--foreground', '--tls-verify=false', '/s']), true);
});

test('commands that return, and mounts, are not', () => {
  assert.equal(isStoreDaemon(['store', '/var/lib/tocfs/store']), false);
  assert.equal(isStoreDaemon(['store', 'status']), false);
  assert.equal(isStoreDaemon(['mount', 'docker://x/y', '/mnt', '--foreground']), false);
  assert.equal(isStoreDaemon(['convert', 'oci:a', 'oci:b']), false);
  assert.equal(isStoreDaemon(['--help']), false);
});
