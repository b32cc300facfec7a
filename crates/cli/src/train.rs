//! `medtransfer train`: embeds a folder-per-class image set and trains a classifier head on it
//! through core's [`run`] (the automatic recipe's cross-validated search and refit, or a
//! manual split, training and evaluation); this file maps flags to core's [`RunConfig`],
//! `progress.rs` shows the run's progress and `report.rs` its results.

pub(crate) mod flags;
mod progress;
mod report;
mod tune;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};
use medtransfer_core::check::{NEAR_DUPLICATE_COSINE, near_duplicate_pairs, split_groups};
use medtransfer_core::efficientnet::MAX_TRAIN_BLOCKS;
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::ood::OodReference;
use medtransfer_core::run::{DEFAULT_FOLDS, Validation, cross_validate, run};
use medtransfer_core::threshold::ThresholdRule;
use medtransfer_core::train::{CancelToken, TrainConfig, limits};

use crate::backbone::{Backbone, BackboneArgs, embed_files, folder_skipped, progress_bar};
use crate::dataset::{FolderDataset, LabelledFile};
use crate::evaluate::{EXIT_SOME_FILES_FAILED, fail, write_atomically};
pub(crate) use flags::group_keys;
use flags::{
    learning_rate, recipe, run_config, threshold_rule, tune_rate, validation_share, within,
};
use progress::{CliProgress, CrossValidationProgress};

/// Head shapes on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HeadArg {
    /// Softmax (or logistic) regression on the embedding.
    Linear,
    /// embedding → hidden → ReLU → dropout → classes.
    Mlp,
}

/// Losses on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LossArg {
    /// Binary cross-entropy for two classes, cross-entropy above.
    Auto,
    /// Softmax cross-entropy.
    Ce,
    /// Binary cross-entropy on one sigmoid output (two classes only).
    Bce,
    /// Mean squared error on the softmax probabilities.
    Mse,
}

/// Most augmented views per training image (`--augment`): each is a forward pass per image.
const MAX_AUGMENTED_VIEWS: i64 = *limits::AUGMENTED_VIEWS.end() as i64;

/// Recipes on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RecipeArg {
    /// Cross-validation chooses the head and its settings; the winner is refitted on every
    /// image.
    Auto,
    /// The head and settings the flags give, with a validation split.
    Manual,
}

/// `medtransfer train` arguments. The manual recipe's flags (`--head` … `--label-smoothing`,
/// `--val-split`, `--cv`) imply `--recipe manual`; `--augment` serves both recipes.
#[derive(Args)]
pub struct TrainArgs {
    /// Training images: one sub-folder per class.
    #[arg(long)]
    data: PathBuf,
    /// auto (default): stratified k-fold cross-validation on the training images (grouped by
    /// --group-pattern) chooses the head (linear or MLP), its penalty and the class weighting,
    /// and the winner is refitted on every image; manual: the flags below, with a validation
    /// split. Any manual flag given implies manual.
    #[arg(long, value_enum)]
    recipe: Option<RecipeArg>,
    /// Most folds of the automatic recipe (fewer when a class has fewer images or groups).
    #[arg(long, default_value_t = DEFAULT_FOLDS, value_parser = within(limits::FOLDS, limits::inclusive))]
    folds: usize,
    /// Two classes: how the decision threshold is chosen on out-of-fold (manual: validation)
    /// predictions: `balanced` (best balanced accuracy) or `sensitivity=0.95` (the highest
    /// threshold that keeps that sensitivity for the second class).
    #[arg(long, default_value = "balanced", value_parser = threshold_rule)]
    threshold: ThresholdRule,
    /// Manual: share of each class held out for validation (split by group when
    /// --group-pattern is given), in [0, 0.5]; 0 trains on everything without validation or
    /// early stopping. Default 0.2.
    #[arg(long, conflicts_with = "val", value_parser = validation_share)]
    val_split: Option<f64>,
    /// Validation images in their own folder (same class sub-folders) instead of a split.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Regular expression taking a group key (e.g. a patient id) from each file name, so no
    /// group straddles train and validation; the first capture group is the key if there is one.
    /// Example for the Kermany chest X-rays: '^(person\d+|NORMAL2-IM-\d+|IM-\d+)'.
    #[arg(long)]
    group_pattern: Option<String>,
    /// Manual: classifier head (default mlp).
    #[arg(long, value_enum)]
    head: Option<HeadArg>,
    /// Manual: hidden units of the mlp head (default 1024).
    #[arg(long, value_parser = within(limits::HIDDEN_UNITS, limits::inclusive))]
    hidden: Option<usize>,
    /// Manual: dropout of the mlp head's hidden units, in [0, 1) (default 0.5).
    #[arg(long, value_parser = within(limits::DROPOUT, limits::half_open))]
    dropout: Option<f32>,
    /// Manual: loss (default auto).
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Manual: most epochs (passes over the training images).
    #[arg(long, value_parser = within(limits::EPOCHS, limits::inclusive))]
    epochs: Option<usize>,
    /// Manual: peak learning rate, strictly between 0 and 10.
    #[arg(long, value_parser = learning_rate)]
    lr: Option<f64>,
    /// Manual: weight decay (decoupled, AdamW; L2 with --optimizer adam), in [0, 1).
    #[arg(long, value_parser = within(limits::WEIGHT_DECAY, limits::half_open))]
    weight_decay: Option<f64>,
    /// Manual: optimiser (default adamw).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Manual: images per optimiser step.
    #[arg(long, value_parser = within(limits::BATCH_SIZE, limits::inclusive))]
    batch: Option<usize>,
    /// Manual: learning-rate schedule (default cosine).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// Manual: stop after this many epochs without a lower validation loss (0 = never stop
    /// early).
    #[arg(long)]
    patience: Option<usize>,
    /// Manual: weight classes by inverse frequency in the loss (default auto).
    #[arg(long, value_enum)]
    class_weights: Option<WeightsArg>,
    /// Manual: label smoothing ε in [0, 0.5) (default 0).
    #[arg(long, value_parser = within(limits::LABEL_SMOOTHING, limits::half_open))]
    label_smoothing: Option<f32>,
    /// Extra augmented views (flip, rotation, zoom, brightness, contrast) embedded per training
    /// image (default 0). The automatic recipe scores its linear candidates with and without
    /// them and keeps them only when cross-validation says they help.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=MAX_AUGMENTED_VIEWS))]
    augment: Option<u32>,
    /// Fine-tune the backbone's last N blocks (and its 1×1 head convolution) together with
    /// the head, from 1 to 8 (2: the last two blocks; 5: the last two stages); 0 (default)
    /// trains the head alone on the frozen embeddings. The head is fitted first by the recipe
    /// on the training side; a validation share (--val-split, default 0.2) is held out for
    /// early stopping, the figures and the threshold.
    #[arg(long, default_value_t = 0, conflicts_with_all = ["val", "cv", "augment"],
          value_parser = within(0..=MAX_TRAIN_BLOCKS, limits::inclusive))]
    train_blocks: usize,
    /// With --train-blocks: most fine-tuning epochs (default 10).
    #[arg(long, requires = "train_blocks", value_parser = within(1..=1000usize, limits::inclusive))]
    tune_epochs: Option<usize>,
    /// With --train-blocks: the head's learning rate while fine-tuning (default 1e-4).
    #[arg(long, requires = "train_blocks", value_parser = tune_rate)]
    tune_lr: Option<f64>,
    /// With --train-blocks: the blocks' learning rate (default 1e-5).
    #[arg(long, requires = "train_blocks", value_parser = tune_rate)]
    tune_backbone_lr: Option<f64>,
    /// With --train-blocks: decay (AdamW's weight decay towards zero) or recipe (the linear
    /// head keeps the penalty the recipe chose, and the blocks are held towards their
    /// pretrained weights by it: L2-SP).
    #[arg(long, requires = "train_blocks", value_enum)]
    tune_penalty: Option<PenaltyArg>,
    /// Fixes the split, initial weights, shuffling, dropout and augmentation.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Manual: also cross-validate these settings on the training folder's images: K
    /// stratified folds (grouped by --group-pattern), each predicted by a head trained on the
    /// other folds; the out-of-fold figures cover every image (K from 2 to 50).
    #[arg(long, value_parser = within(limits::FOLDS, limits::inclusive))]
    cv: Option<usize>,
    /// Where to write the model file.
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object instead of progress and tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// Fine-tuning penalties on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PenaltyArg {
    /// AdamW's decoupled weight decay towards zero.
    Decay,
    /// The recipe's penalty on the head, and the blocks held towards their pretrained weights.
    Recipe,
}

/// Optimisers on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerArg {
    /// Adam (weight decay as L2).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// Schedules on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScheduleArg {
    /// Cosine decay to zero.
    Cosine,
    /// Constant rate.
    Constant,
}

/// Class weighting on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WeightsArg {
    /// On when the classes are imbalanced (largest > 1.5 × smallest).
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// `medtransfer train`.
pub fn train(args: &TrainArgs) -> ExitCode {
    let started = Instant::now();
    let dataset = match FolderDataset::open(&args.data) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let recipe = match recipe(args) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let config = run_config(args, recipe);
    // A validation folder of its own, with the training folder's classes.
    let val_folder = match &args.val {
        Some(dir) => match FolderDataset::open(dir) {
            Ok(v) if v.classes == dataset.classes => Some(v),
            Ok(v) => {
                return fail(format!(
                    "the validation folder's classes {:?} differ from the training folder's {:?}",
                    v.classes, dataset.classes
                ));
            }
            Err(e) => return fail(e),
        },
        None => None,
    };
    let mut backbone = match Backbone::open(&args.backbone) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if !args.json {
        eprintln!("backend: {}", backbone.device.describe());
    }
    let embed_started = Instant::now();
    let val_folder_files: Vec<&LabelledFile> =
        val_folder.iter().flat_map(|v| v.files.iter()).collect();
    let bar = progress_bar(
        dataset.files.len() + val_folder_files.len(),
        "embedding",
        args.json,
    );
    // Every image is decoded and embedded before the split, so that a file that cannot be
    // read never leaves a class without training or validation images.
    let all_files: Vec<&LabelledFile> = dataset.files.iter().collect();
    let (all_set, all_kept, all_skipped) = embed_files(&mut backbone, &all_files, &bar);
    let mut skipped = folder_skipped(&dataset);
    skipped.extend(all_skipped);
    let usable: Vec<&LabelledFile> = all_kept.iter().map(|&i| all_files[i]).collect();
    let val_folder_set = match &val_folder {
        Some(_) => {
            let (set, kept, val_skipped) = embed_files(&mut backbone, &val_folder_files, &bar);
            skipped.extend(val_skipped);
            let files: Vec<&LabelledFile> = kept.iter().map(|&i| val_folder_files[i]).collect();
            Some((set, files))
        }
        None => None,
    };
    // Group keys matter to a split, to cross-validation (the automatic recipe's folds keep
    // groups whole with or without --val) and to the OOD calibration; read once for all.
    let groups = match group_keys(&usable, args.group_pattern.as_deref()) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    // Near-duplicates (copies included) stay on one side of the split and of every fold.
    let duplicate_pairs = near_duplicate_pairs(&all_set.embeddings);
    let groups = if duplicate_pairs.is_empty() {
        groups
    } else {
        Some(split_groups(
            all_set.labels.len(),
            groups.as_deref(),
            &duplicate_pairs,
        ))
    };
    let validation = match &val_folder_set {
        Some((set, _)) => Validation::Given {
            set,
            groups: groups.as_deref(),
        },
        None => Validation::Split {
            groups: groups.as_deref(),
        },
    };
    let device = backbone.device.device.clone();
    let mut progress = CliProgress {
        args,
        backbone: &mut backbone,
        classes: &dataset.classes,
        usable: &usable,
        all_labels: all_set
            .labels
            .iter()
            .chain(val_folder_set.iter().flat_map(|(set, _)| &set.labels))
            .copied()
            .collect(),
        validation_folder_images: val_folder_set
            .as_ref()
            .map_or(0, |(set, _)| set.labels.len()),
        skipped: &skipped,
        embedding_bar: bar,
        embed_started,
        embed_seconds: 0.0,
        training_bar: None,
        train_started: None,
        train_rows: 0,
        search_bar: None,
        search_started: None,
        announced: false,
    };
    let (finished, tuned) = if args.train_blocks > 0 {
        let tune = tune::tune_config(args, args.train_blocks);
        match tune::fine_tune(
            args,
            &tune,
            &dataset.classes,
            &all_set,
            &usable,
            groups.as_deref(),
            &config,
            &mut progress,
        ) {
            Ok((finished, tuned, report)) => (finished, Some((tuned, report))),
            Err(e) => return fail(e),
        }
    } else {
        match pollster::block_on(run(
            &dataset.classes,
            &all_set,
            validation,
            &config,
            &device,
            &CancelToken::new(),
            &mut progress,
        )) {
            Ok(finished) => (finished, None),
            Err(e) => return fail(e),
        }
    };
    let timings = report::Timings {
        embed_seconds: progress.embed_seconds,
        search_seconds: match (progress.search_started, progress.train_started) {
            (Some(s), Some(t)) => t.duration_since(s).as_secs_f64(),
            _ => 0.0,
        },
        train_seconds: progress
            .train_started
            .map_or(0.0, |t| t.elapsed().as_secs_f64()),
        started,
    };
    let train_rows = progress.train_rows;
    let cross_validation = match args.cv {
        Some(k) => {
            let mut progress = CrossValidationProgress {
                args,
                backbone: &mut backbone,
                usable: &usable,
                bar: progress_bar(k, "folds", args.json),
            };
            let result = pollster::block_on(cross_validate(
                &dataset.classes,
                &all_set,
                groups.as_deref(),
                k,
                &config.train,
                &device,
                &CancelToken::new(),
                &mut progress,
            ));
            progress.bar.finish_and_clear();
            match result {
                Ok(cv) => Some((k, cv)),
                Err(e) => return fail(format!("cross-validation: {e}")),
            }
        }
        None => None,
    };
    let created_by = format!("medtransfer {}", env!("CARGO_PKG_VERSION"));
    let mut model = match &tuned {
        Some((tuned, _)) => ModelFile::from_fine_tuned(tuned, &created_by),
        None => ModelFile::from_trained(&finished.trained, &created_by),
    };
    if let Some(search) = &finished.search {
        model = model.with_search(search);
    }
    // The out-of-distribution reference, from every training image's frozen embedding.
    match OodReference::fit(
        &all_set.embeddings,
        &all_set.labels,
        groups.as_deref(),
        config.train.seed,
    ) {
        Ok(reference) => model = model.with_ood(reference),
        Err(e) if !args.json => eprintln!("no out-of-distribution warning: {e}"),
        Err(_) => {}
    }
    if let Err(e) = write_atomically(&args.out, &model.to_bytes()) {
        return fail(format!("cannot write {}: {e}", args.out.display()));
    }
    let val_paths: Vec<PathBuf> = match &val_folder_set {
        Some((_, files)) => files.iter().map(|f| f.path.clone()).collect(),
        None => finished
            .validation_items
            .iter()
            .map(|&i| usable[i].path.clone())
            .collect(),
    };
    // The search's out-of-fold rows are the items it saw: all, or the fine-tuning's training side.
    let searched: Vec<usize> = match &tuned {
        Some(_) => finished.train_items.clone(),
        None => (0..usable.len()).collect(),
    };
    let paths: Vec<PathBuf> = searched.iter().map(|&i| usable[i].path.clone()).collect();
    let outcome = report::Outcome {
        out: &args.out,
        finished: &finished,
        cross_validation: cross_validation.as_ref(),
        train_rows,
        skipped: &skipped,
        val_paths: &val_paths,
        paths: &paths,
        timings,
        fine_tuning: tuned.as_ref().map(|(_, report)| report),
    };
    if args.json {
        let mut report = outcome.json();
        report["out_of_distribution"] = serde_json::json!(model.header.ood);
        report["near_duplicate_pairs"] = serde_json::json!(duplicate_pairs.len());
        println!("{report}");
    } else {
        outcome.print();
        if !duplicate_pairs.is_empty() {
            println!(
                "{} pairs of near-duplicate images (embedding cosine ≥ {NEAR_DUPLICATE_COSINE}) were kept on one side of the split and of every fold; `medtransfer check` lists them",
                duplicate_pairs.len()
            );
        }
        if let Some(ood) = &model.header.ood {
            println!(
                "out-of-distribution warning: above cosine distance {:.4} to the {}th nearest of {} training images ({:.0}% of {} training images are within it, out of fold)",
                ood.threshold,
                ood.neighbours,
                ood.references,
                ood.quantile * 100.0,
                ood.calibration_images
            );
        }
    }
    if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    }
}
