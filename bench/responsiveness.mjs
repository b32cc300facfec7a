// Benchmark (not a test): does the page stay responsive while a large pick is embedded?
// Picks N copies of a real chest X-ray (default 1000) into one class, then for a while records
// the page's long tasks (main thread busy > 50 ms, PerformanceObserver 'longtask') and the
// latency of typing into a class name, on the CPU fallback and on WebGPU.
// Usage (after `trunk build`, from the repository root; needs ../shared/data):
//   node bench/responsiveness.mjs [N] [seconds]
import { mkdtemp, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveStatic, launch, openPage, sharedData } from '../tests/browser/harness.mjs';

const n = Number(process.argv[2] ?? 1000);
const seconds = Number(process.argv[3] ?? 30);
// Files on disk (as a user's would be), so picking them costs what it costs a user.
const xray = join(sharedData, 'chest-xray-pneumonia', 'train', 'NORMAL', 'IM-0115-0001.jpeg');
const dir = await mkdtemp(join(tmpdir(), 'medtransfer-responsiveness-'));
const files = [];
for (let i = 0; i < n; i++) {
  files.push(join(dir, `xray-${String(i).padStart(4, '0')}.jpeg`));
  await copyFile(xray, files[i]);
}

const server = await serveStatic();
try {
  for (const mode of [{ name: 'CPU (flex, wasm)', webgpu: false }, { name: 'WebGPU', webgpu: true }]) {
    const browser = await launch({ webgpu: mode.webgpu });
    try {
      const { page } = await openPage(browser, server.origin);
      await page.addInitScript(() => {
        window.longTasks = [];
        new PerformanceObserver((list) => {
          for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
        }).observe({ type: 'longtask', buffered: true });
        // How long the page's own change handler (thumbnails, reads, messages) holds the thread.
        document.addEventListener('change', () => {
          const t = performance.now();
          setTimeout(() => { window.changeHandlerMs = performance.now() - t; }, 0);
        }, true);
      });
      await page.goto(server.origin + '/');
      await page.getByTestId('worker-backend').filter({ hasText: /background worker on:/ }).waitFor({ timeout: 300_000 });
      await page.evaluate(() => { window.longTasks = []; });
      const started = Date.now();
      await page.getByTestId('class-files').first().setInputFiles(files);
      const pickMs = Date.now() - started;
      const typing = [];
      const name = page.getByTestId('class-name').first();
      while (Date.now() - started < seconds * 1000) {
        const t0 = Date.now();
        await name.fill(`Class ${typing.length}`);
        await page.waitForFunction((v) => document.querySelector('[data-testid="class-name"]').value === v, `Class ${typing.length}`);
        typing.push(Date.now() - t0);
        await page.waitForTimeout(500);
      }
      const status = await page.getByTestId('embed-status').innerText();
      const longTasks = await page.evaluate(() => window.longTasks);
      const handlerMs = await page.evaluate(() => window.changeHandlerMs);
      const max = Math.max(0, ...longTasks);
      const blocked = longTasks.reduce((a, d) => a + Math.max(0, d - 50), 0);
      typing.sort((a, b) => a - b);
      console.log(`${mode.name}: ${n} images picked (setInputFiles ${pickMs} ms); over ${seconds} s: `
        + `change handler ${handlerMs?.toFixed(0)} ms; ${longTasks.length} long tasks, longest ${max.toFixed(0)} ms, blocked ${blocked.toFixed(0)} ms; `
        + `typing latency median ${typing[typing.length >> 1]} ms, max ${typing[typing.length - 1]} ms; `
        + `status: ${status}`);
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.close();
}
