// Benchmark (not a test): what augmented views cost when images are added in the page. Embeds
// 10 + 10 real BUSI images (../shared/data) on the CPU path with none and with 2 augmented
// views per image, alternating (none, 2, none, 2), each run in a fresh browser profile, and
// prints images/s and the load average before and after.
// Usage (after `trunk build`, from the repository root): node bench/views.mjs [views=2]
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { serveStatic, launch, openPage, sharedData, waitForWorker } from '../tests/browser/harness.mjs';

const views = process.argv[2] ?? '2';
const busi = join(sharedData, 'busi');
const files = (cls, n) => readdirSync(join(busi, cls))
  .filter((f) => /\.png$/i.test(f) && !/mask/i.test(f)).sort().slice(0, n).map((f) => join(busi, cls, f));
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');

const server = await serveStatic();
const browser = await launch({ webgpu: false });
console.log(`load average before: ${load()}`);
try {
  for (const count of ['0', views, '0', views]) {
    const { page, context } = await openPage(browser, server.origin);
    await page.goto(server.origin + '/');
    await waitForWorker(page);
    await page.getByTestId('augmented-views').selectOption(count);
    const cards = page.getByTestId('class-card');
    const started = Date.now();
    await cards.nth(0).getByTestId('class-files').setInputFiles(files('benign', 10));
    await cards.nth(1).getByTestId('class-files').setInputFiles(files('malignant', 10));
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 900_000 });
    const seconds = (Date.now() - started) / 1000;
    console.log(`${count} views: 20 images in ${seconds.toFixed(1)} s (${(20 / seconds).toFixed(2)} images/s); ${await page.getByTestId('views-status').innerText()}`);
    await context.close();
  }
} finally {
  await browser.close();
  await server.close();
}
console.log(`load average after: ${load()}`);
