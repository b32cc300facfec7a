// Browser benchmark (not a test): onnxruntime-web (wasm SIMD and WebGPU execution providers)
// against the MedTransfer app's WebGPU and CPU (`flex` in wasm) paths, in headless Debian
// Chromium on the same adapter, on the same chest X-ray JPEGs.
//
// One local server holds everything: the app's Trunk build at `/`, the onnxruntime-web page
// at `/bench/` with ort's JavaScript and wasm from node_modules at `/bench/ort/`, the ONNX graph
// (tools/bench/build_onnx.py) at `/bench/model.onnx` and the images at `/bench/images/`. Nothing
// is fetched from anywhere else (the run fails if a request leaves the origin).
//
// Two browsers: with --enable-unsafe-webgpu (app WebGPU against ort WebGPU) and without it
// (the app then falls back to its CPU path; against ort wasm, which does not use the GPU).
// In each, the app's page and the ort page stay open side by side and take turns, run by run
// (app, ort, app, ort, ...), so that load from other processes falls on both alike. Every
// timing covers the same work: reading the files, decoding, preprocessing, the forward pass
// and reading the results back; the first batch of 1 on each side is a warm-up (shader and
// kernel compilation) and is not counted.
//
// Usage: node tools/bench/browser/run.mjs --dist DIST --onnx MODEL.onnx --images IMG... --out OUT.json
//        [--batches 1,8] [--reps 3]
import { createServer } from 'node:http';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dist: { type: 'string' },
    onnx: { type: 'string' },
    out: { type: 'string' },
    batches: { type: 'string', default: '1,8' },
    reps: { type: 'string', default: '3' },
    images: { type: 'string', multiple: true, default: [] },
  },
});
const images = [...opts.images, ...positionals];
if (!opts.dist || !opts.onnx || !opts.out || images.length === 0) {
  console.error('usage: run.mjs --dist DIST --onnx MODEL.onnx --out OUT.json [--batches 1,8] [--reps 3] IMAGE...');
  process.exit(2);
}
const dist = resolve(opts.dist);
const batches = opts.batches.split(',').map(Number);
const reps = Number(opts.reps);
const ortDist = join(here, 'node_modules', 'onnxruntime-web', 'dist');
const ortVersion = JSON.parse(await readFile(join(here, 'node_modules', 'onnxruntime-web', 'package.json'))).version;

const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8', '.wasm': 'application/wasm', '.css': 'text/css',
  '.json': 'application/json', '.png': 'image/png', '.jpeg': 'image/jpeg', '.jpg': 'image/jpeg',
  '.svg': 'image/svg+xml',
};

/** Maps a URL path to a file (or null). */
function route(path) {
  const inside = (root, rel) => {
    const file = normalize(join(root, rel));
    return file.startsWith(root + sep) || file === root ? file : null;
  };
  if (path === '/bench/model.onnx') return resolve(opts.onnx);
  const image = path.match(/^\/bench\/images\/(\d+)\.[a-z]+$/);
  if (image) return images[Number(image[1])] ?? null;
  if (path.startsWith('/bench/ort/')) return inside(ortDist, path.slice('/bench/ort/'.length));
  if (path.startsWith('/bench/')) return inside(join(here, 'page'), path.slice('/bench/'.length) || 'index.html');
  return inside(dist, path === '/' ? 'index.html' : path.slice(1));
}

const server = createServer(async (req, res) => {
  let path;
  try { path = decodeURIComponent(new URL(req.url, 'http://x').pathname); } catch { res.writeHead(400).end(); return; }
  const file = route(path);
  const headers = {};
  if (path.startsWith('/bench/')) {
    // Cross-origin isolation for the ort page only, so that its wasm may use threads.
    headers['cross-origin-opener-policy'] = 'same-origin';
    headers['cross-origin-embedder-policy'] = 'require-corp';
  }
  try {
    if (!file) throw new Error('no route');
    const body = await readFile(file);
    res.writeHead(200, { ...headers, 'content-type': MIME[extname(file).toLowerCase()] ?? 'application/octet-stream' });
    res.end(body);
  } catch {
    if (path !== '/favicon.ico') console.error(`404 ${path}`);
    res.writeHead(404).end('not found');
  }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const origin = `http://127.0.0.1:${server.address().port}`;
const imageUrls = images.map((f, i) => `${origin}/bench/images/${i}${extname(f).toLowerCase()}`);

const FLAGS = ['--headless=new', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

async function openPages(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const foreign = [];
  context.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(origin + '/') && !url.startsWith('data:') && !url.startsWith('blob:')) foreign.push(url);
  });
  const app = await context.newPage();
  await app.goto(origin + '/');
  await app.locator('[data-testid="model-status"][data-state="ready"]').waitFor({ timeout: 600_000 });
  const backend = await app.getByTestId('backend').innerText();
  const ort = await context.newPage();
  const logs = [];
  ort.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  ort.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await ort.goto(origin + '/bench/');
  await ort.locator('#status[data-state="ready"]').waitFor({ timeout: 120_000 });
  const adapter = await ort.evaluate(async () => {
    if (!navigator.gpu) return null;
    const a = await navigator.gpu.requestAdapter();
    if (!a) return null;
    return { vendor: a.info?.vendor, architecture: a.info?.architecture, description: a.info?.description, device: a.info?.device, shaderF16: a.features.has('shader-f16') };
  });
  return { app, ort, backend, adapter, foreign, logs, userAgent: await ort.evaluate(() => navigator.userAgent) };
}

/** One timed pick of `n` images in the app; milliseconds as the app reports them. */
async function appRun(page, n) {
  const files = Array.from({ length: n }, (_, i) => images[i % images.length]);
  const timing = page.getByTestId('imagenet-timing');
  // The app clears its input after each pick and keeps the last timing until the next pick
  // finishes, so a new result is one whose count is `n` and whose time differs from the last.
  const before = await timing.getAttribute('data-ms');
  await page.getByTestId('imagenet-files').setInputFiles(files);
  await page.waitForFunction(([count, previous]) => {
    const el = document.querySelector('[data-testid="imagenet-timing"]');
    return el && el.getAttribute('data-count') === String(count) && el.getAttribute('data-ms') !== previous;
  }, [n, before], { timeout: 900_000, polling: 100 });
  const ms = Number(await timing.getAttribute('data-ms'));
  // Wait until the picker is enabled again before the next pick.
  await page.locator('[data-testid="imagenet-files"]:not([disabled])').waitFor({ timeout: 60_000 });
  return ms;
}

async function ortRun(page, ep, n, threads) {
  const r = await page.evaluate((args) => window.ortBench(args), { ep, batch: n, runs: 1, threads, images: imageUrls });
  return r.results[0];
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

const result = { date: new Date().toISOString(), ort_web_version: ortVersion, images: images.map((f) => basename(f)), batches, reps, comparisons: [] };
const comparisons = [
  { name: 'WebGPU', webgpu: true, ours: 'app WebGPU', peers: [{ label: 'onnxruntime-web webgpu', ep: 'webgpu', threads: 1 }] },
  { name: 'CPU', webgpu: false, ours: 'app CPU (own kernels in wasm, 1 thread)', peers: [
    { label: 'onnxruntime-web wasm SIMD, 1 thread', ep: 'wasm', threads: 1 },
    { label: 'onnxruntime-web wasm SIMD, 2 threads', ep: 'wasm', threads: 2 },
  ] },
];
try {
  for (const c of comparisons) {
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', headless: true,
      args: c.webgpu ? [...FLAGS, '--enable-unsafe-webgpu'] : FLAGS,
    });
    try {
      const pages = await openPages(browser);
      const entry = { name: c.name, app_backend: pages.backend, adapter: pages.adapter, user_agent: pages.userAgent, ours: c.ours, rows: {} };
      console.error(`${c.name}: app backend "${pages.backend}", adapter ${JSON.stringify(pages.adapter)}`);
      // Warm-up: shader/kernel compilation and session creation, not counted.
      await appRun(pages.app, 1);
      for (const p of c.peers) await ortRun(pages.ort, p.ep, 1, p.threads);
      for (const n of batches) {
        const row = { ours_ms: [], peers: Object.fromEntries(c.peers.map((p) => [p.label, { total_ms: [], forward_ms: [] }])) };
        for (let r = 0; r < reps; r++) {
          const ms = await appRun(pages.app, n);
          row.ours_ms.push(ms);
          console.error(`${c.name} batch ${n} rep ${r + 1}/${reps}: ${c.ours} ${ms.toFixed(0)} ms`);
          for (const p of c.peers) {
            const o = await ortRun(pages.ort, p.ep, n, p.threads);
            row.peers[p.label].total_ms.push(o.total_ms);
            row.peers[p.label].forward_ms.push(o.forward_ms);
            console.error(`${c.name} batch ${n} rep ${r + 1}/${reps}: ${p.label} ${o.total_ms.toFixed(0)} ms (forward ${o.forward_ms.toFixed(0)} ms)`);
          }
        }
        row.ours_per_s = n / (median(row.ours_ms) / 1000);
        for (const p of Object.values(row.peers)) {
          p.per_s = n / (median(p.total_ms) / 1000);
          p.forward_per_s = n / (median(p.forward_ms) / 1000);
          p.ratio = row.ours_per_s / p.per_s;
        }
        entry.rows[n] = row;
      }
      entry.cross_origin_isolated = await pages.ort.evaluate(() => crossOriginIsolated);
      entry.ort_page_log = pages.logs.slice(-20);
      if (pages.foreign.length) throw new Error(`requests left the origin: ${pages.foreign.join(', ')}`);
      result.comparisons.push(entry);
    } finally {
      await browser.close();
    }
  }
} finally {
  server.close();
}
await mkdir(dirname(resolve(opts.out)), { recursive: true });
await writeFile(opts.out, JSON.stringify(result, null, 1));
console.error(`wrote ${opts.out}`);
