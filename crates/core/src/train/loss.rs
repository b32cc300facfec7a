//! The losses: class weights by inverse frequency, the per-item training loss on the device
//! and the validation loss on the host.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

use super::{ClassWeighting, IMBALANCE_RATIO, LossKind};
use crate::head::{OutputKind, probabilities};
use crate::readback::{ComputeError, read_f32};

/// Inverse-frequency class weights `N / (K · n_c)`, or all ones.
pub fn class_weights_for(
    labels: &[usize],
    num_classes: usize,
    weighting: ClassWeighting,
) -> Vec<f32> {
    let mut counts = vec![0usize; num_classes];
    for &label in labels {
        if let Some(c) = counts.get_mut(label) {
            *c += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let min = counts.iter().copied().min().unwrap_or(0) as f64;
    let on = match weighting {
        ClassWeighting::On => true,
        ClassWeighting::Off => false,
        ClassWeighting::Auto => min > 0.0 && max / min > IMBALANCE_RATIO,
    };
    if !on {
        return vec![1.0; num_classes];
    }
    let n = labels.len() as f64;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                (n / (num_classes as f64 * c as f64)) as f32
            }
        })
        .collect()
}

/// The training targets of `labels` with label smoothing `eps`: `[n, 1]` (`y(1 − ε/2) +
/// (1 − y)ε/2`) for a sigmoid output, `[n, K]` (one-hot smoothed to `1 − ε + ε/K` and `ε/K`)
/// for softmax.
pub(crate) fn targets(
    labels: &[usize],
    num_classes: usize,
    output: OutputKind,
    eps: f32,
    device: &Device,
) -> Tensor<2> {
    let n = labels.len();
    match output {
        OutputKind::Softmax => {
            let off = eps / num_classes as f32;
            let on = 1.0 - eps + off;
            let mut t = vec![off; n * num_classes];
            for (i, &label) in labels.iter().enumerate() {
                if let Some(cell) = t.get_mut(i * num_classes + label) {
                    *cell = on;
                }
            }
            Tensor::from_data(TensorData::new(t, [n, num_classes]), device)
        }
        OutputKind::Sigmoid => {
            let t: Vec<f32> = labels
                .iter()
                .map(|&l| if l == 1 { 1.0 - eps / 2.0 } else { eps / 2.0 })
                .collect();
            Tensor::from_data(TensorData::new(t, [n, 1]), device)
        }
    }
}

/// Per-item loss `[batch]` of `logits` against `targets` (soft one-hot `[batch, K]` for
/// softmax outputs, `[batch, 1]` for a sigmoid).
pub(crate) fn per_item_loss(logits: Tensor<2>, targets: Tensor<2>, loss: LossKind) -> Tensor<1> {
    match loss {
        LossKind::CrossEntropy => (log_softmax(logits, 1) * targets)
            .sum_dim(1)
            .neg()
            .squeeze_dim(1),
        LossKind::BinaryCrossEntropy => {
            // max(z, 0) − z·y + ln(1 + e^(−|z|)): stable for any logit.
            let stable = (logits.clone().abs().neg().exp() + 1.0).log();
            (logits.clone().clamp_min(0.0) - logits * targets + stable).squeeze_dim(1)
        }
        LossKind::MeanSquaredError => {
            let p = probabilities(logits, OutputKind::Softmax);
            (p - targets).powi_scalar(2).mean_dim(1).squeeze_dim(1)
        }
    }
}

/// Host-side validation loss of probabilities, class-weighted, unsmoothed: mean −ln p(true)
/// for the cross-entropies, mean squared error of the probabilities for MSE.
pub(crate) fn host_loss(
    probs: &[Vec<f32>],
    labels: &[usize],
    weights: &[f32],
    loss: LossKind,
) -> f64 {
    let mut total = 0.0f64;
    let mut weight_sum = 0.0f64;
    for (row, &label) in probs.iter().zip(labels) {
        let w = f64::from(weights.get(label).copied().unwrap_or(1.0));
        let value = match loss {
            LossKind::CrossEntropy | LossKind::BinaryCrossEntropy => {
                -f64::from(row.get(label).copied().unwrap_or(0.0))
                    .max(1e-7)
                    .ln()
            }
            LossKind::MeanSquaredError => {
                row.iter()
                    .enumerate()
                    .map(|(c, &p)| (f64::from(p) - if c == label { 1.0 } else { 0.0 }).powi(2))
                    .sum::<f64>()
                    / row.len().max(1) as f64
            }
        };
        total += w * value;
        weight_sum += w;
    }
    if weight_sum > 0.0 {
        total / weight_sum
    } else {
        0.0
    }
}

/// An epoch's `[loss sum, correct count]` read back once, as the mean loss and the accuracy
/// over `n` items.
pub(crate) async fn epoch_means(sums: Tensor<1>, n: usize) -> Result<(f64, f64), ComputeError> {
    match read_f32(sums).await?.as_slice() {
        [l, c] => Ok((f64::from(*l) / n as f64, f64::from(*c) / n as f64)),
        _ => Err(ComputeError::Execution(
            "could not read the epoch's loss".into(),
        )),
    }
}
