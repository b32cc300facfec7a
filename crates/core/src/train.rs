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
use crate::readback::{ComputeError, read_f32};
use crate::rng::SeededRng;
use crate::split::SplitError;
use crate::threshold::Threshold;

mod classifier;
mod config;
mod lbfgs;
pub(crate) mod logistic;
mod loss;

pub use classifier::Classifier;
use classifier::{predict_rows, upload_rows};
pub use config::{
    ClassWeighting, DEFAULT_DROPOUT, DEFAULT_HIDDEN_UNITS, IMBALANCE_RATIO, LossKind,
    OptimizerKind, Schedule, TrainConfig, limits,
};
pub use loss::class_weights_for;
use loss::{host_loss, per_item_loss};

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

/// Data prepared once on the device.
struct DeviceData {
    x: Tensor<2>,
    targets: Tensor<2>,
    sample_weights: Tensor<1>,
    labels: Tensor<1, Int>,
    len: usize,
}

/// A training run, one epoch per [`Trainer::run_epoch`] call.
pub struct Trainer {
    classes: Vec<String>,
    config: TrainConfig,
    head_config: HeadConfig,
    loss: LossKind,
    class_weights: Vec<f32>,
    normalization: FeatureNormalization,
    device: Device,
    data: DeviceData,
    validation: Option<(Tensor<2>, Vec<usize>)>,
    /// `None` only while an epoch runs (the optimiser consumes and returns it).
    head: Option<Head>,
    best: Option<(Head, f64, usize)>,
    optimizer: ModuleOptimizer,
    rng: SeededRng,
    epoch: usize,
    step: usize,
    total_steps: usize,
    epochs_without_improvement: usize,
    history: Vec<EpochSummary>,
    early_stopped: bool,
}

fn check_data(
    name: &str,
    data: &LabelledEmbeddings,
    num_classes: usize,
    dim: usize,
) -> Result<(), TrainError> {
    if data.embeddings.len() != data.labels.len() {
        return Err(TrainError::Data(format!(
            "{name}: {} embeddings but {} labels",
            data.embeddings.len(),
            data.labels.len()
        )));
    }
    for (i, (row, &label)) in data.embeddings.iter().zip(&data.labels).enumerate() {
        if row.len() != dim {
            return Err(TrainError::Data(format!(
                "{name} item {i} has {} features, expected {dim}",
                row.len()
            )));
        }
        if label >= num_classes {
            return Err(TrainError::Data(format!(
                "{name} item {i} has label {label} but there are {num_classes} classes"
            )));
        }
        if row.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::Data(format!(
                "{name} item {i} has non-finite features"
            )));
        }
    }
    Ok(())
}

/// What every way of fitting a head needs, checked and derived once.
struct Prepared<'v> {
    loss: LossKind,
    head_config: HeadConfig,
    class_weights: Vec<f32>,
    normalization: FeatureNormalization,
    validation: Option<&'v LabelledEmbeddings>,
}

/// Checks the settings and the data (two classes at least, each with a training item, rows of
/// one length with finite values) and derives the loss, head shape, class weights and the
/// standardisation fitted on the training items.
fn prepare<'v>(
    classes: &[String],
    train: &LabelledEmbeddings,
    validation: Option<&'v LabelledEmbeddings>,
    config: &TrainConfig,
) -> Result<Prepared<'v>, TrainError> {
    let num_classes = classes.len();
    if num_classes < 2 {
        return Err(TrainError::Data(format!(
            "at least two classes are needed, got {num_classes}"
        )));
    }
    config.validate(num_classes)?;
    let dim = train.embeddings.first().map_or(0, Vec::len);
    if dim == 0 {
        return Err(TrainError::Data("there are no training items".into()));
    }
    check_data("training", train, num_classes, dim)?;
    let mut counts = vec![0usize; num_classes];
    for &label in &train.labels {
        counts[label] += 1;
    }
    if let Some(empty) = counts.iter().position(|&c| c == 0) {
        return Err(TrainError::Data(format!(
            "class \"{}\" has no training items",
            classes[empty]
        )));
    }
    let validation = match validation {
        Some(v) if !v.embeddings.is_empty() => {
            check_data("validation", v, num_classes, dim)?;
            Some(v)
        }
        _ => None,
    };
    let loss = config.resolved_loss(num_classes);
    let head_config = HeadConfig {
        kind: config.head,
        output: loss.output(),
        input_dim: dim,
        num_classes,
    };
    head_config.validate()?;
    Ok(Prepared {
        loss,
        head_config,
        class_weights: class_weights_for(&train.labels, num_classes, config.class_weights),
        normalization: FeatureNormalization::fit(&train.embeddings),
        validation,
    })
}

impl Trainer {
    /// Prepares a run: checks settings and data, standardises the features, uploads
    /// everything to `device` once and initialises the head from the seed.
    pub fn new(
        classes: &[String],
        train: &LabelledEmbeddings,
        validation: Option<&LabelledEmbeddings>,
        config: &TrainConfig,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let Prepared {
            loss,
            head_config,
            class_weights,
            normalization,
            validation,
        } = prepare(classes, train, validation, config)?;
        if config.optimizer == OptimizerKind::Lbfgs {
            return Err(TrainError::Config(
                "an L-BFGS fit has no epochs to step through: use fit_head".into(),
            ));
        }
        let num_classes = classes.len();

        let device = device.clone().autodiff();
        let plain = device.clone().without_autodiff();
        let n = train.labels.len();
        let x = upload_rows(&train.embeddings, &normalization, &device);
        let eps = config.label_smoothing;
        let targets = match head_config.output {
            OutputKind::Softmax => {
                let off = eps / num_classes as f32;
                let on = 1.0 - eps + off;
                let mut t = vec![off; n * num_classes];
                for (i, &label) in train.labels.iter().enumerate() {
                    t[i * num_classes + label] = on;
                }
                Tensor::<2>::from_data(TensorData::new(t, [n, num_classes]), &device)
            }
            OutputKind::Sigmoid => {
                let t: Vec<f32> = train
                    .labels
                    .iter()
                    .map(|&l| if l == 1 { 1.0 - eps / 2.0 } else { eps / 2.0 })
                    .collect();
                Tensor::<2>::from_data(TensorData::new(t, [n, 1]), &device)
            }
        };
        let sample_weights: Vec<f32> = train.labels.iter().map(|&l| class_weights[l]).collect();
        let sample_weights = Tensor::<1>::from_data(TensorData::new(sample_weights, [n]), &device);
        let labels_i: Vec<i64> = train.labels.iter().map(|&l| l as i64).collect();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels_i, [n]), &device);

        let validation = validation.map(|v| {
            (
                upload_rows(&v.embeddings, &normalization, &plain),
                v.labels.clone(),
            )
        });

        let weights = HeadWeights::initial(&head_config, config.seed)?;
        let head = Head::from_weights(&head_config, &weights, &device)?;
        let optimizer = match config.optimizer {
            OptimizerKind::Adam => {
                let mut adam = AdamConfig::new();
                if config.weight_decay > 0.0 {
                    adam = adam.with_weight_decay(Some(
                        burn::optim::decay::WeightDecayConfig::new(config.weight_decay as f32),
                    ));
                }
                adam.init()
            }
            OptimizerKind::AdamW | OptimizerKind::Lbfgs => AdamWConfig::new()
                .with_weight_decay(config.weight_decay as f32)
                .init(),
        };
        let batches = n.div_ceil(config.batch_size);
        Ok(Self {
            classes: classes.to_vec(),
            config: config.clone(),
            head_config,
            loss,
            class_weights,
            normalization,
            device,
            data: DeviceData {
                x,
                targets,
                sample_weights,
                labels,
                len: n,
            },
            validation,
            head: Some(head),
            best: None,
            optimizer,
            rng: SeededRng::derive(config.seed, 0x7124),
            epoch: 0,
            step: 0,
            total_steps: batches * config.epochs,
            epochs_without_improvement: 0,
            history: Vec::new(),
            early_stopped: false,
        })
    }

    /// The event announcing the run.
    pub fn started_event(&self) -> TrainEvent {
        TrainEvent::Started {
            epochs: self.config.epochs,
            batches_per_epoch: self.batches_per_epoch(),
            train_items: self.data.len,
            validation_items: self.validation.as_ref().map_or(0, |v| v.1.len()),
            class_weights: self.class_weights.clone(),
            loss: self.loss,
        }
    }

    /// Optimiser steps in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.data.len.div_ceil(self.config.batch_size)
    }

    /// Whether all epochs ran or early stopping ended the run.
    pub fn is_done(&self) -> bool {
        self.early_stopped || self.epoch >= self.config.epochs
    }

    fn learning_rate(&self) -> f64 {
        match self.config.schedule {
            Schedule::Constant => self.config.learning_rate,
            Schedule::Cosine => {
                let progress = self.step as f64 / self.total_steps.max(1) as f64;
                0.5 * self.config.learning_rate * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// Runs one epoch: shuffled batches, one optimiser step each, then validation.
    /// `on_batch(batch, batches)` is called after each step (1-based).
    pub async fn run_epoch(
        &mut self,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<EpochSummary, TrainError> {
        self.epoch += 1;
        let n = self.data.len;
        let batch_size = self.config.batch_size;
        let batches = self.batches_per_epoch();
        let mut order: Vec<usize> = (0..n).collect();
        self.rng.shuffle(&mut order);
        let dropout = match self.config.head {
            HeadKind::Mlp { hidden, dropout } if dropout > 0.0 => Some((hidden, dropout)),
            _ => None,
        };
        let mut loss_sum: Option<Tensor<1>> = None;
        let mut correct_sum: Option<Tensor<1>> = None;
        let mut learning_rate = self.learning_rate();
        let mut head = self
            .head
            .take()
            .ok_or_else(|| TrainError::Data("an earlier epoch failed; start again".into()))?;
        for (b, chunk) in order.chunks(batch_size).enumerate() {
            let len = chunk.len();
            let idx: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [len]), &self.device);
            let x = self.data.x.clone().select(0, idx.clone());
            let targets = self.data.targets.clone().select(0, idx.clone());
            let weights = self.data.sample_weights.clone().select(0, idx.clone());
            let labels = self.data.labels.clone().select(0, idx);
            let mask = dropout.map(|(hidden, p)| {
                let keep = 1.0 - p;
                let values: Vec<f32> = (0..len * hidden)
                    .map(|_| {
                        if self.rng.next_f64() < f64::from(keep) {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Tensor::<2>::from_data(TensorData::new(values, [len, hidden]), &self.device)
            });
            let logits = head.forward(x, mask);
            let item_loss = per_item_loss(logits.clone(), targets, self.loss);
            let loss = (item_loss * weights.clone()).sum() / weights.sum();
            let predicted = match self.head_config.output {
                OutputKind::Softmax => logits.detach().argmax(1).squeeze_dim::<1>(1),
                OutputKind::Sigmoid => logits.detach().greater_elem(0.0).int().squeeze_dim::<1>(1),
            };
            let correct = predicted.equal(labels).float().sum();
            let batch_loss = loss.clone().detach() * len as f32;
            loss_sum = Some(match loss_sum {
                Some(s) => s + batch_loss,
                None => batch_loss,
            });
            correct_sum = Some(match correct_sum {
                Some(s) => s + correct,
                None => correct,
            });
            learning_rate = self.learning_rate();
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = self.optimizer.step(learning_rate, head, grads);
            self.step += 1;
            on_batch(b + 1, batches);
        }
        self.head = Some(head);
        let (train_loss, train_accuracy) = match (loss_sum, correct_sum) {
            (Some(l), Some(c)) => {
                let values = read_f32(Tensor::cat(vec![l, c], 0)).await?;
                match values.as_slice() {
                    [l, c] => (f64::from(*l) / n as f64, f64::from(*c) / n as f64),
                    _ => {
                        return Err(ComputeError::Execution(
                            "could not read the epoch's loss".into(),
                        )
                        .into());
                    }
                }
            }
            _ => (0.0, 0.0),
        };
        if !train_loss.is_finite() {
            return Err(TrainError::Data(format!(
                "the training loss diverged (epoch {}); try a lower learning rate",
                self.epoch
            )));
        }

        let mut summary = EpochSummary {
            epoch: self.epoch,
            learning_rate,
            train_loss,
            train_accuracy,
            validation_loss: None,
            validation_accuracy: None,
            validation_balanced_accuracy: None,
            validation_auc: None,
            is_best: false,
        };
        let head = self
            .head
            .as_ref()
            .ok_or_else(|| TrainError::Data("the head is missing".into()))?;
        if let Some((x, labels)) = &self.validation {
            let valid = head.valid();
            let probs = predict_rows(
                &valid,
                x.clone(),
                self.head_config.output,
                self.classes.len(),
            )
            .await?;
            let loss = host_loss(&probs, labels, &self.class_weights, self.loss);
            let evaluation = evaluate(
                &probs,
                labels,
                &self.classes,
                &EvaluationOptions {
                    bootstrap_samples: 0,
                    ..EvaluationOptions::default()
                },
            )?;
            summary.validation_loss = Some(loss);
            summary.validation_accuracy = Some(evaluation.accuracy);
            summary.validation_balanced_accuracy = Some(evaluation.balanced_accuracy);
            summary.validation_auc = evaluation.auc;
            let improved = self.best.as_ref().is_none_or(|(_, best, _)| loss < *best);
            if improved {
                self.best = Some((head.clone(), loss, self.epoch));
                self.epochs_without_improvement = 0;
                summary.is_best = true;
            } else {
                self.epochs_without_improvement += 1;
                if self
                    .config
                    .patience
                    .is_some_and(|p| self.epochs_without_improvement >= p)
                {
                    self.early_stopped = true;
                }
            }
        }
        self.history.push(summary.clone());
        Ok(summary)
    }

    /// Ends the run: keeps the best validation epoch's weights (else the last), reads them to
    /// the host and evaluates them on the validation data with 95% bootstrap intervals.
    pub async fn finish(self, cancelled: bool) -> Result<TrainedHead, TrainError> {
        if self.epoch == 0 || self.history.is_empty() {
            return Err(TrainError::Cancelled);
        }
        let stop_reason = if cancelled {
            StopReason::Cancelled
        } else if self.early_stopped {
            StopReason::EarlyStopped
        } else {
            StopReason::Completed
        };
        let (head, kept_epoch) = match (self.best, self.head) {
            (Some((head, _, epoch)), _) => (head, epoch),
            (None, Some(head)) => (head, self.epoch),
            (None, None) => return Err(TrainError::Data("the head is missing".into())),
        };
        let head = head.valid();
        let weights = head.to_weights(&self.head_config).await?;
        let validation = match &self.validation {
            Some((x, labels)) => {
                let probs = predict_rows(
                    &head,
                    x.clone(),
                    self.head_config.output,
                    self.classes.len(),
                )
                .await?;
                Some(evaluate(
                    &probs,
                    labels,
                    &self.classes,
                    &EvaluationOptions {
                        seed: self.config.seed,
                        ..EvaluationOptions::default()
                    },
                )?)
            }
            None => None,
        };
        Ok(TrainedHead {
            classes: self.classes,
            config: self.head_config,
            weights,
            normalization: self.normalization,
            train_config: self.config,
            loss: self.loss,
            class_weights: self.class_weights,
            history: self.history,
            kept_epoch,
            stop_reason,
            validation,
            threshold: None,
        })
    }

    /// Runs epochs until done, early-stopped or `cancel`led, then [`Trainer::finish`]es.
    /// `progress` hears [`TrainEvent::Started`], every batch and epoch and, when a model was
    /// kept, [`TrainEvent::Finished`]; its [`Progress::between_epochs`] is awaited before each
    /// epoch and `cancel` checked after it, so a browser worker can receive a stop message there.
    ///
    /// Errors: those of [`Trainer::run_epoch`] and [`Trainer::finish`] (stopped before the
    /// first epoch: [`TrainError::Cancelled`]).
    pub async fn run_to_end(
        mut self,
        cancel: &CancelToken,
        progress: &mut impl Progress,
    ) -> Result<TrainedHead, TrainError> {
        progress.event(&self.started_event());
        let mut cancelled = false;
        while !self.is_done() {
            progress.between_epochs().await;
            if cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            let epoch = self.epoch + 1;
            let summary = self
                .run_epoch(&mut |batch, batches| {
                    progress.event(&TrainEvent::Batch {
                        epoch,
                        batch,
                        batches,
                    })
                })
                .await?;
            progress.event(&TrainEvent::Epoch(summary));
        }
        let trained = self.finish(cancelled).await?;
        progress.event(&TrainEvent::Finished {
            reason: trained.stop_reason,
            kept_epoch: trained.kept_epoch,
        });
        Ok(trained)
    }
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
