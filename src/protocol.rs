//! The typed messages between the page and its compute Web Worker (`worker.rs`).
//!
//! Each message is a JS array `[json, bytes?]`: the JSON of a [`ToWorker`] or [`FromWorker`],
//! and for images and weights their bytes as a transferred `ArrayBuffer` (never copied as JSON).
//! Embeddings stay in the worker; the page only sees ids, progress, metrics and probabilities.

use medtransfer_core::metrics::Evaluation;
use medtransfer_core::train::{EpochSummary, TrainConfig};
use serde::{Deserialize, Serialize};

/// Identifies one image of the project (unique for the page's lifetime).
pub type ImageId = u32;

/// Page → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// The converted EfficientNet-Lite0 weights follow as bytes: load them.
    LoadModel,
    /// An image's bytes follow: compute (or take from the cache) its embedding.
    Embed {
        /// The image.
        id: ImageId,
    },
    /// Forget an image's embedding.
    Forget {
        /// The image.
        id: ImageId,
    },
    /// Train a head on these labelled images (their embeddings must be ready).
    Train {
        /// Class names in label order.
        classes: Vec<String>,
        /// `(image, label)` pairs.
        items: Vec<(ImageId, usize)>,
        /// Share of each class held out for validation.
        validation_share: f64,
        /// The settings.
        config: TrainConfig,
    },
    /// Stop training after the current epoch (the best epoch so far is kept).
    Stop,
    /// An image's bytes follow: predict its class with the trained head.
    Predict {
        /// The prediction's id.
        id: ImageId,
    },
}

/// Worker → page.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's wasm is running and takes messages.
    Started,
    /// The network is loaded; `backend` says where it runs.
    ModelReady {
        /// e.g. "WebGPU · SwiftShader ..." or "CPU · flex ... — reason".
        backend: String,
        /// Whether it is the GPU.
        gpu: bool,
    },
    /// The network could not be loaded.
    ModelFailed {
        /// Why.
        error: String,
    },
    /// An image's embedding is ready, or why it could not be computed.
    Embedded {
        /// The image.
        id: ImageId,
        /// `None` when it worked.
        error: Option<String>,
    },
    /// Training started.
    TrainStarted {
        /// Planned epochs.
        epochs: usize,
        /// Training and validation image counts.
        train_items: usize,
        /// Validation images.
        validation_items: usize,
    },
    /// One epoch finished.
    Epoch(EpochSummary),
    /// Training finished: the kept epoch and its validation metrics.
    Trained {
        /// The epoch whose weights are kept.
        kept_epoch: usize,
        /// Why it ended (`completed`, `early_stopped`, `cancelled`).
        stop_reason: String,
        /// Metrics on the validation images.
        validation: Option<Evaluation>,
        /// Image ids of the validation items, in the order of the evaluation's indices.
        validation_ids: Vec<ImageId>,
        /// Training time in milliseconds.
        millis: f64,
    },
    /// Training could not run or failed.
    TrainFailed {
        /// Why.
        error: String,
    },
    /// A prediction's class probabilities, or why it failed.
    Prediction {
        /// The prediction's id.
        id: ImageId,
        /// One probability per class, or the error.
        result: Result<Vec<f32>, String>,
    },
}
