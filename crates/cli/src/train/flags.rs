//! `medtransfer train`'s flags read into core's settings: the parsers that check each flag
//! against core's `limits`, the recipe the flags ask for, and the [`RunConfig`] they make.

use std::fmt::Display;
use std::ops::RangeBounds;
use std::str::FromStr;

use medtransfer_core::head::HeadKind;
use medtransfer_core::run::{DEFAULT_VALIDATION_SHARE, Recipe, RunConfig};
use medtransfer_core::split::GroupPattern;
use medtransfer_core::threshold::ThresholdRule;
use medtransfer_core::train::{
    ClassWeighting, DEFAULT_DROPOUT, DEFAULT_HIDDEN_UNITS, LossKind, OptimizerKind, Schedule,
    TrainConfig, limits,
};

use super::{HeadArg, LossArg, OptimizerArg, RecipeArg, ScheduleArg, TrainArgs, WeightsArg};
use crate::dataset::LabelledFile;

/// Each file's group key (from its file name) under `pattern`, or `None` without a pattern.
pub(crate) fn group_keys(
    files: &[&LabelledFile],
    pattern: Option<&str>,
) -> Result<Option<Vec<String>>, String> {
    let Some(pattern) = pattern else {
        return Ok(None);
    };
    let pattern = GroupPattern::new(pattern).map_err(|e| e.to_string())?;
    Ok(Some(
        files
            .iter()
            .map(|f| pattern.key(&f.path.file_name().unwrap_or_default().to_string_lossy()))
            .collect(),
    ))
}

/// A clap parser for a value in `range` (one of core's [`limits`]), which `says` in words.
pub(super) fn within<T, R>(
    range: R,
    says: fn(&R) -> String,
) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
    T::Err: Display,
    R: RangeBounds<T> + Clone + Send + Sync + 'static,
{
    move |text| {
        let value: T = text.parse().map_err(|e| format!("{e}"))?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(format!("must be {}, got {value}", says(&range)))
        }
    }
}

/// `--lr`: strictly inside [`limits::LEARNING_RATE`].
pub(super) fn learning_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if limits::learning_rate_ok(rate) {
        Ok(rate)
    } else {
        let (low, high) = limits::LEARNING_RATE;
        Err(format!("must be above {low} and below {high}, got {rate}"))
    }
}

/// `--threshold`: `balanced` or `sensitivity=T` with T in (0, 1].
pub(super) fn threshold_rule(text: &str) -> Result<ThresholdRule, String> {
    if text == "balanced" {
        return Ok(ThresholdRule::BalancedAccuracy);
    }
    let target = text
        .strip_prefix("sensitivity=")
        .ok_or_else(|| format!("expected balanced or sensitivity=T, got {text:?}"))?;
    let target: f64 = target.parse().map_err(|e| format!("{target:?}: {e}"))?;
    if target > 0.0 && target <= 1.0 {
        Ok(ThresholdRule::Sensitivity { target })
    } else {
        Err(format!(
            "the sensitivity must be above 0 and at most 1, got {target}"
        ))
    }
}

/// The recipe the flags ask for: `--recipe`, else manual when a manual flag is given, else
/// automatic. Errors name a manual flag given with `--recipe auto`.
pub(super) fn recipe(args: &TrainArgs) -> Result<Recipe, String> {
    let manual_flags = [
        ("--head", args.head.is_some()),
        ("--hidden", args.hidden.is_some()),
        ("--dropout", args.dropout.is_some()),
        ("--loss", args.loss.is_some()),
        ("--epochs", args.epochs.is_some()),
        ("--lr", args.lr.is_some()),
        ("--weight-decay", args.weight_decay.is_some()),
        ("--optimizer", args.optimizer.is_some()),
        ("--batch", args.batch.is_some()),
        ("--schedule", args.schedule.is_some()),
        ("--patience", args.patience.is_some()),
        ("--class-weights", args.class_weights.is_some()),
        ("--label-smoothing", args.label_smoothing.is_some()),
        ("--val-split", args.val_split.is_some()),
        ("--cv", args.cv.is_some()),
    ];
    let given = manual_flags
        .iter()
        .find(|(_, given)| *given)
        .map(|(flag, _)| *flag);
    match (args.recipe, given) {
        (Some(RecipeArg::Auto), Some(flag)) => Err(format!(
            "{flag} sets the manual recipe, but --recipe auto chooses the settings itself; \
             drop one of them"
        )),
        (Some(RecipeArg::Auto), None) | (None, None) => Ok(Recipe::Automatic),
        (Some(RecipeArg::Manual), _) | (None, Some(_)) => Ok(Recipe::Manual),
    }
}

/// A fine-tuning learning rate: in (0, 1].
pub(super) fn tune_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a learning rate in (0, 1]")),
    }
}

/// `--val-split`: in [`limits::VALIDATION_SHARE`].
pub(super) fn validation_share(text: &str) -> Result<f64, String> {
    within(limits::VALIDATION_SHARE, limits::inclusive)(text)
}

/// Core's run configuration from the flags (the validation share is 0 with `--val`, whose
/// folder validates instead).
pub(super) fn run_config(args: &TrainArgs, recipe: Recipe) -> RunConfig {
    let defaults = TrainConfig::default();
    RunConfig {
        recipe,
        folds: args.folds,
        threshold: args.threshold,
        mlp_budget: RunConfig::default().mlp_budget,
        train: TrainConfig {
            head: match args.head.unwrap_or(HeadArg::Mlp) {
                HeadArg::Linear => HeadKind::Linear,
                HeadArg::Mlp => HeadKind::Mlp {
                    hidden: args.hidden.unwrap_or(DEFAULT_HIDDEN_UNITS),
                    dropout: args.dropout.unwrap_or(DEFAULT_DROPOUT),
                },
            },
            loss: match args.loss.unwrap_or(LossArg::Auto) {
                LossArg::Auto => None,
                LossArg::Ce => Some(LossKind::CrossEntropy),
                LossArg::Bce => Some(LossKind::BinaryCrossEntropy),
                LossArg::Mse => Some(LossKind::MeanSquaredError),
            },
            optimizer: match args.optimizer.unwrap_or(OptimizerArg::Adamw) {
                OptimizerArg::Adam => OptimizerKind::Adam,
                OptimizerArg::Adamw => OptimizerKind::AdamW,
            },
            learning_rate: args.lr.unwrap_or(defaults.learning_rate),
            weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
            batch_size: args.batch.unwrap_or(defaults.batch_size),
            epochs: args.epochs.unwrap_or(defaults.epochs),
            schedule: match args.schedule.unwrap_or(ScheduleArg::Cosine) {
                ScheduleArg::Cosine => Schedule::Cosine,
                ScheduleArg::Constant => Schedule::Constant,
            },
            patience: match args.patience {
                Some(0) => None,
                Some(p) => Some(p),
                None => defaults.patience,
            },
            class_weights: match args.class_weights.unwrap_or(WeightsArg::Auto) {
                WeightsArg::Auto => ClassWeighting::Auto,
                WeightsArg::On => ClassWeighting::On,
                WeightsArg::Off => ClassWeighting::Off,
            },
            label_smoothing: args.label_smoothing.unwrap_or(0.0),
            seed: args.seed,
        },
        validation_share: if args.val.is_some() {
            0.0
        } else {
            args.val_split.unwrap_or(DEFAULT_VALIDATION_SHARE)
        },
    }
}
