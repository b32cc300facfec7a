//! `medtransfer train`: embeds a folder-per-class image set and trains a classifier head on it
//! through core's [`run`] (split, train, keep the best epoch, evaluate); this file only maps
//! flags to core's [`RunConfig`] and shows the run's progress.

use std::fmt::Display;
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use medtransfer_core::augment::AugmentConfig;
use medtransfer_core::embeddings::View;
use medtransfer_core::head::HeadKind;
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::run::{
    DEFAULT_VALIDATION_SHARE, Progress, RunConfig, Validation, cross_validate, run,
};
use medtransfer_core::split::GroupPattern;
use medtransfer_core::train::{
    CancelToken, ClassWeighting, DEFAULT_DROPOUT, DEFAULT_HIDDEN_UNITS, EpochSummary,
    LabelledEmbeddings, LossKind, OptimizerKind, Schedule, TrainConfig, TrainEvent, limits,
};
use serde_json::{Value, json};

use crate::backbone::{Backbone, BackboneArgs, embed_files, folder_skipped, progress_bar};
use crate::dataset::{FolderDataset, LabelledFile};
use crate::finetune::{
    EXIT_SOME_FILES_FAILED, evaluation_json, fail, print_evaluation, write_atomically,
};

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
const MAX_AUGMENTED_VIEWS: i64 = 64;

/// `medtransfer train` arguments.
#[derive(Args)]
pub struct TrainArgs {
    /// Training images: one sub-folder per class.
    #[arg(long)]
    data: PathBuf,
    /// Share of each class held out for validation (split by group when --group-pattern is
    /// given), in [0, 0.5]; 0 trains on everything without validation or early stopping.
    #[arg(long, default_value_t = DEFAULT_VALIDATION_SHARE, conflicts_with = "val",
        value_parser = validation_share)]
    val_split: f64,
    /// Validation images in their own folder (same class sub-folders) instead of a split.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Regular expression taking a group key (e.g. a patient id) from each file name, so no
    /// group straddles train and validation; the first capture group is the key if there is one.
    /// Example for the Kermany chest X-rays: '^(person\d+|NORMAL2-IM-\d+|IM-\d+)'.
    #[arg(long)]
    group_pattern: Option<String>,
    /// Classifier head.
    #[arg(long, value_enum, default_value_t = HeadArg::Mlp)]
    head: HeadArg,
    /// Hidden units of the mlp head.
    #[arg(long, default_value_t = DEFAULT_HIDDEN_UNITS, value_parser = within(limits::HIDDEN_UNITS, limits::inclusive))]
    hidden: usize,
    /// Dropout of the mlp head's hidden units, in [0, 1).
    #[arg(long, default_value_t = DEFAULT_DROPOUT, value_parser = within(limits::DROPOUT, limits::half_open))]
    dropout: f32,
    /// Loss.
    #[arg(long, value_enum, default_value_t = LossArg::Auto)]
    loss: LossArg,
    /// Most epochs (passes over the training images).
    #[arg(long, value_parser = within(limits::EPOCHS, limits::inclusive))]
    epochs: Option<usize>,
    /// Peak learning rate, strictly between 0 and 10.
    #[arg(long, value_parser = learning_rate)]
    lr: Option<f64>,
    /// Weight decay (decoupled, AdamW; L2 with --optimizer adam), in [0, 1).
    #[arg(long, value_parser = within(limits::WEIGHT_DECAY, limits::half_open))]
    weight_decay: Option<f64>,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    optimizer: OptimizerArg,
    /// Images per optimiser step.
    #[arg(long, value_parser = within(limits::BATCH_SIZE, limits::inclusive))]
    batch: Option<usize>,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    schedule: ScheduleArg,
    /// Stop after this many epochs without a lower validation loss (0 = never stop early).
    #[arg(long)]
    patience: Option<usize>,
    /// Weight classes by inverse frequency in the loss.
    #[arg(long, value_enum, default_value_t = WeightsArg::Auto)]
    class_weights: WeightsArg,
    /// Label smoothing ε in [0, 0.5).
    #[arg(long, default_value_t = 0.0, value_parser = within(limits::LABEL_SMOOTHING, limits::half_open))]
    label_smoothing: f32,
    /// Extra augmented views (flip, rotation, zoom, brightness, contrast) embedded per
    /// training image.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_AUGMENTED_VIEWS))]
    augment: u32,
    /// Fixes the split, initial weights, shuffling, dropout and augmentation.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Also cross-validate these settings on the training folder's images: K stratified folds
    /// (grouped by --group-pattern), each predicted by a head trained on the other folds; the
    /// out-of-fold figures cover every image (K from 2 to 50).
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
fn within<T, R>(range: R, says: fn(&R) -> String) -> impl Fn(&str) -> Result<T, String> + Clone
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
fn learning_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if limits::learning_rate_ok(rate) {
        Ok(rate)
    } else {
        let (low, high) = limits::LEARNING_RATE;
        Err(format!("must be above {low} and below {high}, got {rate}"))
    }
}

/// `--val-split`: in [`limits::VALIDATION_SHARE`].
fn validation_share(text: &str) -> Result<f64, String> {
    within(limits::VALIDATION_SHARE, limits::inclusive)(text)
}

/// Core's run configuration from the flags (the validation share is 0 with `--val`, whose
/// folder validates instead).
fn run_config(args: &TrainArgs) -> RunConfig {
    let defaults = TrainConfig::default();
    RunConfig {
        train: TrainConfig {
            head: match args.head {
                HeadArg::Linear => HeadKind::Linear,
                HeadArg::Mlp => HeadKind::Mlp {
                    hidden: args.hidden,
                    dropout: args.dropout,
                },
            },
            loss: match args.loss {
                LossArg::Auto => None,
                LossArg::Ce => Some(LossKind::CrossEntropy),
                LossArg::Bce => Some(LossKind::BinaryCrossEntropy),
                LossArg::Mse => Some(LossKind::MeanSquaredError),
            },
            optimizer: match args.optimizer {
                OptimizerArg::Adam => OptimizerKind::Adam,
                OptimizerArg::Adamw => OptimizerKind::AdamW,
            },
            learning_rate: args.lr.unwrap_or(defaults.learning_rate),
            weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
            batch_size: args.batch.unwrap_or(defaults.batch_size),
            epochs: args.epochs.unwrap_or(defaults.epochs),
            schedule: match args.schedule {
                ScheduleArg::Cosine => Schedule::Cosine,
                ScheduleArg::Constant => Schedule::Constant,
            },
            patience: match args.patience {
                Some(0) => None,
                Some(p) => Some(p),
                None => defaults.patience,
            },
            class_weights: match args.class_weights {
                WeightsArg::Auto => ClassWeighting::Auto,
                WeightsArg::On => ClassWeighting::On,
                WeightsArg::Off => ClassWeighting::Off,
            },
            label_smoothing: args.label_smoothing,
            seed: args.seed,
        },
        validation_share: if args.val.is_some() {
            0.0
        } else {
            args.val_split
        },
    }
}

/// The CLI's side of a run: once the split is made it reports the class counts, embeds the
/// training images' augmented views and lists skipped files; then it shows the epochs.
struct CliProgress<'a> {
    args: &'a TrainArgs,
    backbone: &'a mut Backbone,
    classes: &'a [String],
    /// The usable training-folder images, in the order of the run's items.
    usable: &'a [&'a LabelledFile],
    /// Labels of every usable image, the validation folder's included.
    all_labels: Vec<usize>,
    /// Images in the validation folder (0 without `--val`).
    validation_folder_images: usize,
    skipped: &'a [Value],
    /// The embedding bar, finished once augmentation is done.
    embedding_bar: ProgressBar,
    embed_started: Instant,
    embed_seconds: f64,
    training_bar: Option<ProgressBar>,
    train_started: Option<Instant>,
    /// Training rows (augmented views included), from [`TrainEvent::Started`].
    train_rows: usize,
}

impl Progress for CliProgress<'_> {
    fn extra_training(&mut self, train: &[usize], validation: &[usize]) -> LabelledEmbeddings {
        let args = self.args;
        if !args.json {
            let mut counts = vec![0; self.classes.len()];
            for &label in &self.all_labels {
                if let Some(n) = counts.get_mut(label) {
                    *n += 1;
                }
            }
            self.embedding_bar.println(format!(
                "classes: {} ({} training, {} validation images)",
                self.classes
                    .iter()
                    .zip(counts)
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                train.len(),
                validation.len() + self.validation_folder_images
            ));
        }
        let extra = augmented_views(
            self.backbone,
            train.iter().filter_map(|&i| self.usable.get(i).copied()),
            args,
            &self.embedding_bar,
        );
        self.embedding_bar.finish_and_clear();
        self.embed_seconds = self.embed_started.elapsed().as_secs_f64();
        if !args.json {
            for s in self.skipped {
                eprintln!(
                    "skipped {}: {}",
                    s["path"].as_str().unwrap_or("?"),
                    s["error"].as_str().unwrap_or("?")
                );
            }
        }
        extra
    }

    fn event(&mut self, event: &TrainEvent) {
        match event {
            TrainEvent::Started {
                epochs,
                train_items,
                class_weights,
                loss,
                ..
            } => {
                self.train_rows = *train_items;
                let bar = progress_bar(*epochs, "training", self.args.json);
                if !self.args.json {
                    bar.println(format!("loss: {loss:?}, class weights: {class_weights:?}"));
                }
                self.training_bar = Some(bar);
                self.train_started = Some(Instant::now());
            }
            TrainEvent::Epoch(summary) => {
                if let Some(bar) = &self.training_bar {
                    bar.inc(1);
                    if !self.args.json {
                        bar.println(epoch_line(summary));
                    }
                }
            }
            TrainEvent::Finished { .. } => {
                if let Some(bar) = &self.training_bar {
                    bar.finish_and_clear();
                }
            }
            TrainEvent::Batch { .. } => {}
        }
    }
}

/// Embeddings of `args.augment` augmented views of each of `files` (those that cannot be
/// embedded are left out: their original was embedded, so they are rare), advancing `bar`.
fn augmented_views<'f>(
    backbone: &mut Backbone,
    files: impl Iterator<Item = &'f LabelledFile>,
    args: &TrainArgs,
    bar: &ProgressBar,
) -> LabelledEmbeddings {
    let mut extra = LabelledEmbeddings::default();
    if args.augment == 0 {
        return extra;
    }
    let mut items = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        for index in 1..=args.augment {
            let view = View::Augmented {
                index,
                seed: args.seed,
            };
            items.push((file.path.clone(), view));
            labels.push(file.label);
        }
    }
    bar.inc_length(items.len() as u64);
    let results = backbone.embed(&items, &AugmentConfig::default(), bar);
    for (result, label) in results.into_iter().zip(labels) {
        if let Ok(embedding) = result {
            extra.embeddings.push(embedding);
            extra.labels.push(label);
        }
    }
    extra
}

/// `--cv`: each fold's training side gets its augmented views; nothing is printed per fold.
struct CrossValidationProgress<'a> {
    args: &'a TrainArgs,
    backbone: &'a mut Backbone,
    usable: &'a [&'a LabelledFile],
    bar: ProgressBar,
}

impl Progress for CrossValidationProgress<'_> {
    fn extra_training(&mut self, train: &[usize], _validation: &[usize]) -> LabelledEmbeddings {
        augmented_views(
            self.backbone,
            train.iter().filter_map(|&i| self.usable.get(i).copied()),
            self.args,
            &self.bar,
        )
    }

    fn event(&mut self, event: &TrainEvent) {
        if let TrainEvent::Finished { .. } = event {
            self.bar.inc(1);
        }
    }
}

/// `medtransfer train`.
pub fn train(args: &TrainArgs) -> ExitCode {
    let started = Instant::now();
    let dataset = match FolderDataset::open(&args.data) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let config = run_config(args);
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
    // Group keys matter only to a split and to cross-validation; read once for both.
    let splits = val_folder_set.is_none() && config.validation_share > 0.0;
    let groups = if splits || args.cv.is_some() {
        match group_keys(&usable, args.group_pattern.as_deref()) {
            Ok(g) => g,
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let validation = match &val_folder_set {
        Some((set, _)) => Validation::Given(set),
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
    };
    let finished = match pollster::block_on(run(
        &dataset.classes,
        &all_set,
        validation,
        &config,
        &device,
        &CancelToken::new(),
        &mut progress,
    )) {
        Ok(finished) => finished,
        Err(e) => return fail(e),
    };
    let (embed_seconds, train_rows) = (progress.embed_seconds, progress.train_rows);
    let train_seconds = progress
        .train_started
        .map_or(0.0, |t| t.elapsed().as_secs_f64());
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
    let trained = &finished.trained;
    let created_by = format!("medtransfer {}", env!("CARGO_PKG_VERSION"));
    let model = ModelFile::from_trained(trained, &created_by);
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
    if args.json {
        let report = json!({
            "model": args.out.display().to_string(),
            "classes": trained.classes,
            "train_images": finished.train_items.len(),
            "train_rows": train_rows,
            "validation_images": val_paths.len(),
            "skipped": skipped,
            "loss": trained.loss,
            "class_weights": trained.class_weights,
            "config": trained.train_config,
            "kept_epoch": trained.kept_epoch,
            "stop_reason": trained.stop_reason,
            "history": trained.history,
            "validation": trained.validation.as_ref().map(|v| evaluation_json(v, None)),
            "cross_validation": cross_validation.as_ref().map(|(k, cv)| json!({
                "folds": k,
                "out_of_fold": evaluation_json(&cv.evaluation, None),
            })),
            "embed_seconds": embed_seconds,
            "train_seconds": train_seconds,
            "total_seconds": started.elapsed().as_secs_f64(),
        });
        println!("{report}");
    } else {
        println!(
            "kept epoch {} ({:?}); wrote {}",
            trained.kept_epoch,
            trained.stop_reason,
            args.out.display()
        );
        if let Some(v) = &trained.validation {
            println!("validation ({} images):", v.n);
            print_evaluation(v, Some(&val_paths));
        }
        if let Some((k, cv)) = &cross_validation {
            println!(
                "cross-validation ({k} folds; out-of-fold predictions of all {} images):",
                cv.evaluation.n
            );
            let paths: Vec<PathBuf> = usable.iter().map(|f| f.path.clone()).collect();
            print_evaluation(&cv.evaluation, Some(&paths));
        }
        println!(
            "embedding {embed_seconds:.1} s, training {train_seconds:.2} s, total {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    }
}

fn epoch_line(s: &EpochSummary) -> String {
    let mut line = format!(
        "epoch {:>3}  lr {:.2e}  train loss {:.4} acc {:.3}",
        s.epoch, s.learning_rate, s.train_loss, s.train_accuracy
    );
    if let (Some(l), Some(a)) = (s.validation_loss, s.validation_accuracy) {
        line.push_str(&format!("  val loss {l:.4} acc {a:.3}"));
        if let Some(b) = s.validation_balanced_accuracy {
            line.push_str(&format!(" bal {b:.3}"));
        }
        if let Some(auc) = s.validation_auc {
            line.push_str(&format!(" auc {auc:.3}"));
        }
        if s.is_best {
            line.push_str("  *");
        }
    }
    line
}
