//! Entry point of the wasm: in a page it mounts the Leptos app (see `lib.rs`); in the compute
//! Web Worker (`public/worker.js`) it mounts nothing and `worker_start` takes over.

fn main() {
    #[cfg(target_arch = "wasm32")]
    {
        console_error_panic_hook::set_once();
        if medtransfer_app::project::is_page() {
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
