//! Entry point of the page: mounts the Leptos app (see `lib.rs`).

fn main() {
    #[cfg(target_arch = "wasm32")]
    {
        console_error_panic_hook::set_once();
        leptos::mount::mount_to_body(medtransfer_app::app::App);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!(
        "medtransfer-app is a web page: build and serve it with Trunk (see README.md), \
         or use the `medtransfer` CLI natively."
    );
}
