//! Running the pretrained backbone on batches of preprocessed images: embeddings and ImageNet
//! logits read back to the host asynchronously, shared by the CLI and the browser app.

use burn::tensor::Device;
use medtransfer_kernels::KernelError;

use crate::efficientnet::cpu::cpu_network;
use crate::efficientnet::{EMBEDDING_DIM, EfficientNetLite0, IMAGE_SIZE, NUM_CLASSES};
use crate::preprocess::{PreprocessError, batch_to_tensor};
use crate::readback::{ComputeError, read_f32};

/// Errors from running the backbone on a batch.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The batch could not be turned into a tensor (wrong sizes).
    #[error(transparent)]
    Input(#[from] PreprocessError),
    /// The device failed to compute or to read back.
    #[error(transparent)]
    Compute(#[from] ComputeError),
}

/// What the backbone gives for each image of a batch, in input order.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOutput {
    /// One 1280-d embedding (global-average-pooled features) per image.
    pub embeddings: Vec<Vec<f32>>,
    /// One row of 1000 ImageNet logits per image.
    pub logits: Vec<Vec<f32>>,
}

/// The most images one forward pass takes. The widest activation (96×112×112 floats, 4.8 MB
/// an image) must fit a GPU buffer binding: WebGPU guarantees only 128 MiB, and a batch of 32
/// (154 MB) fails on such adapters, so larger batches run as several passes.
pub const MAX_FORWARD_BATCH: usize = 8;

/// Which implementation of the network a forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// On the CPU (`flex` device): MedTransfer's own kernels ([`crate::efficientnet::cpu`]),
    /// several times faster than the Burn graph there; on a GPU: the Burn graph.
    Auto,
    /// Always the Burn graph on `device` (for comparisons and benchmarks).
    BurnGraph,
}

/// Runs `model` on `images` (each a flat CHW 3×224×224 from [`crate::preprocess`]): on the CPU
/// through MedTransfer's own kernels in one pass, on a GPU through Burn in forward passes of at
/// most [`MAX_FORWARD_BATCH`] images (see [`Engine::Auto`]).
pub async fn run_batch(
    model: &EfficientNetLite0,
    images: &[Vec<f32>],
    device: &Device,
) -> Result<BatchOutput, InferenceError> {
    run_batch_on(model, images, device, Engine::Auto).await
}

/// [`run_batch`] with the implementation chosen by the caller.
pub async fn run_batch_on(
    model: &EfficientNetLite0,
    images: &[Vec<f32>],
    device: &Device,
    engine: Engine,
) -> Result<BatchOutput, InferenceError> {
    // The CPU kernels have no buffer-size limit and reuse one set of activation buffers per
    // thread, so they take the whole batch in one pass: every core gets whole images.
    if engine == Engine::Auto && *device == Device::flex() && !images.is_empty() {
        return run_cpu_kernels(model, images).await;
    }
    let mut all = BatchOutput {
        embeddings: Vec::with_capacity(images.len()),
        logits: Vec::with_capacity(images.len()),
    };
    for chunk in images.chunks(MAX_FORWARD_BATCH) {
        let output = run_forward_pass(model, chunk, device).await?;
        all.embeddings.extend(output.embeddings);
        all.logits.extend(output.logits);
    }
    Ok(all)
}

/// One forward pass over `images` on the CPU kernels.
async fn run_cpu_kernels(
    model: &EfficientNetLite0,
    images: &[Vec<f32>],
) -> Result<BatchOutput, InferenceError> {
    let network = cpu_network(model).await.map_err(ComputeError::from)?;
    let inputs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let output = network
        .forward(&inputs, IMAGE_SIZE, IMAGE_SIZE)
        .map_err(|error| match error {
            KernelError::InputLength { index, got, .. } => {
                InferenceError::from(PreprocessError::WrongLength { index, len: got })
            }
            other => ComputeError::Execution(other.to_string()).into(),
        })?;
    Ok(split_rows(
        images.len(),
        &output.embeddings,
        &output.logits,
    )?)
}

/// One forward pass over `images` (non-empty, at most [`MAX_FORWARD_BATCH`]) through Burn.
async fn run_forward_pass(
    model: &EfficientNetLite0,
    images: &[Vec<f32>],
    device: &Device,
) -> Result<BatchOutput, InferenceError> {
    let output = model.forward(batch_to_tensor(images, device)?);
    let embeddings = read_f32(output.embedding).await?;
    let logits = read_f32(output.logits).await?;
    Ok(split_rows(images.len(), &embeddings, &logits)?)
}

/// Splits flat `[n, EMBEDDING_DIM]` and `[n, NUM_CLASSES]` results into one row per image.
fn split_rows(n: usize, embeddings: &[f32], logits: &[f32]) -> Result<BatchOutput, ComputeError> {
    if (embeddings.len(), logits.len()) != (n * EMBEDDING_DIM, n * NUM_CLASSES) {
        return Err(ComputeError::Execution(format!(
            "read back {} embedding and {} logit values for {n} images",
            embeddings.len(),
            logits.len(),
        )));
    }
    Ok(BatchOutput {
        embeddings: embeddings
            .chunks(EMBEDDING_DIM)
            .map(<[f32]>::to_vec)
            .collect(),
        logits: logits.chunks(NUM_CLASSES).map(<[f32]>::to_vec).collect(),
    })
}

/// The backbone's output for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageOutput {
    /// The 1280-d embedding.
    pub embedding: Vec<f32>,
    /// The 1000 ImageNet logits.
    pub logits: Vec<f32>,
}

/// Runs `model` on every input that was preprocessed successfully and returns one result per
/// input, in order: an input's own error stays its error (a bad file is reported per file and
/// the rest go on); a failed forward pass becomes the error of each image it carried.
pub async fn run_each(
    model: &EfficientNetLite0,
    inputs: Vec<Result<Vec<f32>, String>>,
    device: &Device,
) -> Vec<Result<ImageOutput, String>> {
    // The inputs (600 kB each) move into the batch; only the errors stay behind, in order.
    let mut ok_inputs = Vec::with_capacity(inputs.len());
    let errors: Vec<Option<String>> = inputs
        .into_iter()
        .map(|input| match input {
            Ok(pixels) => {
                ok_inputs.push(pixels);
                None
            }
            Err(error) => Some(error),
        })
        .collect();
    let mut outputs = match run_batch(model, &ok_inputs, device).await {
        Ok(output) => Ok(output.embeddings.into_iter().zip(output.logits)),
        Err(error) => Err(error.to_string()),
    };
    drop(ok_inputs);
    errors
        .into_iter()
        .map(|error| {
            if let Some(error) = error {
                return Err(error);
            }
            match &mut outputs {
                Ok(rows) => rows
                    .next()
                    .ok_or_else(|| "the backbone returned fewer rows than images".to_string())
                    .and_then(|(embedding, logits)| finite_output(embedding, logits)),
                Err(error) => Err(error.clone()),
            }
        })
        .collect()
}

/// The output as it is, or an error when it holds a NaN or an infinity (a broken kernel or a
/// pathological input): such an embedding must be refused where it is made, not dropped
/// silently later when it is saved, exported or trained on.
fn finite_output(embedding: Vec<f32>, logits: Vec<f32>) -> Result<ImageOutput, String> {
    if embedding.iter().chain(&logits).all(|v| v.is_finite()) {
        Ok(ImageOutput { embedding, logits })
    } else {
        Err("the network's output for this image is not a finite number (NaN or infinity)".into())
    }
}

/// Softmax of one row of logits, computed stably on the host.
pub fn softmax_row(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_output_is_an_error_where_it_is_made() {
        assert!(finite_output(vec![0.5, -1.0], vec![2.0]).is_ok());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let error = finite_output(vec![0.5, bad], vec![2.0]).err();
            assert!(error.is_some_and(|e| e.contains("not a finite number")));
            assert!(finite_output(vec![0.5], vec![bad]).is_err());
        }
    }

    #[test]
    fn softmax_row_sums_to_one_and_keeps_order() {
        let p = softmax_row(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[2] && p[2] > p[0]);
        let e = 1f32.exp();
        assert!((p[2] / p[0] - e).abs() < 1e-5, "ratio of exps");
        // Large logits do not overflow.
        let big = softmax_row(&[1000.0, 0.0]);
        assert!(big[0] > 0.999 && big.iter().all(|x| x.is_finite()));
    }
}
