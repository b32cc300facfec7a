// Augmentation in the page: images added with augmented views get them embedded in the worker
// and kept with their embeddings, the automatic recipe's search tries the linear head with
// them, and the views survive a reload (the next worker trains on them again) and an export
// and import. Three real chest X-rays a class from ../shared/data (skipped with a message when
// absent), on the CPU path (SwiftShader's WebGPU would take minutes for the extra forward
// passes; the views' forward passes are the same kernels as the originals').
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launch, openProject, screenshot, waitForWorker, chestXrays, pick, servedWithScratch } from './harness.mjs';

const { chest, available } = chestXrays('augmentation test');

const served = servedWithScratch('mt-augment-');

/** Trains and waits for the run to end; returns the search table's candidate names. */
async function train(page) {
  await page.getByTestId('train').click();
  await page.locator('[data-testid="train-status"][data-running="false"]').waitFor({ timeout: 600_000 });
  const status = await page.getByTestId('train-status').innerText();
  assert.match(status, /Trained in/, status);
  return page.getByTestId('search-row').locator('td:first-child').allInnerTexts();
}

test('augmented views are embedded, tried by the search, and kept across a reload and an export', { skip: !available, timeout: 900_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, context, record, worker } = await openProject(browser, served.server.origin);
    assert.match(worker, /CPU/);

    // Two views per image, then three images a class.
    await page.getByTestId('augmented-views').selectOption('2');
    const cards = page.getByTestId('class-card');
    await cards.nth(0).getByTestId('class-name').fill('NORMAL');
    await cards.nth(1).getByTestId('class-name').fill('PNEUMONIA');
    await cards.nth(0).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), 3));
    await cards.nth(1).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'PNEUMONIA'), 3));
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 300_000 });
    assert.equal(await page.getByTestId('views-status').innerText(), '6 of 6 images have augmented views.');
    // Each image's two views are stored with it (two embeddings' worth of bytes).
    const viewBytes = await page.evaluate(() => new Promise((ok) => {
      const open = indexedDB.open('medtransfer');
      open.onsuccess = () => {
        const all = open.result.transaction(['images'], 'readonly').objectStore('images').getAll();
        all.onsuccess = () => { ok(all.result.map((r) => [r.embedding?.length ?? 0, r.views?.length ?? 0])); open.result.close(); };
      };
    }));
    assert.equal(viewBytes.length, 6);
    for (const [embedding, views] of viewBytes) assert.deepEqual([embedding, views], [5120, 2 * 5120]);

    // The automatic recipe tries the linear head with and without the views.
    const candidates = await train(page);
    const augmented = candidates.filter((c) => /augmented views/.test(c));
    assert.ok(augmented.length >= 13, `augmented candidates: ${candidates.join(' | ')}`);
    assert.ok(candidates.length - augmented.length >= 13, 'candidates without the views too');
    await screenshot(page, 'augment-1-trained');

    // After a reload, the new worker has the views again: the search still tries them.
    await page.reload();
    await page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
    assert.equal(await page.getByTestId('augmented-views').inputValue(), '2');
    assert.equal(await page.getByTestId('views-status').innerText(), '6 of 6 images have augmented views.');
    await waitForWorker(page);
    const again = await train(page);
    assert.deepEqual(again, candidates, 'the same candidates after the reload');

    // An image added without views is counted as such.
    await page.getByTestId('augmented-views').selectOption('0');
    await cards.nth(0).getByTestId('class-files').setInputFiles(pick(join(chest, 'train', 'NORMAL'), 1, 3));
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 300_000 });
    assert.equal(await page.getByTestId('views-status').innerText(), '6 of 7 images have augmented views.');

    // Exported and imported into another profile: the views come along.
    await page.getByTestId('augmented-views').selectOption('4');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByTestId('export-project').click(),
    ]);
    const projectPath = join(served.scratch, 'views.mtproject');
    await download.saveAs(projectPath);
    assert.deepEqual(record.foreign, [], 'requests left the page origin');
    assert.deepEqual(record.errors, [], 'page errors');
    await context.close();
    const other = await openProject(browser, served.server.origin);
    await other.page.getByTestId('import-project').setInputFiles(projectPath);
    await other.page.getByTestId('project-notice').filter({ hasText: /Imported/ }).waitFor({ timeout: 60_000 });
    assert.equal(await other.page.getByTestId('views-status').innerText(), '6 of 7 images have augmented views.');
    assert.equal(await other.page.getByTestId('augmented-views').inputValue(), '4');
    await waitForWorker(other.page);
    const imported = await train(other.page);
    assert.ok(imported.filter((c) => /augmented views/.test(c)).length >= 13, 'the imported views are trained on');
    await screenshot(other.page, 'augment-2-imported');
    assert.deepEqual(other.record.foreign, []);
    assert.deepEqual(other.record.errors, []);
  } finally {
    await browser.close();
  }
});
