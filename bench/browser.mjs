// Browser benchmark (not a test): ImageNet classification of 1 and 32 images in the app, on
// WebGPU (--enable-unsafe-webgpu) and on the CPU fallback, in headless Debian Chromium.
// Times one whole pick: file read, decode, preprocess, forward passes of at most 8, read-back.
// Usage (after `trunk build`, from the repository root):
//   node bench/browser.mjs
import { mkdtemp, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveStatic, launch, openPage, repoRoot } from '../tests/browser/harness.mjs';

const fixture = join(repoRoot, 'tests', 'fixtures', 'efficientnet', 'chelsea_224.png');
const dir = await mkdtemp(join(tmpdir(), 'medtransfer-bench-'));
const files = [];
for (let i = 0; i < 32; i++) {
  const file = join(dir, `image-${String(i).padStart(2, '0')}.png`);
  await copyFile(fixture, file);
  files.push(file);
}

const server = await serveStatic();
try {
  for (const mode of [{ name: 'WebGPU', webgpu: true }, { name: 'CPU (flex, wasm)', webgpu: false }]) {
    const browser = await launch({ webgpu: mode.webgpu });
    try {
      const { page } = await openPage(browser, server.origin);
      await page.goto(server.origin + '/');
      await page.locator('[data-testid="model-status"][data-state="ready"]').waitFor({ timeout: 300_000 });
      const backend = await page.getByTestId('backend').innerText();
      for (const n of [1, 1, 32]) { // the first batch of 1 warms up (kernel compilation)
        await page.getByTestId('imagenet-files').setInputFiles(files.slice(0, n));
        await page.locator(`[data-testid="imagenet-timing"][data-count="${n}"]`).waitFor({ timeout: 900_000 });
        const ms = Number(await page.getByTestId('imagenet-timing').getAttribute('data-ms'));
        console.log(`${mode.name} [${backend}] batch ${n}: ${ms.toFixed(0)} ms = ${(n / (ms / 1000)).toFixed(2)} images/s`);
        await page.getByTestId('imagenet-files').setInputFiles([]);
        await page.locator('[data-testid="imagenet-timing"][data-count="0"]').waitFor({ timeout: 60_000 });
      }
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.close();
}
