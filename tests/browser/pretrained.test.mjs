// The pretrained EfficientNet-Lite0 in the page: the weights load from the page's own origin
// with a progress bar, are cached (a reload downloads nothing), and the network's logits on the
// golden fixtures match the independent numpy reference (tests/fixtures/efficientnet).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { serveStatic, launch, openPage, screenshot, repoRoot } from './harness.mjs';

const fixtureDir = join(repoRoot, 'tests', 'fixtures', 'efficientnet');
const expected = JSON.parse(await readFile(join(fixtureDir, 'expected.json'), 'utf8'));

let server;
before(async () => { server = await serveStatic(); });
after(async () => { await server?.close(); });

async function waitForModel(page) {
  const status = page.getByTestId('model-status');
  await page.locator('[data-testid="model-status"]:is([data-state="ready"], [data-state="failed"])')
    .waitFor({ timeout: 240_000 });
  assert.equal(await status.getAttribute('data-state'), 'ready', await status.innerText());
  return status;
}

for (const mode of [
  // WebGPU on SwiftShader: f32 kernels in another order; the issue allows 1e-2.
  { name: 'webgpu', webgpu: true, tolerance: 1e-2 },
  // flex compiled to wasm: the same arithmetic as natively.
  { name: 'cpu-fallback', webgpu: false, tolerance: 1e-3 },
]) {
  test(`pretrained network on ${mode.name}: cached weights, logits match the reference`, { timeout: 600_000 }, async () => {
    const browser = await launch({ webgpu: mode.webgpu });
    try {
      const { page, record } = await openPage(browser, server.origin);
      const weightRequests = () => record.all.filter((url) => url.endsWith('.bpk'));
      await page.goto(server.origin + '/');
      const status = await waitForModel(page);
      assert.equal(await status.getAttribute('data-source'), 'network');
      assert.equal(weightRequests().length, 1, 'weights downloaded once');

      const files = expected.images.map((image) => join(fixtureDir, image.file));
      await page.getByTestId('imagenet-files').setInputFiles(files);
      const results = page.getByTestId('imagenet-result');
      await results.nth(files.length - 1).waitFor({ timeout: 300_000 });
      await screenshot(page, `pretrained-${mode.name}`);
      for (const image of expected.images) {
        const item = page.locator(`[data-testid="imagenet-result"][data-name="${image.file}"]`);
        const logits = JSON.parse(await item.getAttribute('data-logits'));
        assert.equal(logits.length, 1000);
        const maxAbs = Math.max(...logits.map((value, i) => Math.abs(value - image.logits[i])));
        assert.ok(maxAbs <= mode.tolerance, `${image.file}: max |Δlogit| ${maxAbs} > ${mode.tolerance}`);
        assert.equal(Number(await item.getAttribute('data-top1')), image.top5[0][0]);
      }

      // A new pick replaces the list (even with a file of the same name), and a file that is
      // not an image gets its own error while the others are classified.
      const chelsea = expected.images[0];
      await page.getByTestId('imagenet-files').setInputFiles([
        { name: chelsea.file, mimeType: 'image/png', buffer: await readFile(join(fixtureDir, chelsea.file)) },
        { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('these are notes, not a PNG') },
      ]);
      await page.locator('[data-testid="imagenet-timing"][data-count="2"]').waitFor({ timeout: 300_000 });
      assert.equal(await results.count(), 2, 'the previous pick was replaced');
      assert.equal(Number(await results.nth(0).getAttribute('data-top1')), chelsea.top5[0][0]);
      assert.match(await results.nth(1).getAttribute('data-error') ?? '', /decode/);

      // A second visit reads the weights from the Cache API: no download.
      await page.reload();
      const again = await waitForModel(page);
      assert.equal(await again.getAttribute('data-source'), 'cache');
      assert.equal(weightRequests().length, 1, 'a reload must not download the weights again');

      assert.deepEqual(record.foreign, [], 'requests left the page origin');
      assert.deepEqual(record.errors, [], 'the page reported errors');
    } finally {
      await browser.close();
    }
  });
}
