//! The typed messages between the page and its compute Web Worker (`worker.rs`).
//!
//! Both sides frame every message the same way, as an [`Envelope`]: on the wire a JS array
//! `[json, bytes?]`, the JSON of a [`ToWorker`] or [`FromWorker`] and, for images, weights and
//! model files, their bytes as a transferred `ArrayBuffer` (moved, never copied or put in JSON).
//! Embeddings are computed in the worker; it sends each one back with the image's thumbnail,
//! so that the page can keep the project in IndexedDB and hand it to a new worker after a
//! reload or a crash ([`ToWorker::Restore`]).

use js_sys::{Array, ArrayBuffer, Uint8Array};
use medtransfer_core::embedding_map::EmbeddingMap;
use medtransfer_core::embeddings::{decode_embedding, decode_rows};
use medtransfer_core::finetune::{CutFeatures, FineTuneConfig, STORED_BLOCKS};
use medtransfer_core::gradcam::Heatmap;
use medtransfer_core::metrics::Evaluation;
use medtransfer_core::ood::OodScore;
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

/// Bytes of one image's stored activations (for fine-tuning): the f16 activations after the
/// frozen part of the deepest fine-tuning the page offers
/// ([`medtransfer_core::finetune::STORED_BLOCKS`]), 31,360 bytes.
pub const ACTIVATION_BYTES: usize = 2 * 80 * 14 * 14;

/// Page → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// The converted EfficientNet-Lite0 weights follow as bytes: load them.
    LoadModel {
        /// Use the CPU even if WebGPU works (after the GPU was lost).
        force_cpu: bool,
    },
    /// Embeddings computed earlier follow as bytes (little-endian `f32` rows of
    /// [`EMBEDDING_BYTES`]; per id, in order, its embedding then its `views[i]` augmented
    /// views' embeddings; read by [`restore_rows`]): keep them as if just computed.
    Restore {
        /// The images, in the order of their rows.
        ids: Vec<ImageId>,
        /// Rows of augmented views after each id's embedding row (0 for ids past its end).
        #[serde(default)]
        views: Vec<u32>,
    },
    /// Stored activations follow as bytes ([`ACTIVATION_BYTES`] per id, in order; a block that
    /// is not whole or not finite is left out): keep them for fine-tuning.
    RestoreActivations {
        /// The images, in the order of their blocks.
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
    /// An image's bytes follow: compute its embedding and those of `views` augmented views
    /// ([`medtransfer_core::embeddings::inputs_with_views`], drawn with `seed`).
    Embed {
        /// The image.
        id: ImageId,
        /// Augmented views to embed with it (0: none; the worker makes at most
        /// [`medtransfer_core::train::limits::AUGMENTED_VIEWS`]' end).
        #[serde(default)]
        views: u32,
        /// The seed the views are drawn with.
        #[serde(default)]
        seed: u64,
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
        /// Fine-tune the backbone's last blocks with the head (`None`: the head alone).
        #[serde(default)]
        fine_tune: Option<FineTuneConfig>,
    },
    /// Stop training after the current epoch (the best epoch so far is kept).
    Stop,
    /// An image's bytes follow: predict its class with the trained head.
    Predict {
        /// The prediction's id.
        id: ImageId,
    },
    /// The embedding map of these images (PCA of their embeddings) and the data check's
    /// findings on their embeddings, answered by a [`FromWorker::Mapped`].
    Map {
        /// Class names in label order.
        classes: Vec<String>,
        /// `(image, label)` pairs.
        items: Vec<(ImageId, usize)>,
    },
    /// Grad-CAM of stored images with the model in use: `(image, class)` pairs, each
    /// answered by a [`FromWorker::Explained`].
    Explain {
        /// The images and the class to explain in each.
        requests: Vec<(ImageId, usize)>,
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
    /// are the embedding ([`EMBEDDING_BYTES`]), then its `views` augmented views' embeddings
    /// (as many bytes each), then (with `activations`) its activations for fine-tuning
    /// ([`ACTIVATION_BYTES`]), then the JPEG thumbnail.
    Embedded {
        /// The image.
        id: ImageId,
        /// `None` when it worked.
        error: Option<String>,
        /// Augmented views embedded with it.
        #[serde(default)]
        views: u32,
        /// Whether its activations follow the views.
        #[serde(default)]
        activations: bool,
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
        /// The backbone's last blocks were fine-tuned with the head.
        #[serde(default)]
        fine_tuned: Option<FineTunedSummary>,
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
    /// The answer to a [`ToWorker::Map`]: the map, or why there is none.
    Mapped {
        /// The map and findings, or the error.
        result: Result<MapAnswer, String>,
    },
    /// The Grad-CAM of a [`ToWorker::Explain`] request's image, or why there is none (no
    /// model, or the image's activations are not kept).
    Explained {
        /// The image.
        id: ImageId,
        /// The heat map of the class asked for, or the error.
        heatmap: Result<Heatmap, String>,
    },
    /// A prediction's class probabilities, or why it failed; the image's JPEG thumbnail follows
    /// as transferred bytes when it could be decoded.
    Prediction {
        /// The prediction's id.
        id: ImageId,
        /// The prediction, or the error.
        result: Result<ImagePrediction, String>,
    },
}

/// The embedding map of a project's images with the findings of the data check that need
/// only their embeddings (near-duplicates, label suspects; [`medtransfer_core::check`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapAnswer {
    /// The images mapped (those whose embedding the worker holds), in the map's order.
    pub ids: Vec<ImageId>,
    /// Their labels.
    pub labels: Vec<usize>,
    /// The map: one point per image.
    pub map: EmbeddingMap,
    /// Per image, the kinds of finding that name it ([`medtransfer_core::check::DataCheck::flags`]).
    pub flags: Vec<Vec<String>>,
    /// Each finding: its kind, its images and what to do.
    pub findings: Vec<MapFinding>,
}

/// One finding of the data check, as the page lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapFinding {
    /// `near_duplicate` or `label_suspect`.
    pub kind: String,
    /// The images it names.
    pub ids: Vec<ImageId>,
    /// What to do, in words.
    pub advice: String,
}

/// What the model says of one new image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImagePrediction {
    /// One probability per class, in the model's class order, each in `0..=1`.
    pub probabilities: Vec<f32>,
    /// How unlike the training images the image is ([`medtransfer_core::ood`]); `None` when
    /// the model carries no reference (trained on fewer than
    /// [`medtransfer_core::ood::MIN_IMAGES`] images, or by a build before version 4 files).
    #[serde(default)]
    pub ood: Option<OodScore>,
    /// Training images the OOD threshold was calibrated on (0 without a reference).
    #[serde(default)]
    pub ood_calibration_images: usize,
    /// Grad-CAM of each class, in the model's class order ([`medtransfer_core::gradcam`],
    /// 7×7 values in `0..=1`); empty when none could be made.
    #[serde(default)]
    pub heatmaps: Vec<Heatmap>,
}

/// What a fine-tuning run adds to its results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FineTunedSummary {
    /// The last blocks fine-tuned.
    pub blocks: usize,
    /// Accuracy of the head alone (frozen backbone) on the same validation images (unknown
    /// for an imported model).
    pub head_only_accuracy: Option<f64>,
    /// Its AUC there.
    pub head_only_auc: Option<f64>,
}

/// One image's embedding and its augmented views' embeddings
/// ([`medtransfer_core::efficientnet::EMBEDDING_DIM`] values each).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRows {
    /// The image's embedding.
    pub embedding: Vec<f32>,
    /// Its augmented views' embeddings (finite rows only).
    pub views: Vec<Vec<f32>>,
}

/// Reads the bytes of [`ToWorker::Restore`]: per id, its block of `1 + views[i]` rows. An id
/// whose embedding row is missing or not finite is left out; a damaged or short block never
/// shifts the blocks of the ids after it.
pub fn restore_rows(ids: &[ImageId], views: &[u32], bytes: &[u8]) -> Vec<(ImageId, ImageRows)> {
    let mut offset = 0usize;
    let mut out = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let rows = 1 + views.get(i).copied().unwrap_or(0) as usize;
        let end = offset
            .saturating_add(rows.saturating_mul(EMBEDDING_BYTES))
            .min(bytes.len());
        let block = &bytes[offset.min(end)..end];
        offset = end;
        let Some(embedding) = block.get(..EMBEDDING_BYTES).and_then(decode_embedding) else {
            continue;
        };
        let views = decode_rows(&block[EMBEDDING_BYTES..]);
        out.push((id, ImageRows { embedding, views }));
    }
    out
}

/// The parts of [`FromWorker::Embedded`]'s bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmbeddedParts<'a> {
    /// The embedding row.
    pub embedding: &'a [u8],
    /// The augmented views' rows.
    pub views: &'a [u8],
    /// The activations for fine-tuning, when sent.
    pub activations: Option<&'a [u8]>,
    /// The JPEG thumbnail.
    pub thumbnail: &'a [u8],
}

/// Splits the bytes of [`FromWorker::Embedded`] with `views` augmented views (and
/// `activations`), or `None` when they are shorter than that.
pub fn split_embedded(bytes: &[u8], views: u32, activations: bool) -> Option<EmbeddedParts<'_>> {
    let rows_end = (1 + views as usize).checked_mul(EMBEDDING_BYTES)?;
    let end = rows_end.checked_add(if activations { ACTIVATION_BYTES } else { 0 })?;
    if bytes.len() < end {
        return None;
    }
    let (rows, rest) = bytes.split_at(rows_end);
    let (embedding, views) = rows.split_at(EMBEDDING_BYTES);
    let (activations, thumbnail) = if activations {
        let (a, t) = rest.split_at(ACTIVATION_BYTES);
        (Some(a), t)
    } else {
        (None, rest)
    };
    Some(EmbeddedParts {
        embedding,
        views,
        activations,
        thumbnail,
    })
}

/// Reads the bytes of [`ToWorker::RestoreActivations`]: per id its block, when whole and
/// finite ([`CutFeatures::from_bytes`]); a damaged block never shifts the ones after it.
pub fn restore_activations(ids: &[ImageId], bytes: &[u8]) -> Vec<(ImageId, CutFeatures)> {
    ids.iter()
        .zip(bytes.chunks(ACTIVATION_BYTES))
        .filter_map(|(&id, block)| {
            CutFeatures::from_bytes(block, STORED_BLOCKS).map(|features| (id, features))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use medtransfer_core::embeddings::{encode_embedding, encode_rows};

    fn row(v: f32) -> Vec<f32> {
        vec![v; EMBEDDING_BYTES / 4]
    }

    #[test]
    fn restored_rows_stay_with_their_images_even_after_a_damaged_one() {
        let mut bytes = encode_rows(&[row(1.0), row(1.5), row(1.6)]);
        let mut damaged = row(2.0);
        damaged[0] = f32::NAN;
        bytes.extend(encode_rows(&[damaged, row(2.5)]));
        bytes.extend(encode_embedding(&row(3.0)));
        // Image 30 is listed without a view count; image 40 has no bytes left.
        let restored = restore_rows(&[10, 20, 30, 40], &[2, 1], &bytes);
        let ids: Vec<ImageId> = restored.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [10, 30], "20's embedding is not finite, 40 has no row");
        assert_eq!(restored[0].1.embedding, row(1.0));
        assert_eq!(restored[0].1.views, [row(1.5), row(1.6)]);
        assert_eq!(
            restored[1].1,
            ImageRows {
                embedding: row(3.0),
                views: Vec::new()
            }
        );
    }

    #[test]
    fn embedded_bytes_split_into_embedding_views_activations_and_thumbnail() {
        let mut bytes = encode_rows(&[row(1.0), row(2.0), row(3.0)]);
        bytes.extend([0xFF, 0xD8, 9]);
        let parts = split_embedded(&bytes, 2, false).expect("three rows");
        assert_eq!(decode_embedding(parts.embedding), Some(row(1.0)));
        assert_eq!(decode_rows(parts.views), [row(2.0), row(3.0)]);
        assert_eq!(
            (parts.activations, parts.thumbnail),
            (None, &[0xFF, 0xD8, 9][..])
        );
        let parts = split_embedded(&bytes, 0, false).expect("one row");
        assert!(parts.views.is_empty());
        assert_eq!(parts.thumbnail.len(), 2 * EMBEDDING_BYTES + 3);
        assert_eq!(
            split_embedded(&bytes, 3, false),
            None,
            "four rows announced, three sent"
        );
        assert_eq!(split_embedded(&bytes, u32::MAX, false), None);
        assert_eq!(split_embedded(&bytes, 2, true), None, "no activations sent");
        let mut with = encode_rows(&[row(1.0)]);
        with.extend(vec![7u8; ACTIVATION_BYTES]);
        with.extend([0xFF, 0xD8]);
        let parts = split_embedded(&with, 0, true).expect("embedding and activations");
        assert_eq!(parts.activations.map(<[u8]>::len), Some(ACTIVATION_BYTES));
        assert_eq!(parts.thumbnail, [0xFF, 0xD8]);
    }

    #[test]
    fn restored_activations_stay_with_their_images() {
        assert_eq!(
            ACTIVATION_BYTES,
            CutFeatures::bytes_per_image(STORED_BLOCKS)
        );
        // f16 bits: 1.0 = 0x3C00, 2.0 = 0x4000, 3.0 = 0x4200, NaN = 0x7E00.
        let block = |bits: u16| bits.to_le_bytes().repeat(ACTIVATION_BYTES / 2);
        let mut bytes = block(0x3C00);
        let mut damaged = block(0x4000);
        damaged[10..12].copy_from_slice(&0x7E00u16.to_le_bytes());
        bytes.extend(damaged);
        bytes.extend(block(0x4200));
        bytes.extend([1, 2, 3]);
        let restored = restore_activations(&[5, 6, 7, 8], &bytes);
        let ids: Vec<ImageId> = restored.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [5, 7], "6 is damaged, 8 is cut short");
        assert_eq!(restored[1].1.values[0].to_f32(), 3.0);
    }
}
