// Shared helpers for the browser tests: a static server for Trunk's `dist/`, Debian Chromium
// launched through playwright-core, and a page wrapper that records every request, page error
// and console error so that tests can assert that nothing leaves the page's origin.
import { before, after } from 'node:test';
import { createServer } from 'node:http';
import { readFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve, dirname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..');
export const distDir = resolve(process.env.MEDTRANSFER_DIST ?? join(repoRoot, 'dist'));
export const screenshotDir = join(repoRoot, 'target', 'screenshots');
export const sharedData = resolve(repoRoot, '..', 'shared', 'data');

/** The shared chest X-rays (../shared/data), and whether they are there: when not, says that
 * `what` is skipped. */
export function chestXrays(what) {
  const chest = join(sharedData, 'chest-xray-pneumonia');
  const available = existsSync(chest);
  if (!available) console.log(`SKIP ${what}: no shared medical images at ${chest}`);
  return { chest, available };
}

/** The paths of `n` JPEGs of `dir`, by name, after the first `skip`. */
export function pick(dir, n, skip = 0) {
  return readdirSync(dir).filter((f) => f.endsWith('.jpeg')).sort().slice(skip, skip + n).map((f) => join(dir, f));
}

/**
 * Serves `dist/` and makes a scratch folder named from `prefix` for the calling file's tests;
 * both go after them. Returns `{ server, scratch }`, filled in before the first test.
 */
export function servedWithScratch(prefix) {
  const served = {};
  before(async () => {
    served.server = await serveStatic();
    served.scratch = await mkdtemp(join(tmpdir(), prefix));
  });
  after(async () => {
    await served.server?.close();
    if (served.scratch) await rm(served.scratch, { recursive: true, force: true });
  });
  return served;
}

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.bin': 'application/octet-stream',
  '.mpk': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
};

/**
 * The headers a static host reads from `_headers` (Netlify / Cloudflare Pages format) for every
 * path (`/*`): the tests serve the page exactly as such a host would.
 */
export function parseHeadersFile(text) {
  const headers = {};
  let all = false;
  for (const line of text.split('\n')) {
    if (!line.trim() || line.trimStart().startsWith('#')) continue;
    if (!/^\s/.test(line)) { all = line.trim() === '/*'; continue; }
    const at = line.indexOf(':');
    if (all && at > 0) headers[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim();
  }
  return headers;
}

/** Serves `root` on 127.0.0.1 at a free port, with `root/_headers`; resolves to { origin, close() }. */
export async function serveStatic(root = distDir) {
  if (!existsSync(join(root, 'index.html'))) {
    throw new Error(`${root}/index.html is missing: build the app with Trunk first (scripts/test.sh does)`);
  }
  const extra = existsSync(join(root, '_headers')) ? parseHeadersFile(await readFile(join(root, '_headers'), 'utf8')) : {};
  const server = createServer(async (req, res) => {
    let path;
    try { path = decodeURIComponent(new URL(req.url, 'http://x').pathname); } catch { res.writeHead(400).end(); return; }
    const file = normalize(join(root, path === '/' ? 'index.html' : path));
    if (!file.startsWith(root + sep)) { res.writeHead(403).end(); return; }
    try {
      const body = await readFile(file);
      res.writeHead(200, { ...extra, 'content-type': MIME[extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => server.close(ok)) };
}

/** Flags that keep Chromium off the network (this machine has none) and quiet. */
const BASE_FLAGS = [
  '--headless=new', '--no-sandbox', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
];

/** Launches Debian's Chromium; `webgpu: true` adds `--enable-unsafe-webgpu`. */
export async function launch({ webgpu }) {
  const args = webgpu ? [...BASE_FLAGS, '--enable-unsafe-webgpu'] : BASE_FLAGS;
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args,
  });
}

/** Console lines that mean a kernel or the wasm module broke, whatever their level. */
const SUSPICIOUS = /panicked|Invalid ShaderModule|Validation Error|RuntimeError|unreachable/i;

/**
 * Opens a page that records: `all` (every request URL), `foreign` (requests to any other
 * origin), `errors` (uncaught page
 * errors and console errors), `logs` (every console line, for diagnosis).
 */
export async function openPage(browser, origin, viewport = { width: 1280, height: 800 }, contextOptions = {}) {
  const context = await browser.newContext({ viewport, acceptDownloads: true, ...contextOptions });
  const page = await context.newPage();
  const record = { foreign: [], errors: [], logs: [], all: [] };
  // Context-wide, so that the compute worker's requests are recorded too.
  context.on('request', (request) => {
    const url = request.url();
    record.all.push(url);
    if (!url.startsWith(origin + '/') && !url.startsWith('data:') && !url.startsWith('blob:')) {
      record.foreign.push(url);
    }
  });
  page.on('pageerror', (error) => record.errors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    record.logs.push(`${message.type()}: ${message.text()}`);
    if (message.type() === 'error') record.errors.push(`console.error: ${message.text()}`);
    // wgpu reports broken kernels as warnings while the page may still limp on: fail on those too.
    else if (SUSPICIOUS.test(message.text())) record.errors.push(`console.${message.type()}: ${message.text()}`);
  });
  // The compute worker's console: its panics and kernel errors count like the page's.
  page.on('worker', (worker) => {
    worker.on?.('console', (message) => {
      record.logs.push(`worker ${message.type()}: ${message.text()}`);
      if (message.type() === 'error' || SUSPICIOUS.test(message.text())) {
        record.errors.push(`worker console.${message.type()}: ${message.text()}`);
      }
    });
  });
  return { page, context, record };
}

/** Saves a full-page screenshot under target/screenshots/NAME.png for a person to look at. */
export async function screenshot(page, name) {
  await mkdir(screenshotDir, { recursive: true });
  const path = join(screenshotDir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Opens the page in a new context (see [`openPage`]), waits until the saved project is read
 * back and the compute worker is ready, and returns `openPage`'s `{ page, context, record }`
 * with `worker`, the worker line.
 */
export async function openProject(browser, origin) {
  const opened = await openPage(browser, origin);
  await opened.page.goto(origin + '/');
  await opened.page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 60_000 });
  return { ...opened, worker: await waitForWorker(opened.page) };
}

/**
 * Waits until the page's compute worker has loaded its network (or failed to) and returns the
 * worker line ("background worker on: WebGPU …"); `line` narrows what counts as ready.
 */
export async function waitForWorker(page, line = /background worker on:|failed/) {
  const backend = page.getByTestId('worker-backend');
  await backend.filter({ hasText: line }).waitFor({ timeout: 300_000 });
  return backend.innerText();
}
