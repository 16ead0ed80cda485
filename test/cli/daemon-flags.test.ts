import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDaemonInvocation } from '../../src/cli/daemon-flags.js';

test('a serving process is recognised before anything is parsed', () => {
  assert.equal(isDaemonInvocation(['store', '--foreground', '/var/lib/tocfs/store'], {}), true);
  // The benchmark and systemd put global options first.
  assert.equal(isDaemonInvocation(['--log-level', 'warn', 'store', '--foreground', '--tls-verify=false', '/s'], {}), true);
  assert.equal(isDaemonInvocation(['mount', 'docker://x/y', '/mnt', '--foreground'], {}), true);
  // The daemon `tocfs mount` starts is told by its environment.
  assert.equal(isDaemonInvocation(['mount', 'docker://x/y', '/mnt', '--foreground'], { TOCFSD_MOUNT: '{}' }), true);
  assert.equal(isDaemonInvocation([], { TOCFSD_MOUNT: '{}' }), true);
});

test('commands that return are not daemons', () => {
  assert.equal(isDaemonInvocation(['store', '/var/lib/tocfs/store'], {}), false);
  assert.equal(isDaemonInvocation(['store', 'status'], {}), false);
  assert.equal(isDaemonInvocation(['mount', 'docker://x/y', '/mnt'], {}), false);
  assert.equal(isDaemonInvocation(['convert', 'oci:a', 'oci:b'], {}), false);
  assert.equal(isDaemonInvocation(['--help'], {}), false);
});
