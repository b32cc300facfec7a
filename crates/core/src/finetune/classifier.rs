//! A fine-tuned model on a device: [`TunedClassifier`] (the tuned tail and head, from
//! cut-point activations) and [`ModelClassifier`] (whichever a model file holds: a head on
//! embeddings, or a tuned tail and head).

use burn::tensor::{Device, Tensor, TensorData};

use super::CutFeatures;
use super::features::batch_tensor;
use crate::efficientnet::EMBEDDING_DIM;
use crate::efficientnet::tail::{Tail, TailWeights};
use crate::head::{Head, HeadConfig, HeadWeights, OutputKind, probabilities};
use crate::model_file::ModelFile;
use crate::readback::{ComputeError, read_f32};
use crate::train::{Classifier, FeatureNormalization, TrainError};

/// A tuned tail and head on a device, ready to predict from cut-point activations.
pub struct TunedClassifier {
    tail: Tail,
    head: Head,
    config: HeadConfig,
    blocks: usize,
    normalization: (Tensor<2>, Tensor<2>),
    device: Device,
}

/// `(mean, 1 / std)` as `[1, dim]` tensors.
pub(super) fn normalization_tensors(
    normalization: &FeatureNormalization,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let dim = normalization.mean.len();
    let inverse: Vec<f32> = normalization.std.iter().map(|s| 1.0 / s).collect();
    (
        Tensor::from_data(
            TensorData::new(normalization.mean.clone(), [1, dim]),
            device,
        ),
        Tensor::from_data(TensorData::new(inverse, [1, dim]), device),
    )
}

/// Logits `[N, classes]` of cut-point activations `[N, C, H, W]`.
pub(super) fn forward(
    tail: &Tail,
    head: &Head,
    (mean, inverse_std): &(Tensor<2>, Tensor<2>),
    x: Tensor<4>,
) -> Tensor<2> {
    let embedding = tail.forward(x);
    head.forward((embedding - mean.clone()) * inverse_std.clone(), None)
}

/// Images per forward pass when predicting (bounded GPU buffers).
const PREDICT_PASS: usize = 64;

impl TunedClassifier {
    /// Puts `tail` and the head of `head_weights` on `device` (a plain, non-autodiff device).
    ///
    /// # Errors
    /// [`TrainError::Head`] or [`TrainError::Config`] when the weights do not fit.
    pub fn new(
        tail: &TailWeights,
        config: &HeadConfig,
        head_weights: &HeadWeights,
        normalization: &FeatureNormalization,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let device = device.clone().without_autodiff();
        check_input(config)?;
        if !normalization.is_valid_for(config.input_dim) {
            return Err(TrainError::Data(
                "the feature standardisation does not fit the head".into(),
            ));
        }
        Ok(Self {
            tail: Tail::from_weights(tail, &device)
                .map_err(|e| TrainError::Config(e.to_string()))?,
            head: Head::from_weights(config, head_weights, &device)?,
            config: *config,
            blocks: tail.blocks,
            normalization: normalization_tensors(normalization, &device),
            device,
        })
    }

    /// The fine-tuned blocks (the cut its activations come from).
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Class probabilities `[items][classes]` of cut-point activations of this tail's block
    /// count (rows summing to 1), read back asynchronously.
    ///
    /// # Errors
    /// [`ComputeError`] when the device fails or an item has the wrong number of values.
    pub async fn predict(&self, items: &[CutFeatures]) -> Result<Vec<Vec<f32>>, ComputeError> {
        predict_with(
            &self.tail,
            &self.head,
            &self.normalization,
            self.config.output,
            self.config.num_classes,
            self.blocks,
            items,
            &self.device,
        )
        .await
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn predict_with(
    tail: &Tail,
    head: &Head,
    normalization: &(Tensor<2>, Tensor<2>),
    output: OutputKind,
    num_classes: usize,
    blocks: usize,
    items: &[CutFeatures],
    device: &Device,
) -> Result<Vec<Vec<f32>>, ComputeError> {
    let expected = CutFeatures::bytes_per_image(blocks) / 2;
    if let Some(bad) = items.iter().position(|f| f.values.len() != expected) {
        return Err(ComputeError::Execution(format!(
            "item {bad} has {} cut-point values, expected {expected}",
            items[bad].values.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(PREDICT_PASS) {
        let rows: Vec<&CutFeatures> = chunk.iter().collect();
        let x = batch_tensor(&rows, blocks, device);
        let p = probabilities(forward(tail, head, normalization, x), output);
        let flat = read_f32(p).await?;
        if flat.len() != chunk.len() * num_classes {
            return Err(ComputeError::Execution(format!(
                "read back {} probabilities for {} items",
                flat.len(),
                chunk.len()
            )));
        }
        out.extend(flat.chunks(num_classes).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Whichever model a model file holds, on a device.
pub enum ModelClassifier {
    /// A head on the frozen network's embeddings.
    Head(Box<Classifier>),
    /// A fine-tuned tail and head on cut-point activations.
    Tuned(Box<TunedClassifier>),
}

impl ModelClassifier {
    /// The classifier of `file` on `device` (a plain, non-autodiff device).
    ///
    /// # Errors
    /// [`TrainError::Data`] when the head does not take this network's embeddings;
    /// [`TrainError::Head`] or [`TrainError::Config`] when the weights do not fit.
    pub fn from_file(file: &ModelFile, device: &Device) -> Result<Self, TrainError> {
        let head = &file.header.head;
        Ok(match &file.tail {
            Some(tail) => Self::Tuned(Box::new(TunedClassifier::new(
                tail,
                head,
                &file.weights,
                &file.normalization,
                device,
            )?)),
            None => {
                check_input(head)?;
                Self::Head(Box::new(Classifier::new(
                    head,
                    &file.weights,
                    &file.normalization,
                    device,
                )?))
            }
        })
    }

    /// The fine-tuned blocks, `None` for a head on embeddings.
    pub fn tuned_blocks(&self) -> Option<usize> {
        match self {
            Self::Head(_) => None,
            Self::Tuned(tuned) => Some(tuned.blocks),
        }
    }
}

/// The head must take this network's embeddings.
fn check_input(config: &HeadConfig) -> Result<(), TrainError> {
    if config.input_dim == EMBEDDING_DIM {
        Ok(())
    } else {
        Err(TrainError::Data(format!(
            "the model's head takes {} features, the network gives {EMBEDDING_DIM}",
            config.input_dim
        )))
    }
}
