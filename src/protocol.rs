//! The typed messages between the page and its compute Web Worker (`worker.rs`).
//!
//! Each message is a JS array `[json, bytes?]`: the JSON of a [`ToWorker`] or [`FromWorker`],
//! and for images and weights their bytes as a transferred `ArrayBuffer` (never copied as JSON).
//! Embeddings are computed in the worker; it sends each one back with the image's thumbnail,
//! so that the page can keep the project in IndexedDB and hand it to a new worker after a
//! reload or a crash ([`ToWorker::Restore`]).

use medtransfer_core::metrics::Evaluation;
use medtransfer_core::train::{EpochSummary, TrainConfig};
use serde::{Deserialize, Serialize};

/// Identifies one image of the project (unique within the project, kept across reloads).
pub type ImageId = u32;

/// Bytes of one embedding on the wire and in storage: the core's embedding byte format
/// ([`medtransfer_core::embeddings::encode_embedding`]).
pub const EMBEDDING_BYTES: usize = medtransfer_core::efficientnet::EMBEDDING_DIM * 4;

/// Page → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// The converted EfficientNet-Lite0 weights follow as bytes: load them.
    LoadModel {
        /// Use the CPU even if WebGPU works (after the GPU was lost).
        force_cpu: bool,
    },
    /// Embeddings computed earlier follow as bytes (little-endian `f32`, one row of
    /// [`EMBEDDING_BYTES`] per id, in order): keep them as if just computed.
    Restore {
        /// The images, in the order of their rows.
        ids: Vec<ImageId>,
    },
    /// A model file (`.mtmodel`) follows as bytes: predict with it.
    LoadClassifier,
    /// An image's bytes follow: classify it into the 1,000 ImageNet classes (logits).
    Classify {
        /// The request's id.
        id: ImageId,
    },
    /// Test hook: fail the way a lost GPU makes the worker fail (a panic, which kills its wasm),
    /// so that tests can check that the page recovers on the CPU.
    SimulateCrash,
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
    /// An image's embedding is ready, or why it could not be computed. When it worked, the bytes
    /// are the embedding ([`EMBEDDING_BYTES`]) followed by the JPEG thumbnail.
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
    /// Training finished: the kept epoch and its validation metrics. The bytes are the model
    /// file (`.mtmodel`).
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
    /// A model file sent with [`ToWorker::LoadClassifier`] is in use, or why not.
    ClassifierLoaded {
        /// `None` when it worked.
        error: Option<String>,
    },
    /// ImageNet logits of a [`ToWorker::Classify`] request, or why it failed.
    Classified {
        /// The request's id.
        id: ImageId,
        /// 1,000 logits, or the error.
        result: Result<Vec<f32>, String>,
    },
    /// A prediction's class probabilities, or why it failed; the image's JPEG thumbnail follows
    /// as transferred bytes when it could be decoded.
    Prediction {
        /// The prediction's id.
        id: ImageId,
        /// One probability per class, or the error.
        result: Result<Vec<f32>, String>,
    },
}
