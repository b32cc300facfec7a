// Benchmark (not a test): a project of 5,000 images in 100 classes in the page, and the tab's
// memory along the way. Two parts, CPU fallback (memory does not depend on the adapter):
//  A. import a synthetic 5,000 × 100 project file (thumbnails + embeddings, made by the
//     `synthetic_project` example), reload it from IndexedDB, train a linear head on it;
//  B. pick 5,000 real image files as a folder of 100 sub-folders (classes) and let the worker
//     embed for a while.
// Memory is the resident set (RSS) of all of Chromium's processes (page, worker, GPU, browser)
// read from /proc (the processes under this node process, minus node itself), so it is what
// the tab costs the machine.
// Usage (after `trunk build`, from the repository root; part B needs ../shared/data):
//   node bench/scale.mjs [images=5000] [classes=100] [embed-seconds=60]
// (embed-seconds 0 skips part B; `node bench/scale.mjs 1000 8 0` is the automatic recipe's
// page figure of issue 19: its search on 1,000 embeddings of 8 classes on the CPU path; with
// MEDTRANSFER_BENCH_EMBEDDINGS=FILE.json, from `medtransfer embed --json --data DIR`, part A
// imports those real embeddings instead of synthetic ones).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, mkdir, copyFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveStatic, launch, openPage, sharedData, repoRoot } from '../tests/browser/harness.mjs';

const images = Number(process.argv[2] ?? 5000);
const classes = Number(process.argv[3] ?? 100);
const embedSeconds = Number(process.argv[4] ?? 60);
const work = await mkdtemp(join(tmpdir(), 'medtransfer-scale-'));

/** RSS in MB of a process and all its descendants. */
function treeRssMb(pid) {
  const children = new Map();
  for (const entry of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch { /* gone */ }
  }
  let kb = 0;
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop();
    try {
      const m = readFileSync(`/proc/${p}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
      if (m) kb += Number(m[1]);
    } catch { /* gone */ }
    stack.push(...(children.get(p) ?? []));
  }
  return Math.round(kb / 1024);
}

const rows = [];
function note(step, ms, _pid, extra = '') {
  // Chromium runs as children of this node process: the tree's RSS minus node's own.
  const rssMb = treeRssMb(process.pid) - Math.round(process.memoryUsage().rss / 1048576);
  const row = { step, seconds: ms == null ? '' : (ms / 1000).toFixed(1), rssMb, extra };
  rows.push(row);
  console.log(`${row.step}: ${row.seconds} s, ${row.rssMb} MB ${extra}`);
}

const server = await serveStatic();
try {
  // A. import, reload, train.
  // MEDTRANSFER_BENCH_EMBEDDINGS: `medtransfer embed --json --data DIR` output, so that part A
  // trains on real embeddings (the images/classes arguments are then only labels).
  const projectFile = join(work, 'synthetic.mtproject');
  const real = process.env.MEDTRANSFER_BENCH_EMBEDDINGS;
  execFileSync('cargo', ['run', '-q', '-p', 'medtransfer-cli', '--example', 'synthetic_project', '--',
    projectFile, ...(real ? ['--from-embed', real] : [String(images), String(classes)])], { cwd: repoRoot, stdio: 'inherit' });
  {
    const browser = await launch({ webgpu: false });
    const pid = browser.process?.()?.pid;
    try {
      const { page, record } = await openPage(browser, server.origin);
      page.on('console', (m) => { if (m.type() === 'info') console.log(`  page: ${m.text()}`); });
      const ready = () => page.getByTestId('worker-backend').filter({ hasText: /background worker on:/ }).waitFor({ timeout: 300_000 });
      await page.goto(server.origin + '/');
      await ready();
      note('page loaded, empty project', null, pid);
      let t = Date.now();
      await page.getByTestId('import-project').setInputFiles(projectFile);
      await page.getByTestId('project-notice').filter({ hasText: /Imported|not imported/ }).waitFor({ timeout: 600_000 });
      await ready();
      note(`imported ${images} images × ${classes} classes`, Date.now() - t, pid, await page.getByTestId('project-notice').innerText());
      t = Date.now();
      await page.reload();
      await page.locator('[data-testid="project"][data-restored="true"]').waitFor({ timeout: 600_000 });
      await ready();
      note('reloaded from IndexedDB', Date.now() - t, pid, await page.getByTestId('embed-status').innerText());
      // The automatic recipe (the default): the whole search on the CPU path, then the refit.
      t = Date.now();
      await page.getByTestId('train').click();
      await page.getByTestId('train-status').filter({ hasText: /automatic recipe chose/ }).waitFor({ timeout: 1_800_000 });
      note('automatic recipe: cross-validated search + refit + out-of-fold metrics', Date.now() - t, pid,
        `${await page.getByTestId('train-status').innerText()}; out-of-fold accuracy ${await page.getByTestId('metric-accuracy').innerText()}`);
      await page.getByLabel(/^Recipe/).selectOption('manual');
      await page.getByLabel(/^Head/).selectOption('linear');
      const epochs = page.getByRole('spinbutton', { name: /^Epochs/ });
      await epochs.fill('10');
      await epochs.dispatchEvent('change');
      await page.getByLabel(/^Learning rate/).fill('0.001');
      await page.getByLabel(/^Learning rate/).dispatchEvent('change');
      t = Date.now();
      await page.getByTestId('train').click();
      await page.getByTestId('train-status').filter({ hasText: /kept epoch/ }).waitFor({ timeout: 1_800_000 });
      note('trained a linear head (10 epochs) + validation metrics', Date.now() - t, pid,
        `accuracy ${await page.getByTestId('metric-accuracy').innerText()}`);
    } finally {
      await browser.close();
    }
  }
  // B. a real pick of 5,000 files in 100 folders.
  const xray = join(sharedData, 'chest-xray-pneumonia', 'train', 'NORMAL', 'IM-0115-0001.jpeg');
  if (embedSeconds > 0 && existsSync(xray)) {
    const root = join(work, 'dataset');
    for (let c = 0; c < classes; c++) {
      await mkdir(join(root, `class-${String(c).padStart(3, '0')}`), { recursive: true });
    }
    for (let i = 0; i < images; i++) {
      await copyFile(xray, join(root, `class-${String(i % classes).padStart(3, '0')}`, `x-${i}.jpeg`));
    }
    const browser = await launch({ webgpu: false });
    const pid = browser.process?.()?.pid;
    try {
      const { page } = await openPage(browser, server.origin);
      await page.goto(server.origin + '/');
      await page.getByTestId('worker-backend').filter({ hasText: /background worker on:/ }).waitFor({ timeout: 300_000 });
      note('page loaded, empty project', null, pid);
      const t = Date.now();
      await page.getByTestId('folder-files').setInputFiles(root);
      await page.getByTestId('class-card').nth(classes - 1).waitFor({ timeout: 600_000 });
      note(`picked a folder: ${images} files in ${classes} sub-folders`, Date.now() - t, pid,
        `${await page.getByTestId('class-card').count()} classes`);
      await page.waitForTimeout(embedSeconds * 1000);
      note(`after ${embedSeconds} s of embedding`, null, pid, await page.getByTestId('embed-status').innerText());
    } finally {
      await browser.close();
    }
  } else {
    console.log(`part B skipped: no ${xray}`);
  }
} finally {
  await server.close();
  await rm(work, { recursive: true, force: true });
}
console.log('\n| step | seconds | Chromium RSS (MB) | notes |\n|---|---|---|---|');
for (const r of rows) console.log(`| ${r.step} | ${r.seconds} | ${r.rssMb} | ${r.extra.replace(/\n/g, ' ')} |`);
