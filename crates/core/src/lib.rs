//! MedTransfer's machine-learning core.
//!
//! Everything here compiles both natively and for `wasm32-unknown-unknown`, and reads tensors
//! back only asynchronously (synchronous reads panic on WebGPU in the browser). The browser app
//! and the `medtransfer` CLI are thin shells around this crate.
//!
//! - [`formats`]: image files (PNG, JPEG, TIFF, DICOM) to 8-bit images, safely;
//!   [`dataset_folder`]: which files of a data-set folder are images of which class;
//! - [`efficientnet`], [`preprocess`], [`inference`]: the frozen pretrained backbone;
//! - [`embeddings`], [`augment`]: embeddings computed once and cached, augmented views;
//! - [`split`], [`head`], [`train`]: splits, the classifier head and its training loop;
//! - [`metrics`]: medical classification metrics; [`model_file`]: the trained model as a file;
//! - [`thumbnail`]: small previews kept instead of originals; [`project_file`]: a whole project
//!   (classes, thumbnails, embeddings, model) as one file.

pub mod augment;
pub mod check;
pub mod dataset_folder;
pub mod device;
pub mod efficientnet;
pub mod embedding_map;
pub mod embeddings;
pub mod finetune;
pub mod formats;
pub mod gradcam;
pub mod head;
pub mod inference;
pub mod metrics;
pub mod model_file;
pub mod ood;
pub mod preprocess;
pub mod project_file;
pub mod readback;
pub mod recipe;
pub mod rng;
pub mod run;
pub mod smoke;
pub mod split;
#[cfg(test)]
pub(crate) mod test_support;
pub mod threshold;
pub mod thumbnail;
pub mod train;

pub use device::{BackendKind, ComputeDevice, GpuPreference, select_device};
