//! The search's fold work: one fold's linear candidates along the C path, the folds spread
//! over the cores, the score, and the MLP candidate's cost estimate.

use super::*;

/// Class-balanced mean of −ln p(true class): each class's mean over its items, averaged over
/// the classes present; p clamped to `[1e-7, 1]`. With equal classes, the plain mean.
pub(super) fn balanced_log_loss(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    num_classes: usize,
) -> f64 {
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
pub(super) struct FoldJob {
    pub(super) train: Vec<usize>,
    pub(super) held: Vec<usize>,
}

/// The held items' probabilities from every linear candidate (in `grid` order) trained on the
/// job's training items and those items' `views` (none: pass `&[]`).
pub(super) fn linear_fold(
    items: &LabelledEmbeddings,
    views: &[(usize, Vec<f32>)],
    job: &FoldJob,
    grid: &[(usize, f64, ClassWeighting, bool)],
    num_classes: usize,
    seed: u64,
) -> Vec<Vec<Vec<f32>>> {
    let mut rows: Vec<Vec<f32>> = job
        .train
        .iter()
        .map(|&i| items.embeddings[i].clone())
        .collect();
    let mut labels: Vec<usize> = job.train.iter().map(|&i| items.labels[i]).collect();
    if !views.is_empty() {
        // Only the views of this fold's training items (job.train is sorted).
        for (item, view) in views {
            if job.train.binary_search(item).is_ok() {
                rows.push(view.clone());
                labels.push(items.labels[*item]);
            }
        }
    }
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
    for &(_, c, weighting, augmented) in grid {
        let config = Candidate::Linear {
            c,
            class_weights: weighting,
            augmented,
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
pub(super) fn add_rows(sums: &mut [Vec<f32>], held: &[usize], probabilities: Vec<Vec<f32>>) {
    for (&i, row) in held.iter().zip(probabilities) {
        if let Some(sum) = sums.get_mut(i) {
            sum.iter_mut().zip(row).for_each(|(s, p)| *s += p);
        }
    }
}

/// The threads the folds may use: the machine's cores natively, one in wasm.
pub(super) fn threads() -> usize {
    if cfg!(target_arch = "wasm32") {
        1
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

/// `work` on every job, on up to `threads` threads (see [`threads`]; one runs them in turn),
/// results in job order.
pub(super) fn parallel_map<J: Sync, T: Send>(
    jobs: &[J],
    threads: usize,
    work: &(impl Fn(&J) -> T + Sync),
) -> Vec<T> {
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
pub(super) struct Quiet<'a, P>(pub(super) &'a mut P);

impl<P: Progress> Progress for Quiet<'_, P> {
    fn between_epochs(&mut self) -> impl std::future::Future<Output = ()> {
        self.0.between_epochs()
    }
}

/// Estimated floating-point operations of cross-validating `config` (6 per weight per item
/// per epoch: forward and backward).
pub(super) fn mlp_cost(
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
