//! `medtransfer train --train-blocks N`: the cut-point activations of every usable image
//! (through the cache), then core's [`fine_tune_run`]: validation held out, the head fitted by
//! the recipe on the rest, the last `N` blocks fine-tuned with it.

use std::path::PathBuf;
use std::time::Instant;

use medtransfer_core::efficientnet::TailWeights;
use medtransfer_core::embeddings::View;
use medtransfer_core::finetune::{
    CutFeatures, FineTuneConfig, FineTuned, TunePenalty, fine_tune_run,
};
use medtransfer_core::metrics::Evaluation;
use medtransfer_core::run::{Run, RunConfig};
use medtransfer_core::train::{CancelToken, LabelledEmbeddings};
use serde_json::{Value, json};

use super::TrainArgs;
use super::progress::CliProgress;
use crate::backbone::progress_bar;
use crate::dataset::LabelledFile;

/// What the report adds for a fine-tuned model.
pub(super) struct TuneReport {
    /// The settings.
    pub config: FineTuneConfig,
    /// The head alone (frozen backbone) on the same validation images, before fine-tuning.
    pub head_only: Option<Evaluation>,
    /// Computing (or reading) the cut-point activations.
    pub cut_seconds: f64,
    /// The fine-tuning epochs.
    pub tune_seconds: f64,
}

impl TuneReport {
    /// The `fine_tuning` object of `--json`.
    pub fn json(&self) -> Value {
        json!({
            "blocks": self.config.blocks,
            "config": self.config,
            "bytes_per_image": CutFeatures::bytes_per_image(self.config.blocks),
            "head_only_validation": self.head_only.as_ref().map(|v| json!({
                "accuracy": v.accuracy,
                "balanced_accuracy": v.balanced_accuracy,
                "auc": v.auc,
            })),
            "cut_seconds": self.cut_seconds,
            "tune_seconds": self.tune_seconds,
        })
    }

    /// The lines of the text report.
    pub fn print(&self) {
        let blocks = self.config.blocks;
        println!(
            "fine-tuned the last {blocks} block{} with the head ({} bytes of activations an \
             image; {:.1} s for them, {:.1} s of fine-tuning)",
            if blocks == 1 { "" } else { "s" },
            CutFeatures::bytes_per_image(blocks),
            self.cut_seconds,
            self.tune_seconds
        );
        if let Some(v) = &self.head_only {
            println!(
                "  the head alone on the same validation images: accuracy {:.3}, balanced {:.3}, \
                 AUC {}",
                v.accuracy,
                v.balanced_accuracy,
                v.auc.map_or("-".into(), |a| format!("{a:.3}"))
            );
        }
    }
}

/// The fine-tuning settings from the flags.
pub(super) fn tune_config(args: &TrainArgs, blocks: usize) -> FineTuneConfig {
    let defaults = FineTuneConfig::default();
    FineTuneConfig {
        blocks,
        epochs: args.tune_epochs.unwrap_or(defaults.epochs),
        head_learning_rate: args.tune_lr.unwrap_or(defaults.head_learning_rate),
        backbone_learning_rate: args
            .tune_backbone_lr
            .unwrap_or(defaults.backbone_learning_rate),
        penalty: match args.tune_penalty {
            Some(super::PenaltyArg::Decay) => TunePenalty::Decay,
            Some(super::PenaltyArg::Recipe) => TunePenalty::Recipe,
            None => defaults.penalty,
        },
        ..defaults
    }
}

/// Fine-tunes on `items` (the usable images' embeddings, in `usable`'s order): the run to
/// report (the tuned head, the head's search, the split) and the model.
#[allow(clippy::too_many_arguments)]
pub(super) fn fine_tune(
    args: &TrainArgs,
    tune: &FineTuneConfig,
    classes: &[String],
    items: &LabelledEmbeddings,
    usable: &[&LabelledFile],
    groups: Option<&[String]>,
    config: &RunConfig,
    progress: &mut CliProgress<'_>,
) -> Result<(Run, FineTuned, TuneReport), String> {
    let cut_started = Instant::now();
    let bar = progress_bar(usable.len(), "activations", args.json);
    let requests: Vec<(PathBuf, View)> = usable
        .iter()
        .map(|f| (f.path.clone(), View::Original))
        .collect();
    let results = progress.backbone.cut_features(&requests, tune.blocks, &bar);
    bar.finish_and_clear();
    let mut cut = Vec::with_capacity(results.len());
    for (file, result) in usable.iter().zip(results) {
        // The image was embedded a moment ago, so a failure here is the device's.
        cut.push(result.map_err(|e| format!("{}: {e}", file.path.display()))?);
    }
    let cut_seconds = cut_started.elapsed().as_secs_f64();
    let pretrained = pollster::block_on(TailWeights::pretrained(
        &progress.backbone.model,
        tune.blocks,
    ))
    .map_err(|e| e.to_string())?;
    let device = progress.backbone.device.device.clone();
    let tune_started = Instant::now();
    let finished = pollster::block_on(fine_tune_run(
        classes,
        items,
        cut,
        groups,
        &pretrained,
        config,
        tune,
        &device,
        &CancelToken::new(),
        progress,
    ))
    .map_err(|e| e.to_string())?;
    let report = TuneReport {
        config: tune.clone(),
        head_only: finished.head_run.trained.validation.clone(),
        cut_seconds,
        tune_seconds: tune_started.elapsed().as_secs_f64(),
    };
    let run = Run {
        trained: finished.tuned.head.clone(),
        ..finished.head_run
    };
    Ok((run, finished.tuned, report))
}
