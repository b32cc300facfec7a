//! The cut-point activations of each image: computed once by the frozen part of the network
//! (the CPU kernels on `flex`, the Burn graph elsewhere), stored as f16 and cached like the
//! embeddings (keyed by the embedding's key plus the cut).

use burn::tensor::{Device, Tensor, TensorData};
use half::f16;
use medtransfer_kernels::KernelError;

use crate::augment::AugmentConfig;
use crate::efficientnet::cpu::cpu_network;
use crate::efficientnet::tail::{check_blocks, cut_shape};
use crate::efficientnet::{
    EMBEDDING_DIM, EfficientNetLite0, IMAGE_SIZE, MAX_TRAIN_BLOCKS, block_specs,
};
use crate::embeddings::{CacheFill, EmbeddingRequest, View, cache_key, finish_fill, split_cached};
use crate::inference::{InferenceError, MAX_FORWARD_BATCH};
use crate::preprocess::{PreprocessError, batch_to_tensor};
use crate::readback::{ComputeError, read_f32};

/// The cut-point activations of one image (or view) for fine-tuning the last `blocks` blocks:
/// planar `C × H × W` values of [`cut_shape`]`(blocks)`, as f16 (ReLU6-bounded activations and
/// the skip sums after them lose about 3 decimal digits, far below what training resolves).
#[derive(Clone, Debug, PartialEq)]
pub struct CutFeatures {
    /// `C · H · W` values, channel-major.
    pub values: Vec<f16>,
}

impl CutFeatures {
    /// Bytes one image's cut-point activations take (2 per value): 18,816 for 1 or 2 blocks,
    /// 43,904 for 5, 31,360 for 8.
    pub fn bytes_per_image(blocks: usize) -> usize {
        let (c, h, w) = cut_shape(blocks);
        2 * c * h * w
    }

    /// Little-endian f16 bytes (what the caches store).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Reads [`Self::to_bytes`] back; `None` when the length is not that of `blocks`' cut or a
    /// value is not finite (a damaged cache entry is computed again, never trained on).
    pub fn from_bytes(bytes: &[u8], blocks: usize) -> Option<Self> {
        if bytes.len() != Self::bytes_per_image(blocks) {
            return None;
        }
        let values: Vec<f16> = bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        values
            .iter()
            .all(|v| v.is_finite())
            .then_some(Self { values })
    }
}

/// The cache key of an image's cut-point activations: its embedding's [`cache_key`] and the
/// number of blocks the frozen part ran.
pub fn cut_cache_key(content_hash: &str, view: View, blocks: usize) -> String {
    let frozen = block_specs().len().saturating_sub(blocks);
    format!("{}|cut-after-{frozen}-f16", cache_key(content_hash, view))
}

/// The cut-point activations of `images` (flat CHW 3×224×224 each, from
/// [`crate::preprocess`]) for fine-tuning the last `blocks` blocks, one result per image: on
/// `flex` through the CPU kernels (all images in one pass over the cores, stopping at the
/// cut), elsewhere through the Burn graph in passes of [`MAX_FORWARD_BATCH`]. An image whose
/// activations are not finite in f16 gets its own error.
///
/// # Errors
/// [`InferenceError::Input`] for an input of the wrong length; [`InferenceError::Compute`] for
/// a block count outside 1..=[`crate::efficientnet::MAX_TRAIN_BLOCKS`] or a failed device.
pub async fn cut_features(
    model: &EfficientNetLite0,
    images: &[Vec<f32>],
    blocks: usize,
    device: &Device,
) -> Result<Vec<Result<CutFeatures, String>>, InferenceError> {
    let rows = frozen_pass(model, images, blocks, device, false).await?;
    Ok(rows.into_iter().map(|(_, cut)| to_f16(&cut)).collect())
}

/// The frozen part on `images`: each image's embedding (when `with_embedding`, from the same
/// pass) and its planar activations at `blocks`' cut.
async fn frozen_pass(
    model: &EfficientNetLite0,
    images: &[Vec<f32>],
    blocks: usize,
    device: &Device,
    with_embedding: bool,
) -> Result<Vec<(Option<Vec<f32>>, Vec<f32>)>, InferenceError> {
    check_blocks(blocks).map_err(|e| ComputeError::Execution(e.to_string()))?;
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let frozen = block_specs().len() - blocks;
    let shape = cut_shape(blocks);
    let (c, h, w) = shape;
    let mut rows: Vec<(Option<Vec<f32>>, Vec<f32>)> = Vec::with_capacity(images.len());
    if *device == Device::flex() {
        let network = cpu_network(model).await.map_err(ComputeError::from)?;
        let inputs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
        let (embeddings, activations) = if with_embedding {
            let (output, activations) = network
                .forward_with_cut(&inputs, IMAGE_SIZE, IMAGE_SIZE, frozen)
                .map_err(kernel_error)?;
            let embeddings = output
                .embeddings
                .chunks_exact(EMBEDDING_DIM)
                .map(|e| Some(e.to_vec()))
                .collect();
            (embeddings, activations)
        } else {
            let activations = network
                .cut_features(&inputs, IMAGE_SIZE, IMAGE_SIZE, frozen)
                .map_err(kernel_error)?;
            (vec![None; images.len()], activations)
        };
        let got = (activations.height, activations.width, activations.channels);
        if got != (h, w, c) {
            return Err(ComputeError::Execution(format!(
                "the cut point has shape {got:?}, expected {:?}",
                (h, w, c)
            ))
            .into());
        }
        for (embedding, cut) in embeddings.into_iter().zip(activations.rows) {
            rows.push((embedding, to_planar(&cut, (h, w, c))));
        }
    } else {
        for chunk in images.chunks(MAX_FORWARD_BATCH) {
            let cut = model.forward_cut(batch_to_tensor(chunk, device)?, frozen);
            let embeddings: Vec<Option<Vec<f32>>> = if with_embedding {
                let flat = read_f32(model.embedding_from_cut(cut.clone(), frozen)).await?;
                flat.chunks_exact(EMBEDDING_DIM)
                    .map(|e| Some(e.to_vec()))
                    .collect()
            } else {
                vec![None; chunk.len()]
            };
            let cuts = read_rows(cut, chunk.len(), c * h * w).await?;
            rows.extend(embeddings.into_iter().zip(cuts));
        }
    }
    if rows.len() != images.len() {
        return Err(ComputeError::Execution(format!(
            "the backbone returned {} rows for {} images",
            rows.len(),
            images.len()
        ))
        .into());
    }
    Ok(rows)
}

/// A kernel's error as the inference error a caller reads.
fn kernel_error(error: KernelError) -> InferenceError {
    match error {
        KernelError::InputLength { index, got, .. } => {
            InferenceError::from(PreprocessError::WrongLength { index, len: got })
        }
        other => ComputeError::Execution(other.to_string()).into(),
    }
}

/// Channels-last `h × w × c` activations as planar `c × h × w`.
fn to_planar(row: &[f32], (h, w, c): (usize, usize, usize)) -> Vec<f32> {
    let mut out = vec![0.0; c * h * w];
    for (pixel, values) in row.chunks_exact(c).enumerate() {
        for (channel, &v) in values.iter().enumerate() {
            out[channel * h * w + pixel] = v;
        }
    }
    out
}

/// Reads `[n, …]` activations back as `n` rows of `len` values.
async fn read_rows(x: Tensor<4>, n: usize, len: usize) -> Result<Vec<Vec<f32>>, ComputeError> {
    let values = read_f32(x).await?;
    if values.len() != n * len {
        return Err(ComputeError::Execution(format!(
            "read back {} activation values for {n} images",
            values.len()
        )));
    }
    Ok(values.chunks_exact(len).map(<[f32]>::to_vec).collect())
}

/// f16 activations, or the image's error for a value that is not finite in f16.
fn to_f16(row: &[f32]) -> Result<CutFeatures, String> {
    let values: Vec<f16> = row.iter().map(|&v| f16::from_f32(v)).collect();
    if values.iter().all(|v| v.is_finite()) {
        Ok(CutFeatures { values })
    } else {
        Err(
            "the network's activations for this image are not finite numbers (NaN, or beyond \
             f16's range)"
                .into(),
        )
    }
}

/// The activations the page keeps of every image: after the frozen part of the deepest
/// fine-tuning it offers ([`MAX_TRAIN_BLOCKS`] blocks, 80×14×14 values, 31,360 bytes), from
/// which [`advance`] reaches every shallower cut.
pub const STORED_BLOCKS: usize = MAX_TRAIN_BLOCKS;

/// An image's embedding and its activations for fine-tuning `blocks` blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingWithActivations {
    /// The 1280-d embedding.
    pub embedding: Vec<f32>,
    /// The cut-point activations.
    pub activations: CutFeatures,
}

/// The embedding and the cut-point activations for `blocks` of each input that was
/// preprocessed (flat CHW 3×224×224), from one forward pass: one result per input, in order;
/// an input's own error stays its error, a failed pass is the error of each image it carried.
pub async fn embed_with_activations(
    model: &EfficientNetLite0,
    inputs: Vec<Result<Vec<f32>, String>>,
    blocks: usize,
    device: &Device,
) -> Vec<Result<EmbeddingWithActivations, String>> {
    let mut ok = Vec::new();
    let errors: Vec<Option<String>> = inputs
        .into_iter()
        .map(|input| match input {
            Ok(pixels) => {
                ok.push(pixels);
                None
            }
            Err(error) => Some(error),
        })
        .collect();
    let mut outputs = match frozen_pass(model, &ok, blocks, device, true).await {
        Ok(rows) => Ok(rows.into_iter().map(|(embedding, cut)| {
            let embedding = embedding.unwrap_or_default();
            if embedding.len() != EMBEDDING_DIM || embedding.iter().any(|v| !v.is_finite()) {
                return Err(
                    "the network's output for this image is not a finite number (NaN or \
                     infinity)"
                        .to_string(),
                );
            }
            Ok(EmbeddingWithActivations {
                embedding,
                activations: to_f16(&cut)?,
            })
        })),
        Err(error) => Err(error.to_string()),
    };
    errors
        .into_iter()
        .map(|error| match (error, &mut outputs) {
            (Some(error), _) => Err(error),
            (None, Ok(rows)) => rows
                .next()
                .unwrap_or_else(|| Err("the backbone returned fewer rows than images".to_string())),
            (None, Err(error)) => Err(error.clone()),
        })
        .collect()
}

/// Moves activations for fine-tuning `from` blocks to those for fine-tuning `to` (≤ `from`)
/// blocks by running the frozen blocks between the two cuts on `device`, in passes of 64.
///
/// # Errors
/// [`ComputeError`] for `to > from`, a block count out of range, activations of the wrong
/// length or a failed device.
pub async fn advance(
    model: &EfficientNetLite0,
    features: &[CutFeatures],
    from: usize,
    to: usize,
    device: &Device,
) -> Result<Vec<CutFeatures>, ComputeError> {
    check_blocks(from)
        .and_then(|()| check_blocks(to))
        .map_err(|e| ComputeError::Execution(e.to_string()))?;
    if to > from {
        return Err(ComputeError::Execution(format!(
            "activations for {from} blocks cannot give those for {to}"
        )));
    }
    let expected = CutFeatures::bytes_per_image(from) / 2;
    if features.iter().any(|f| f.values.len() != expected) {
        return Err(ComputeError::Execution(
            "activations of another cut point".into(),
        ));
    }
    if to == from {
        return Ok(features.to_vec());
    }
    let all = block_specs().len();
    let (c, h, w) = cut_shape(to);
    let mut out = Vec::with_capacity(features.len());
    for chunk in features.chunks(64) {
        let rows: Vec<&CutFeatures> = chunk.iter().collect();
        let x = model.forward_blocks(batch_tensor(&rows, from, device), all - from..all - to);
        for row in read_rows(x, chunk.len(), c * h * w).await? {
            out.push(to_f16(&row).map_err(ComputeError::Execution)?);
        }
    }
    Ok(out)
}

/// Where cached cut-point activations live (bytes of [`CutFeatures::to_bytes`]).
pub trait CutFeatureStore {
    /// The bytes stored under `key`, if any.
    fn get_cut(&mut self, key: &str) -> Option<Vec<u8>>;
    /// Stores bytes (a failure to store is not an error: they are recomputed next time).
    fn put_cut(&mut self, key: &str, bytes: &[u8]);
}

impl CutFeatureStore for crate::embeddings::MemoryEmbeddingStore {
    fn get_cut(&mut self, key: &str) -> Option<Vec<u8>> {
        self.bytes(key)
    }

    fn put_cut(&mut self, key: &str, bytes: &[u8]) {
        self.put_bytes(key, bytes);
    }
}

/// The cut-point activations of `requests` for `blocks`, in order: read from `store` when
/// cached (and intact), else computed in one run of [`cut_features`] and stored. Each request
/// gets its own result; a bad file's error message is its result and the others go on (a
/// failed device pass is the error of every image it carried).
pub async fn cut_features_cached(
    model: &EfficientNetLite0,
    device: &Device,
    store: &mut dyn CutFeatureStore,
    requests: &[EmbeddingRequest],
    blocks: usize,
    augment: &AugmentConfig,
) -> Vec<Result<CutFeatures, String>> {
    let CacheFill {
        mut results,
        missing,
        inputs,
    } = split_cached(
        requests,
        augment,
        |hash, view| cut_cache_key(hash, view, blocks),
        |key| {
            store
                .get_cut(key)
                .and_then(|b| CutFeatures::from_bytes(&b, blocks))
        },
    );
    if !inputs.is_empty() {
        match cut_features(model, &inputs, blocks, device).await {
            Ok(rows) => {
                for ((i, key), features) in missing.into_iter().zip(rows) {
                    if let Ok(features) = &features {
                        store.put_cut(&key, &features.to_bytes());
                    }
                    results[i] = Some(features);
                }
            }
            Err(error) => {
                for (i, _) in missing {
                    results[i] = Some(Err(error.to_string()));
                }
            }
        }
    }
    finish_fill(results)
}

/// A batch of cut-point activations as one `[N, C, H, W]` f32 tensor on `device`.
pub(crate) fn batch_tensor(rows: &[&CutFeatures], blocks: usize, device: &Device) -> Tensor<4> {
    let (c, h, w) = cut_shape(blocks);
    let mut flat = Vec::with_capacity(rows.len() * c * h * w);
    for row in rows {
        flat.extend(row.values.iter().map(|v| v.to_f32()));
    }
    Tensor::from_data(TensorData::new(flat, [rows.len(), c, h, w]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::content_hash;

    #[test]
    fn bytes_round_trip_and_damage_is_refused() {
        let len = CutFeatures::bytes_per_image(2) / 2;
        assert_eq!(CutFeatures::bytes_per_image(2), 18_816);
        assert_eq!(CutFeatures::bytes_per_image(8), 31_360);
        let features = CutFeatures {
            values: (0..len).map(|i| f16::from_f32(i as f32 * 1e-3)).collect(),
        };
        let bytes = features.to_bytes();
        assert_eq!(CutFeatures::from_bytes(&bytes, 2), Some(features));
        assert_eq!(CutFeatures::from_bytes(&bytes[1..], 2), None);
        assert_eq!(CutFeatures::from_bytes(&bytes, 5), None);
        let mut nan = bytes;
        nan[0..2].copy_from_slice(&f16::NAN.to_le_bytes());
        assert_eq!(CutFeatures::from_bytes(&nan, 2), None);
    }

    #[test]
    fn keys_separate_cuts_and_views() {
        let h = content_hash(b"image");
        let keys = [
            cut_cache_key(&h, View::Original, 1),
            cut_cache_key(&h, View::Original, 2),
            cut_cache_key(&h, View::Augmented { index: 1, seed: 3 }, 2),
            cache_key(&h, View::Original),
        ];
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(keys[1].ends_with("cut-after-14-f16"));
    }
}
