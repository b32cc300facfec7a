//! A trained head put on a device to predict, and the batched, asynchronous read of class
//! probabilities that training's validation uses too.

use burn::tensor::{Device, Tensor, TensorData};

use super::FeatureNormalization;
use crate::head::{Head, HeadConfig, HeadError, HeadWeights, OutputKind, probabilities};
use crate::readback::{ComputeError, read_f32};

pub(super) fn upload_rows(
    rows: &[Vec<f32>],
    normalization: &FeatureNormalization,
    device: &Device,
) -> Tensor<2> {
    let dim = normalization.mean.len();
    let mut flat = Vec::with_capacity(rows.len() * dim);
    for row in rows {
        flat.extend(normalization.apply(row));
    }
    Tensor::from_data(TensorData::new(flat, [rows.len(), dim]), device)
}

/// Class probabilities for `x` (already normalised, on `head`'s device), read to the host.
pub(super) async fn predict_rows(
    head: &Head,
    x: Tensor<2>,
    output: OutputKind,
    num_classes: usize,
) -> Result<Vec<Vec<f32>>, ComputeError> {
    let rows = x.dims()[0];
    let mut out = Vec::with_capacity(rows);
    // Bounded passes keep buffers small on GPUs.
    const PASS: usize = 4096;
    let mut start = 0;
    while start < rows {
        let end = (start + PASS).min(rows);
        let p = probabilities(head.forward(x.clone().slice(start..end), None), output);
        let flat = read_f32(p).await?;
        if flat.len() != (end - start) * num_classes {
            return Err(ComputeError::Execution(format!(
                "read back {} probabilities for {} items",
                flat.len(),
                end - start
            )));
        }
        out.extend(flat.chunks(num_classes).map(<[f32]>::to_vec));
        start = end;
    }
    Ok(out)
}

/// A trained head ready to predict on a device.
pub struct Classifier {
    config: HeadConfig,
    normalization: FeatureNormalization,
    head: Head,
    device: Device,
}

impl Classifier {
    /// Puts the head's weights on `device` (a plain, non-autodiff device).
    pub fn new(
        config: &HeadConfig,
        weights: &HeadWeights,
        normalization: &FeatureNormalization,
        device: &Device,
    ) -> Result<Self, HeadError> {
        if !normalization.is_valid_for(config.input_dim) {
            return Err(HeadError::Weights(
                "the feature normalisation does not fit the head".into(),
            ));
        }
        let device = device.clone().without_autodiff();
        Ok(Self {
            config: *config,
            normalization: normalization.clone(),
            head: Head::from_weights(config, weights, &device)?,
            device,
        })
    }

    /// Class probabilities for each embedding, read back asynchronously.
    pub async fn predict(&self, embeddings: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ComputeError> {
        if embeddings.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(bad) = embeddings
            .iter()
            .position(|e| e.len() != self.config.input_dim)
        {
            return Err(ComputeError::Execution(format!(
                "embedding {bad} has {} features, the head expects {}",
                embeddings[bad].len(),
                self.config.input_dim
            )));
        }
        let x = upload_rows(embeddings, &self.normalization, &self.device);
        predict_rows(&self.head, x, self.config.output, self.config.num_classes).await
    }
}
