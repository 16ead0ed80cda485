import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDaemon, isStoreDaemon } from '../../src/cli/daemon-flags.js';

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

test('daemons of both kinds are recognised for the malloc bounds; commands that return are not', () => {
  assert.equal(isDaemon(['store', '--foreground', '/var/lib/tocfs/store']), true);
  assert.equal(isDaemon(['mount', '--foreground', 'docker://x/y', '/mnt']), true);
  assert.equal(isDaemon(['--log-level', 'warn', 'mount', 'oci:/i', '/mnt', '--foreground']), true);
  assert.equal(isDaemon(['mount', 'docker://x/y', '/mnt']), false);
  assert.equal(isDaemon(['cat', '--foreground', 'x']), false);
  assert.equal(isDaemon(['store', 'status']), false);
});
