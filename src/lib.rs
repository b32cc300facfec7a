//! MedTransfer's browser app: a Leptos client-side page, built by Trunk into WebAssembly.
//! The binary (`src/main.rs`) only mounts [`app::App`]; the work is in `medtransfer-core`.

pub mod app;
pub mod cached_fetch;
pub mod gpu_probe;
