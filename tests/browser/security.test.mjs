// The served page's security (issue 17, section 3): the Content-Security-Policy reaches the
// compute worker as an HTTP header (a <meta> does not apply to a worker), the same policy in
// index.html, public/_headers (static hosts) and Trunk.toml (`trunk serve`), frame-ancestors
// 'none', no blob: workers; the build users run has no test hooks.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serveStatic, launch, openPage, parseHeadersFile, repoRoot, waitForWorker } from './harness.mjs';

let server;
before(async () => { server = await serveStatic(); });
after(async () => { await server?.close(); });

const metaPolicy = () => {
  const html = readFileSync(join(repoRoot, 'index.html'), 'utf8');
  return html.match(/http-equiv="Content-Security-Policy"\s+content="([^"]+)"/)[1];
};

test('one policy in index.html, public/_headers and Trunk.toml', () => {
  const meta = metaPolicy();
  const header = parseHeadersFile(readFileSync(join(repoRoot, 'public', '_headers'), 'utf8'))['content-security-policy'];
  assert.equal(header, `${meta}; frame-ancestors 'none'`);
  const trunk = readFileSync(join(repoRoot, 'Trunk.toml'), 'utf8').match(/"Content-Security-Policy" = "([^"]+)"/)[1];
  assert.equal(trunk, header);
  assert.match(meta, /worker-src 'self';/);
  assert.doesNotMatch(meta, /blob:[^;]*;[^;]*$|worker-src[^;]*blob:/, 'workers only from the page origin');
});

test('the worker is served with the policy as a header, and starts under it', { timeout: 300_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, context, record } = await openPage(browser, server.origin);
    const headers = {};
    context.on('response', (response) => { headers[new URL(response.url()).pathname] = response.headers(); });
    await page.goto(server.origin + '/');
    await waitForWorker(page, /background worker on:/);
    const csp = headers['/worker.js']?.['content-security-policy'] ?? '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /default-src 'self'/);
    assert.match(headers['/']?.['content-security-policy'] ?? '', /frame-ancestors 'none'/);
    assert.deepEqual(record.errors, [], 'nothing blocked by the policy');
  } finally {
    await browser.close();
  }
});

// The tests run a build with the `test-hooks` feature; the build users run (scripts/run.sh)
// does not enable it, and without it the hooks are not compiled in.
test('test hooks are only in builds with the test-hooks feature', () => {
  const lib = readFileSync(join(repoRoot, 'src', 'lib.rs'), 'utf8');
  assert.match(lib, /#\[cfg\(feature = "test-hooks"\)\]\s*pub mod test_hooks;/);
  const worker = readFileSync(join(repoRoot, 'src', 'worker', 'mod.rs'), 'utf8');
  assert.match(worker, /#\[cfg\(not\(feature = "test-hooks"\)\)\]\s*fn simulate_crash\(_device_lost: bool\) \{\}/);
  const run = readFileSync(join(repoRoot, 'scripts', 'run.sh'), 'utf8');
  assert.match(run, /trunk serve/);
  assert.doesNotMatch(run, /test-hooks/, 'the run command builds without the hooks');
  assert.match(readFileSync(join(repoRoot, 'scripts', 'test.sh'), 'utf8'), /trunk build --locked --features test-hooks/);
});
