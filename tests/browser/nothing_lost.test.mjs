// Nothing a user did is lost (issue 17, section 2), each loss its own test:
// 1. a training that fails keeps the previous model and its metrics, and names the class;
// 6. an export after a class was added or renamed keeps the model (with its own class names);
// 2. a write refused by a full storage quota is said, kept on the page and saved again;
// 3. an import refused by storage leaves the old project whole;
// 5. a file that crashes the compute worker is the only one left out, and the worker goes back
//    to WebGPU (it was not a lost GPU);
// 7. removing a class with images asks first; imported settings are clamped to core's limits
//    (and an older page's settings are read, not reset).
// Real chest X-rays from ../shared/data (skipped with a message when absent). The quota is
// set through Chromium's DevTools protocol (Storage.overrideQuotaForOrigin).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { zipSync, strToU8 } from 'fflate';
import { launch, openPage, screenshot, repoRoot, waitForWorker, chestXrays, pick, servedWithScratch } from './harness.mjs';

const { chest, available } = chestXrays('nothing-lost tests');

const served = servedWithScratch('mt-lost-');

async function ready(page) {
  await page.goto(served.server.origin + '/');
  await page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
  await waitForWorker(page);
}

async function counts(page) {
  const cards = page.getByTestId('class-card');
  const out = [];
  for (let i = 0; i < await cards.count(); i++) {
    out.push([await cards.nth(i).getByTestId('class-name').inputValue(),
      Number(await cards.nth(i).getByTestId('class-count').innerText())]);
  }
  return out;
}

async function embedded(page) {
  await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 300_000 });
}

/** Two classes of `n` chest X-rays each, embedded. */
async function twoClasses(page, n, skip = 0) {
  const cards = page.getByTestId('class-card');
  await cards.nth(0).getByTestId('class-name').fill('NORMAL');
  await cards.nth(1).getByTestId('class-name').fill('PNEUMONIA');
  await cards.nth(0).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), n, skip));
  await cards.nth(1).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'PNEUMONIA'), n, skip));
  await embedded(page);
}

/** This origin's storage in use, in bytes, as the browser counts it. */
const usage = (page) => page.evaluate(async () => (await navigator.storage.estimate()).usage);

/**
 * Waits until IndexedDB refuses a write. Chromium's IndexedDB trusts the free space it last
 * looked up for some tens of seconds, so a quota override takes hold only after that: until then
 * a small random record (in a database of its own) is written every 2 s. Returns the seconds it took.
 */
async function untilRefused(page) {
  const started = Date.now();
  while (Date.now() - started < 120_000) {
    const outcome = await page.evaluate(() => new Promise((done) => {
      const open = indexedDB.open('quota-probe', 1);
      open.onupgradeneeded = () => open.result.createObjectStore('probe');
      open.onerror = () => done(`open: ${open.error?.name}`);
      open.onsuccess = () => {
        const db = open.result;
        const tx = db.transaction('probe', 'readwrite');
        tx.objectStore('probe').put(crypto.getRandomValues(new Uint8Array(65_536)), Date.now());
        tx.oncomplete = () => { db.close(); done('stored'); };
        tx.onabort = () => { db.close(); done(tx.error?.name ?? 'aborted'); };
      };
    }));
    if (outcome === 'QuotaExceededError') return (Date.now() - started) / 1000;
    await page.waitForTimeout(2_000);
  }
  throw new Error('the quota override never refused a write within 120 s');
}

test('a failed training keeps the model; an export after a new class keeps it too', { skip: !available, timeout: 900_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, record } = await openPage(browser, served.server.origin);
    await ready(page);
    await twoClasses(page, 3);
    await page.getByLabel(/^Recipe/).selectOption('manual');
    await page.getByLabel(/^Head/).selectOption('linear');
    await page.getByTestId('train').click();
    await page.getByTestId('metric-accuracy').waitFor({ timeout: 300_000 });
    const accuracy = await page.getByTestId('metric-accuracy').innerText();
    const epochs = await page.getByTestId('epoch-row').count();

    // A third class with one image: the split cannot hold one out, training fails…
    await page.getByTestId('add-class').click();
    const cards = page.getByTestId('class-card');
    await cards.nth(2).getByTestId('class-name').fill('COVID');
    await cards.nth(2).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'PNEUMONIA'), 1, 10));
    await embedded(page);
    await page.getByTestId('train').click();
    const status = page.getByTestId('train-status');
    await status.filter({ hasText: /Training failed/ }).waitFor({ timeout: 120_000 });
    // …naming the class by its name, not its 0-based label…
    assert.match(await status.innerText(), /\u201cCOVID\u201d has only 1/);
    assert.doesNotMatch(await status.innerText(), /class 2/);
    // …and the previous model, its metrics and epochs stay.
    assert.equal(await page.getByTestId('metric-accuracy').innerText(), accuracy);
    assert.equal(await page.getByTestId('epoch-row').count(), epochs);
    assert.ok(await page.getByTestId('export-model').isEnabled(), 'the model can still be downloaded');
    await screenshot(page, 'lost-1-failed-training-keeps-model');

    // After a reload the model is still there.
    await page.reload();
    await page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
    assert.equal(await page.getByTestId('metric-accuracy').innerText(), accuracy);
    await page.getByTestId('export-model').and(page.locator(':enabled')).waitFor({ timeout: 120_000 });

    // Export now (three classes, a model of two): the model goes with the project.
    await cards.nth(0).getByTestId('class-name').fill('normal');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByTestId('export-project').click(),
    ]);
    const file = join(served.scratch, 'renamed.mtproject');
    await download.saveAs(file);
    assert.deepEqual(record.errors, [], 'page errors');

    const other = await openPage(browser, served.server.origin);
    await ready(other.page);
    await other.page.getByTestId('import-project').setInputFiles(file);
    await other.page.getByTestId('project-notice').filter({ hasText: /Imported/ }).waitFor({ timeout: 60_000 });
    assert.deepEqual(await counts(other.page), [['normal', 3], ['PNEUMONIA', 3], ['COVID', 1]]);
    assert.match(await other.page.getByTestId('train-status').innerText(), /Model imported/);
    assert.equal(await other.page.getByTestId('metric-accuracy').innerText(), accuracy);
    await other.page.getByTestId('predict-files').and(other.page.locator(':enabled')).waitFor({ timeout: 120_000 });
    await other.page.getByTestId('predict-files').setInputFiles(pick(join(chest, 'test', 'NORMAL'), 1));
    const prediction = other.page.getByTestId('prediction');
    await prediction.waitFor({ timeout: 120_000 });
    // The model predicts with the names it was trained with.
    assert.ok(['NORMAL', 'PNEUMONIA'].includes(await prediction.getAttribute('data-label')));
    await screenshot(other.page, 'lost-6-export-keeps-model');
    assert.deepEqual(other.record.errors, [], 'page errors after the import');
  } finally {
    await browser.close();
  }
});

test('a full storage quota: writes are reported, kept and saved again; an import leaves the old project whole', { skip: !available, timeout: 900_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, context } = await openPage(browser, served.server.origin);
    await ready(page);
    await twoClasses(page, 3);
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByTestId('export-project').click(),
    ]);
    const bigger = join(served.scratch, 'bigger.mtproject');
    await download.saveAs(bigger);
    // Down to one image per class: the exported project is larger than the saved one.
    for (const i of [0, 1]) {
      const card = page.getByTestId('class-card').nth(i);
      for (let k = 0; k < 2; k++) await card.getByRole('button', { name: /^Remove .*\.jpeg/ }).first().click();
    }
    assert.deepEqual(await counts(page), [['NORMAL', 1], ['PNEUMONIA', 1]]);
    assert.match(await page.getByTestId('storage-use').innerText(), /Storage in use: [\d.]+ MB of [\d.]+ MB/);

    // No room left: the storage quota is what is used now.
    const cdp = await context.newCDPSession(page);
    await page.waitForTimeout(500);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: served.server.origin, quotaSize: await usage(page) });
    console.log(`the quota override took hold after ${await untilRefused(page)} s`);

    // 3. An import that storage refuses changes nothing, on the page or after a reload.
    await page.getByTestId('import-project').setInputFiles(bigger);
    const notice = page.getByTestId('project-notice');
    await notice.filter({ hasText: /bigger\.mtproject was not imported/ }).waitFor({ timeout: 60_000 });
    assert.match(await notice.innerText(), /unchanged/);
    assert.deepEqual(await counts(page), [['NORMAL', 1], ['PNEUMONIA', 1]]);
    await screenshot(page, 'lost-3-import-refused');

    // 2. New images cannot be saved: the page says so, keeps them, and offers to save again.
    const cards = page.getByTestId('class-card');
    await cards.nth(0).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), 2, 5));
    await notice.filter({ hasText: /Not saved in this browser/ }).waitFor({ timeout: 60_000 });
    assert.equal(await notice.getAttribute('data-kind'), 'error');
    await embedded(page);
    assert.deepEqual(await counts(page), [['NORMAL', 3], ['PNEUMONIA', 1]], 'kept on the page');
    await screenshot(page, 'lost-2-quota-full');
    // Room again: "Save again" writes what was kept.
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: served.server.origin });
    await page.getByTestId('retry-saving').click();
    await notice.filter({ hasText: /Everything is saved/ }).waitFor({ timeout: 60_000 });
    await page.reload();
    await page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
    assert.deepEqual(await counts(page), [['NORMAL', 3], ['PNEUMONIA', 1]], 'saved after the retry');
    await embedded(page);
    assert.equal(await cards.nth(0).locator('img[src^="blob:"]').count(), 3, 'thumbnails saved');
  } finally {
    await browser.close();
  }
});

test('a file that crashes the worker is the only one left out, and WebGPU stays', { skip: !available, timeout: 900_000 }, async () => {
  const browser = await launch({ webgpu: true });
  try {
    const { page, record } = await openPage(browser, served.server.origin);
    await ready(page);
    assert.match(await page.getByTestId('worker-backend').innerText(), /WebGPU/);
    const cards = page.getByTestId('class-card');
    await cards.nth(0).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), 2));
    await cards.nth(0).getByTestId('class-files').setInputFiles([
      { name: 'breaks-the-decoder.png', mimeType: 'image/png', buffer: Buffer.from('MEDTRANSFER-TEST-CRASH and more') },
    ]);
    await cards.nth(1).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'PNEUMONIA'), 2));
    await embedded(page);
    assert.deepEqual(await counts(page), [['Class 1', 2], ['Class 2', 2]]);
    const rejected = await cards.nth(0).getByTestId('class-rejected').innerText();
    assert.match(rejected, /breaks-the-decoder\.png: this file stopped the compute worker twice/);
    assert.equal(await cards.nth(1).getByTestId('class-rejected').innerText(), '');
    await waitForWorker(page, /background worker on:/);
    assert.match(await page.getByTestId('worker-backend').innerText(), /WebGPU/, 'not a lost GPU: no CPU fallback');
    assert.match(await page.getByTestId('project-notice').innerText(), /restarted/);
    await screenshot(page, 'lost-5-crashing-file');
    const expected = /test file that breaks the decoder|compute worker stopped|RuntimeError: unreachable/;
    assert.deepEqual(record.errors.filter((e) => !expected.test(e)), [], 'page errors');
  } finally {
    await browser.close();
  }
});

test('removing a class with images asks first', { skip: !available, timeout: 600_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page } = await openPage(browser, served.server.origin);
    await ready(page);
    await page.getByTestId('add-class').click();
    const cards = page.getByTestId('class-card');
    await cards.nth(2).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), 2));
    await embedded(page);
    const questions = [];
    page.once('dialog', (dialog) => { questions.push(dialog.message()); dialog.dismiss(); });
    await cards.nth(2).getByTestId('remove-class').click();
    await page.waitForTimeout(300);
    assert.equal(questions.length, 1, 'asked before removing');
    assert.match(questions[0], /Class 3.*2 images/);
    assert.equal(await cards.count(), 3, 'kept when the user says no');
    page.once('dialog', (dialog) => dialog.accept());
    await cards.nth(2).getByTestId('remove-class').click();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="class-card"]').length === 2);
  } finally {
    await browser.close();
  }
});

/** An image-less `.mtproject` (format of crates/core/src/project_file.rs) with `settings`. */
function projectFile(classes, settings) {
  const source = (...path) => readFileSync(join(repoRoot, 'crates', 'core', 'src', ...path), 'utf8');
  const ids = source('embeddings.rs');
  const id = (name) => ids.match(new RegExp(`pub const ${name}: &str = "([^"]+)"`))[1];
  const dim = Number(source('efficientnet', 'mod.rs').match(/pub const EMBEDDING_DIM: usize = (\d+)/)[1]);
  const manifest = {
    format: 'medtransfer-project', format_version: 1, created_by: 'browser test',
    backbone: id('BACKBONE_ID'), preprocessing: id('PREPROCESSING_ID'), embedding_dim: dim,
    classes, images: [], settings, has_model: false,
  };
  return zipSync({ 'manifest.json': strToU8(JSON.stringify(manifest)), 'embeddings.f32': new Uint8Array(0) }, { level: 0 });
}

async function settingsShown(page) {
  // Inside the settings (the epochs table's label also says "Epochs"), by the label's first
  // words (a help text may name another setting: "…suits the MLP head").
  const value = (label) => page.locator('.settings').getByLabel(new RegExp(`^${label}\\b`)).inputValue();
  return {
    head: await value('Head'), epochs: await value('Epochs'), batch: await value('Batch size'),
    lr: await value('Learning rate'), share: await value('Validation share'), seed: await value('Seed'),
  };
}

test('imported settings are clamped to the valid ranges; an older page\'s settings are kept', { timeout: 600_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, record } = await openPage(browser, served.server.origin);
    await ready(page);
    const notice = page.getByTestId('project-notice');
    // This version's settings (core's RunConfig), every value out of range.
    const wild = join(served.scratch, 'wild.mtproject');
    await writeFile(wild, projectFile(['benign', 'malignant'], {
      train: { epochs: 0, batch_size: 10_000_000, learning_rate: -1, seed: 5 }, validation_share: 7,
    }));
    await page.getByTestId('import-project').setInputFiles(wild);
    await notice.filter({ hasText: /Imported/ }).waitFor({ timeout: 60_000 });
    const clamped = { head: 'mlp', epochs: '1', batch: '65536', lr: '0.0001', share: '0.5', seed: '5' };
    assert.deepEqual(await settingsShown(page), clamped);
    await page.reload();
    await ready(page);
    assert.deepEqual(await settingsShown(page), clamped, 'saved as clamped');
    // A project exported by an older page (flat settings): its values, not the defaults.
    const older = join(served.scratch, 'older.mtproject');
    await writeFile(older, projectFile(['a', 'b'], {
      mlp: false, epochs: 12, batch: 16, learning_rate: 0.001, class_weights: 'off', validation_share: 0.3, seed: 7,
    }));
    await page.getByTestId('import-project').setInputFiles(older);
    await notice.filter({ hasText: /Imported older/ }).waitFor({ timeout: 60_000 });
    assert.deepEqual(await settingsShown(page), { head: 'linear', epochs: '12', batch: '16', lr: '0.001', share: '0.3', seed: '7' });
    await screenshot(page, 'lost-7-settings-clamped');
    assert.deepEqual(record.errors, [], 'page errors');
  } finally {
    await browser.close();
  }
});

test('two tabs: one owns the project, the other says so and may take it over', { skip: !available, timeout: 600_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, context } = await openPage(browser, served.server.origin);
    await ready(page);
    const cards = page.getByTestId('class-card');
    await cards.nth(0).getByTestId('class-name').fill('NORMAL');
    await cards.nth(0).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), 2));
    await embedded(page);

    // A second tab of the same browser: it does not load or save the project.
    const second = await context.newPage();
    await second.goto(served.server.origin + '/');
    const notice = second.getByTestId('project-notice');
    await notice.filter({ hasText: /open in another tab/ }).waitFor({ timeout: 60_000 });
    assert.equal(await second.getByTestId('project').getAttribute('data-restored'), 'false');
    await screenshot(second, 'lost-4-second-tab');

    // It takes over: it shows the project; the first tab stops saving and says so.
    await second.getByTestId('take-over').click();
    await second.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
    assert.deepEqual(await counts(second), [['NORMAL', 2], ['Class 2', 0]]);
    await page.getByTestId('project-notice').filter({ hasText: /now open in another tab/ }).waitFor({ timeout: 30_000 });
    assert.equal(await page.getByTestId('project').getAttribute('data-restored'), 'false');
    // The first tab's changes no longer reach storage: the second tab's project is intact.
    await cards.nth(0).getByTestId('class-name').fill('renamed in the old tab');
    await page.waitForTimeout(500);
    await second.reload();
    await second.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
    assert.deepEqual(await counts(second), [['NORMAL', 2], ['Class 2', 0]]);
  } finally {
    await browser.close();
  }
});
