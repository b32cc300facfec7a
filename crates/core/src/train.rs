//! Training a classifier head on cached embeddings, on any Burn device (the browser's WebGPU,
//! native wgpu or the `flex` CPU backend), with a hand-written loop (backward → gradients →
//! optimiser step): Burn's `Learner` does not run in wasm.
//!
//! [`Trainer`] runs one epoch per call so that a caller can report progress, yield to a browser
//! event loop and stop between epochs; [`Trainer::run_to_end`] is the one loop over it, which
//! [`train`] (a given split) and [`crate::run::run`] (split, then train) drive. Every read of a
//! tensor is asynchronous and happens once per epoch (two numbers for the training loss and
//! accuracy, the validation probabilities), so the GPU is not stalled per batch.
//!
//! A linear head with [`OptimizerKind::Lbfgs`] is fitted instead as the convex problem it is,
//! on the host ([`logistic`]); [`fit_head`] picks the path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::head::{Head, HeadConfig, HeadError, HeadKind, HeadWeights, OutputKind};
use crate::metrics::{Evaluation, EvaluationOptions, MetricsError, evaluate};
use crate::readback::ComputeError;
use crate::rng::SeededRng;
use crate::split::SplitError;
use crate::threshold::Threshold;

mod classifier;
mod config;
mod lbfgs;
pub(crate) mod logistic;
mod loss;
mod trainer;

pub use classifier::Classifier;
use classifier::{predict_rows, upload_rows};
pub use config::{
    ClassWeighting, DEFAULT_DROPOUT, DEFAULT_HIDDEN_UNITS, IMBALANCE_RATIO, LossKind,
    OptimizerKind, Schedule, TrainConfig, limits,
};
pub use loss::class_weights_for;
pub(crate) use loss::{epoch_means, host_loss, per_item_loss, targets};
pub use trainer::Trainer;
use trainer::{Prepared, prepare};

/// Embeddings with their class labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelledEmbeddings {
    /// One embedding per item, all the same length.
    pub embeddings: Vec<Vec<f32>>,
    /// The class index of each item.
    pub labels: Vec<usize>,
}

/// Per-feature standardisation fitted on the training embeddings and applied to every
/// embedding before the head: it makes one learning rate suit every feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureNormalization {
    /// Mean of each feature over the training items.
    pub mean: Vec<f32>,
    /// Standard deviation of each feature (at least [`FeatureNormalization::MIN_STD`]).
    pub std: Vec<f32>,
}

impl FeatureNormalization {
    /// Floor on a feature's standard deviation, so constant features do not blow up.
    pub const MIN_STD: f32 = 1e-3;

    /// Fits the mean and standard deviation of each feature (`rows` must be non-empty and all
    /// the same length).
    pub fn fit(rows: &[Vec<f32>]) -> Self {
        let dim = rows.first().map_or(0, Vec::len);
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0f64; dim];
        for row in rows {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0f64; dim];
        for row in rows {
            for ((v, &x), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (f64::from(x) - m).powi(2);
            }
        }
        Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: var
                .iter()
                .map(|&v| ((v / n).sqrt() as f32).max(Self::MIN_STD))
                .collect(),
        }
    }

    /// `(x − mean) / std` per feature.
    pub fn apply(&self, row: &[f32]) -> Vec<f32> {
        row.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(&x, (&m, &s))| (x - m) / s)
            .collect()
    }

    /// Whether it fits embeddings of length `dim` and holds only finite values.
    pub fn is_valid_for(&self, dim: usize) -> bool {
        self.mean.len() == dim
            && self.std.len() == dim
            && self.mean.iter().all(|m| m.is_finite())
            && self.std.iter().all(|s| s.is_finite() && *s > 0.0)
    }
}

/// Why training could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range.
    #[error("invalid training setting: {0}")]
    Config(String),
    /// The data cannot be trained on (too few items or classes, inconsistent sizes).
    #[error("cannot train on this data: {0}")]
    Data(String),
    /// The items cannot be split into training and validation; the message names the class
    /// by its name.
    #[error("{}", .error.with_class_names(.classes))]
    Split {
        /// Why.
        error: SplitError,
        /// The class names, in label order.
        classes: Vec<String>,
    },
    /// The head's configuration.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The device failed.
    #[error(transparent)]
    Compute(#[from] ComputeError),
    /// Validation metrics could not be computed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Stopped by the user before the first epoch finished: there is no model to keep.
    #[error("training was stopped before the first epoch finished")]
    Cancelled,
}

/// What one epoch gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochSummary {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Learning rate at the epoch's last step.
    pub learning_rate: f64,
    /// Mean training loss over the epoch's batches (class-weighted, smoothed targets).
    pub train_loss: f64,
    /// Share of training items classified correctly during the epoch (dropout on).
    pub train_accuracy: f64,
    /// Validation loss (class-weighted, unsmoothed), when there is validation data.
    pub validation_loss: Option<f64>,
    /// Validation accuracy.
    pub validation_accuracy: Option<f64>,
    /// Validation balanced accuracy (mean sensitivity).
    pub validation_balanced_accuracy: Option<f64>,
    /// Validation AUC (binary, or macro one-vs-rest).
    pub validation_auc: Option<f64>,
    /// Whether this epoch has the lowest validation loss so far (its weights are kept).
    pub is_best: bool,
}

/// Why training ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All planned epochs ran.
    Completed,
    /// The validation loss stopped improving for `patience` epochs.
    EarlyStopped,
    /// The user stopped it.
    Cancelled,
}

/// Progress reported while training.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainEvent {
    /// Training is about to start.
    Started {
        /// Planned epochs.
        epochs: usize,
        /// Optimiser steps per epoch.
        batches_per_epoch: usize,
        /// Training rows (augmented views included).
        train_items: usize,
        /// Validation items.
        validation_items: usize,
        /// The loss weight of each class.
        class_weights: Vec<f32>,
        /// The loss.
        loss: LossKind,
    },
    /// A batch finished (1-based numbers).
    Batch {
        /// Epoch.
        epoch: usize,
        /// Batch within the epoch.
        batch: usize,
        /// Batches in the epoch.
        batches: usize,
    },
    /// An epoch finished.
    Epoch(EpochSummary),
    /// Training ended.
    Finished {
        /// Why.
        reason: StopReason,
        /// The epoch whose weights were kept.
        kept_epoch: usize,
    },
}

/// What a caller hears during a run (every method has a do-nothing default); see
/// [`Trainer::run_to_end`] and [`crate::run::run`].
pub trait Progress {
    /// Each training event, as it happens.
    fn event(&mut self, _event: &TrainEvent) {}

    /// Awaited before each epoch. A browser worker yields to its event loop here, so that a
    /// stop message can arrive and cancel the [`CancelToken`].
    fn between_epochs(&mut self) -> impl std::future::Future<Output = ()> {
        std::future::ready(())
    }

    /// Each event of the automatic recipe's search ([`crate::recipe::search`]).
    fn search(&mut self, _event: &crate::recipe::SearchEvent) {}

    /// Called by [`crate::run::run`] once the items are split (indices into the run's items):
    /// extra training rows made from the training items only (e.g. embeddings of augmented
    /// views), appended to the training set. Validation items must not contribute, or
    /// validation would see them.
    fn extra_training(&mut self, _train: &[usize], _validation: &[usize]) -> LabelledEmbeddings {
        LabelledEmbeddings::default()
    }

    /// Called by [`crate::run::run`] before the automatic recipe's search, with every item
    /// (indices into the run's items): embeddings of augmented views of them, each with its
    /// item's index (any number per item; none by default). The search tries the linear head
    /// with and without them, a fold training only on its own training items' views
    /// ([`crate::recipe::search`]).
    fn augmented_views(&mut self, _items: &[usize]) -> Vec<(usize, Vec<f32>)> {
        Vec::new()
    }
}

/// A flag another thread or task sets to stop training after the current epoch.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks training to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The result of training: everything needed to predict and to write the model file.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainedHead {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// The head's shape.
    pub config: HeadConfig,
    /// The kept weights (best validation epoch, or the last).
    pub weights: HeadWeights,
    /// The feature standardisation the head expects.
    pub normalization: FeatureNormalization,
    /// The settings used.
    pub train_config: TrainConfig,
    /// The loss used.
    pub loss: LossKind,
    /// The loss weight of each class.
    pub class_weights: Vec<f32>,
    /// One summary per epoch run.
    pub history: Vec<EpochSummary>,
    /// The epoch whose weights were kept (1-based).
    pub kept_epoch: usize,
    /// Why training ended.
    pub stop_reason: StopReason,
    /// Metrics of the kept weights on the validation data (with bootstrap intervals).
    pub validation: Option<Evaluation>,
    /// Two classes: the decision threshold chosen on predictions the head did not train on
    /// (out-of-fold, or the validation items), used by every prediction; `None` = argmax.
    pub threshold: Option<Threshold>,
}

/// Fits a head with `config` on `train` until done, early-stopped or `cancel`led and reports
/// through `progress`: a linear head with [`OptimizerKind::Lbfgs`] is solved on the host
/// ([`logistic`]; one [`TrainEvent::Epoch`] per solver iteration), every other configuration
/// runs the epoch loop on `device` ([`Trainer::run_to_end`]).
///
/// Errors: those of [`Trainer::new`] (settings and data) and of the path taken;
/// [`TrainError::Cancelled`] when `cancel` is set before anything was fitted.
pub async fn fit_head(
    classes: &[String],
    train: &LabelledEmbeddings,
    validation: Option<&LabelledEmbeddings>,
    config: &TrainConfig,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<TrainedHead, TrainError> {
    if config.optimizer != OptimizerKind::Lbfgs {
        return Trainer::new(classes, train, validation, config, device)?
            .run_to_end(cancel, progress)
            .await;
    }
    progress.between_epochs().await;
    if cancel.is_cancelled() {
        return Err(TrainError::Cancelled);
    }
    logistic::fit_linear_head(classes, train, validation, config, progress)
}

/// Trains a head start to finish on a given split: runs epochs until done, early-stopped or
/// `cancel`led, reporting each step through `on_event`. [`crate::run::run`] also makes the
/// split; both go through [`fit_head`].
///
/// Errors: those of [`fit_head`].
pub async fn train(
    classes: &[String],
    train: &LabelledEmbeddings,
    validation: Option<&LabelledEmbeddings>,
    config: &TrainConfig,
    device: &Device,
    cancel: &CancelToken,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainedHead, TrainError> {
    /// Only the events.
    struct Events<'a>(&'a mut dyn FnMut(&TrainEvent));
    impl Progress for Events<'_> {
        fn event(&mut self, event: &TrainEvent) {
            (self.0)(event);
        }
    }
    fit_head(
        classes,
        train,
        validation,
        config,
        device,
        cancel,
        &mut Events(on_event),
    )
    .await
}

#[cfg(test)]
mod tests;
