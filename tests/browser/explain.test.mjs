// Grad-CAM in the page, on a task whose evidence is known: made images are `marked` when they
// have a mark in one place (both classes share the textures and the grey distractor squares).
// After training, the heat map of a marked image mislabelled as plain (misclassified out of
// fold, shown in the confusion matrix) and of each new marked image (toggled over its
// thumbnail) must peak on the mark; the embedding map shows every image, the mislabelled one
// flagged by the data check. Once on WebGPU, once on the CPU fallback; the images are drawn by the browser, so
// no shared data is needed. Screenshots under target/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serveStatic, launch, openPage, screenshot, waitForWorker } from './harness.mjs';

let server;
before(async () => { server = await serveStatic(); });
after(async () => { await server?.close(); });

/** Where the mark is, in 0–1 image coordinates (x right, y down). */
const MARK = { x: 0.7, y: 0.3 };

/**
 * PNG files of 224×224 made images, drawn in the page: a wavy grey background and four grey
 * squares from `seed`, and the mark (a white disc with a black rim) when `marked`.
 */
async function madeImages(page, prefix, seeds, marked) {
  const encoded = await page.evaluate(async ({ seeds, marked, mark }) => {
    const out = [];
    for (const seed of seeds) {
      let state = seed * 2654435761 % 4294967296 + 1;
      const next = () => { state = (state * 1664525 + 1013904223) % 4294967296; return state / 4294967296; };
      const canvas = new OffscreenCanvas(224, 224);
      const g = canvas.getContext('2d');
      const [fx, fy, phase] = [next() * 0.1 + 0.02, next() * 0.1 + 0.02, next() * 6];
      const pixels = g.createImageData(224, 224);
      for (let y = 0; y < 224; y++) {
        for (let x = 0; x < 224; x++) {
          const v = 110 + (Math.sin(x * fx + phase) + Math.cos(y * fy)) * 25;
          const i = (y * 224 + x) * 4;
          pixels.data.set([v, v, v, 255], i);
        }
      }
      g.putImageData(pixels, 0, 0);
      for (let k = 0; k < 4; k++) {
        const [sx, sy, level] = [next() * 200, next() * 200, 40 + next() * 120];
        g.fillStyle = `rgb(${level},${level},${level})`;
        g.fillRect(Math.floor(sx), Math.floor(sy), 20, 20);
      }
      if (marked) {
        g.beginPath(); g.arc(mark.x * 224, mark.y * 224, 17, 0, 2 * Math.PI); g.fillStyle = '#000'; g.fill();
        g.beginPath(); g.arc(mark.x * 224, mark.y * 224, 14, 0, 2 * Math.PI); g.fillStyle = '#fff'; g.fill();
      }
      const bytes = new Uint8Array(await (await canvas.convertToBlob({ type: 'image/png' })).arrayBuffer());
      let binary = '';
      for (const b of bytes) binary += String.fromCharCode(b);
      out.push(btoa(binary));
    }
    return out;
  }, { seeds, marked, mark: MARK });
  return encoded.map((b64, i) => ({ name: `${prefix}-${i}.png`, mimeType: 'image/png', buffer: Buffer.from(b64, 'base64') }));
}

for (const mode of [
  { name: 'webgpu', webgpu: true, expect: /WebGPU/ },
  { name: 'cpu-fallback', webgpu: false, expect: /CPU/ },
]) {
  test(`Grad-CAM heat maps peak on the deciding mark on ${mode.name}`, { timeout: 900_000 }, async () => {
    const browser = await launch({ webgpu: mode.webgpu });
    try {
      const { page, record } = await openPage(browser, server.origin);
      await page.goto(server.origin + '/');
      assert.match(await waitForWorker(page), mode.expect);
      const cards = page.getByTestId('class-card');
      await cards.nth(0).getByTestId('class-name').fill('marked');
      await cards.nth(1).getByTestId('class-name').fill('plain');
      const seeds = (odd) => Array.from({ length: 8 }, (_, i) => 2 * i + odd);
      await cards.nth(0).getByTestId('class-files').setInputFiles(await madeImages(page, 'marked', seeds(1), true));
      await cards.nth(1).getByTestId('class-files').setInputFiles(await madeImages(page, 'plain', seeds(0), false));
      // A labelling error: a marked image filed as plain. The model calls it marked out of fold.
      await cards.nth(1).getByTestId('class-files').setInputFiles(await madeImages(page, 'mislabelled', [501], true));
      await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 600_000 });
      await page.getByTestId('train').click();
      await page.getByTestId('metric-accuracy').waitFor({ timeout: 600_000 });

      // The mislabelled image sits in the confusion matrix's plain → marked cell; its heat map
      // (asked of the worker when the toggle is turned on) peaks on the mark too.
      const wrong = page.getByTestId('misclassified-thumb');
      assert.ok(await wrong.count() >= 1, 'the mislabelled image is misclassified');
      assert.equal(await wrong.getByTestId('heatmap').count(), 0);
      await page.getByTestId('validation-gradcam-toggle').check();
      const wrongMap = wrong.filter({ has: page.locator('img[alt="mislabelled-0.png"]') }).getByTestId('heatmap');
      await wrongMap.waitFor({ timeout: 300_000 });
      const [wx, wy] = [Number(await wrongMap.getAttribute('data-peak-x')), Number(await wrongMap.getAttribute('data-peak-y'))];
      console.log(`${mode.name}: the mislabelled image's map peaks at (${wx.toFixed(3)}, ${wy.toFixed(3)})`);
      assert.ok(Math.abs(wx - MARK.x) <= 0.15 && Math.abs(wy - MARK.y) <= 0.15, `peak (${wx}, ${wy})`);
      await screenshot(page, `explain-${mode.name}-misclassified`);
      // Training again replaces the model: with the toggle still on, its maps come by themselves.
      await page.getByTestId('train').click();
      await page.locator('[data-testid="train-status"][data-running="true"]').waitFor({ timeout: 10_000 }).catch(() => {});
      await page.locator('[data-testid="train-status"][data-running="false"]').waitFor({ timeout: 600_000 });
      await wrong.filter({ has: page.locator('img[alt="mislabelled-0.png"]') }).getByTestId('heatmap').waitFor({ timeout: 300_000 });

      // The embedding map: every image a point, the mislabelled one ringed as misclassified
      // and flagged by the data check as a label suspect, its thumbnail shown on hover.
      await page.getByTestId('draw-map').click();
      const points = page.getByTestId('map-point');
      await points.nth(16).waitFor({ timeout: 120_000 });
      assert.equal(await points.count(), 17);
      assert.equal(await page.locator('[data-testid="map-point"][data-class="marked"]').count(), 8);
      const suspect = page.locator('[data-testid="map-point"][aria-label="mislabelled-0.png, plain"]');
      assert.match(await suspect.getAttribute('data-flags'), /label_suspect/);
      assert.match(await suspect.getAttribute('class'), /misclassified/);
      assert.match(await page.getByTestId('map-findings').innerText(), /label suspect: mislabelled-0\.png\. Labelled plain, but its 5 most similar images are all marked/);
      await suspect.hover();
      assert.equal(await page.getByTestId('map-preview').locator('figcaption').innerText(), 'mislabelled-0.png');
      assert.match(await page.getByTestId('map-axes').innerText(), /^17 images\. Across: the first principal component \(\d+%/);
      await screenshot(page, `explain-${mode.name}-map`);

      const fresh = await madeImages(page, 'new-marked', [1001, 1002], true);
      await page.getByTestId('predict-files').setInputFiles(fresh);
      const predictions = page.getByTestId('prediction');
      await predictions.nth(1).waitFor({ timeout: 300_000 });
      // Off by default: a prediction shows no heat map until asked.
      assert.equal(await predictions.getByTestId('heatmap').count(), 0);
      await page.getByTestId('gradcam-toggle').check();
      assert.equal(await predictions.getByTestId('heatmap').count(), 2);
      for (let i = 0; i < 2; i++) {
        assert.equal(await predictions.nth(i).getAttribute('data-label'), 'marked');
        const map = predictions.nth(i).getByTestId('heatmap');
        const [x, y] = [Number(await map.getAttribute('data-peak-x')), Number(await map.getAttribute('data-peak-y'))];
        console.log(`${mode.name}: prediction ${i} peaks at (${x.toFixed(3)}, ${y.toFixed(3)}), the mark is at (${MARK.x}, ${MARK.y})`);
        assert.ok(Math.abs(x - MARK.x) <= 0.15 && Math.abs(y - MARK.y) <= 0.15, `peak (${x}, ${y})`);
        assert.match(await map.getAttribute('src'), /^data:image\/png;base64,/);
        const box = await map.boundingBox();
        const thumb = await predictions.nth(i).locator('.thumb img').first().boundingBox();
        assert.deepEqual([box.x, box.y, box.width, box.height], [thumb.x, thumb.y, thumb.width, thumb.height], 'the map covers its thumbnail');
      }
      await screenshot(page, `explain-${mode.name}-heatmaps`);
      await page.getByTestId('gradcam-toggle').uncheck();
      assert.equal(await predictions.getByTestId('heatmap').count(), 0);
      assert.deepEqual(record.foreign, [], 'requests left the page origin');
      assert.deepEqual(record.errors, [], 'page errors');
    } finally {
      await browser.close();
    }
  });
}
