//! The linear head fitted as the convex problem it is: L2-regularised logistic regression on
//! the standardised embeddings, minimised by L-BFGS ([`super::lbfgs`]) on the host.
//!
//! Objective, for parameters W (`[out, d]`) and b (`[out]`), item weights wᵢ (the class
//! weights) and the penalty λ = [`TrainConfig::weight_decay`]:
//!
//! ```text
//! f(W, b) = Σᵢ wᵢ ℓᵢ / Σᵢ wᵢ  +  λ/2 ‖W‖²          (the bias is not penalised)
//! ```
//!
//! with ℓᵢ the binary cross-entropy of one sigmoid logit (two classes) or the softmax
//! cross-entropy over K logits (the over-parameterised multinomial form, made unique by the
//! penalty). Its minimiser is scikit-learn's `LogisticRegression(C = 1 / (λ Σᵢ wᵢ))` with the
//! `lbfgs` solver, so `C` and λ convert exactly.
//!
//! The design matrix is read twice per evaluation (logits, then gradient in the same pass),
//! in f32 with `medtransfer_kernels::vector` (8-lane accumulators the compiler vectorises,
//! built at full optimisation in every profile); sums over items are flushed to
//! f64 every [`CHUNK`] rows. One fit runs on one thread, so the same data and seed give the
//! same weights on every run.

use std::cell::Cell;

use super::lbfgs::{LbfgsEnd, LbfgsOptions, minimize};
use super::loss::host_loss;
use super::{
    EpochSummary, FeatureNormalization, LabelledEmbeddings, Prepared, Progress, StopReason,
    TrainConfig, TrainError, TrainEvent, TrainedHead, prepare,
};
use crate::head::{HeadConfig, HeadWeights, OutputKind};
use crate::metrics::{EvaluationOptions, evaluate};
use medtransfer_kernels::vector::{axpy, dot};

/// Rows flushed from f32 to f64 sums at a time.
const CHUNK: usize = 64;

/// Standardised embeddings as one row-major `[n, d]` matrix.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Design {
    /// `n × d` values.
    pub x: Vec<f32>,
    /// Rows.
    pub n: usize,
    /// Features per row.
    pub d: usize,
}

impl Design {
    /// `normalization` applied to each row.
    pub fn new(rows: &[Vec<f32>], normalization: &FeatureNormalization) -> Self {
        let d = normalization.mean.len();
        let mut x = Vec::with_capacity(rows.len() * d);
        for row in rows {
            x.extend(normalization.apply(row));
        }
        Self {
            x,
            n: rows.len(),
            d,
        }
    }
}

/// The data of one fit: the design, soft targets and item weights.
pub(crate) struct LogisticProblem<'a> {
    design: &'a Design,
    labels: &'a [usize],
    /// `[n, out]`: one-hot (softmax) or the positive class's target (sigmoid), smoothed.
    targets: Vec<f32>,
    /// Item weights, summing to 1.
    weights: Vec<f32>,
    output: OutputKind,
    out: usize,
    lambda: f64,
}

/// What one evaluation of the objective gave besides the gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Stats {
    objective: f64,
    /// The weighted mean loss, without the penalty.
    loss: f64,
    /// Share of items whose largest logit is their class.
    accuracy: f64,
}

impl<'a> LogisticProblem<'a> {
    /// `labels` index `num_classes` classes; `class_weights` has one weight per class;
    /// `label_smoothing` ε turns targets into `1 − ε + ε/K` and `ε/K`.
    pub fn new(
        design: &'a Design,
        labels: &'a [usize],
        num_classes: usize,
        class_weights: &[f32],
        output: OutputKind,
        label_smoothing: f32,
        lambda: f64,
    ) -> Self {
        let out = match output {
            OutputKind::Sigmoid => 1,
            OutputKind::Softmax => num_classes,
        };
        let eps = label_smoothing;
        let mut targets = Vec::with_capacity(labels.len() * out);
        for &label in labels {
            match output {
                OutputKind::Sigmoid => targets.push(if label == 1 {
                    1.0 - eps / 2.0
                } else {
                    eps / 2.0
                }),
                OutputKind::Softmax => {
                    let off = eps / num_classes as f32;
                    targets.extend(
                        (0..num_classes).map(|c| if c == label { 1.0 - eps + off } else { off }),
                    );
                }
            }
        }
        let raw: Vec<f64> = labels
            .iter()
            .map(|&l| f64::from(class_weights.get(l).copied().unwrap_or(1.0)))
            .collect();
        let total: f64 = raw.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        Self {
            design,
            labels,
            targets,
            weights: raw.iter().map(|w| (w / total) as f32).collect(),
            output,
            out,
            lambda,
        }
    }

    /// Parameters: `out` rows of `d` weights then the bias.
    pub fn parameter_count(&self) -> usize {
        self.out * (self.design.d + 1)
    }

    /// The objective at `params`, its gradient written to `grad`.
    fn evaluate(&self, params: &[f64], grad: &mut [f64]) -> Stats {
        let (d, out) = (self.design.d, self.out);
        let stride = d + 1;
        let w: Vec<f32> = params.iter().map(|&p| p as f32).collect();
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut acc = vec![0.0f32; out * stride];
        let mut z = vec![0.0f32; out];
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for (c, rows) in self.design.x.chunks(d * CHUNK).enumerate() {
            for (r, row) in rows.chunks(d).enumerate() {
                let i = c * CHUNK + r;
                for (o, zo) in z.iter_mut().enumerate() {
                    let wo = &w[o * stride..(o + 1) * stride];
                    *zo = dot(row, &wo[..d]) + wo[d];
                }
                let t = &self.targets[i * out..(i + 1) * out];
                let sw = self.weights[i];
                let label = self.labels[i];
                match self.output {
                    OutputKind::Sigmoid => {
                        let zz = z[0];
                        // max(z, 0) − z·t + ln(1 + e^(−|z|)): stable for any logit.
                        let item = zz.max(0.0) - zz * t[0] + (-zz.abs()).exp().ln_1p();
                        loss += f64::from(sw * item);
                        let p = 1.0 / (1.0 + (-zz).exp());
                        z[0] = sw * (p - t[0]);
                        correct += usize::from((zz >= 0.0) == (label == 1));
                    }
                    OutputKind::Softmax => {
                        let (mut best, mut max) = (0, f32::NEG_INFINITY);
                        for (o, &v) in z.iter().enumerate() {
                            if v > max {
                                (best, max) = (o, v);
                            }
                        }
                        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
                        let item: f32 = t.iter().zip(&z).map(|(tt, v)| tt * (lse - v)).sum();
                        loss += f64::from(sw * item);
                        for (zo, tt) in z.iter_mut().zip(t) {
                            *zo = sw * ((*zo - lse).exp() - tt);
                        }
                        correct += usize::from(best == label);
                    }
                }
                for (o, &residual) in z.iter().enumerate() {
                    let a = &mut acc[o * stride..(o + 1) * stride];
                    axpy(&mut a[..d], residual, row);
                    a[d] += residual;
                }
            }
            for (g, a) in grad.iter_mut().zip(acc.iter_mut()) {
                *g += f64::from(*a);
                *a = 0.0;
            }
        }
        let mut penalty = 0.0f64;
        for o in 0..out {
            for j in 0..d {
                let k = o * stride + j;
                penalty += params[k] * params[k];
                grad[k] += self.lambda * params[k];
            }
        }
        Stats {
            objective: loss + 0.5 * self.lambda * penalty,
            loss,
            accuracy: correct as f64 / self.design.n.max(1) as f64,
        }
    }
}

/// The epoch summary of solver iteration `iteration` (its accepted `step`) on the training items.
fn summary(iteration: usize, step: f64, stats: Stats) -> EpochSummary {
    EpochSummary {
        epoch: iteration,
        learning_rate: step,
        train_loss: stats.loss,
        train_accuracy: stats.accuracy,
        validation_loss: None,
        validation_accuracy: None,
        validation_balanced_accuracy: None,
        validation_auc: None,
        is_best: false,
    }
}

/// A finished fit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LinearFit {
    /// `out` rows of `d` weights then the bias.
    pub params: Vec<f64>,
    /// How the solver ended.
    pub end: LbfgsEnd,
    /// One summary per accepted iteration (loss and accuracy on the training items).
    pub history: Vec<EpochSummary>,
}

/// Minimises `problem` from `start` (a warm start from a neighbouring penalty) or from zero.
pub(crate) fn fit(
    problem: &LogisticProblem<'_>,
    start: Option<&[f64]>,
    options: &LbfgsOptions,
) -> LinearFit {
    let count = problem.parameter_count();
    let mut params = match start {
        Some(s) if s.len() == count => s.to_vec(),
        _ => vec![0.0; count],
    };
    let last = Cell::new(Stats::default());
    let mut history = Vec::new();
    let end = minimize(
        &mut params,
        options,
        &mut |p, g| {
            let stats = problem.evaluate(p, g);
            last.set(stats);
            stats.objective
        },
        &mut |iteration, _, step| history.push(summary(iteration, step, last.get())),
    );
    LinearFit {
        params,
        end,
        history,
    }
}

/// Class probabilities (`[n][num_classes]`) of a linear head with parameters `params` (see
/// [`LinearFit::params`]) on `design`.
pub(crate) fn probabilities(
    params: &[f64],
    design: &Design,
    output: OutputKind,
    num_classes: usize,
) -> Vec<Vec<f32>> {
    let d = design.d;
    let w: Vec<f32> = params.iter().map(|&p| p as f32).collect();
    design
        .x
        .chunks(d)
        .map(|row| {
            let z: Vec<f32> = w
                .chunks(d + 1)
                .map(|wo| dot(row, &wo[..d]) + wo[d])
                .collect();
            match output {
                OutputKind::Sigmoid => {
                    let p = 1.0 / (1.0 + (-z[0]).exp());
                    vec![1.0 - p, p]
                }
                OutputKind::Softmax => {
                    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    debug_assert_eq!(e.len(), num_classes);
                    e.iter().map(|v| v / sum).collect()
                }
            }
        })
        .collect()
}

/// The head's tensors (`output.weight` `[d, out]`, `output.bias` `[out]`) from `params`.
pub(crate) fn head_weights(params: &[f64], config: &HeadConfig) -> HeadWeights {
    let (d, out) = (config.input_dim, config.output_dim());
    let mut weight = vec![0.0f32; d * out];
    let mut bias = vec![0.0f32; out];
    for (o, row) in params.chunks(d + 1).enumerate().take(out) {
        for (j, &v) in row[..d].iter().enumerate() {
            weight[j * out + o] = v as f32;
        }
        bias[o] = row[d] as f32;
    }
    HeadWeights {
        tensors: vec![
            ("output.weight".into(), vec![d, out], weight),
            ("output.bias".into(), vec![out], bias),
        ],
    }
}

/// The solver's settings for `config`: its `epochs` are the most iterations.
pub(crate) fn solver_options(config: &TrainConfig) -> LbfgsOptions {
    LbfgsOptions {
        max_iterations: config.epochs,
        ..LbfgsOptions::default()
    }
}

/// Fits a linear head with `config` (its optimiser [`super::OptimizerKind::Lbfgs`]) on
/// `train`, evaluates it on `validation` (with 95% bootstrap intervals, seeded by
/// `config.seed`) and reports `Started`, one `Epoch` per solver iteration and `Finished`.
///
/// Errors: those of `prepare` (settings, data); [`TrainError::Data`] when the solution is not
/// finite; [`TrainError::Metrics`] when the validation data cannot be evaluated.
pub(crate) fn fit_linear_head(
    classes: &[String],
    train: &LabelledEmbeddings,
    validation: Option<&LabelledEmbeddings>,
    config: &TrainConfig,
    progress: &mut impl Progress,
) -> Result<TrainedHead, TrainError> {
    let Prepared {
        loss,
        head_config,
        class_weights,
        normalization,
        validation,
    } = prepare(classes, train, validation, config)?;
    let num_classes = classes.len();
    progress.event(&TrainEvent::Started {
        epochs: config.epochs,
        batches_per_epoch: 1,
        train_items: train.labels.len(),
        validation_items: validation.map_or(0, |v| v.labels.len()),
        class_weights: class_weights.clone(),
        loss,
    });
    let design = Design::new(&train.embeddings, &normalization);
    let problem = LogisticProblem::new(
        &design,
        &train.labels,
        num_classes,
        &class_weights,
        head_config.output,
        config.label_smoothing,
        config.weight_decay,
    );
    let LinearFit {
        params,
        end: _,
        mut history,
    } = fit(&problem, None, &solver_options(config));
    if params.iter().any(|p| !p.is_finite()) {
        return Err(TrainError::Data(
            "the linear head's solution is not finite; try a stronger penalty".into(),
        ));
    }
    if history.is_empty() {
        // Already optimal at the start (e.g. every feature constant): one summary of it.
        let mut grad = vec![0.0; params.len()];
        history.push(summary(1, 0.0, problem.evaluate(&params, &mut grad)));
    }
    let validation = match validation {
        Some(v) => {
            let probs = probabilities(
                &params,
                &Design::new(&v.embeddings, &normalization),
                head_config.output,
                num_classes,
            );
            let evaluation = evaluate(
                &probs,
                &v.labels,
                classes,
                &EvaluationOptions {
                    seed: config.seed,
                    ..EvaluationOptions::default()
                },
            )?;
            if let Some(last) = history.last_mut() {
                last.validation_loss = Some(host_loss(&probs, &v.labels, &class_weights, loss));
                last.validation_accuracy = Some(evaluation.accuracy);
                last.validation_balanced_accuracy = Some(evaluation.balanced_accuracy);
                last.validation_auc = evaluation.auc;
            }
            Some(evaluation)
        }
        None => None,
    };
    let kept_epoch = history.len();
    if let Some(last) = history.last_mut() {
        last.is_best = true;
    }
    for summary in &history {
        progress.event(&TrainEvent::Epoch(summary.clone()));
    }
    progress.event(&TrainEvent::Finished {
        reason: StopReason::Completed,
        kept_epoch,
    });
    Ok(TrainedHead {
        classes: classes.to_vec(),
        weights: head_weights(&params, &head_config),
        config: head_config,
        normalization,
        train_config: config.clone(),
        loss,
        class_weights,
        history,
        kept_epoch,
        stop_reason: StopReason::Completed,
        validation,
        threshold: None,
    })
}

#[cfg(test)]
mod tests;
