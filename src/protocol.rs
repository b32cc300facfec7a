//! The typed messages between the page and its compute Web Worker (`worker.rs`).
//!
//! Both sides frame every message the same way, as an [`Envelope`]: on the wire a JS array
//! `[json, bytes?]`, the JSON of a [`ToWorker`] or [`FromWorker`] and, for images, weights and
//! model files, their bytes as a transferred `ArrayBuffer` (moved, never copied or put in JSON).
//! Embeddings are computed in the worker; it sends each one back with the image's thumbnail,
//! so that the page can keep the project in IndexedDB and hand it to a new worker after a
//! reload or a crash ([`ToWorker::Restore`]).

use js_sys::{Array, ArrayBuffer, Uint8Array};
use medtransfer_core::metrics::Evaluation;
use medtransfer_core::recipe::Search;
use medtransfer_core::run::RunConfig;
use medtransfer_core::threshold::Threshold;
use medtransfer_core::train::{EpochSummary, StopReason};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};

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
    /// Test hook, obeyed only by builds with the `test-hooks` feature: panic (which kills the
    /// worker's wasm), as a lost GPU does (`device_lost`) or as a bug does, so that tests can
    /// check how the page recovers.
    SimulateCrash {
        /// Whether the panic says the GPU device was lost.
        device_lost: bool,
    },
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
        /// The settings, validation share included.
        config: RunConfig,
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
    /// The worker's wasm panicked and is about to die: its last words (which say, for
    /// instance, whether the GPU device was lost). Sent from the panic hook.
    Crashed {
        /// The panic's message and location.
        message: String,
    },
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
    /// The automatic recipe's cross-validation: `done` of `total` fold fits finished.
    Searching {
        /// Fold fits finished.
        done: usize,
        /// All fold fits.
        total: usize,
    },
    /// One epoch (of the linear head's solver: one iteration) finished.
    Epoch(EpochSummary),
    /// Training finished: the kept epoch and its validation metrics. The bytes are the model
    /// file (`.mtmodel`).
    Trained {
        /// The epoch whose weights are kept.
        kept_epoch: usize,
        /// Why it ended.
        stop_reason: StopReason,
        /// Metrics on the validation images, or (automatic recipe) the out-of-fold metrics of
        /// every image.
        validation: Option<Box<Evaluation>>,
        /// Image ids of the evaluated items, in the order of the evaluation's indices.
        validation_ids: Vec<ImageId>,
        /// The automatic recipe's search (without its per-item probabilities).
        search: Option<Box<Search>>,
        /// Two classes: the decision threshold chosen for the model.
        threshold: Option<Threshold>,
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

/// One message with the bytes that travel with it: the single framing of page ↔ worker
/// messages, used by [`crate::worker_client`] and [`crate::worker`] alike.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<M> {
    /// The typed message.
    pub message: M,
    /// Its bytes (an image, the weights, a model file, embeddings), transferred with it.
    pub bytes: Option<Vec<u8>>,
}

impl<M> Envelope<M> {
    /// A message without bytes.
    pub fn new(message: M) -> Self {
        Self {
            message,
            bytes: None,
        }
    }

    /// A message with bytes.
    pub fn with_bytes(message: M, bytes: Vec<u8>) -> Self {
        Self {
            message,
            bytes: Some(bytes),
        }
    }
}

impl<M: Serialize> Envelope<M> {
    /// The wire form `[json, ArrayBuffer?]` and the transfer list (the buffer, when there are
    /// bytes) to hand to `postMessage`.
    ///
    /// # Errors
    /// The message could not be serialised (it holds a non-finite float, for instance).
    pub fn to_js(&self) -> Result<(Array, Array), String> {
        let json = serde_json::to_string(&self.message)
            .map_err(|e| format!("the message could not be encoded: {e}"))?;
        let array = Array::of1(&json.into());
        let transfer = Array::new();
        if let Some(bytes) = &self.bytes {
            let buffer = Uint8Array::from(bytes.as_slice()).buffer();
            array.push(&buffer);
            transfer.push(&buffer);
        }
        Ok((array, transfer))
    }
}

impl<M: DeserializeOwned> Envelope<M> {
    /// Reads the wire form written by [`Envelope::to_js`].
    ///
    /// # Errors
    /// `data` is not `[json, ArrayBuffer?]`, or the JSON is not a message of this type.
    pub fn from_js(data: &JsValue) -> Result<Self, String> {
        if !Array::is_array(data) {
            return Err("a message that is not [json, bytes?]".into());
        }
        let array = Array::from(data);
        let json = array
            .get(0)
            .as_string()
            .ok_or("a message without its JSON")?;
        let message =
            serde_json::from_str(&json).map_err(|e| format!("an unknown message: {e}"))?;
        let bytes = array
            .get(1)
            .dyn_into::<ArrayBuffer>()
            .ok()
            .map(|buffer| Uint8Array::new(&buffer).to_vec());
        Ok(Self { message, bytes })
    }
}
