// Medical formats in the page: DICOM files (with and without an extension), 16-bit PNG and TIFF
// are dropped onto the class cards, decoded by the core in the worker (wasm), embedded, trained
// on and predicted; bad files (random bytes named .dcm, a DICOM in a refused transfer syntax, a
// 50,000 × 50,000 PNG header, an empty file, text named .png) are each reported with a reason
// while the rest go on. The thumbnails of two real DICOM files (pydicom's CT_small and
// MR_small) are compared with the renderings of an independent numpy + pydicom implementation
// (tests/fixtures/dicom/, see tools/fixtures/dicom_golden.py).
//
// Always runs on the small DICOM and 16-bit files committed in fuzz/corpus/decode_preprocess/;
// the real DICOM samples come from scripts/setup.sh (MEDTRANSFER_DICOM_SAMPLES, default
// ~/.cache/medtransfer/dicom-samples) and their part is skipped with a message when absent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { serveStatic, launch, openPage, screenshot, repoRoot, waitForWorker } from './harness.mjs';

const seeds = join(repoRoot, 'fuzz', 'corpus', 'decode_preprocess');
const samplesDir = process.env.MEDTRANSFER_DICOM_SAMPLES ?? join(homedir(), '.cache', 'medtransfer', 'dicom-samples');
const samplesAvailable = existsSync(join(samplesDir, 'CT_small.dcm'));
if (!samplesAvailable) {
  console.log(`SKIP the real-DICOM part of the formats test: no pydicom samples in ${samplesDir} (scripts/setup.sh fetches them)`);
}
const golden = join(repoRoot, 'tests', 'fixtures', 'dicom');

/** A file for the page: its name and bytes. */
const file = (name, bytes) => ({ name, bytes: Buffer.from(bytes) });
const seed = (name, as = name) => file(as, readFileSync(join(seeds, name)));
const sample = (name) => file(name, readFileSync(join(samplesDir, name)));

/** CRC-32 (PNG chunks). */
function crc32(bytes) {
  let crc = ~0;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc >>> 0;
}

/** A PNG whose header declares 50,000 × 50,000 RGBA pixels (10 GB decoded) in 77 bytes. */
function pngBomb() {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(50_000, 0);
  ihdr.writeUInt32BE(50_000, 4);
  ihdr.set([8, 6, 0, 0, 0], 8); // 8 bits, RGBA, deflate, no filter, no interlace
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk('IEND', Buffer.alloc(0))]);
}

/** Deterministic noise. */
function noise(n, seedValue = 12345) {
  const out = Buffer.alloc(n);
  let x = seedValue;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Drops `files` onto the class card as a user's drag and drop does (a `drop` event with them). */
async function dropOnto(card, files) {
  const payload = files.map((f) => ({ name: f.name, data: f.bytes.toString('base64') }));
  const dataTransfer = await card.page().evaluateHandle((items) => {
    const transfer = new DataTransfer();
    for (const { name, data } of items) {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      transfer.items.add(new File([bytes], name));
    }
    return transfer;
  }, payload);
  await card.dispatchEvent('drop', { dataTransfer });
}

/**
 * Mean absolute difference, in grey levels, between the thumbnail shown for `name` and a golden
 * PNG of the same size (both drawn on a canvas in the page; RGB channels averaged).
 */
async function thumbnailDifference(page, name, goldenPng) {
  const goldenUrl = 'data:image/png;base64,' + readFileSync(goldenPng).toString('base64');
  return page.evaluate(async ({ name, goldenUrl }) => {
    const shown = [...document.querySelectorAll('[data-testid="class-card"] img')].find((img) => img.alt === name);
    if (!shown) return { error: `no thumbnail for ${name}` };
    const reference = new Image();
    reference.src = goldenUrl;
    await Promise.all([shown.decode(), reference.decode()]);
    const pixels = (img) => {
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const context = canvas.getContext('2d');
      context.drawImage(img, 0, 0);
      return context.getImageData(0, 0, canvas.width, canvas.height).data;
    };
    if (shown.naturalWidth !== reference.naturalWidth || shown.naturalHeight !== reference.naturalHeight) {
      return { error: `${name}: thumbnail ${shown.naturalWidth}×${shown.naturalHeight}, golden ${reference.naturalWidth}×${reference.naturalHeight}` };
    }
    const a = pixels(shown);
    const b = pixels(reference);
    let sum = 0;
    let spread = 0;
    const n = a.length / 4;
    let mean = 0;
    for (let i = 0; i < a.length; i += 4) mean += (a[i] + a[i + 1] + a[i + 2]) / 3 / n;
    for (let i = 0; i < a.length; i += 4) {
      const grey = (a[i] + a[i + 1] + a[i + 2]) / 3;
      sum += Math.abs(grey - (b[i] + b[i + 1] + b[i + 2]) / 3);
      spread += Math.abs(grey - mean);
    }
    return { difference: sum / n, spread: spread / n };
  }, { name, goldenUrl });
}

let server;
before(async () => { server = await serveStatic(); });
after(async () => { await server?.close(); });

test('DICOM and 16-bit images dropped into the page: decoded, trained on, predicted; bad files reported each', { timeout: 900_000 }, async () => {
  const browser = await launch({ webgpu: false });
  try {
    const { page, record } = await openPage(browser, server.origin);
    await page.goto(server.origin + '/');
    await waitForWorker(page);
    assert.match(await page.getByTestId('worker-backend').innerText(), /CPU/);

    const first = [
      seed('mono16_window.dcm'), // 16-bit, window from the header
      seed('multiframe.dcm'), // the middle frame
      seed('mono1_auto.dcm', 'IM000001'), // no extension: recognised by its DICM preamble
      seed('grey16.png'),
      seed('grey16.tif'),
    ];
    const second = [seed('SC_rgb_rle.dcm'), seed('SC_rgb_jpeg_gdcm.dcm'), seed('mono8_deflated.dcm'), seed('mono16_rle.dcm')];
    if (samplesAvailable) {
      first.push(sample('CT_small.dcm'));
      second.push(sample('MR_small.dcm'));
    }
    const bad = [
      file('noise.dcm', noise(4096)),
      file('bomb.png', pngBomb()),
      file('empty.png', Buffer.alloc(0)),
      file('notes.png', 'Patient notes, not an image\n'),
    ];
    if (samplesAvailable) bad.push(sample('MR_small_jp2klossless.dcm'));

    const cards = page.getByTestId('class-card');
    await cards.nth(0).getByTestId('class-name').fill('first');
    await cards.nth(1).getByTestId('class-name').fill('second');
    await dropOnto(cards.nth(0), first);
    await dropOnto(cards.nth(1), [...second, ...bad]);
    await page.locator('[data-testid="embed-status"][data-pending="0"]').waitFor({ timeout: 600_000 });
    await screenshot(page, 'formats-1-dropped');

    assert.equal(await cards.nth(0).getByTestId('class-count').innerText(), String(first.length));
    assert.equal(await cards.nth(1).getByTestId('class-count').innerText(), String(second.length));
    assert.equal(await cards.nth(0).getByTestId('class-rejected').locator('li').count(), 0,
      await cards.nth(0).getByTestId('class-rejected').innerText());
    const rejected = await cards.nth(1).getByTestId('class-rejected').innerText();
    assert.equal(await cards.nth(1).getByTestId('class-rejected').locator('li').count(), bad.length, rejected);
    assert.match(rejected, /noise\.dcm: cannot decode the file: it is not in a recognised image format/);
    assert.match(rejected, /bomb\.png: the image is too large: 50000×50000/);
    assert.match(rejected, /empty\.png: empty file \(0 bytes\)/);
    assert.match(rejected, /notes\.png: cannot decode/);
    if (samplesAvailable) assert.match(rejected, /MR_small_jp2klossless\.dcm: .*JPEG 2000.*not supported/);

    // Every accepted file has a thumbnail that is not flat.
    for (const [card, files] of [[cards.nth(0), first], [cards.nth(1), second]]) {
      for (const { name } of files) {
        const img = card.locator(`img[alt="${name}"]`);
        assert.equal(await img.count(), 1, `thumbnail of ${name}`);
      }
    }
    if (samplesAvailable) {
      // The worker's rendering of real CT and MR files against the independent one (the
      // thumbnail is a JPEG at quality 80 of the 8-bit rendering, the same size for these).
      for (const [name, png] of [['CT_small.dcm', 'CT_small.png'], ['MR_small.dcm', 'MR_small.png']]) {
        const result = await thumbnailDifference(page, name, join(golden, png));
        assert.ok(!result.error, result.error);
        console.log(`${name}: thumbnail vs golden rendering: mean |difference| ${result.difference.toFixed(2)} grey levels (spread ${result.spread.toFixed(1)})`);
        assert.ok(result.spread > 10, `${name}: the thumbnail is nearly flat (spread ${result.spread})`);
        assert.ok(result.difference < 4, `${name}: thumbnail differs from the golden rendering by ${result.difference} grey levels on average`);
      }
    }

    await page.getByTestId('train').click();
    await page.getByTestId('metric-accuracy').waitFor({ timeout: 600_000 });
    await screenshot(page, 'formats-2-trained');

    // Predicting a DICOM file (through the file picker of the prediction section).
    const toPredict = samplesAvailable ? sample('CT_small.dcm') : seed('mono16_window.dcm');
    await page.getByTestId('predict-files').setInputFiles([{ name: toPredict.name, mimeType: 'application/dicom', buffer: toPredict.bytes }]);
    const prediction = page.getByTestId('prediction').first();
    await prediction.waitFor({ timeout: 300_000 });
    assert.ok(['first', 'second'].includes(await prediction.getAttribute('data-label')));
    // The browser cannot show a DICOM itself: the prediction shows the worker's thumbnail.
    const shown = prediction.locator('img');
    await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, await shown.elementHandle(), { timeout: 30_000 });
    await screenshot(page, 'formats-3-predicted');

    assert.deepEqual(record.foreign, [], 'requests left the page origin');
    assert.deepEqual(record.errors, [], 'page errors');
  } finally {
    await browser.close();
  }
});
