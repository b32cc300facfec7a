//! What `medtransfer train` reports when it is done: one JSON object (`--json`) or tables: the
//! automatic recipe's candidates and the winner's out-of-fold figures, the decision
//! threshold, the validation figures and the timings.

use std::path::{Path, PathBuf};
use std::time::Instant;

use medtransfer_core::recipe::Search;
use medtransfer_core::run::{CrossValidation, Run};
use serde_json::{Value, json};

use crate::evaluate::{evaluation_json, print_evaluation};

/// Seconds spent in each phase.
pub(super) struct Timings {
    /// Decoding and embedding the images (augmented views included).
    pub embed_seconds: f64,
    /// The automatic recipe's cross-validated search (0 for a manual recipe).
    pub search_seconds: f64,
    /// The final fit (the refit of the winner, or the manual training).
    pub train_seconds: f64,
    /// When the command started.
    pub started: Instant,
}

/// Everything the report shows.
pub(super) struct Outcome<'a> {
    /// The model file written.
    pub out: &'a Path,
    /// Core's run.
    pub finished: &'a Run,
    /// `--cv K` of a manual recipe.
    pub cross_validation: Option<&'a (usize, CrossValidation)>,
    /// Training rows (augmented views included).
    pub train_rows: usize,
    /// Files left out, with why.
    pub skipped: &'a [Value],
    /// The validation images, in the validation metrics' order.
    pub val_paths: &'a [PathBuf],
    /// Every usable training image, in the run's item order.
    pub paths: &'a [PathBuf],
    /// The phases' seconds.
    pub timings: Timings,
    /// `--train-blocks`: what fine-tuning adds.
    pub fine_tuning: Option<&'a super::tune::TuneReport>,
}

fn search_json(search: &Search, paths: &[PathBuf]) -> Value {
    json!({
        "folds": search.folds,
        "repeats": search.repeats,
        "grouped": search.grouped,
        "chosen": search.chosen,
        "chosen_description": search.chosen().candidate.describe(),
        "candidates": search.scores.iter().map(|s| json!({
            "candidate": s.candidate,
            "description": s.candidate.describe(),
            "log_loss": s.log_loss,
            "accuracy": s.accuracy,
            "balanced_accuracy": s.balanced_accuracy,
            "auc": s.auc,
        })).collect::<Vec<_>>(),
        "skipped": search.skipped,
        "out_of_fold": evaluation_json(&search.evaluation, Some(paths)),
    })
}

impl Outcome<'_> {
    /// The `--json` object.
    pub fn json(&self) -> Value {
        let trained = &self.finished.trained;
        let t = &self.timings;
        json!({
            "model": self.out.display().to_string(),
            "classes": trained.classes,
            "recipe": if self.finished.search.is_some() { "automatic" } else { "manual" },
            "search": self.finished.search.as_ref().map(|s| search_json(s, self.paths)),
            "threshold": trained.threshold,
            "train_images": self.finished.train_items.len(),
            "train_rows": self.train_rows,
            "validation_images": self.val_paths.len(),
            "validation_paths": self.val_paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "skipped": self.skipped,
            "loss": trained.loss,
            "class_weights": trained.class_weights,
            "config": trained.train_config,
            "kept_epoch": trained.kept_epoch,
            "stop_reason": trained.stop_reason,
            "history": trained.history,
            "validation": trained.validation.as_ref().map(|v| evaluation_json(v, None)),
            "cross_validation": self.cross_validation.map(|(k, cv)| json!({
                "folds": k,
                "out_of_fold": evaluation_json(&cv.evaluation, None),
            })),
            "fine_tuning": self.fine_tuning.map(|f| f.json()),
            "embed_seconds": t.embed_seconds,
            "search_seconds": t.search_seconds,
            "train_seconds": t.train_seconds,
            "total_seconds": t.started.elapsed().as_secs_f64(),
        })
    }

    /// The tables.
    pub fn print(&self) {
        let trained = &self.finished.trained;
        if let Some(search) = &self.finished.search {
            println!(
                "automatic recipe: {} candidates by {}-fold cross-validation{}{}",
                search.scores.len(),
                search.folds,
                if search.repeats > 1 {
                    format!(" × {} repeats", search.repeats)
                } else {
                    String::new()
                },
                if search.grouped { ", grouped" } else { "" }
            );
            println!("  log loss  accuracy  bal. acc  AUC    candidate");
            for (i, s) in search.scores.iter().enumerate() {
                println!(
                    "{} {:.4}    {:.3}     {:.3}     {}  {}",
                    if i == search.chosen { "*" } else { " " },
                    s.log_loss,
                    s.accuracy,
                    s.balanced_accuracy,
                    s.auc.map_or("  -  ".into(), |a| format!("{a:.3}")),
                    s.candidate.describe()
                );
            }
            for s in &search.skipped {
                println!("  skipped {}: {}", s.candidate.describe(), s.reason);
            }
            println!(
                "chosen: {}; refitted on all {} images; wrote {}",
                search.chosen().candidate.describe(),
                self.finished.train_items.len(),
                self.out.display()
            );
            println!(
                "cross-validated (out-of-fold predictions of all {} images; the choice was \
                 made on them too):",
                search.evaluation.n
            );
            print_evaluation(&search.evaluation, Some(self.paths));
        } else {
            println!(
                "kept epoch {} ({:?}); wrote {}",
                trained.kept_epoch,
                trained.stop_reason,
                self.out.display()
            );
        }
        if let Some(f) = self.fine_tuning {
            f.print();
        }
        if let Some(t) = &trained.threshold {
            println!(
                "decision threshold for {}: {:.3} ({}; sensitivity {:.3}, specificity {:.3} \
                 on the predictions it was chosen on)",
                trained.classes.get(1).map_or("class 1", String::as_str),
                t.value,
                t.rule.describe(),
                t.sensitivity,
                t.specificity
            );
        }
        if let Some(v) = &trained.validation {
            println!("validation ({} images):", v.n);
            print_evaluation(v, Some(self.val_paths));
        }
        if let Some((k, cv)) = self.cross_validation {
            println!(
                "cross-validation ({k} folds; out-of-fold predictions of all {} images):",
                cv.evaluation.n
            );
            print_evaluation(&cv.evaluation, Some(self.paths));
        }
        let t = &self.timings;
        println!(
            "embedding {:.1} s, search {:.1} s, training {:.2} s, total {:.1} s",
            t.embed_seconds,
            t.search_seconds,
            t.train_seconds,
            t.started.elapsed().as_secs_f64()
        );
    }
}
