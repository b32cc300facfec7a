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

/// Class-balanced mean of −ln p(true class), p clamped to `[1e-7, 1]`.
fn balanced_log_loss(probabilities: &[Vec<f32>], labels: &[usize], num_classes: usize) -> f64 {
    let mut sums = vec![(0.0f64, 0usize); num_classes];
    for (row, &label) in probabilities.iter().zip(labels) {
        if let (Some(slot), Some(&p)) = (sums.get_mut(label), row.get(label)) {
            slot.0 -= f64::from(p).clamp(1e-7, 1.0).ln();
            slot.1 += 1;
        }
    }
    let present: Vec<f64> = sums
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| s / *n as f64)
        .collect();
    present.iter().sum::<f64>() / present.len().max(1) as f64
}

/// One fold of one repeat: which items train and which are predicted.
struct FoldJob {
    train: Vec<usize>,
    held: Vec<usize>,
}

/// The held items' probabilities from every linear candidate (in `grid` order) trained on the
/// job's training items.
fn linear_fold(
    items: &LabelledEmbeddings,
    job: &FoldJob,
    grid: &[(usize, f64, ClassWeighting)],
    num_classes: usize,
    seed: u64,
) -> Vec<Vec<Vec<f32>>> {
    let rows: Vec<Vec<f32>> = job
        .train
        .iter()
        .map(|&i| items.embeddings[i].clone())
        .collect();
    let labels: Vec<usize> = job.train.iter().map(|&i| items.labels[i]).collect();
    let normalization = FeatureNormalization::fit(&rows);
    let design = Design::new(&rows, &normalization);
    drop(rows);
    let held_rows: Vec<Vec<f32>> = job
        .held
        .iter()
        .map(|&i| items.embeddings[i].clone())
        .collect();
    let held = Design::new(&held_rows, &normalization);
    let output = if num_classes == 2 {
        OutputKind::Sigmoid
    } else {
        OutputKind::Softmax
    };
    let mut out = Vec::with_capacity(grid.len());
    let mut warm: Option<(ClassWeighting, Vec<f64>)> = None;
    for &(_, c, weighting) in grid {
        let config = Candidate::Linear {
            c,
            class_weights: weighting,
        }
        .config_for(labels.len(), seed);
        let class_weights = class_weights_for(&labels, num_classes, weighting);
        let problem = LogisticProblem::new(
            &design,
            &labels,
            num_classes,
            &class_weights,
            output,
            0.0,
            config.weight_decay,
        );
        let start = warm
            .as_ref()
            .filter(|(w, _)| *w == weighting)
            .map(|(_, p)| p.as_slice());
        let fitted = fit(&problem, start, &solver_options(&config));
        out.push(probabilities(&fitted.params, &held, output, num_classes));
        warm = Some((weighting, fitted.params));
    }
    out
}

/// Adds each held item's probabilities to its row of `sums`.
fn add_rows(sums: &mut [Vec<f32>], held: &[usize], probabilities: Vec<Vec<f32>>) {
    for (&i, row) in held.iter().zip(probabilities) {
        if let Some(sum) = sums.get_mut(i) {
            sum.iter_mut().zip(row).for_each(|(s, p)| *s += p);
        }
    }
}

/// `work` on every job, on up to as many threads as the machine has (one in wasm), results in
/// job order.
fn parallel_map<J: Sync, T: Send>(jobs: &[J], work: &(impl Fn(&J) -> T + Sync)) -> Vec<T> {
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    };
    if threads <= 1 || jobs.len() <= 1 {
        return jobs.iter().map(work).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(jobs.len().div_ceil(threads))
            .map(|chunk| scope.spawn(move || chunk.iter().map(work).collect::<Vec<T>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Hears only the yield between epochs (a candidate's fold trainings are not the run's).
struct Quiet<'a, P>(&'a mut P);

impl<P: Progress> Progress for Quiet<'_, P> {
    fn between_epochs(&mut self) -> impl std::future::Future<Output = ()> {
        self.0.between_epochs()
    }
}

/// Estimated floating-point operations of cross-validating `config` (6 per weight per item
/// per epoch: forward and backward).
fn mlp_cost(
    config: &TrainConfig,
    items: usize,
    dim: usize,
    num_classes: usize,
    fits: usize,
) -> f64 {
    let weights = match config.head {
        HeadKind::Mlp { hidden, .. } => dim * hidden + hidden * num_classes,
        HeadKind::Linear => dim * num_classes,
    };
    6.0 * items as f64 * weights as f64 * config.epochs as f64 * fits as f64
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
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    };
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

#[cfg(test)]
mod tests;
