//! The fine-tuning epoch loop: shuffled batches of cut-point activations through the tail and
//! the head, one backward pass, two AdamW steps (the blocks at their lower learning rate), then
//! validation and early stopping, as [`crate::train::Trainer`] does for a head alone.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::features::batch_tensor;
use super::{
    CutDataset, FineTuneConfig, TunePenalty, forward, normalization_tensors, predict_with,
};
use crate::efficientnet::tail::{Tail, TailWeights};
use crate::head::{Head, OutputKind};
use crate::metrics::{EvaluationOptions, evaluate};
use crate::rng::SeededRng;
use crate::train::{
    CancelToken, EpochSummary, OptimizerKind, Progress, StopReason, TrainError, TrainEvent,
    TrainedHead, epoch_means, host_loss, per_item_loss, targets,
};

/// The shuffling stream of fine-tuning (distinct from the head's).
const SHUFFLE_STREAM: u64 = 0xF17E;

/// What the loop hands back: the kept modules (still on the autodiff device).
pub(super) struct Outcome {
    pub(super) tail: Tail,
    pub(super) head: Head,
    pub(super) history: Vec<EpochSummary>,
    pub(super) kept_epoch: usize,
    pub(super) stop_reason: StopReason,
}

/// One fine-tuning run, prepared.
pub(super) struct Loop<'a> {
    start: &'a TrainedHead,
    train: &'a CutDataset,
    validation: Option<&'a CutDataset>,
    config: &'a FineTuneConfig,
    device: Device,
    plain: Device,
    tail: Tail,
    head: Head,
    /// The pretrained tail (constants) and λ, with [`TunePenalty::Recipe`] and a linear head
    /// fitted with a penalty.
    anchor: Option<(Tail, f64)>,
    rng: SeededRng,
}

/// λ/2 (‖W_head‖² + ‖θ − θ₀‖²): the head's own penalty and the blocks' distance from their
/// pretrained weights (see [`TunePenalty::Recipe`]).
fn recipe_penalty(tail: &Tail, head: &Head, (pretrained, lambda): &(Tail, f64)) -> Tensor<1> {
    let mut total = head.output.weight.val().powi_scalar(2).sum();
    if let Some(hidden) = &head.hidden {
        total = total + hidden.weight.val().powi_scalar(2).sum();
    }
    for (conv, anchor) in tail.convs().into_iter().zip(pretrained.convs()) {
        total = total
            + (conv.weight.val() - anchor.weight.val().detach())
                .powi_scalar(2)
                .sum()
            + (conv.bias.val() - anchor.bias.val().detach())
                .powi_scalar(2)
                .sum();
    }
    total * (*lambda as f32 / 2.0)
}

fn optimizer(weight_decay: f64) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(weight_decay as f32)
        .init()
}

impl<'a> Loop<'a> {
    /// Puts the pretrained tail and `start`'s head on `device`'s autodiff form.
    pub(super) fn new(
        start: &'a TrainedHead,
        pretrained: &TailWeights,
        train: &'a CutDataset,
        validation: Option<&'a CutDataset>,
        config: &'a FineTuneConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let plain = device.clone().without_autodiff();
        let device = plain.clone().autodiff();
        let tail = Tail::from_weights(pretrained, &device)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let head = Head::from_weights(&start.config, &start.weights, &device)?;
        let lambda = start.train_config.weight_decay;
        let anchor = match config.penalty {
            TunePenalty::Recipe
                if start.train_config.optimizer == OptimizerKind::Lbfgs && lambda > 0.0 =>
            {
                Some((
                    Tail::from_weights(pretrained, &device)
                        .map_err(|e| TrainError::Config(e.to_string()))?,
                    lambda,
                ))
            }
            _ => None,
        };
        Ok(Self {
            start,
            train,
            validation,
            config,
            device,
            plain,
            tail,
            head,
            anchor,
            rng: SeededRng::derive(seed, SHUFFLE_STREAM),
        })
    }

    /// The targets of `labels`, smoothed as the head's were.
    fn targets(&self, labels: &[usize]) -> Tensor<2> {
        targets(
            labels,
            self.start.classes.len(),
            self.start.config.output,
            self.start.train_config.label_smoothing,
            &self.device,
        )
    }

    /// The validation loss of `tail` and `head` (class-weighted, unsmoothed) and its figures.
    async fn validate(
        &self,
        tail: &Tail,
        head: &Head,
        normalization: &(Tensor<2>, Tensor<2>),
        validation: &CutDataset,
    ) -> Result<(f64, crate::metrics::Evaluation), TrainError> {
        let probs = predict_with(
            &tail.valid(),
            &head.valid(),
            normalization,
            self.start.config.output,
            self.start.classes.len(),
            self.config.blocks,
            &validation.features,
            &self.plain,
        )
        .await?;
        let loss = host_loss(
            &probs,
            &validation.labels,
            &self.start.class_weights,
            self.start.loss,
        );
        let evaluation = evaluate(
            &probs,
            &validation.labels,
            &self.start.classes,
            &EvaluationOptions {
                bootstrap_samples: 0,
                ..EvaluationOptions::default()
            },
        )?;
        Ok((loss, evaluation))
    }

    /// Runs the epochs; see [`super::fine_tune`].
    pub(super) async fn run(
        mut self,
        cancel: &CancelToken,
        progress: &mut impl Progress,
    ) -> Result<Outcome, TrainError> {
        let config = self.config;
        let n = self.train.labels.len();
        let batches = n.div_ceil(config.batch_size);
        let total_steps = (batches * config.epochs).max(1);
        progress.event(&TrainEvent::Started {
            epochs: config.epochs,
            batches_per_epoch: batches,
            train_items: n,
            validation_items: self.validation.map_or(0, |v| v.labels.len()),
            class_weights: self.start.class_weights.clone(),
            loss: self.start.loss,
        });
        let normalization = normalization_tensors(&self.start.normalization, &self.device);
        let plain_normalization = normalization_tensors(&self.start.normalization, &self.plain);
        let decay = if self.anchor.is_some() {
            0.0
        } else {
            config.weight_decay
        };
        let mut tail_optimizer = optimizer(decay);
        let mut head_optimizer = optimizer(decay);
        let (mut tail, mut head) = (self.tail.clone(), self.head.clone());
        // Epoch 0, the head alone on the pretrained blocks: kept when no epoch beats it.
        let mut best: Option<(Tail, Head, f64, usize)> = match self.validation {
            Some(v) => {
                let (loss, _) = self.validate(&tail, &head, &plain_normalization, v).await?;
                Some((tail.clone(), head.clone(), loss, 0))
            }
            None => None,
        };
        let mut history = Vec::new();
        let mut stale = 0;
        let mut stop_reason = StopReason::Completed;
        let mut step = 0usize;
        for epoch in 1..=config.epochs {
            progress.between_epochs().await;
            if cancel.is_cancelled() {
                stop_reason = StopReason::Cancelled;
                break;
            }
            let mut order: Vec<usize> = (0..n).collect();
            self.rng.shuffle(&mut order);
            let mut sums: Option<Tensor<1>> = None;
            let mut factor = 1.0;
            for (b, chunk) in order.chunks(config.batch_size).enumerate() {
                factor =
                    0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total_steps as f64).cos());
                let rows: Vec<_> = chunk.iter().map(|&i| &self.train.features[i]).collect();
                let labels: Vec<usize> = chunk.iter().map(|&i| self.train.labels[i]).collect();
                let x = batch_tensor(&rows, config.blocks, &self.device);
                let weights: Vec<f32> = labels
                    .iter()
                    .map(|&l| self.start.class_weights.get(l).copied().unwrap_or(1.0))
                    .collect();
                let weights =
                    Tensor::<1>::from_data(TensorData::new(weights, [chunk.len()]), &self.device);
                let logits = forward(&tail, &head, &normalization, x);
                let item_loss =
                    per_item_loss(logits.clone(), self.targets(&labels), self.start.loss);
                let mut loss = (item_loss * weights.clone()).sum() / weights.sum();
                let predicted = match self.start.config.output {
                    OutputKind::Softmax => logits.detach().argmax(1).squeeze_dim::<1>(1),
                    OutputKind::Sigmoid => {
                        logits.detach().greater_elem(0.0).int().squeeze_dim::<1>(1)
                    }
                };
                let labels_i: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
                let labels_t = Tensor::<1, Int>::from_data(
                    TensorData::new(labels_i, [chunk.len()]),
                    &self.device,
                );
                let correct = predicted.equal(labels_t).float().sum();
                let batch =
                    Tensor::cat(vec![loss.clone().detach() * chunk.len() as f32, correct], 0);
                sums = Some(match sums {
                    Some(s) => s + batch,
                    None => batch,
                });
                if let Some(anchor) = &self.anchor {
                    loss = loss + recipe_penalty(&tail, &head, anchor);
                }
                let mut grads = loss.backward();
                let tail_grads = GradientsParams::from_module(&mut grads, &tail);
                let head_grads = GradientsParams::from_module(&mut grads, &head);
                tail =
                    tail_optimizer.step(config.backbone_learning_rate * factor, tail, tail_grads);
                head = head_optimizer.step(config.head_learning_rate * factor, head, head_grads);
                step += 1;
                progress.event(&TrainEvent::Batch {
                    epoch,
                    batch: b + 1,
                    batches,
                });
            }
            let (train_loss, train_accuracy) = match sums {
                Some(sums) => epoch_means(sums, n).await?,
                None => (0.0, 0.0),
            };
            if !train_loss.is_finite() {
                return Err(TrainError::Data(format!(
                    "the fine-tuning loss diverged (epoch {epoch}); try lower learning rates"
                )));
            }
            let mut summary = EpochSummary {
                epoch,
                learning_rate: config.head_learning_rate * factor,
                train_loss,
                train_accuracy,
                validation_loss: None,
                validation_accuracy: None,
                validation_balanced_accuracy: None,
                validation_auc: None,
                is_best: false,
            };
            if let Some(v) = self.validation {
                let (loss, evaluation) =
                    self.validate(&tail, &head, &plain_normalization, v).await?;
                summary.validation_loss = Some(loss);
                summary.validation_accuracy = Some(evaluation.accuracy);
                summary.validation_balanced_accuracy = Some(evaluation.balanced_accuracy);
                summary.validation_auc = evaluation.auc;
                if best.as_ref().is_none_or(|b| loss < b.2) {
                    best = Some((tail.clone(), head.clone(), loss, epoch));
                    stale = 0;
                    summary.is_best = true;
                } else {
                    stale += 1;
                }
            }
            history.push(summary.clone());
            progress.event(&TrainEvent::Epoch(summary));
            if config.patience.is_some_and(|p| stale >= p) {
                stop_reason = StopReason::EarlyStopped;
                break;
            }
        }
        if history.is_empty() {
            return Err(TrainError::Cancelled);
        }
        let last = history.len();
        let (tail, head, kept_epoch) = match best {
            Some((tail, head, _, epoch)) => (tail, head, epoch),
            None => (tail, head, last),
        };
        progress.event(&TrainEvent::Finished {
            reason: stop_reason,
            kept_epoch,
        });
        Ok(Outcome {
            tail,
            head,
            history,
            kept_epoch,
            stop_reason,
        })
    }
}
