//! The cut-point activations of each image: computed once by the frozen part of the network
//! (the CPU kernels on `flex`, the Burn graph elsewhere), stored as f16 and cached like the
//! embeddings (keyed by the embedding's key plus the cut).

use burn::tensor::{Device, Tensor, TensorData};
use half::f16;
use medtransfer_kernels::KernelError;

use crate::augment::AugmentConfig;
use crate::efficientnet::cpu::cpu_network;
use crate::efficientnet::tail::{check_blocks, cut_shape};
use crate::efficientnet::{EfficientNetLite0, IMAGE_SIZE, block_specs};
use crate::embeddings::{EmbeddingRequest, View, cache_key, content_hash, prepare_input};
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
/// [`crate::preprocess`]) for fine-tuning the last `blocks` blocks: on `flex` through the CPU
/// kernels (all images in one pass over the cores), elsewhere through the Burn graph in
/// passes of [`MAX_FORWARD_BATCH`].
///
/// # Errors
/// [`InferenceError::Input`] for an input of the wrong length; [`InferenceError::Compute`] for
/// a block count outside 1..=[`crate::efficientnet::MAX_TRAIN_BLOCKS`], a failed device, or a
/// non-finite activation.
pub async fn cut_features(
    model: &EfficientNetLite0,
    images: &[Vec<f32>],
    blocks: usize,
    device: &Device,
) -> Result<Vec<CutFeatures>, InferenceError> {
    check_blocks(blocks).map_err(|e| ComputeError::Execution(e.to_string()))?;
    let frozen = block_specs().len() - blocks;
    let (c, h, w) = cut_shape(blocks);
    let mut planar: Vec<Vec<f32>> = Vec::with_capacity(images.len());
    if *device == Device::flex() {
        let network = cpu_network(model).await.map_err(ComputeError::from)?;
        let inputs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
        let activations = network
            .cut_features(&inputs, IMAGE_SIZE, IMAGE_SIZE, frozen)
            .map_err(|error| match error {
                KernelError::InputLength { index, got, .. } => {
                    InferenceError::from(PreprocessError::WrongLength { index, len: got })
                }
                other => ComputeError::Execution(other.to_string()).into(),
            })?;
        let shape = (activations.height, activations.width, activations.channels);
        if !activations.rows.is_empty() && shape != (h, w, c) {
            return Err(ComputeError::Execution(format!(
                "the cut point has shape {shape:?}, expected {:?}",
                (h, w, c)
            ))
            .into());
        }
        // Channels-last to planar.
        for row in activations.rows {
            let mut out = vec![0.0; c * h * w];
            for (pixel, values) in row.chunks_exact(c).enumerate() {
                for (channel, &v) in values.iter().enumerate() {
                    out[channel * h * w + pixel] = v;
                }
            }
            planar.push(out);
        }
    } else {
        for chunk in images.chunks(MAX_FORWARD_BATCH) {
            let x = model.forward_cut(batch_to_tensor(chunk, device)?, frozen);
            let values = read_f32(x).await?;
            if values.len() != chunk.len() * c * h * w {
                return Err(ComputeError::Execution(format!(
                    "read back {} cut-point values for {} images",
                    values.len(),
                    chunk.len()
                ))
                .into());
            }
            planar.extend(values.chunks_exact(c * h * w).map(<[f32]>::to_vec));
        }
    }
    planar
        .into_iter()
        .map(|row| {
            let values: Vec<f16> = row.iter().map(|&v| f16::from_f32(v)).collect();
            if values.iter().all(|v| v.is_finite()) {
                Ok(CutFeatures { values })
            } else {
                Err(ComputeError::Execution(
                    "the network's activations for an image are not finite numbers".into(),
                )
                .into())
            }
        })
        .collect()
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
    let mut results: Vec<Option<Result<CutFeatures, String>>> = vec![None; requests.len()];
    let mut missing = Vec::new();
    let mut inputs = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let bytes = match &request.bytes {
            Ok(bytes) => bytes,
            Err(error) => {
                results[i] = Some(Err(error.clone()));
                continue;
            }
        };
        let hash = content_hash(bytes);
        let key = cut_cache_key(&hash, request.view, blocks);
        if let Some(features) = store
            .get_cut(&key)
            .and_then(|b| CutFeatures::from_bytes(&b, blocks))
        {
            results[i] = Some(Ok(features));
            continue;
        }
        match prepare_input(bytes, &hash, request.view, augment) {
            Ok(input) => {
                missing.push((i, key));
                inputs.push(input);
            }
            Err(error) => results[i] = Some(Err(error)),
        }
    }
    if !inputs.is_empty() {
        match cut_features(model, &inputs, blocks, device).await {
            Ok(rows) => {
                for ((i, key), features) in missing.into_iter().zip(rows) {
                    store.put_cut(&key, &features.to_bytes());
                    results[i] = Some(Ok(features));
                }
            }
            Err(error) => {
                for (i, _) in missing {
                    results[i] = Some(Err(error.to_string()));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("the image was not processed".to_string())))
        .collect()
}

/// A batch of cut-point activations as one `[N, C, H, W]` f32 tensor on `device`.
pub(super) fn batch_tensor(rows: &[&CutFeatures], blocks: usize, device: &Device) -> Tensor<4> {
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
