//! The automatic recipe (the default): cross-validation on the training items chooses the head
//! and its settings from a small grid ([`search`]), and the winner is refitted on every item
//! ([`automatic`]).
//!
//! - **Grid** ([`candidates`]): the linear head (logistic regression, L-BFGS,
//!   `train/logistic.rs`) at [`INVERSE_PENALTIES`], scikit-learn's C from 10⁻⁴ to 10² in half
//!   decades, without and (when the largest class has more than [`crate::train::IMBALANCE_RATIO`]× the items
//!   of the smallest) with inverse-frequency class weights; and the source recipe's MLP
//!   ([`TrainConfig::default`], its epochs run in full) when its folds fit
//!   [`SearchOptions::mlp_budget`].
//! - **Folds**: stratified, grouped when group keys are given (a patient never straddles a
//!   fold), `k = min(SearchOptions::folds, the fewest items or groups of a class)`; when a
//!   class has fewer than [`SMALL_CLASS`], the k-fold split is repeated [`SMALL_REPEATS`] times
//!   with other seeds and each item's out-of-fold probabilities are averaged over the repeats.
//! - **Score**: the class-balanced out-of-fold log loss (each class's mean −ln p(true class),
//!   averaged over the classes): a proper score, so calibrated probabilities win, and balanced,
//!   so a large class cannot carry it. The lowest wins; ties go to the earlier candidate (the
//!   stronger penalty, linear before MLP). Same items, groups and seed: same choice.
//!
//! Within a fold the linear candidates share the fold's standardisation and each starts from
//! the previous C's solution (a warm start along the regularisation path). Natively the folds
//! run on all cores; in wasm one after another, with [`Progress::between_epochs`] awaited
//! between them so a stop arrives.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::head::{HeadKind, OutputKind};
use crate::metrics::{Evaluation, EvaluationOptions, evaluate};
use crate::run::{fit_and_predict, pick};
use crate::split::{SplitError, smallest_class_units, stratified_folds};
use crate::threshold::{Threshold, ThresholdRule, choose_threshold};
use crate::train::logistic::{Design, LogisticProblem, fit, probabilities, solver_options};
use crate::train::{
    CancelToken, ClassWeighting, FeatureNormalization, LabelledEmbeddings, OptimizerKind, Progress,
    TrainConfig, TrainError, TrainedHead, class_weights_for, fit_head, limits,
};
use folds::{
    FoldJob, Quiet, add_rows, balanced_log_loss, linear_fold, mlp_cost, parallel_map, threads,
};

/// scikit-learn's inverse penalty C of the linear candidates (λ = 1 / (C·n)), ascending: the
/// strongest penalty first.
pub const INVERSE_PENALTIES: [f64; 13] = [
    1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2, 3.162e-2, 0.1, 0.3162, 1.0, 3.162, 10.0, 31.62, 100.0,
];
/// Most L-BFGS iterations of a linear candidate.
pub const LINEAR_ITERATIONS: usize = 200;
/// A class with fewer items (or groups) than this repeats the k-fold split.
pub const SMALL_CLASS: usize = 10;
/// Repeats of the k-fold split for small classes.
pub const SMALL_REPEATS: usize = 3;

/// One point of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "head")]
pub enum Candidate {
    /// Logistic regression on the standardised embeddings, fitted by L-BFGS.
    Linear {
        /// scikit-learn's inverse penalty C; λ = 1 / (C·n) for n training items.
        c: f64,
        /// Inverse-frequency class weights or none.
        class_weights: ClassWeighting,
    },
    /// An MLP trained by the epoch loop with these settings (all epochs: no validation inside
    /// a fold to stop early on).
    Mlp {
        /// The settings.
        train: TrainConfig,
    },
}

impl Candidate {
    /// The training settings for `n` training items and `seed`.
    pub fn config_for(&self, n: usize, seed: u64) -> TrainConfig {
        match self {
            Self::Linear { c, class_weights } => TrainConfig {
                head: HeadKind::Linear,
                optimizer: OptimizerKind::Lbfgs,
                weight_decay: (1.0 / (c * n.max(1) as f64)).min(limits::L2_PENALTY.end * 0.999),
                epochs: LINEAR_ITERATIONS,
                class_weights: *class_weights,
                patience: None,
                seed,
                ..TrainConfig::default()
            },
            Self::Mlp { train } => TrainConfig {
                seed,
                ..train.clone()
            },
        }
    }

    /// As a user reads it: "linear, C = 0.01, class weights on".
    pub fn describe(&self) -> String {
        match self {
            Self::Linear { c, class_weights } => format!(
                "linear, C = {c}{}",
                match class_weights {
                    ClassWeighting::On => ", class weights on",
                    ClassWeighting::Off | ClassWeighting::Auto => "",
                }
            ),
            Self::Mlp { train } => match train.head {
                HeadKind::Mlp { hidden, dropout } => format!(
                    "MLP {hidden} (dropout {dropout}), lr {}, weight decay {}, {} epochs",
                    train.learning_rate, train.weight_decay, train.epochs
                ),
                HeadKind::Linear => format!("linear, lr {}", train.learning_rate),
            },
        }
    }
}

/// How the search runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchOptions {
    /// Most folds (fewer when a class has fewer items or groups), in [`limits::FOLDS`].
    pub folds: usize,
    /// Fixes the folds and every fit.
    pub seed: u64,
    /// Most floating-point operations the MLP candidate's cross-validation may cost (an
    /// estimate: 6 × items × weights × epochs × folds); above it the candidate is skipped.
    pub mlp_budget: f64,
    /// Two classes: how the decision threshold is chosen on the out-of-fold predictions.
    pub threshold: ThresholdRule,
}

impl Default for SearchOptions {
    /// 5 folds, seed 42, an MLP budget of 3·10¹¹ operations (seconds on a laptop's cores),
    /// threshold by balanced accuracy.
    fn default() -> Self {
        Self {
            folds: 5,
            seed: 42,
            mlp_budget: 3e11,
            threshold: ThresholdRule::BalancedAccuracy,
        }
    }
}

/// A candidate's out-of-fold figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// The candidate.
    pub candidate: Candidate,
    /// Class-balanced out-of-fold log loss (lower is better): the score.
    pub log_loss: f64,
    /// Out-of-fold accuracy (argmax).
    pub accuracy: f64,
    /// Out-of-fold balanced accuracy (argmax).
    pub balanced_accuracy: f64,
    /// Out-of-fold AUC (binary, or macro one-vs-rest).
    pub auc: Option<f64>,
}

/// A candidate left out, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// The candidate.
    pub candidate: Candidate,
    /// Why, as a user reads it.
    pub reason: String,
}

/// What the search found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// Folds of each repeat.
    pub folds: usize,
    /// Repeats of the k-fold split.
    pub repeats: usize,
    /// Whether folds kept groups whole.
    pub grouped: bool,
    /// Every scored candidate, in grid order.
    pub scores: Vec<CandidateScore>,
    /// Candidates not scored.
    pub skipped: Vec<Skipped>,
    /// Index of the winner in `scores`.
    pub chosen: usize,
    /// The winner's out-of-fold class probabilities (`[items][classes]`), averaged over the
    /// repeats: each from heads that never saw the item.
    pub out_of_fold: Vec<Vec<f32>>,
    /// The winner's out-of-fold metrics over every item (argmax), with 95% bootstrap
    /// intervals: the honest figure when there are too few items to hold many out.
    pub evaluation: Evaluation,
    /// Two classes: the threshold chosen on the winner's out-of-fold predictions.
    pub threshold: Option<Threshold>,
}

impl Search {
    /// The winner.
    pub fn chosen(&self) -> &CandidateScore {
        &self.scores[self.chosen]
    }
}

/// What the search reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub enum SearchEvent {
    /// The grid and folds are fixed.
    Started {
        /// Candidates to score.
        candidates: usize,
        /// Folds per repeat.
        folds: usize,
        /// Repeats.
        repeats: usize,
    },
    /// `done` of `total` fold fits finished.
    Fitted {
        /// Finished.
        done: usize,
        /// All.
        total: usize,
    },
}

/// The grid for `items` (see the module's notes).
pub fn candidates(items: &LabelledEmbeddings, num_classes: usize) -> Vec<Candidate> {
    let weights = class_weights_for(&items.labels, num_classes, ClassWeighting::Auto);
    let imbalanced = weights.iter().any(|&w| w != 1.0);
    let mut grid = Vec::new();
    let weightings: &[ClassWeighting] = if imbalanced {
        &[ClassWeighting::Off, ClassWeighting::On]
    } else {
        &[ClassWeighting::Off]
    };
    for &class_weights in weightings {
        for &c in &INVERSE_PENALTIES {
            grid.push(Candidate::Linear { c, class_weights });
        }
    }
    grid.push(Candidate::Mlp {
        train: TrainConfig::default(),
    });
    grid
}

/// Scores every candidate of [`candidates`] by cross-validation on `items` (labels index
/// `classes`; `groups`, one key per item, keep a patient's items in one fold) and picks the
/// winner (see the module's notes). `progress` hears [`SearchEvent`]s
/// ([`Progress::search`]) and is awaited between folds.
///
/// Errors: [`TrainError::Config`] for folds outside [`limits::FOLDS`];
/// [`TrainError::Split`] when a class has fewer than 2 items (or groups);
/// [`TrainError::Data`] for inconsistent items; [`TrainError::Cancelled`] when `cancel` is
/// set; those of [`fit_head`], `Classifier::predict` and [`evaluate`].
#[allow(clippy::too_many_arguments)]
pub async fn search(
    classes: &[String],
    items: &LabelledEmbeddings,
    groups: Option<&[String]>,
    options: &SearchOptions,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<Search, TrainError> {
    if !limits::FOLDS.contains(&options.folds) {
        return Err(TrainError::Config(format!(
            "folds must be {}, got {}",
            limits::inclusive(&limits::FOLDS),
            options.folds
        )));
    }
    crate::run::same_length(items)?;
    let num_classes = classes.len();
    if num_classes < 2 {
        return Err(TrainError::Data(format!(
            "at least two classes are needed, got {num_classes}"
        )));
    }
    if let Some(row) = items.labels.iter().position(|&l| l >= num_classes) {
        return Err(TrainError::Data(format!(
            "item {row} has label {} but there are {num_classes} classes",
            items.labels[row]
        )));
    }
    let split_error = |error: SplitError| TrainError::Split {
        error,
        classes: classes.to_vec(),
    };
    let smallest = smallest_class_units(&items.labels, groups).map_err(split_error)?;
    let k = options.folds.min(smallest);
    let repeats = if smallest < SMALL_CLASS {
        SMALL_REPEATS
    } else {
        1
    };
    let mut jobs = Vec::new();
    for r in 0..repeats {
        let folds = stratified_folds(
            &items.labels,
            groups,
            k,
            options.seed.wrapping_add(r as u64),
        )
        .map_err(split_error)?;
        for fold in 0..k {
            let (held, train): (Vec<usize>, Vec<usize>) =
                (0..items.labels.len()).partition(|&i| folds[i] == fold);
            if !held.is_empty() {
                jobs.push(FoldJob { train, held });
            }
        }
    }
    let grid = candidates(items, num_classes);
    let dim = items.embeddings.first().map_or(0, Vec::len);
    let mut skipped = Vec::new();
    let mut mlp = Vec::new();
    let mut linear = Vec::new();
    for (index, candidate) in grid.iter().enumerate() {
        match candidate {
            Candidate::Linear { c, class_weights } => linear.push((index, *c, *class_weights)),
            Candidate::Mlp { train } => {
                let n_train = items.labels.len() * (k - 1) / k;
                let cost = mlp_cost(train, n_train, dim, num_classes, jobs.len());
                if cost <= options.mlp_budget {
                    mlp.push(index);
                } else {
                    skipped.push(Skipped {
                        candidate: candidate.clone(),
                        reason: format!(
                            "its {} fold fits would take about {:.1e} operations, over the \
                             budget of {:.1e}",
                            jobs.len(),
                            cost,
                            options.mlp_budget
                        ),
                    });
                }
            }
        }
    }
    let scored = linear.len() + mlp.len();
    progress.search(&SearchEvent::Started {
        candidates: scored,
        folds: k,
        repeats,
    });
    // Out-of-fold probability sums per grid index, averaged over repeats at the end.
    let n = items.labels.len();
    let mut sums = vec![vec![vec![0.0f32; num_classes]; n]; grid.len()];
    let total = jobs.len() * (usize::from(!linear.is_empty()) + mlp.len());
    let mut done = 0;
    let threads = threads();
    if !linear.is_empty() {
        for batch in jobs.chunks(threads.max(1)) {
            progress.between_epochs().await;
            if cancel.is_cancelled() {
                return Err(TrainError::Cancelled);
            }
            let work = |job: &FoldJob| linear_fold(items, job, &linear, num_classes, options.seed);
            for (job, per_candidate) in batch.iter().zip(parallel_map(batch, &work)) {
                for (&(index, _, _), probs) in linear.iter().zip(per_candidate) {
                    add_rows(&mut sums[index], &job.held, probs);
                }
                done += 1;
                progress.search(&SearchEvent::Fitted { done, total });
            }
        }
    }
    for &index in &mlp {
        for job in &jobs {
            if cancel.is_cancelled() {
                return Err(TrainError::Cancelled);
            }
            let config = grid[index].config_for(job.train.len(), options.seed);
            let probs = fit_and_predict(
                classes,
                &pick(items, &job.train),
                &pick(items, &job.held).embeddings,
                &config,
                device,
                cancel,
                &mut Quiet(progress),
            )
            .await?;
            add_rows(&mut sums[index], &job.held, probs);
            done += 1;
            progress.search(&SearchEvent::Fitted { done, total });
        }
    }
    let quick = EvaluationOptions {
        bootstrap_samples: 0,
        ..EvaluationOptions::default()
    };
    let mut scores = Vec::new();
    let mut chosen: Option<(usize, f64)> = None;
    let mut chosen_probs = Vec::new();
    for index in linear.iter().map(|l| l.0).chain(mlp.iter().copied()) {
        let probs: Vec<Vec<f32>> = sums[index]
            .iter()
            .map(|row| row.iter().map(|s| s / repeats as f32).collect())
            .collect();
        let evaluation = evaluate(&probs, &items.labels, classes, &quick)?;
        let log_loss = balanced_log_loss(&probs, &items.labels, num_classes);
        if chosen.is_none_or(|(_, best)| log_loss < best) {
            chosen = Some((scores.len(), log_loss));
            chosen_probs = probs;
        }
        scores.push(CandidateScore {
            candidate: grid[index].clone(),
            log_loss,
            accuracy: evaluation.accuracy,
            balanced_accuracy: evaluation.balanced_accuracy,
            auc: evaluation.auc,
        });
    }
    let chosen = chosen.map_or(0, |(i, _)| i);
    let evaluation = evaluate(
        &chosen_probs,
        &items.labels,
        classes,
        &EvaluationOptions {
            seed: options.seed,
            ..EvaluationOptions::default()
        },
    )?;
    let threshold = (num_classes == 2)
        .then(|| {
            let scores: Vec<f64> = chosen_probs.iter().map(|r| f64::from(r[1])).collect();
            choose_threshold(&scores, &items.labels, options.threshold)
        })
        .flatten();
    Ok(Search {
        folds: k,
        repeats,
        grouped: groups.is_some(),
        scores,
        skipped,
        chosen,
        out_of_fold: chosen_probs,
        evaluation,
        threshold,
    })
}

/// The automatic recipe start to end: [`search`], then the winner refitted on every item
/// (reported through `progress` like any training; evaluated on `validation` when a separate
/// validation set is given) with the search's threshold.
///
/// Errors: those of [`search`] and [`fit_head`].
#[allow(clippy::too_many_arguments)]
pub async fn automatic(
    classes: &[String],
    items: &LabelledEmbeddings,
    groups: Option<&[String]>,
    validation: Option<&LabelledEmbeddings>,
    options: &SearchOptions,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<(TrainedHead, Search), TrainError> {
    let found = search(classes, items, groups, options, device, cancel, progress).await?;
    let config = found
        .chosen()
        .candidate
        .config_for(items.labels.len(), options.seed);
    let mut trained = fit_head(
        classes, items, validation, &config, device, cancel, progress,
    )
    .await?;
    trained.threshold = found.threshold;
    Ok((trained, found))
}

mod folds;

#[cfg(test)]
mod tests;
