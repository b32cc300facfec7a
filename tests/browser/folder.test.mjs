// A real-world class-folder pick (tests/fixtures/cases/16-folder-junk-layout/dataset: OS junk
// from macOS and Windows, upper-case extensions, an extensionless DICOM, a nested folder, an
// empty file, a PDF, links): the page makes exactly the two classes, ignores the junk
// silently, and reports each problem file in its class. A picked folder and a dropped one go
// through the same rule (core's dataset_folder::layout_of_drop). Runs on the CPU fallback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launch, openPage, repoRoot, screenshot, serveStatic, waitForWorker } from './harness.mjs';

const dataset = join(repoRoot, 'tests', 'fixtures', 'cases', '16-folder-junk-layout', 'dataset');
let server;
before(async () => { server = await serveStatic(); });
after(async () => { await server?.close(); });

test('a picked data-set folder with OS junk gives exactly its two classes', { timeout: 300_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, record } = await openPage(browser, server.origin);
    await page.goto(server.origin + '/');
    await waitForWorker(page);
    await page.getByTestId('folder-files').setInputFiles(dataset);
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 300_000 });
    await screenshot(page, 'folder-junk-picked');

    const cards = page.getByTestId('class-card');
    assert.equal(await cards.count(), 2, 'exactly two classes');
    assert.equal(await cards.nth(0).getByTestId('class-name').inputValue(), 'normal');
    assert.equal(await cards.nth(1).getByTestId('class-name').inputValue(), 'pneumonia');
    // normal: 7 images, including the nested subset_b/img_009.png, ct_005.DCM and the
    // extensionless IM000006; the empty file is reported on its own.
    assert.equal(await cards.nth(0).getByTestId('class-count').innerText(), '7');
    for (const name of ['img_009.png', 'ct_005.DCM', 'IM000006', 'IMG_003.JPG', 'img_002.PNG']) {
      assert.equal(await cards.nth(0).locator(`img[alt="${name}"]`).count(), 1, `thumbnail of ${name}`);
    }
    const normalRejected = cards.nth(0).getByTestId('class-rejected');
    assert.equal(await normalRejected.locator('li').count(), 1, await normalRejected.innerText());
    assert.match(await normalRejected.innerText(), /empty_008\.png: empty file/);
    // pneumonia: 5 images (6 if the browser follows the link to img_101.png); the PDF, and
    // the dangling link if the browser lists it, are reported.
    const pneumonia = Number(await cards.nth(1).getByTestId('class-count').innerText());
    assert.ok(pneumonia === 5 || pneumonia === 6, `pneumonia has ${pneumonia} images`);
    const rejected = await cards.nth(1).getByTestId('class-rejected').innerText();
    assert.match(rejected, /notes\.pdf: cannot decode the file: it is a PDF document/);
    // Junk is never a class, an image or a failed image.
    const text = await page.locator('body').innerText();
    for (const junk of ['Thumbs.db', '.DS_Store', '._img_', '__MACOSX', 'desktop.ini', 'README.txt']) {
      assert.ok(!text.includes(junk), `${junk} shown on the page`);
    }
    assert.deepEqual(record.foreign, []);
    assert.deepEqual(record.errors, []);
  } finally {
    await browser.close();
  }
});
