// The first end-to-end sliver: the page loads, picks WebGPU when Chromium offers an adapter and
// the CPU (`flex`) backend when it does not, runs a small computation with an async read-back,
// and never talks to another origin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serveStatic, launch, openPage, screenshot } from './harness.mjs';

let server;
before(async () => { server = await serveStatic(); });
after(async () => { await server?.close(); });

// SMOKE_LHS × SMOKE_RHS in crates/core/src/smoke.rs.
const EXPECTED_PRODUCT = '[1.0, 1.0, 2.5, 1.0]';

for (const mode of [
  { name: 'webgpu', webgpu: true, expectBackend: /^WebGPU · .+/ , kind: 'Gpu' },
  { name: 'cpu-fallback', webgpu: false, expectBackend: /^CPU · .*(WebGPU|adapter)/, kind: 'Cpu' },
]) {
  test(`page starts on ${mode.name} and computes on it`, { timeout: 180_000 }, async () => {
    const browser = await launch({ webgpu: mode.webgpu });
    try {
      const { page, record } = await openPage(browser, server.origin);
      await page.goto(server.origin + '/');
      const smoke = page.getByTestId('smoke-result');
      await smoke.and(page.locator('[data-ok]')).waitFor({ timeout: 150_000 });
      await screenshot(page, `foundation-${mode.name}`);
      const backend = page.getByTestId('backend');
      assert.equal(await backend.getAttribute('data-kind'), mode.kind, record.logs.join('\n'));
      assert.match(await backend.innerText(), mode.expectBackend);
      assert.equal(await smoke.getAttribute('data-ok'), 'true', await smoke.innerText());
      assert.ok((await smoke.innerText()).includes(EXPECTED_PRODUCT), await smoke.innerText());
      assert.deepEqual(record.foreign, [], 'requests left the page origin');
      assert.deepEqual(record.errors, [], 'the page reported errors');
    } finally {
      await browser.close();
    }
  });
}
