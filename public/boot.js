// Starts the WebAssembly app. Trunk fills in the hashed file names (Trunk.toml `pattern_script`);
// a same-origin file rather than Trunk's inline loader keeps the Content-Security-Policy strict.
const tag = document.querySelector('script[data-js][data-wasm]');
const { default: init } = await import(tag.dataset.js);
await init({ module_or_path: tag.dataset.wasm });
