// Starts the WebAssembly app. Trunk fills in the hashed file names (Trunk.toml `pattern_script`);
// a same-origin file rather than Trunk's inline loader keeps the Content-Security-Policy strict.
// The names are kept on `globalThis.medtransferBoot` for the compute worker (public/worker.js),
// which loads the same wasm.
const tag = document.querySelector('script[data-js][data-wasm]');
globalThis.medtransferBoot = { js: new URL(tag.dataset.js, location.href).href, wasm: new URL(tag.dataset.wasm, location.href).href };
const { default: init } = await import(tag.dataset.js);
await init({ module_or_path: tag.dataset.wasm });
