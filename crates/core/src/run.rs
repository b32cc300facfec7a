//! One training run, start to end: split the items into training and validation, train epochs,
//! keep the best epoch, evaluate it ([`run`]); and [`cross_validate`], the out-of-fold figures
//! of a configuration over every item. The browser worker and the CLI are thin adapters over
//! [`run`]: they hand it the embeddings and a [`Progress`] and show what it reports.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::head::HeadKind;
use crate::metrics::{Evaluation, EvaluationOptions, evaluate};
use crate::recipe::{Search, SearchOptions, automatic};
use crate::split::{SplitError, stratified_folds, stratified_split};
use crate::threshold::{ThresholdRule, choose_on_roc};
pub use crate::train::Progress;
use crate::train::{
    CancelToken, Classifier, DEFAULT_DROPOUT, DEFAULT_HIDDEN_UNITS, LabelledEmbeddings,
    TrainConfig, TrainError, TrainedHead, fit_head, limits,
};

/// The validation share of [`RunConfig::default`].
pub const DEFAULT_VALIDATION_SHARE: f64 = 0.2;

/// How the head and its settings are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipe {
    /// Cross-validation on every item chooses the head and its settings from a small grid and
    /// the winner is refitted on every item ([`crate::recipe`]); of [`RunConfig::train`] only
    /// the seed applies, and no validation share is held out.
    #[default]
    Automatic,
    /// [`RunConfig::train`] as set, with [`RunConfig::validation_share`] held out.
    Manual,
}

/// Folds of [`RunConfig::default`]'s automatic recipe.
pub const DEFAULT_FOLDS: usize = 5;

/// Everything a user sets for a run: the recipe, core's training configuration, the share of
/// each class held out for validation and the threshold rule. The page edits, saves, exports
/// and sends this; the CLI fills it from its flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Automatic (the default) or manual. (Serde's default when absent is automatic; the page
    /// reads its own settings saved before there was a choice as manual.)
    #[serde(default)]
    pub recipe: Recipe,
    /// The head, loss, optimiser and schedule.
    pub train: TrainConfig,
    /// Share of each class held out for validation, in [`limits::VALIDATION_SHARE`]; 0 trains
    /// on every item (no validation, no early stopping).
    #[serde(default = "default_validation_share")]
    pub validation_share: f64,
    /// Most folds of the automatic recipe's cross-validation, in [`limits::FOLDS`].
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// Two classes: how the decision threshold is chosen (on the out-of-fold predictions, or
    /// with a manual recipe on the validation items).
    #[serde(default)]
    pub threshold: ThresholdRule,
    /// The automatic recipe's budget for the MLP candidate ([`SearchOptions::mlp_budget`],
    /// floating-point operations): the caller's, as it knows its compute.
    #[serde(default = "default_mlp_budget")]
    pub mlp_budget: f64,
}

fn default_mlp_budget() -> f64 {
    SearchOptions::default().mlp_budget
}

fn default_validation_share() -> f64 {
    DEFAULT_VALIDATION_SHARE
}

fn default_folds() -> usize {
    DEFAULT_FOLDS
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            recipe: Recipe::Automatic,
            train: TrainConfig::default(),
            validation_share: DEFAULT_VALIDATION_SHARE,
            folds: DEFAULT_FOLDS,
            threshold: ThresholdRule::default(),
            mlp_budget: default_mlp_budget(),
        }
    }
}

impl RunConfig {
    /// The same settings with every value inside [`limits`] (for settings read back from
    /// storage or an imported file): epochs, batch size and folds are clamped to their range; a
    /// learning rate, weight decay, label smoothing, validation share or sensitivity target
    /// outside its range (or not a number) takes the default, as do a patience of 0 and an MLP
    /// head's hidden units or dropout outside theirs.
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
                weight_decay: if t.weight_decay_limits().0.contains(&t.weight_decay) {
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
            folds: self
                .folds
                .clamp(*limits::FOLDS.start(), *limits::FOLDS.end()),
            threshold: match self.threshold {
                ThresholdRule::Sensitivity { target } if !(target > 0.0 && target <= 1.0) => {
                    defaults.threshold
                }
                rule => rule,
            },
            recipe: self.recipe,
            mlp_budget: if self.mlp_budget >= 0.0 {
                self.mlp_budget
            } else {
                defaults.mlp_budget
            },
        }
    }

    /// The automatic recipe's search settings.
    pub fn search_options(&self) -> SearchOptions {
        SearchOptions {
            folds: self.folds,
            seed: self.train.seed,
            threshold: self.threshold,
            mlp_budget: self.mlp_budget,
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
    /// A separate validation set: every item trains. `groups` (one key per item of the
    /// run, e.g. a patient id) keep a group in one fold of the automatic recipe's search.
    Given {
        /// The validation items.
        set: &'a LabelledEmbeddings,
        /// One group key per item of the run, or `None`.
        groups: Option<&'a [String]>,
    },
}

/// A finished run.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The kept head, its history, its validation metrics and threshold.
    pub trained: TrainedHead,
    /// The automatic recipe's search (`None` for a manual recipe).
    pub search: Option<Search>,
    /// Indices of the items that trained (ascending).
    pub train_items: Vec<usize>,
    /// Indices of the items held out for validation (empty with [`Validation::Given`]).
    pub validation_items: Vec<usize>,
}

/// One label per embedding, or [`TrainError::Data`].
pub(crate) fn same_length(items: &LabelledEmbeddings) -> Result<(), TrainError> {
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
pub(crate) fn pick(items: &LabelledEmbeddings, indices: &[usize]) -> LabelledEmbeddings {
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

/// One run of `config`'s recipe on `items` (one embedding and label per item, labels indexing
/// `classes`), on `device`, until done, early-stopped or `cancel`led.
///
/// [`Recipe::Automatic`]: [`crate::recipe::automatic`] cross-validates the grid on every item
/// (folds grouped by the split's `groups`), refits the winner on every item, evaluates it on a
/// [`Validation::Given`] set if any, and carries the search's out-of-fold threshold;
/// [`Progress::augmented_views`] is asked for views of every item (the search keeps each
/// fold's to its training items), [`Progress::extra_training`] is not. [`Recipe::Manual`]: splits the items, trains a
/// head on the training side (plus [`Progress::extra_training`]'s rows), keeps the epoch with
/// the lowest validation loss, evaluates it on the validation side with bootstrap intervals
/// and, for two classes, chooses the threshold on the validation predictions.
///
/// Errors: [`TrainError::Config`] for a validation share outside
/// [`limits::VALIDATION_SHARE`] or a setting outside [`limits`]; [`TrainError::Split`] when a
/// class has too few items (or groups) for the split; [`TrainError::Data`] when the extra
/// training rows are inconsistent, and those of [`fit_head`] (among them [`TrainError::Cancelled`]).
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
    if config.recipe == Recipe::Automatic {
        let (groups, given) = match validation {
            Validation::Split { groups } => (groups, None),
            Validation::Given { set, groups } => (groups, Some(set)),
        };
        // The checks the search would make, before any view is embedded (minutes for a
        // large set): too few items or groups in a class.
        crate::split::smallest_class_units(&items.labels, groups).map_err(|error| {
            TrainError::Split {
                error,
                classes: classes.to_vec(),
            }
        })?;
        if cancel.is_cancelled() {
            return Err(TrainError::Cancelled);
        }
        let all: Vec<usize> = (0..items.labels.len()).collect();
        let views = progress.augmented_views(&all);
        let (trained, search) = automatic(
            classes,
            items,
            groups,
            &views,
            given,
            &config.search_options(),
            device,
            cancel,
            progress,
        )
        .await?;
        return Ok(Run {
            trained,
            search: Some(search),
            train_items: (0..items.labels.len()).collect(),
            validation_items: Vec::new(),
        });
    }
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
        Validation::Given { set, .. } => Some(set),
        Validation::Split { .. } => Some(&held_out),
    }
    .filter(|set| !set.labels.is_empty());
    let mut trained = fit_head(
        classes,
        &train_set,
        validation_set,
        &config.train,
        device,
        cancel,
        progress,
    )
    .await?;
    if classes.len() == 2 {
        trained.threshold = trained
            .validation
            .as_ref()
            .and_then(|v| v.roc.first())
            .and_then(|curve| choose_on_roc(curve, config.threshold));
    }
    Ok(Run {
        trained,
        search: None,
        train_items,
        validation_items,
    })
}

/// Fits a head with `config` on `train_set` and predicts `held` (class probabilities,
/// `[rows][classes]`): one fold of a cross-validation.
///
/// Errors: [`TrainError::Cancelled`] when `cancel` is set; those of [`fit_head`],
/// [`Classifier::new`] and [`Classifier::predict`].
pub(crate) async fn fit_and_predict(
    classes: &[String],
    train_set: &LabelledEmbeddings,
    held: &[Vec<f32>],
    config: &TrainConfig,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let trained = fit_head(classes, train_set, None, config, device, cancel, progress).await?;
    if cancel.is_cancelled() {
        return Err(TrainError::Cancelled);
    }
    let classifier = Classifier::new(
        &trained.config,
        &trained.weights,
        &trained.normalization,
        device,
    )?;
    Ok(classifier.predict(held).await?)
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
/// [`TrainError::Cancelled`] when `cancel` is set; those of [`fit_head`], [`Classifier::predict`] and [`evaluate`].
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
        let held_rows = pick(items, &held).embeddings;
        let probabilities = fit_and_predict(
            classes, &train_set, &held_rows, config, device, cancel, progress,
        )
        .await?;
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
