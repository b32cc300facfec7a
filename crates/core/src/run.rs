//! One training run, start to end: split the items into training and validation, train epochs,
//! keep the best epoch, evaluate it ([`run`]); and [`cross_validate`], the out-of-fold figures
//! of a configuration over every item. The browser worker and the CLI are thin adapters over
//! [`run`]: they hand it the embeddings and a [`Progress`] and show what it reports.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::head::HeadKind;
use crate::metrics::{Evaluation, EvaluationOptions, evaluate};
use crate::split::{SplitError, stratified_folds, stratified_split};
pub use crate::train::Progress;
use crate::train::{
    CancelToken, Classifier, DEFAULT_DROPOUT, DEFAULT_HIDDEN_UNITS, LabelledEmbeddings,
    TrainConfig, TrainError, TrainedHead, Trainer, limits,
};

/// The validation share of [`RunConfig::default`].
pub const DEFAULT_VALIDATION_SHARE: f64 = 0.2;

/// Everything a user sets for a run: core's training configuration plus the share of each
/// class held out for validation. The page edits, saves, exports and sends this; the CLI fills
/// it from its flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The head, loss, optimiser and schedule.
    pub train: TrainConfig,
    /// Share of each class held out for validation, in [`limits::VALIDATION_SHARE`]; 0 trains
    /// on every item (no validation, no early stopping).
    #[serde(default = "default_validation_share")]
    pub validation_share: f64,
}

fn default_validation_share() -> f64 {
    DEFAULT_VALIDATION_SHARE
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            validation_share: DEFAULT_VALIDATION_SHARE,
        }
    }
}

impl RunConfig {
    /// The same settings with every value inside [`limits`] (for settings read back from
    /// storage or an imported file): epochs and batch size are clamped to their range; a
    /// learning rate, weight decay, label smoothing or validation share outside its range (or
    /// not a number) takes the default, as do a patience of 0 and an MLP head's hidden units or
    /// dropout outside theirs.
    pub fn clamped(self) -> Self {
        let defaults = Self::default();
        let (d, t) = (defaults.train, self.train);
        let share = &limits::VALIDATION_SHARE;
        let head = match t.head {
            HeadKind::Mlp { hidden, dropout } => HeadKind::Mlp {
                hidden: if limits::HIDDEN_UNITS.contains(&hidden) {
                    hidden
                } else {
                    DEFAULT_HIDDEN_UNITS
                },
                dropout: if limits::DROPOUT.contains(&dropout) {
                    dropout
                } else {
                    DEFAULT_DROPOUT
                },
            },
            HeadKind::Linear => HeadKind::Linear,
        };
        Self {
            train: TrainConfig {
                head,
                epochs: t
                    .epochs
                    .clamp(*limits::EPOCHS.start(), *limits::EPOCHS.end()),
                batch_size: t
                    .batch_size
                    .clamp(*limits::BATCH_SIZE.start(), *limits::BATCH_SIZE.end()),
                learning_rate: if limits::learning_rate_ok(t.learning_rate) {
                    t.learning_rate
                } else {
                    d.learning_rate
                },
                weight_decay: if limits::WEIGHT_DECAY.contains(&t.weight_decay) {
                    t.weight_decay
                } else {
                    d.weight_decay
                },
                label_smoothing: if limits::LABEL_SMOOTHING.contains(&t.label_smoothing) {
                    t.label_smoothing
                } else {
                    d.label_smoothing
                },
                patience: if t.patience == Some(0) {
                    d.patience
                } else {
                    t.patience
                },
                ..t
            },
            validation_share: if self.validation_share.is_finite() {
                self.validation_share.clamp(*share.start(), *share.end())
            } else {
                defaults.validation_share
            },
        }
    }
}

/// Where the validation items come from.
#[derive(Clone, Copy, Debug)]
pub enum Validation<'a> {
    /// A stratified [`RunConfig::validation_share`] of each class's items (none at 0), drawn
    /// from the seed; with `groups` (one key per item, e.g. a patient id) groups are held out
    /// whole (see [`stratified_split`]).
    Split {
        /// One group key per item, or `None` to split items one by one.
        groups: Option<&'a [String]>,
    },
    /// A separate validation set: every item trains.
    Given(&'a LabelledEmbeddings),
}

/// A finished run.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The kept head, its history and its validation metrics.
    pub trained: TrainedHead,
    /// Indices of the items that trained (ascending).
    pub train_items: Vec<usize>,
    /// Indices of the items held out for validation (empty with [`Validation::Given`]).
    pub validation_items: Vec<usize>,
}

/// One label per embedding, or [`TrainError::Data`].
fn same_length(items: &LabelledEmbeddings) -> Result<(), TrainError> {
    if items.embeddings.len() == items.labels.len() {
        Ok(())
    } else {
        Err(TrainError::Data(format!(
            "{} embeddings but {} labels",
            items.embeddings.len(),
            items.labels.len()
        )))
    }
}

/// The items at `indices` (each within `items`: callers index from `0..items.len()`).
fn pick(items: &LabelledEmbeddings, indices: &[usize]) -> LabelledEmbeddings {
    LabelledEmbeddings {
        embeddings: indices
            .iter()
            .map(|&i| items.embeddings[i].clone())
            .collect(),
        labels: indices.iter().map(|&i| items.labels[i]).collect(),
    }
}

/// The items at `train` plus the extra rows `progress` makes from them (told `held` too).
fn training_set(
    items: &LabelledEmbeddings,
    train: &[usize],
    held: &[usize],
    progress: &mut impl Progress,
) -> Result<LabelledEmbeddings, TrainError> {
    let mut set = pick(items, train);
    let extra = progress.extra_training(train, held);
    same_length(&extra)?;
    set.embeddings.extend(extra.embeddings);
    set.labels.extend(extra.labels);
    Ok(set)
}

/// Splits `items` (one embedding and label per item, labels indexing `classes`), trains a head
/// on the training side with `config` on `device` until done, early-stopped or `cancel`led,
/// keeps the epoch with the lowest validation loss and evaluates it on the validation side
/// with bootstrap intervals.
///
/// Errors: [`TrainError::Config`] for a validation share outside
/// [`limits::VALIDATION_SHARE`] or a setting outside [`limits`]; [`TrainError::Split`] when a
/// class has too few items (or groups) for the split; [`TrainError::Data`] when the extra
/// training rows are inconsistent, and those of [`Trainer::new`] and
/// [`Trainer::run_to_end`] (among them [`TrainError::Cancelled`]).
pub async fn run(
    classes: &[String],
    items: &LabelledEmbeddings,
    validation: Validation<'_>,
    config: &RunConfig,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<Run, TrainError> {
    let share = config.validation_share;
    if !limits::VALIDATION_SHARE.contains(&share) {
        return Err(TrainError::Config(format!(
            "the validation share must be {}, got {share}",
            limits::inclusive(&limits::VALIDATION_SHARE)
        )));
    }
    same_length(items)?;
    let (train_items, validation_items) = match validation {
        Validation::Split { groups } if share > 0.0 => {
            let split = stratified_split(&items.labels, groups, share, config.train.seed).map_err(
                |error| TrainError::Split {
                    error,
                    classes: classes.to_vec(),
                },
            )?;
            (split.train, split.validation)
        }
        _ => ((0..items.labels.len()).collect(), Vec::new()),
    };
    let train_set = training_set(items, &train_items, &validation_items, progress)?;
    let held_out = pick(items, &validation_items);
    let validation_set = match validation {
        Validation::Given(set) => Some(set),
        Validation::Split { .. } => Some(&held_out),
    }
    .filter(|set| !set.labels.is_empty());
    let trained = Trainer::new(classes, &train_set, validation_set, &config.train, device)?
        .run_to_end(cancel, progress)
        .await?;
    Ok(Run {
        trained,
        train_items,
        validation_items,
    })
}

/// Out-of-fold results of a [`cross_validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct CrossValidation {
    /// The fold (`0..k`) of each item.
    pub folds: Vec<usize>,
    /// Class probabilities of each item (`[items][classes]`, rows summing to 1) from the head
    /// trained on the other folds, never on the item itself.
    pub out_of_fold: Vec<Vec<f32>>,
    /// Metrics of the out-of-fold predictions over every item, with 95% bootstrap intervals:
    /// an honest figure when there are too few items to hold many out.
    pub evaluation: Evaluation,
}

/// Stratified `k`-fold cross-validation of `config` on `items` (grouped by `groups` when
/// given, see [`stratified_folds`]): for each fold a head is trained on the other folds, for
/// `config.epochs` epochs (no validation inside, so no early stopping), and predicts the fold.
/// The out-of-fold predictions of every item are then evaluated together. `progress` hears
/// every fold's training, and its [`Progress::extra_training`] is asked for each fold's
/// training side.
///
/// Errors: [`TrainError::Config`] for `k < 2` or a setting outside [`limits`];
/// [`TrainError::Split`] when a class has fewer than 2 items (or groups);
/// [`TrainError::Cancelled`] when `cancel` is set; those of [`Trainer::new`],
/// [`Trainer::run_to_end`], [`Classifier::predict`] and [`evaluate`].
#[allow(clippy::too_many_arguments)]
pub async fn cross_validate(
    classes: &[String],
    items: &LabelledEmbeddings,
    groups: Option<&[String]>,
    k: usize,
    config: &TrainConfig,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<CrossValidation, TrainError> {
    same_length(items)?;
    let folds =
        stratified_folds(&items.labels, groups, k, config.seed).map_err(|error| match error {
            SplitError::BadFolds(_) => TrainError::Config(error.to_string()),
            error => TrainError::Split {
                error,
                classes: classes.to_vec(),
            },
        })?;
    let mut out_of_fold = vec![Vec::new(); items.labels.len()];
    for fold in 0..k {
        let (held, train): (Vec<usize>, Vec<usize>) =
            (0..items.labels.len()).partition(|&i| folds[i] == fold);
        if held.is_empty() {
            continue;
        }
        let train_set = training_set(items, &train, &held, progress)?;
        let trained = Trainer::new(classes, &train_set, None, config, device)?
            .run_to_end(cancel, progress)
            .await?;
        if cancel.is_cancelled() {
            return Err(TrainError::Cancelled);
        }
        let classifier = Classifier::new(
            &trained.config,
            &trained.weights,
            &trained.normalization,
            device,
        )?;
        let probabilities = classifier.predict(&pick(items, &held).embeddings).await?;
        for (&i, row) in held.iter().zip(probabilities) {
            out_of_fold[i] = row;
        }
    }
    let evaluation = evaluate(
        &out_of_fold,
        &items.labels,
        classes,
        &EvaluationOptions {
            seed: config.seed,
            ..EvaluationOptions::default()
        },
    )?;
    Ok(CrossValidation {
        folds,
        out_of_fold,
        evaluation,
    })
}

#[cfg(test)]
mod tests;
