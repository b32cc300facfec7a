//! The automatic recipe (the default): cross-validation on the training items chooses the head
//! and its settings from a small grid ([`search`]), and the winner is refitted on every item
//! ([`automatic`]).
//!
//! - **Grid** ([`candidates`]): the linear head (logistic regression, L-BFGS,
//!   `train/logistic.rs`) at [`INVERSE_PENALTIES`], scikit-learn's C from 10⁻⁴ to 10² in half
//!   decades, without and (when the largest class has more than [`crate::train::IMBALANCE_RATIO`]× the items
//!   of the smallest) with inverse-frequency class weights, each also trained on the items'
//!   augmented views when there are some ([`search`]'s `views`); and the source recipe's MLP
//!   ([`TrainConfig::default`], its epochs run in full) when its folds fit
//!   [`SearchOptions::mlp_budget`].
//! - **Folds**: stratified, grouped when group keys are given (a patient never straddles a
//!   fold), `k = min(SearchOptions::folds, the fewest items or groups of a class)`; when a
//!   class has fewer than [`SMALL_CLASS`], the k-fold split is repeated [`SMALL_REPEATS`] times
//!   with other seeds and each item's out-of-fold probabilities are averaged over the repeats.
//! - **Score**: the class-balanced out-of-fold log loss (each class's mean −ln p(true class),
//!   averaged over the classes): a proper score, so calibrated probabilities win, and balanced,
//!   so a large class cannot carry it (with equal classes it is the plain mean). The plain
//!   mean, tried on 2026-12-03, lost balanced accuracy on BUSI's three imbalanced classes
//!   (0.818 against 0.851 on its test split) and was within noise elsewhere
//!   (docs/RESULTS.md). The lowest wins; a NaN never does; ties go to the earlier candidate
//!   (the stronger penalty, without views before with them, linear before MLP). Same items,
//!   groups and seed: same choice.
//!
//! Within a fold the linear candidates without views share the fold's standardisation (those
//! with views share one fitted on the items and views) and each starts from the previous C's
//! solution (a warm start along the regularisation path). Natively the folds
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
pub use grid::{Candidate, INVERSE_PENALTIES, LINEAR_ITERATIONS, candidates};

/// A class with fewer items (or groups) than this repeats the k-fold split.
pub const SMALL_CLASS: usize = 10;
/// Above this many values (4 bytes each) of augmented views, the folds run one at a time.
const MANY_VIEW_VALUES: usize = 50_000_000;
/// Repeats of the k-fold split for small classes.
pub const SMALL_REPEATS: usize = 3;

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

    /// The search without its out-of-fold probabilities (`out_of_fold` empty): what a model
    /// file keeps and the page is sent.
    pub fn without_probabilities(&self) -> Self {
        Self {
            folds: self.folds,
            repeats: self.repeats,
            grouped: self.grouped,
            scores: self.scores.clone(),
            skipped: self.skipped.clone(),
            chosen: self.chosen,
            out_of_fold: Vec::new(),
            evaluation: self.evaluation.clone(),
            threshold: self.threshold,
        }
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

/// Scores every candidate of [`candidates`] by cross-validation on `items` (labels index
/// `classes`; `groups`, one key per item, keep a patient's items in one fold) and picks the
/// winner (see the module's notes). `views` are extra embeddings of items (augmented views,
/// each `(item index, embedding)`, any number per item): when there are some, every linear
/// candidate is also scored with them, a fold training on the views of its training items
/// only (a held-out item's views never train the heads that predict it; held-out items are
/// predicted from their original embedding). `progress` hears [`SearchEvent`]s
/// ([`Progress::search`]) and is awaited between folds.
///
/// Errors: [`TrainError::Config`] for folds outside [`limits::FOLDS`];
/// [`TrainError::Split`] when a class has fewer than 2 items (or groups);
/// [`TrainError::Data`] for inconsistent items or a view whose item index or length is wrong;
/// [`TrainError::Cancelled`] when `cancel` is set; those of [`fit_head`],
/// `Classifier::predict` and [`evaluate`].
#[allow(clippy::too_many_arguments)]
pub async fn search(
    classes: &[String],
    items: &LabelledEmbeddings,
    groups: Option<&[String]>,
    views: &[(usize, Vec<f32>)],
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
    let dim = items.embeddings.first().map_or(0, Vec::len);
    if let Some((row, (item, view))) = views
        .iter()
        .enumerate()
        .find(|(_, (item, view))| *item >= items.labels.len() || view.len() != dim)
    {
        return Err(TrainError::Data(format!(
            "augmented view {row} (of item {item}) has {} values or no such item; there are {} \
             items of {dim} values",
            view.len(),
            items.labels.len()
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
    let grid = candidates(items, num_classes, !views.is_empty());
    let mut skipped = Vec::new();
    let mut mlp = Vec::new();
    let mut linear = Vec::new();
    for (index, candidate) in grid.iter().enumerate() {
        match candidate {
            Candidate::Linear {
                c,
                class_weights,
                augmented,
            } => linear.push((index, *c, *class_weights, *augmented)),
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
    let (augmented, plain): (Vec<_>, Vec<_>) = linear.iter().copied().partition(|l| l.3);
    let linear: Vec<_> = plain.iter().chain(&augmented).copied().collect();
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
    // Each concurrent fold copies its training rows twice; with many views, one at a time.
    let view_values: usize = views.iter().map(|(_, v)| v.len()).sum();
    let threads = if view_values > MANY_VIEW_VALUES {
        1
    } else {
        threads()
    };
    if !linear.is_empty() {
        for batch in jobs.chunks(threads.max(1)) {
            progress.between_epochs().await;
            if cancel.is_cancelled() {
                return Err(TrainError::Cancelled);
            }
            let work = |job: &FoldJob| {
                // The plain candidates, then the augmented ones (the grid's order), each
                // group along its own C path.
                let mut out = linear_fold(items, &[], job, &plain, num_classes, options.seed);
                if !augmented.is_empty() {
                    out.extend(linear_fold(
                        items,
                        views,
                        job,
                        &augmented,
                        num_classes,
                        options.seed,
                    ));
                }
                out
            };
            for (job, per_candidate) in batch.iter().zip(parallel_map(batch, threads, &work)) {
                for (&(index, ..), probs) in linear.iter().zip(per_candidate) {
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
    let mut order: Vec<usize> = linear
        .iter()
        .map(|l| l.0)
        .chain(mlp.iter().copied())
        .collect();
    order.sort_unstable();
    for index in order {
        let probs: Vec<Vec<f32>> = sums[index]
            .iter()
            .map(|row| row.iter().map(|s| s / repeats as f32).collect())
            .collect();
        let evaluation = evaluate(&probs, &items.labels, classes, &quick)?;
        let log_loss = balanced_log_loss(&probs, &items.labels, num_classes);
        if log_loss.is_finite() && chosen.is_none_or(|(_, best)| log_loss < best) {
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

/// The automatic recipe start to end: [`search`], then the winner refitted on every item (and,
/// for an augmented candidate, every view; reported through `progress` like any training;
/// evaluated on `validation` when a separate validation set is given) with the search's
/// threshold.
///
/// Errors: those of [`search`] and [`fit_head`].
#[allow(clippy::too_many_arguments)]
pub async fn automatic(
    classes: &[String],
    items: &LabelledEmbeddings,
    groups: Option<&[String]>,
    views: &[(usize, Vec<f32>)],
    validation: Option<&LabelledEmbeddings>,
    options: &SearchOptions,
    device: &Device,
    cancel: &CancelToken,
    progress: &mut impl Progress,
) -> Result<(TrainedHead, Search), TrainError> {
    let found = search(
        classes, items, groups, views, options, device, cancel, progress,
    )
    .await?;
    let train_set = match found.chosen().candidate {
        Candidate::Linear {
            augmented: true, ..
        } => with_views(items, views),
        _ => items.clone(),
    };
    let config = found
        .chosen()
        .candidate
        .config_for(train_set.labels.len(), options.seed);
    let mut trained = fit_head(
        classes, &train_set, validation, &config, device, cancel, progress,
    )
    .await?;
    trained.threshold = found.threshold;
    Ok((trained, found))
}

/// `items` followed by every view as a row with its item's label.
fn with_views(items: &LabelledEmbeddings, views: &[(usize, Vec<f32>)]) -> LabelledEmbeddings {
    let mut set = items.clone();
    for (item, view) in views {
        if let Some(&label) = items.labels.get(*item) {
            set.embeddings.push(view.clone());
            set.labels.push(label);
        }
    }
    set
}

mod folds;
mod grid;

#[cfg(test)]
mod tests;
