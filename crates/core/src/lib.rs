//! MedTransfer's machine-learning core.
//!
//! Everything here compiles both natively and for `wasm32-unknown-unknown`, and reads tensors
//! back only asynchronously (synchronous reads panic on WebGPU in the browser). The browser app
//! and the `medtransfer` CLI are thin shells around this crate.

pub mod device;
pub mod efficientnet;
pub mod inference;
pub mod preprocess;
pub mod readback;
pub mod smoke;

pub use device::{BackendKind, ComputeDevice, GpuPreference, select_device};
