// onnxruntime-web side of the browser benchmark (driven by tools/bench/browser/run.mjs).
// `window.ortBench({ ep, batch, runs, threads })` times, per run, what the app's timing covers:
// fetching the image files' bytes from this origin, decoding them (the browser's decoder),
// preprocessing to [N, 3, 224, 224] with (x - 127) / 128, the forward pass and reading the
// embeddings and logits back. It also reports the forward pass + read-back alone.
import * as ort from './ort/ort.all.min.mjs';

ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;
const log = (line) => { document.getElementById('log').textContent += line + '\n'; };

const sessions = new Map();
async function session(ep, threads) {
  const key = `${ep}/${threads}`;
  if (!sessions.has(key)) {
    ort.env.wasm.numThreads = threads;
    const started = performance.now();
    const s = await ort.InferenceSession.create('./model.onnx', {
      executionProviders: [ep],
      graphOptimizationLevel: 'all',
    });
    log(`${key}: session created in ${(performance.now() - started).toFixed(0)} ms`);
    sessions.set(key, s);
  }
  return sessions.get(key);
}

async function preprocess(urls) {
  const n = urls.length;
  const data = new Float32Array(n * 3 * 224 * 224);
  const canvas = new OffscreenCanvas(224, 224);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  for (let i = 0; i < n; i++) {
    const blob = await (await fetch(urls[i])).blob();
    const bitmap = await createImageBitmap(blob, { resizeWidth: 224, resizeHeight: 224, resizeQuality: 'medium' });
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    const rgba = ctx.getImageData(0, 0, 224, 224).data;
    const plane = 224 * 224;
    const base = i * 3 * plane;
    for (let p = 0; p < plane; p++) {
      data[base + p] = (rgba[4 * p] - 127) / 128;
      data[base + plane + p] = (rgba[4 * p + 1] - 127) / 128;
      data[base + 2 * plane + p] = (rgba[4 * p + 2] - 127) / 128;
    }
  }
  return new ort.Tensor('float32', data, [n, 3, 224, 224]);
}

window.ortBench = async ({ ep, batch, runs, threads = 1, images }) => {
  const s = await session(ep, threads);
  const urls = Array.from({ length: batch }, (_, i) => images[i % images.length]);
  const results = [];
  for (let r = 0; r < runs; r++) {
    const started = performance.now();
    const input = await preprocess(urls);
    const forwardStarted = performance.now();
    const out = await s.run({ input });
    const embedding = await out.embedding.getData();
    await out.logits.getData();
    const ended = performance.now();
    if (embedding.length !== batch * 1280) throw new Error(`embedding has ${embedding.length} values`);
    results.push({ total_ms: ended - started, forward_ms: ended - forwardStarted, first: Array.from(embedding.slice(0, 4)) });
    log(`${ep} threads ${threads} batch ${batch} run ${r + 1}/${runs}: ${(ended - started).toFixed(0)} ms (forward ${(ended - forwardStarted).toFixed(0)} ms)`);
  }
  return { ep, threads, batch, ort_version: ort.env.versions?.web ?? null, crossOriginIsolated, results };
};

const status = document.getElementById('status');
status.textContent = `onnxruntime-web ${ort.env.versions?.web ?? '?'} ready; WebGPU: ${'gpu' in navigator}; cross-origin isolated: ${crossOriginIsolated}`;
status.dataset.state = 'ready';
