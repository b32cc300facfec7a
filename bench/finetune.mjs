// Benchmark (not a test): what fine-tuning the last 2 blocks costs in the page. On the CPU
// path and on WebGPU (in this environment SwiftShader, a software renderer: label its figures
// as such), a fresh profile embeds real BUSI images (../shared/data), trains the head alone,
// then fine-tunes the last 2 blocks, alternating the two; fine-tuning's images/s is the extra
// time over the head alone per image and epoch (the epochs' validation passes included).
// Prints the load average before and after.
// Usage (after `trunk build`, from the repository root): node bench/finetune.mjs [cpu|webgpu|both]
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { serveStatic, launch, openPage, sharedData, waitForWorker } from '../tests/browser/harness.mjs';

const which = process.argv[2] ?? 'both';
const busi = join(sharedData, 'busi');
const files = (cls, n) => readdirSync(join(busi, cls))
  .filter((f) => /\.png$/i.test(f) && !/mask/i.test(f)).sort().slice(0, n).map((f) => join(busi, cls, f));
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');

async function trainSeconds(page, blocks) {
  await page.getByTestId('train-blocks').selectOption(String(blocks));
  const before = await page.getByTestId('train-status').innerText();
  await page.getByTestId('train').click();
  // A head alone may train in a tenth of a second: wait for a new finished status, not for
  // the running one.
  await page.waitForFunction((old) => {
    const status = document.querySelector('[data-testid="train-status"]');
    return status && status.dataset.running === 'false' && /Trained in/.test(status.innerText) && status.innerText !== old;
  }, before, { timeout: 1_800_000 });
  const status = await page.getByTestId('train-status').innerText();
  const seconds = Number(status.match(/Trained in ([\d.]+) s/)?.[1]);
  return { seconds, epochs: await page.getByTestId('epoch-row').count(), status };
}

const server = await serveStatic();
console.log(`load average before: ${load()}`);
try {
  for (const mode of [{ name: 'cpu', webgpu: false, per: 10 }, { name: 'webgpu', webgpu: true, per: 5 }]) {
    if (which !== 'both' && which !== mode.name) continue;
    const browser = await launch({ webgpu: mode.webgpu });
    const { page, context } = await openPage(browser, server.origin);
    await page.goto(server.origin + '/');
    console.log(`${mode.name}: ${await waitForWorker(page)}`);
    const cards = page.getByTestId('class-card');
    await cards.nth(0).getByTestId('class-files').setInputFiles(files('benign', mode.per));
    await cards.nth(1).getByTestId('class-files').setInputFiles(files('malignant', mode.per));
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 900_000 });
    const images = 2 * mode.per;
    for (let round = 0; round < 2; round++) {
      const head = await trainSeconds(page, 0);
      const tuned = await trainSeconds(page, 2);
      // The held-out 20 % do not train; each epoch also predicts them once.
      const trained = Math.round(images * 0.8);
      const perSecond = (trained * tuned.epochs) / Math.max(tuned.seconds - head.seconds, 1e-3);
      console.log(`${mode.name} round ${round + 1}: ${images} images; head alone ${head.seconds} s, `
        + `fine-tuning 2 blocks ${tuned.seconds} s for ${tuned.epochs} epochs → ${perSecond.toFixed(2)} training images/s per epoch`);
    }
    await context.close();
    await browser.close();
  }
} finally {
  await server.close();
}
console.log(`load average after: ${load()}`);
