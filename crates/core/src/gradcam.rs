//! Grad-CAM: where in an image the evidence for a class lies (Selvaraju et al., "Grad-CAM:
//! Visual Explanations from Deep Networks via Gradient-based Localization", ICCV 2017).
//!
//! The feature map is the network's last convolutional one, `A` = `[1280, 7, 7]` for a
//! 224×224 input (after the head convolution's ReLU6; a fine-tuned model's tuned tail makes
//! it). The class score `y` is the head's logit of the class (for a single sigmoid output,
//! `+logit` for the second class and `−logit` for the first), computed from the embedding
//! `e = mean_ij A[k, i, j]` through the feature standardisation and the head. Grad-CAM weighs
//! each channel by `α_k = mean_ij ∂y/∂A[k, i, j] = ∂y/∂e_k / (7·7)` and keeps the positive part
//! of `Σ_k α_k A[k]`. Because the pooling is the only step between the map and the head, the
//! gradient is the head's gradient with respect to the embedding, computed exactly on the host
//! ([`embedding_gradient`]): no backward pass through the network is needed, with or without a
//! tuned tail.

mod render;

use burn::tensor::{Device, Tensor, TensorData};

pub use render::{heatmap_layer, heatmap_png, overlay};

use crate::efficientnet::tail::{Tail, TailWeightsError, check_blocks};
use crate::efficientnet::{
    EMBEDDING_DIM, EfficientNetLite0, IMAGE_CHANNELS, IMAGE_SIZE, block_specs,
};
use crate::finetune::CutFeatures;
use crate::finetune::features::batch_tensor;
use crate::head::{HeadConfig, HeadKind, HeadWeights, OutputKind};
use crate::metrics::predicted_class;
use crate::model_file::ModelFile;
use crate::readback::{ComputeError, read_f32};
use crate::train::FeatureNormalization;

/// Why an image could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum GradCamError {
    /// The device failed to compute or to read back.
    #[error(transparent)]
    Compute(#[from] ComputeError),
    /// The input is not one preprocessed image (`3 × 224 × 224` values).
    #[error("expected one preprocessed image of {expected} values, got {got}")]
    Input {
        /// Values given.
        got: usize,
        /// Values needed.
        expected: usize,
    },
    /// The class index is not one of the model's.
    #[error("class {class} does not exist: the model has {classes} classes")]
    NoSuchClass {
        /// The index asked for.
        class: usize,
        /// The model's class count.
        classes: usize,
    },
    /// The model file's head or tail does not fit the network.
    #[error("the model cannot be explained: {0}")]
    Model(String),
}

impl From<TailWeightsError> for GradCamError {
    fn from(error: TailWeightsError) -> Self {
        Self::Model(error.to_string())
    }
}

/// A last convolutional feature map of one image, planar `[channels, height, width]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    /// Channels (1280).
    pub channels: usize,
    /// Rows (7 for a 224×224 input), top to bottom.
    pub height: usize,
    /// Columns (7), left to right.
    pub width: usize,
    /// `channels × height × width` values, channel-major.
    pub values: Vec<f32>,
}

impl FeatureMap {
    /// The embedding: each channel's mean over the map (global average pooling).
    pub fn embedding(&self) -> Vec<f32> {
        let plane = (self.height * self.width).max(1);
        self.values
            .chunks(plane)
            .map(|c| c.iter().sum::<f32>() / plane as f32)
            .collect()
    }
}

/// One image's Grad-CAM for one class.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Heatmap {
    /// The class explained (index into the model's classes).
    pub class: usize,
    /// The model's class probabilities for the image (sum 1).
    pub probabilities: Vec<f32>,
    /// Rows of the map (7).
    pub height: usize,
    /// Columns of the map (7).
    pub width: usize,
    /// `height × width` values in `[0, 1]`, rows top to bottom: the positive evidence divided by
    /// its maximum (all 0 when there is none).
    pub values: Vec<f32>,
    /// The strongest cell's centre `[x, y]` in `0..=1` image coordinates (x to the right, y
    /// down; the network sees the whole image stretched to 224×224, so they hold for the
    /// original image too); `None` when no cell holds positive evidence.
    pub peak: Option<[f32; 2]>,
}

impl Heatmap {
    /// The values as rows, top to bottom.
    pub fn rows(&self) -> Vec<Vec<f32>> {
        self.values
            .chunks(self.width.max(1))
            .map(<[f32]>::to_vec)
            .collect()
    }
}

/// A model file's classifier, ready to explain images: its tuned tail (if any) on a device,
/// its head and standardisation on the host.
pub struct Explainer {
    tail: Option<Tail>,
    frozen_blocks: usize,
    config: HeadConfig,
    weights: HeadWeights,
    normalization: FeatureNormalization,
    threshold: Option<f64>,
}

impl Explainer {
    /// The explainer of `file`'s classifier; a tuned tail goes to `device`.
    ///
    /// # Errors
    /// [`GradCamError::Model`] when the head, its standardisation or the tail do not fit the
    /// network.
    pub fn from_file(file: &ModelFile, device: &Device) -> Result<Self, GradCamError> {
        let config = file.header.head;
        file.weights
            .check(&config)
            .map_err(|e| GradCamError::Model(e.to_string()))?;
        if config.input_dim != EMBEDDING_DIM || !file.normalization.is_valid_for(EMBEDDING_DIM) {
            return Err(GradCamError::Model(format!(
                "the head takes {} features and its standardisation {}, the network gives {EMBEDDING_DIM}",
                config.input_dim,
                file.normalization.mean.len()
            )));
        }
        let device = device.clone().without_autodiff();
        let (tail, frozen_blocks) = match &file.tail {
            Some(weights) => (
                Some(Tail::from_weights(weights, &device)?),
                block_specs().len().saturating_sub(weights.blocks),
            ),
            None => (None, block_specs().len()),
        };
        Ok(Self {
            tail,
            frozen_blocks,
            config,
            weights: file.weights.clone(),
            normalization: file.normalization.clone(),
            threshold: file.header.threshold.map(|t| t.value),
        })
    }

    /// The last convolutional feature map of one preprocessed image (flat CHW `3×224×224`, see
    /// [`crate::preprocess`]), through `backbone` on its device (and the tuned tail), read back
    /// asynchronously.
    ///
    /// # Errors
    /// [`GradCamError::Input`] for a wrong length; [`GradCamError::Compute`] when the device
    /// fails.
    pub async fn feature_map(
        &self,
        backbone: &EfficientNetLite0,
        image: &[f32],
    ) -> Result<FeatureMap, GradCamError> {
        let expected = IMAGE_CHANNELS * IMAGE_SIZE * IMAGE_SIZE;
        if image.len() != expected {
            return Err(GradCamError::Input {
                got: image.len(),
                expected,
            });
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(image.to_vec(), [1, IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE]),
            &backbone.device(),
        );
        self.map_after(backbone, backbone.forward_cut(x, 0), 0)
            .await
    }

    /// The feature map from one image's activations at the cut before the last `blocks` blocks
    /// (as [`crate::finetune::CutFeatures`] hold them: the page keeps
    /// [`crate::finetune::STORED_BLOCKS`] blocks'), without the image itself.
    ///
    /// # Errors
    /// [`GradCamError::Input`] for activations of another size; [`GradCamError::Model`] when
    /// the cut lies inside the tuned tail; [`GradCamError::Compute`] when the device fails.
    pub async fn feature_map_from_activations(
        &self,
        backbone: &EfficientNetLite0,
        activations: &CutFeatures,
        blocks: usize,
    ) -> Result<FeatureMap, GradCamError> {
        check_blocks(blocks).map_err(GradCamError::from)?;
        let expected = CutFeatures::bytes_per_image(blocks) / 2;
        if activations.values.len() != expected {
            return Err(GradCamError::Input {
                got: activations.values.len(),
                expected,
            });
        }
        let first = block_specs().len() - blocks;
        let x = batch_tensor(&[activations], blocks, &backbone.device());
        self.map_after(backbone, x, first).await
    }

    /// The feature map from the activations `x` before block `first`.
    async fn map_after(
        &self,
        backbone: &EfficientNetLite0,
        x: Tensor<4>,
        first: usize,
    ) -> Result<FeatureMap, GradCamError> {
        let map = match &self.tail {
            None => backbone.feature_map_from(x, first),
            Some(_) if first > self.frozen_blocks => {
                return Err(GradCamError::Model(
                    "the activations come from inside the fine-tuned blocks".into(),
                ));
            }
            Some(tail) => {
                tail.forward_feature_map(backbone.forward_blocks(x, first..self.frozen_blocks))
            }
        };
        let [_, channels, height, width] = map.dims();
        let values = read_f32(map).await?;
        if values.len() != channels * height * width || values.iter().any(|v| !v.is_finite()) {
            return Err(ComputeError::Execution(
                "the feature map read back is not finite or has the wrong size".into(),
            )
            .into());
        }
        Ok(FeatureMap {
            channels,
            height,
            width,
            values,
        })
    }

    /// The Grad-CAM of `map` for `class`, or for the class the model predicts (with its
    /// two-class threshold) when `None`.
    ///
    /// # Errors
    /// As [`Self::explain_classes`].
    pub fn explain(&self, map: &FeatureMap, class: Option<usize>) -> Result<Heatmap, GradCamError> {
        // An empty request explains the predicted class: one heat map either way.
        self.explain_classes(map, class)?
            .pop()
            .ok_or_else(|| GradCamError::Model("no heat map was made".into()))
    }

    /// The Grad-CAM of `map` for each of `classes`, in order (for the predicted class when
    /// `classes` is empty), the head's forward pass computed once for all.
    ///
    /// # Errors
    /// [`GradCamError::NoSuchClass`]; [`GradCamError::Model`] when the map does not have the
    /// head's channel count.
    pub fn explain_classes(
        &self,
        map: &FeatureMap,
        classes: impl IntoIterator<Item = usize>,
    ) -> Result<Vec<Heatmap>, GradCamError> {
        if map.channels != self.config.input_dim || map.values.is_empty() {
            return Err(GradCamError::Model(format!(
                "the feature map has {} channels, the head takes {}",
                map.channels, self.config.input_dim
            )));
        }
        let embedding = map.embedding();
        let (z, hidden) =
            forward_parts(&self.config, &self.weights, &self.normalization, &embedding);
        let probabilities = to_probabilities(
            &logits_from_parts(&self.weights, z, hidden.as_deref()),
            self.config.output,
        );
        let mut classes: Vec<usize> = classes.into_iter().collect();
        if classes.is_empty() {
            classes.push(predicted_class(&probabilities, self.threshold));
        }
        classes
            .into_iter()
            .map(|class| {
                if class >= self.config.num_classes {
                    return Err(GradCamError::NoSuchClass {
                        class,
                        classes: self.config.num_classes,
                    });
                }
                let gradient = gradient_through_head(
                    &self.config,
                    &self.weights,
                    &self.normalization,
                    hidden.as_deref(),
                    class,
                );
                let values = grad_cam(map, &gradient);
                Ok(Heatmap {
                    class,
                    probabilities: probabilities.clone(),
                    height: map.height,
                    width: map.width,
                    peak: peak(&values, map.height, map.width),
                    values,
                })
            })
            .collect()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.config.num_classes
    }
}

/// The head's tensors by name.
fn tensor<'a>(weights: &'a HeadWeights, name: &str) -> &'a [f32] {
    weights
        .tensors
        .iter()
        .find(|t| t.0 == name)
        .map_or(&[], |t| t.2.as_slice())
}

/// `x · W + b` for `W` `[inputs, outputs]`.
fn dense(x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let outputs = bias.len();
    let mut y = bias.to_vec();
    for (xi, row) in x.iter().zip(weight.chunks(outputs.max(1))) {
        for (yj, wij) in y.iter_mut().zip(row) {
            *yj += xi * wij;
        }
    }
    y
}

/// The standardised embedding and, for an MLP, the hidden layer before its ReLU.
fn forward_parts(
    config: &HeadConfig,
    weights: &HeadWeights,
    normalization: &FeatureNormalization,
    embedding: &[f32],
) -> (Vec<f32>, Option<Vec<f32>>) {
    let z: Vec<f32> = embedding
        .iter()
        .zip(normalization.mean.iter().zip(&normalization.std))
        .map(|(e, (m, s))| (e - m) / s)
        .collect();
    let hidden = match config.kind {
        HeadKind::Linear => None,
        HeadKind::Mlp { .. } => Some(dense(
            &z,
            tensor(weights, "hidden.weight"),
            tensor(weights, "hidden.bias"),
        )),
    };
    (z, hidden)
}

/// The head's logits of one embedding, on the host (as [`crate::head::Head::forward`] without
/// dropout).
pub fn head_logits(
    config: &HeadConfig,
    weights: &HeadWeights,
    normalization: &FeatureNormalization,
    embedding: &[f32],
) -> Vec<f32> {
    let (z, hidden) = forward_parts(config, weights, normalization, embedding);
    logits_from_parts(weights, z, hidden.as_deref())
}

/// The output layer on the standardised embedding `z`, or on the ReLU of the MLP's `hidden`.
fn logits_from_parts(weights: &HeadWeights, z: Vec<f32>, hidden: Option<&[f32]>) -> Vec<f32> {
    let input = match hidden {
        Some(h) => h.iter().map(|v| v.max(0.0)).collect(),
        None => z,
    };
    dense(
        &input,
        tensor(weights, "output.weight"),
        tensor(weights, "output.bias"),
    )
}

/// Class probabilities of the logits (softmax, or the sigmoid's `[1 − p, p]`).
fn to_probabilities(logits: &[f32], output: OutputKind) -> Vec<f32> {
    match output {
        OutputKind::Softmax => crate::inference::softmax_row(logits),
        OutputKind::Sigmoid => {
            let p = 1.0 / (1.0 + (-logits.first().copied().unwrap_or(0.0)).exp());
            vec![1.0 - p, p]
        }
    }
}

/// `∂y/∂e`: the gradient of `class`'s score (its logit; a single sigmoid output's logit for
/// the second class and its negative for the first) with respect to the 1280-d embedding,
/// through the standardisation and the head, exactly.
///
/// # Errors
/// [`GradCamError::NoSuchClass`] for a class the head does not have.
pub fn embedding_gradient(
    config: &HeadConfig,
    weights: &HeadWeights,
    normalization: &FeatureNormalization,
    embedding: &[f32],
    class: usize,
) -> Result<Vec<f32>, GradCamError> {
    if class >= config.num_classes {
        return Err(GradCamError::NoSuchClass {
            class,
            classes: config.num_classes,
        });
    }
    let (_, hidden) = forward_parts(config, weights, normalization, embedding);
    Ok(gradient_through_head(
        config,
        weights,
        normalization,
        hidden.as_deref(),
        class,
    ))
}

/// [`embedding_gradient`] for a valid `class`, given the MLP's hidden layer before its ReLU
/// (`None` for a linear head), as [`forward_parts`] gives it.
fn gradient_through_head(
    config: &HeadConfig,
    weights: &HeadWeights,
    normalization: &FeatureNormalization,
    hidden: Option<&[f32]>,
    class: usize,
) -> Vec<f32> {
    let outputs = config.output_dim();
    let (column, sign) = match config.output {
        OutputKind::Softmax => (class, 1.0),
        OutputKind::Sigmoid => (0, if class == 1 { 1.0 } else { -1.0 }),
    };
    // ∂y/∂(the output layer's input): the class's column of the output weights.
    let upstream: Vec<f32> = tensor(weights, "output.weight")
        .chunks(outputs)
        .map(|row| sign * row.get(column).copied().unwrap_or(0.0))
        .collect();
    // Through the hidden layer: ReLU's mask, then the hidden weights `[inputs, hidden]`.
    let dz = match hidden {
        None => upstream,
        Some(h) => {
            let dh: Vec<f32> = upstream
                .iter()
                .zip(h)
                .map(|(g, &v)| if v > 0.0 { *g } else { 0.0 })
                .collect();
            tensor(weights, "hidden.weight")
                .chunks(dh.len().max(1))
                .map(|row| row.iter().zip(&dh).map(|(w, g)| w * g).sum())
                .collect()
        }
    };
    dz.iter()
        .zip(&normalization.std)
        .map(|(g, s)| g / s)
        .collect()
}

/// Grad-CAM's map: `ReLU(Σ_k α_k A[k])` with `α_k = gradient_k / (height·width)`, divided by
/// its maximum (`height × width` values in `[0, 1]`, rows top to bottom; all 0 when nothing is
/// positive).
pub fn grad_cam(map: &FeatureMap, gradient: &[f32]) -> Vec<f32> {
    let plane = map.height * map.width;
    let mut cam = vec![0.0f32; plane];
    let scale = 1.0 / plane.max(1) as f32;
    for (channel, g) in map.values.chunks(plane.max(1)).zip(gradient) {
        let alpha = g * scale;
        for (c, a) in cam.iter_mut().zip(channel) {
            *c += alpha * a;
        }
    }
    let max = cam.iter().copied().fold(0.0f32, f32::max);
    cam.iter()
        .map(|&v| if max > 0.0 { v.max(0.0) / max } else { 0.0 })
        .collect()
}

/// The centre of the largest cell, `[x, y]` in `0..=1` (the first one on ties); `None` when
/// none is positive.
fn peak(values: &[f32], height: usize, width: usize) -> Option<[f32; 2]> {
    let best = values
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > values[best] { i } else { best });
    if values.get(best).is_none_or(|&v| v <= 0.0) {
        return None;
    }
    let (row, column) = (best / width.max(1), best % width.max(1));
    Some([
        (column as f32 + 0.5) / width.max(1) as f32,
        (row as f32 + 0.5) / height.max(1) as f32,
    ])
}

#[cfg(test)]
mod tests;
