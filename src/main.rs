//! MedTransfer's browser app: a Leptos client-side page, built by Trunk into WebAssembly.

mod app;
mod gpu_probe;

fn main() {
    #[cfg(target_arch = "wasm32")]
    {
        console_error_panic_hook::set_once();
        leptos::mount::mount_to_body(app::App);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!(
        "medtransfer-app is a web page: build and serve it with Trunk (see README.md), \
         or use the `medtransfer` CLI natively."
    );
}
