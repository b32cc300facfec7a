//! Entry point of the wasm: in a page it mounts the Leptos app (see `lib.rs`); in the compute
//! Web Worker (`public/worker.js`) it mounts nothing and `worker_start` takes over.

// The static constructors (pliron, inside Burn's kernel compiler, registers hundreds through
// `inventory`). Calling them once here tells the linker not to wrap every export in a call to
// them: that wrapping cost about half a millisecond per call between JavaScript and Rust, that
// is on every DOM update, message and IndexedDB record (see inventory's docs on wasm).
#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

fn main() {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: `main` runs once per instance (wasm-bindgen's start), before any other Rust
        // code; the constructors only register static items.
        unsafe { __wasm_call_ctors() };
        console_error_panic_hook::set_once();
        if medtransfer_app::dom::is_page() {
            leptos::mount::mount_to_body(medtransfer_app::app::App);
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!(
        "medtransfer-app is a web page: build and serve it with Trunk (see README.md), \
         or use the `medtransfer` CLI natively."
    );
}

/// Called by `public/worker.js` once the wasm is loaded in the worker: starts answering the
/// page's messages.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn worker_start() {
    console_error_panic_hook::set_once();
    medtransfer_app::worker::start();
}
