// Nothing lost: the project survives a reload mid-flow, a crashed compute worker (a lost GPU)
// and a move to another browser profile through an exported project file; a model trained in
// the page gives the same predictions in `medtransfer predict`. Uses real chest X-rays from
// ../shared/data (skipped with a message when absent). Starts on WebGPU, continues on the CPU
// after the simulated GPU loss; a reload starts afresh on WebGPU (SwiftShader), which then
// trains and predicts; the CLI comparison runs flex natively.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { launch, openProject, screenshot, repoRoot, waitForWorker, chestXrays, pick, servedWithScratch } from './harness.mjs';

const { chest, available } = chestXrays('persistence tests');

const targetDir = process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache', 'medtransfer', 'target');
const cli = process.env.MEDTRANSFER_CLI ?? join(targetDir, 'debug', 'medtransfer');

/** Same labels, probabilities within 1e-3 (another backend may round differently). */
function assertSamePredictions(actual, expected, what) {
  assert.deepEqual(actual.map((p) => p.label), expected.map((p) => p.label), what);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i].prob - expected[i].prob) < 1e-3, `${what}: ${actual[i].prob} vs ${expected[i].prob}`);
  }
}

/** The simulated crash's own messages are expected; anything else is a failure. */
const CRASH = /simulated loss of the GPU|compute worker stopped: Uncaught RuntimeError: unreachable/;

const served = servedWithScratch('mt-persist-');

async function counts(page) {
  const cards = page.getByTestId('class-card');
  const out = [];
  for (let i = 0; i < await cards.count(); i++) {
    out.push([await cards.nth(i).getByTestId('class-name').inputValue(),
      Number(await cards.nth(i).getByTestId('class-count').innerText())]);
  }
  return out;
}

async function predictions(page, files) {
  await page.getByTestId('predict-files').setInputFiles(files);
  const items = page.getByTestId('prediction');
  await items.nth(files.length - 1).waitFor({ timeout: 300_000 });
  const out = [];
  for (let i = 0; i < files.length; i++) {
    out.push({ label: await items.nth(i).getAttribute('data-label'), prob: Number(await items.nth(i).getAttribute('data-prob')) });
  }
  return out;
}

test('a lost GPU, a reload and an export/import lose nothing', { skip: !available, timeout: 1_200_000 }, async () => {
  const browser = await launch({ webgpu: true });
  try {
    const { page, context, record, worker } = await openProject(browser, served.server.origin);
    assert.match(worker, /WebGPU/);

    // 1. The GPU is lost: the page says so and goes on, on the CPU.
    await page.evaluate(() => globalThis.medtransferTest.crashWorker());
    await waitForWorker(page, /background worker on: CPU/);
    const notice = page.getByTestId('project-notice');
    assert.equal(await notice.getAttribute('data-kind'), 'error');
    assert.match(await notice.innerText(), /switched to the CPU/);
    await screenshot(page, 'persist-1-gpu-lost');

    // 2. Images, then a reload while some are still being embedded.
    const cards = page.getByTestId('class-card');
    await cards.nth(0).getByTestId('class-name').fill('NORMAL');
    await cards.nth(1).getByTestId('class-name').fill('PNEUMONIA');
    await cards.nth(0).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), 4));
    await cards.nth(1).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'PNEUMONIA'), 4));
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 300_000 });
    assert.equal(await cards.nth(0).locator('img[src^="blob:"]').count(), 4, 'thumbnails of embedded images');
    await cards.nth(1).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'PNEUMONIA'), 3, 4));
    // Reload as soon as the three new images are saved (whether or not they are embedded yet).
    const saved = () => page.evaluate(() => new Promise((ok) => {
      const open = indexedDB.open('medtransfer');
      open.onsuccess = () => {
        const count = open.result.transaction(['images'], 'readonly').objectStore('images').count();
        count.onsuccess = () => { ok(count.result); open.result.close(); };
      };
    }));
    for (let i = 0; i < 200 && await saved() < 11; i++) await page.waitForTimeout(50);
    const pendingAtReload = Number(await page.getByTestId('embed-status').getAttribute('data-pending'));
    console.log(`reloading with ${pendingAtReload} images still to embed`);
    await page.reload();
    await page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
    assert.deepEqual(await counts(page), [['NORMAL', 4], ['PNEUMONIA', 7]], 'every labelled image is back');
    assert.match(await page.getByTestId('project-notice').innerText(), /restored/);
    await waitForWorker(page);
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 300_000 });
    assert.equal(await cards.nth(1).locator('img[src^="blob:"]').count(), 7, 'thumbnails after the reload');
    await screenshot(page, 'persist-2-reloaded');

    // 3. Train, download the model, and compare with the CLI on two held-out images.
    await page.getByTestId('train').click();
    await page.getByTestId('metric-accuracy').waitFor({ timeout: 600_000 });
    const accuracy = await page.getByTestId('metric-accuracy').innerText();
    const heldOut = [pick(join(chest, 'test', 'NORMAL'), 1)[0], pick(join(chest, 'test', 'PNEUMONIA'), 1)[0]];
    const inPage = await predictions(page, heldOut);
    const [modelDownload] = await Promise.all([
      page.waitForEvent('download'),
      page.getByTestId('export-model').click(),
    ]);
    const modelPath = join(served.scratch, 'model.mtmodel');
    await modelDownload.saveAs(modelPath);
    if (existsSync(cli)) {
      const out = JSON.parse(execFileSync(cli, ['predict', '--backend', 'cpu', '--json', '--model', modelPath, ...heldOut],
        { cwd: repoRoot, encoding: 'utf8', env: { ...process.env, MEDTRANSFER_WEIGHTS_DIR: join(repoRoot, 'weights') } }));
      for (let i = 0; i < heldOut.length; i++) {
        assert.equal(out[i].label, inPage[i].label, `${heldOut[i]}: CLI ${out[i].label}, page ${inPage[i].label}`);
        assert.ok(Math.abs(out[i].probability - inPage[i].prob) < 2e-3,
          `${heldOut[i]}: CLI ${out[i].probability}, page ${inPage[i].prob}`);
      }
    } else {
      console.log(`SKIP CLI comparison: no medtransfer binary at ${cli} (cargo build -p medtransfer-cli)`);
    }

    // 4. The trained model survives a reload: metrics shown, predictions identical.
    await page.reload();
    await page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
    assert.equal(await page.getByTestId('metric-accuracy').innerText(), accuracy);
    await waitForWorker(page);
    await page.getByTestId('predict-files').and(page.locator(':enabled')).waitFor({ timeout: 120_000 });
    assertSamePredictions(await predictions(page, heldOut), inPage, 'after the reload');
    await screenshot(page, 'persist-3-trained-reloaded');

    // 5. Export the project; a bad file is refused without touching the project.
    const [projectDownload] = await Promise.all([
      page.waitForEvent('download'),
      page.getByTestId('export-project').click(),
    ]);
    const projectPath = join(served.scratch, 'project.mtproject');
    await projectDownload.saveAs(projectPath);
    await page.getByTestId('import-project').setInputFiles({
      name: 'broken.mtproject', mimeType: 'application/octet-stream', buffer: Buffer.from('PK\x03\x04 definitely not a project'),
    });
    await page.getByTestId('project-notice').filter({ hasText: /broken\.mtproject was not imported/ }).waitFor({ timeout: 30_000 });
    assert.deepEqual(await counts(page), [['NORMAL', 4], ['PNEUMONIA', 7]]);
    assert.deepEqual(record.foreign, [], 'requests left the page origin');
    assert.deepEqual(record.errors.filter((e) => !CRASH.test(e)), [], 'page errors');
    await context.close();

    // 6. Another profile (empty storage) imports it: classes, images, model and predictions.
    const other = await openProject(browser, served.server.origin);
    await other.page.getByTestId('import-project').setInputFiles(projectPath);
    await other.page.getByTestId('project-notice').filter({ hasText: /Imported/ }).waitFor({ timeout: 60_000 });
    assert.deepEqual(await counts(other.page), [['NORMAL', 4], ['PNEUMONIA', 7]]);
    assert.equal(await other.page.getByTestId('metric-accuracy').innerText(), accuracy);
    await waitForWorker(other.page);
    await other.page.getByTestId('predict-files').and(other.page.locator(':enabled')).waitFor({ timeout: 120_000 });
    assertSamePredictions(await predictions(other.page, heldOut), inPage, 'after the import');
    await screenshot(other.page, 'persist-4-imported');
    assert.deepEqual(other.record.foreign, []);
    assert.deepEqual(other.record.errors, []);
  } finally {
    await browser.close();
  }
});
