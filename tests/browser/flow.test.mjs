// The whole fine-tuning flow in the page, with real chest X-rays from ../shared/data (skipped
// with a message when it is absent): two classes × 5 images → embeddings in the worker →
// train → validation metrics → predict two held-out images and a cat photo (which alone is
// flagged as unlike the training images, also after a reload). Once on WebGPU, once on the CPU
// fallback. Any request off the page's origin or any page error fails the test (harness), and
// each stage is screenshotted under target/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { serveStatic, launch, openPage, screenshot, waitForWorker, chestXrays, pick, repoRoot } from './harness.mjs';

const { chest, available } = chestXrays('flow tests');
/** A photo of a tabby cat (scikit-image's `chelsea`): nothing like a chest X-ray. */
const cat = join(repoRoot, 'tests', 'fixtures', 'efficientnet', 'chelsea_224.png');

let server;
before(async () => { server = await serveStatic(); });
after(async () => { await server?.close(); });

for (const mode of [
  { name: 'webgpu', webgpu: true, expect: /WebGPU/ },
  { name: 'cpu-fallback', webgpu: false, expect: /CPU/ },
]) {
  test(`fine-tuning flow on ${mode.name}`, { skip: !available, timeout: 900_000 }, async () => {
    const browser = await launch({ webgpu: mode.webgpu });
    try {
      const { page, record } = await openPage(browser, server.origin);
      await page.goto(server.origin + '/');
      await waitForWorker(page);
      const workerLine = await page.getByTestId('worker-backend').innerText();
      assert.match(workerLine, mode.expect, workerLine);
      assert.match(await page.getByTestId('backend').innerText(), mode.expect);
      await screenshot(page, `flow-${mode.name}-1-start`);

      const cards = page.getByTestId('class-card');
      assert.equal(await cards.count(), 2);
      await cards.nth(0).getByTestId('class-name').fill('NORMAL');
      await cards.nth(1).getByTestId('class-name').fill('PNEUMONIA');
      // A third class can be added (and is removed again: training needs images in each).
      await page.getByTestId('add-class').click();
      assert.equal(await cards.count(), 3);
      await cards.nth(2).getByRole('button', { name: /Remove class/ }).click();
      assert.equal(await cards.count(), 2);

      const normal = pick(join(chest, 'train', 'NORMAL'), 5);
      const pneumonia = pick(join(chest, 'train', 'PNEUMONIA'), 5);
      await cards.nth(0).getByTestId('class-files').setInputFiles(normal);
      // One unreadable file among the pneumonia images: reported, the rest go on.
      await cards.nth(1).getByTestId('class-files').setInputFiles(pneumonia);
      await cards.nth(1).getByTestId('class-files').setInputFiles([
        { name: 'report.jpeg', mimeType: 'image/jpeg', buffer: Buffer.from('%PDF-1.4 not an image') },
      ]);
      await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 600_000 });
      assert.equal(await cards.nth(0).getByTestId('class-count').innerText(), '5');
      assert.equal(await cards.nth(1).getByTestId('class-count').innerText(), '5');
      assert.match(await cards.nth(1).getByTestId('class-rejected').innerText(), /report\.jpeg/);
      await screenshot(page, `flow-${mode.name}-2-embedded`);

      // On the CPU path the user picks the screening rule: a target sensitivity of 0.9.
      const screening = !mode.webgpu;
      if (screening) {
        await page.getByTestId('threshold-rule').selectOption('sensitivity');
        await page.getByTestId('sensitivity-target').fill('0.9');
        await page.getByTestId('sensitivity-target').dispatchEvent('change');
      }
      await page.getByTestId('train').click();
      const accuracy = page.getByTestId('metric-accuracy');
      await accuracy.waitFor({ timeout: 600_000 });
      const value = Number(await accuracy.innerText());
      assert.ok(value >= 0 && value <= 1, `accuracy ${value}`);
      assert.ok(await page.getByTestId('epoch-row').count() >= 1);
      // Five images a class, the automatic recipe: the figures come from cross-validation
      // over every image, with intervals, and every candidate's score is shown.
      assert.match(await page.getByTestId('figures-source').innerText(), /cross-validation.* over all 10 images/);
      assert.match(await page.getByTestId('small-sample').innerText(), /^Only 10 images were evaluated/);
      assert.match(await page.locator('dd').filter({ has: accuracy }).innerText(), /95% CI/);
      assert.ok(await page.getByTestId('search-row').count() >= 13);
      assert.equal(await page.locator('[data-testid="search-row"][aria-current="true"]').count(), 1);
      // Curves (leptos-chartistry SVG): a loss and an accuracy chart with drawn lines, a ROC curve.
      assert.equal(await page.getByTestId('training-curves').locator('svg').count() >= 2, true);
      assert.ok(await page.getByTestId('training-curves').locator('path').count() >= 4);
      assert.ok(await page.getByTestId('roc-curve').locator('path').count() >= 1);
      const chosenRule = await page.getByTestId('threshold-chosen').innerText();
      assert.match(chosenRule, screening ? /sensitivity at least 0\.9 on the out-of-fold/ : /best balanced accuracy on the out-of-fold/);
      if (screening) {
        const [sensitivityAtModel] = (await page.getByTestId('threshold-effect').innerText())
          .match(/sensitivity ([01]\.\d+)/).slice(1).map(Number);
        assert.ok(sensitivityAtModel >= 0.9, `sensitivity ${sensitivityAtModel} at the model's threshold`);
      }
      await screenshot(page, `flow-${mode.name}-3-trained`);

      // Two held-out chest X-rays and a photo of a cat: the cat is unlike the training images,
      // and its prediction says so. (Calibrated on 10 images, the threshold is their largest
      // out-of-fold distance, so about 1 in 11 new chest X-rays is flagged too: the X-rays are
      // only asked to score well below the cat; the CLI's real-data test counts false alarms.)
      const heldOut = [pick(join(chest, 'test', 'NORMAL'), 1)[0], pick(join(chest, 'test', 'PNEUMONIA'), 1)[0]];
      await page.getByTestId('predict-files').setInputFiles([...heldOut, cat]);
      const predictions = page.getByTestId('prediction');
      await predictions.nth(2).waitFor({ timeout: 300_000 });
      await assertOodWarnings(predictions, [2]);
      // The model's threshold (chosen out of fold) decides: PNEUMONIA when its probability
      // reaches it.
      const threshold = Number(await page.getByTestId('threshold').inputValue());
      for (let i = 0; i < 2; i++) {
        const label = await predictions.nth(i).getAttribute('data-label');
        const prob = Number(await predictions.nth(i).getAttribute('data-prob'));
        assert.ok(['NORMAL', 'PNEUMONIA'].includes(label), label);
        const pneumonia = label === 'PNEUMONIA' ? prob : 1 - prob;
        assert.ok(Math.abs(pneumonia - threshold) < 0.006 || (pneumonia >= threshold) === (label === 'PNEUMONIA'), `${label} ${prob} at ${threshold}`);
      }
      // The predictions say which threshold decided them.
      const rule = page.getByTestId('prediction-rule');
      const ruleAt = async () => Number((await rule.innerText()).match(/called PNEUMONIA when its probability of PNEUMONIA is at least ([01]\.\d+)/)[1]);
      assert.ok(Math.abs(await ruleAt() - threshold) < 0.006, `${await rule.innerText()} at ${threshold}`);
      await screenshot(page, `flow-${mode.name}-4-predicted`);

      // Two classes: the threshold slider says what it does on the out-of-fold predictions and
      // moves the predictions: raised to 0.99, sensitivity can only fall and specificity only
      // rise, and PNEUMONIA is said only where its probability reaches 0.99.
      const effect = async () => (await page.getByTestId('threshold-effect').innerText())
        .match(/sensitivity ([01]\.\d+), specificity ([01]\.\d+)/).slice(1).map(Number);
      const [sensitivity, specificity] = await effect();
      await page.getByTestId('threshold').fill('0.99');
      await page.getByTestId('threshold-effect').filter({ hasText: /./ }).waitFor();
      const [raisedSensitivity, raisedSpecificity] = await effect();
      assert.ok(raisedSensitivity <= sensitivity && raisedSpecificity >= specificity,
        `${sensitivity}/${specificity} → ${raisedSensitivity}/${raisedSpecificity}`);
      for (let i = 0; i < 2; i++) {
        const label = await predictions.nth(i).getAttribute('data-label');
        const prob = Number(await predictions.nth(i).getAttribute('data-prob'));
        assert.ok(label === 'PNEUMONIA' ? prob >= 0.99 : prob > 0.01, `${label} ${prob} at 0.99`);
      }
      assert.equal(await ruleAt(), 0.99);
      // Training again replaces the model: the earlier predictions say they are the old one's.
      await page.getByTestId('train').click();
      await page.getByTestId('prediction-error').nth(1).waitFor({ timeout: 600_000 });
      assert.match(await page.getByTestId('prediction-error').nth(0).innerText(), /predicted by the previous model/);
      assert.equal(await predictions.count(), 0);
      // Usable in a narrow window too: nothing wider than 400 px once results are shown.
      await page.setViewportSize({ width: 400, height: 800 });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      await screenshot(page, `flow-${mode.name}-5-narrow`);
      assert.ok(overflow <= 0, `the page is ${overflow}px wider than a 400px window`);
      if (!mode.webgpu) {
        // The model restored after a reload keeps its out-of-distribution reference.
        await page.reload();
        await page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
        await waitForWorker(page);
        await page.getByTestId('predict-files').and(page.locator(':enabled')).waitFor({ timeout: 120_000 });
        await page.getByTestId('predict-files').setInputFiles([cat]);
        await predictions.nth(0).waitFor({ timeout: 300_000 });
        await assertOodWarnings(predictions, [0]);
      }
      assert.deepEqual(record.foreign, [], 'requests left the page origin');
      assert.deepEqual(record.errors, [], 'page errors');
    } finally {
      await browser.close();
    }
  });
}

/**
 * Asserts that prediction `odd` of `predictions` (the photo) carries the out-of-distribution
 * warning, that every other scores well below it, and that the warning is shown exactly where
 * a score is above 1.
 */
async function assertOodWarnings(predictions, [odd]) {
  const scores = [];
  for (let i = 0; i < await predictions.count(); i++) {
    const item = predictions.nth(i);
    const score = Number(await item.getAttribute('data-ood-score'));
    assert.ok(Number.isFinite(score) && score >= 0, `prediction ${i}: OOD score ${score}`);
    assert.equal(await item.getByTestId('ood-warning').count(), score > 1 ? 1 : 0, `prediction ${i}: OOD score ${score}`);
    if (score > 1) assert.match(await item.getByTestId('ood-warning').innerText(), /unlike the training images/i);
    scores.push(score);
  }
  console.log(`OOD scores: ${scores.map((s) => s.toFixed(3)).join(', ')}`);
  assert.ok(scores[odd] > 1, `the photo's OOD score ${scores[odd]}`);
  for (const [i, score] of scores.entries()) {
    if (i !== odd) assert.ok(score < 0.75 * scores[odd], `OOD scores ${scores}: ${i} is not well below the photo's`);
  }
}

// Picking a data set's folder (the same path a dropped folder takes: relative paths → classes)
// turns each sub-folder into a class, replacing the untouched starting classes.
test('a picked folder becomes one class per sub-folder', { skip: !available, timeout: 300_000 }, async () => {
  const { mkdtemp, mkdir, copyFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const root = await mkdtemp(join(tmpdir(), 'mt-folder-'));
  const dataset = join(root, 'xrays');
  for (const [cls, n] of [['NORMAL', 3], ['PNEUMONIA', 2]]) {
    await mkdir(join(dataset, cls), { recursive: true });
    for (const file of pick(join(chest, 'train', cls), n)) await copyFile(file, join(dataset, cls, file.split('/').pop()));
  }
  const browser = await launch({ webgpu: false });
  try {
    const { page, record } = await openPage(browser, server.origin);
    await page.goto(server.origin + '/');
    await waitForWorker(page);
    await page.getByTestId('folder-files').setInputFiles(dataset);
    const cards = page.getByTestId('class-card');
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 300_000 });
    assert.equal(await cards.count(), 2);
    assert.equal(await cards.nth(0).getByTestId('class-name').inputValue(), 'NORMAL');
    assert.equal(await cards.nth(1).getByTestId('class-name').inputValue(), 'PNEUMONIA');
    assert.equal(await cards.nth(0).getByTestId('class-count').innerText(), '3');
    assert.equal(await cards.nth(1).getByTestId('class-count').innerText(), '2');
    await screenshot(page, 'flow-folder-picked');
    // A narrow window: nothing wider than the viewport (no sideways scrolling).
    await page.setViewportSize({ width: 400, height: 800 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await screenshot(page, 'flow-folder-picked-narrow');
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a 400px window`);
    assert.deepEqual(record.foreign, []);
    assert.deepEqual(record.errors, []);
  } finally {
    await browser.close();
    await rm(root, { recursive: true, force: true });
  }
});
