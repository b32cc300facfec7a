//! MedTransfer's browser app: a Leptos client-side page, built by Trunk into WebAssembly.
//! The binary (`src/main.rs`) mounts [`app::App`] in the page and runs [`worker`] in the compute
//! Web Worker; the work itself is in `medtransfer-core`.

pub mod app;
pub mod cached_fetch;
pub mod components;
pub mod dom;
pub mod gpu_probe;
pub mod protocol;
pub mod state;
pub mod storage;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod worker;
pub mod worker_client;
