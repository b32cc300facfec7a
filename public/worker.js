// The compute Web Worker: loads the page's own wasm (its URLs come in the first message, from
// boot.js) and hands over to Rust (`worker_start`, src/worker.rs), which answers every later
// message. Decoding, the network and training run here, so the page never freezes.
// Messages that arrive while the wasm loads are kept and handed to Rust once it listens.
const early = [];
self.onmessage = async (event) => {
  self.onmessage = (later) => early.push(later);
  const { js, wasm } = event.data;
  try {
    const module = await import(js);
    await module.default({ module_or_path: wasm });
    module.worker_start();
    for (const message of early.splice(0)) self.onmessage?.(message);
  } catch (error) {
    self.postMessage([JSON.stringify({ type: 'model_failed', error: `the compute worker could not start: ${error}` })]);
  }
};
