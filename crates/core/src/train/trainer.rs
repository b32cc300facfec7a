//! [`Trainer`]: the epoch loop on a Burn device (backward → gradients → optimiser step), and
//! the checks and preparation every way of fitting a head shares (`prepare`).

use super::*;

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
pub(super) struct Prepared<'v> {
    pub(super) loss: LossKind,
    pub(super) head_config: HeadConfig,
    pub(super) class_weights: Vec<f32>,
    pub(super) normalization: FeatureNormalization,
    pub(super) validation: Option<&'v LabelledEmbeddings>,
}

/// Checks the settings and the data (two classes at least, each with a training item, rows of
/// one length with finite values) and derives the loss, head shape, class weights and the
/// standardisation fitted on the training items.
pub(super) fn prepare<'v>(
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
        let targets = targets(
            &train.labels,
            num_classes,
            head_config.output,
            config.label_smoothing,
            &device,
        );
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
            (Some(l), Some(c)) => epoch_means(Tensor::cat(vec![l, c], 0), n).await?,
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
