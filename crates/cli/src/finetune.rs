//! `medtransfer train`, `eval`, `predict` and `split`: fine-tuning a classifier head on a
//! folder-per-class image set, evaluating it, predicting with it, and splitting a set.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use medtransfer_core::augment::AugmentConfig;
use medtransfer_core::efficientnet::{
    CONVERTED_WEIGHTS_FILE_NAME, EfficientNetLite0, load_from_bytes,
};
use medtransfer_core::embeddings::{
    EmbeddingRequest, EmbeddingStore, MemoryEmbeddingStore, View, embed_cached,
};
use medtransfer_core::formats;
use medtransfer_core::head::HeadKind;
use medtransfer_core::metrics::{Evaluation, EvaluationOptions, evaluate, predicted_class};
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::split::{GroupPattern, stratified_split};
use medtransfer_core::train::{
    ClassWeighting, Classifier, LabelledEmbeddings, LossKind, OptimizerKind, Schedule, TrainConfig,
    TrainEvent, Trainer,
};
use medtransfer_core::{ComputeDevice, efficientnet::EMBEDDING_DIM};
use serde_json::{Value, json};

use crate::Backend;
use crate::dataset::{
    DiskEmbeddingStore, FolderDataset, LabelledFile, default_cache_dir, walk_tree,
};

/// Exit status when some input files could not be processed (the others were).
const EXIT_SOME_FILES_FAILED: u8 = 2;
/// Images read and embedded at a time.
const EMBED_CHUNK: usize = 32;

/// Where the backbone comes from and runs, and where embeddings are cached.
#[derive(Args, Clone)]
pub struct BackboneArgs {
    /// Folder holding the converted pretrained weights.
    #[arg(long, env = "MEDTRANSFER_WEIGHTS_DIR", default_value = "weights")]
    weights: PathBuf,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t)]
    backend: Backend,
    /// Folder of cached embeddings [default: $MEDTRANSFER_CACHE or ~/.cache/medtransfer/embeddings].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Do not read or write cached embeddings.
    #[arg(long)]
    no_cache: bool,
}

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

/// `medtransfer train` arguments.
#[derive(Args)]
pub struct TrainArgs {
    /// Training images: one sub-folder per class.
    #[arg(long)]
    data: PathBuf,
    /// Share of each class held out for validation (split by group when --group-pattern is
    /// given); 0 trains on everything without validation or early stopping.
    #[arg(long, default_value_t = 0.2, conflicts_with = "val")]
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
    #[arg(long, default_value_t = 1024)]
    hidden: usize,
    /// Dropout of the mlp head's hidden units.
    #[arg(long, default_value_t = 0.5)]
    dropout: f32,
    /// Loss.
    #[arg(long, value_enum, default_value_t = LossArg::Auto)]
    loss: LossArg,
    /// Most epochs (passes over the training images).
    #[arg(long)]
    epochs: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay (decoupled, AdamW; L2 with --optimizer adam).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    optimizer: OptimizerArg,
    /// Images per optimiser step.
    #[arg(long)]
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
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Extra augmented views (flip, rotation, zoom, brightness, contrast) embedded per
    /// training image.
    #[arg(long, default_value_t = 0)]
    augment: u32,
    /// Fixes the split, initial weights, shuffling, dropout and augmentation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
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

/// `medtransfer eval` arguments.
#[derive(Args)]
pub struct EvalArgs {
    /// The model file written by `medtransfer train`.
    #[arg(long)]
    model: PathBuf,
    /// Labelled images: one sub-folder per class, named as the model's classes.
    #[arg(long)]
    data: PathBuf,
    /// Two classes only: predict the second class when its probability is at least this
    /// (default: the most probable class).
    #[arg(long)]
    threshold: Option<f64>,
    /// Print one JSON object instead of a report.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// `medtransfer predict` arguments.
#[derive(Args)]
pub struct PredictArgs {
    /// The model file written by `medtransfer train`.
    #[arg(long)]
    model: PathBuf,
    /// Images, or folders of images (walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// `medtransfer split` arguments.
#[derive(Args)]
pub struct SplitArgs {
    /// Labelled images: one sub-folder per class.
    #[arg(long)]
    data: PathBuf,
    /// Share of each class that goes to `test/`.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Group key pattern, as for `train`.
    #[arg(long)]
    group_pattern: Option<String>,
    /// Fixes the split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Folder to create with `train/` and `test/` (files are copied).
    #[arg(long)]
    out: PathBuf,
}

/// Each file's group key (from its file name) under `pattern`, or `None` without a pattern.
fn group_keys(
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

/// The backbone and a trained model for `eval` and `predict`.
fn open_backbone_and_model(
    backbone: &BackboneArgs,
    model: &Path,
) -> Result<(Backbone, ModelFile, Classifier), String> {
    let backbone = Backbone::open(backbone)?;
    let (model, classifier) = open_model(model, &backbone.device)?;
    Ok((backbone, model, classifier))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed over `path`
/// once complete: a crash, a full disk or Ctrl-C never leaves a half-written file under the
/// real name, and an existing file is replaced only by a whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        use std::io::Write;
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// The loaded backbone with its device and embedding cache.
struct Backbone {
    model: EfficientNetLite0,
    device: ComputeDevice,
    store: Box<dyn EmbeddingStore>,
}

impl Backbone {
    fn open(args: &BackboneArgs) -> Result<Self, String> {
        let path = args.weights.join(CONVERTED_WEIGHTS_FILE_NAME);
        let device = crate::device::open(args.backend);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read the pretrained weights {}: {e}. Run `bash scripts/fetch-weights.sh` \
                 and `medtransfer convert-weights` first (scripts/run.sh and scripts/test.sh do \
                 both), or pass --weights DIR.",
                path.display()
            )
        })?;
        let model = load_from_bytes(&bytes, &device.device)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let store: Box<dyn EmbeddingStore> = if args.no_cache {
            Box::new(MemoryEmbeddingStore::new())
        } else {
            Box::new(DiskEmbeddingStore::new(
                args.cache.clone().unwrap_or_else(default_cache_dir),
            ))
        };
        Ok(Self {
            model,
            device,
            store,
        })
    }

    /// Embeddings of `items` in order (cached ones are read, the rest computed in batches),
    /// advancing `bar` per image.
    fn embed(
        &mut self,
        items: &[(PathBuf, View)],
        augment: &AugmentConfig,
        bar: &ProgressBar,
    ) -> Vec<Result<Vec<f32>, String>> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(EMBED_CHUNK) {
            let requests: Vec<EmbeddingRequest> = chunk
                .iter()
                .map(|(path, view)| EmbeddingRequest {
                    bytes: std::fs::read(path).map_err(|e| format!("cannot read the file: {e}")),
                    view: *view,
                })
                .collect();
            results.extend(pollster::block_on(embed_cached(
                &self.model,
                &self.device.device,
                self.store.as_mut(),
                &requests,
                augment,
            )));
            bar.inc(chunk.len() as u64);
        }
        results
    }
}

fn progress_bar(len: usize, what: &str, hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(&format!(
            "{what:>10} [{{bar:30}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
    }
    bar
}

/// A file that could not be used, for reports.
fn skipped_entry(path: &Path, error: &str) -> Value {
    json!({ "path": path.display().to_string(), "error": error })
}

/// The files a data-set folder left out (dangling or duplicate links), for reports.
fn folder_skipped(dataset: &FolderDataset) -> Vec<Value> {
    dataset
        .skipped
        .iter()
        .map(|s| skipped_entry(&s.path, &s.reason))
        .collect()
}

/// Embeds the original view of `files`, returning the usable ones as labelled embeddings
/// (with their indices into `files`) and the failures.
fn embed_files(
    backbone: &mut Backbone,
    files: &[&LabelledFile],
    bar: &ProgressBar,
) -> (LabelledEmbeddings, Vec<usize>, Vec<Value>) {
    let items: Vec<(PathBuf, View)> = files
        .iter()
        .map(|f| (f.path.clone(), View::Original))
        .collect();
    let results = backbone.embed(&items, &AugmentConfig::default(), bar);
    let mut data = LabelledEmbeddings::default();
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for (i, (file, result)) in files.iter().zip(results).enumerate() {
        match result {
            Ok(embedding) => {
                data.embeddings.push(embedding);
                data.labels.push(file.label);
                kept.push(i);
            }
            Err(error) => skipped.push(skipped_entry(&file.path, &error)),
        }
    }
    (data, kept, skipped)
}

fn train_config(args: &TrainArgs) -> TrainConfig {
    let defaults = TrainConfig::default();
    TrainConfig {
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
    }
}

/// `medtransfer train`.
pub fn train(args: &TrainArgs) -> ExitCode {
    let started = Instant::now();
    let dataset = match FolderDataset::open(&args.data) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let config = train_config(args);
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
    // Validation: the folder's images, or a (grouped) stratified split of the usable ones.
    let (train_rows, val_rows): (Vec<usize>, Vec<usize>) =
        if val_folder.is_some() || args.val_split == 0.0 {
            ((0..usable.len()).collect(), Vec::new())
        } else {
            let groups = match group_keys(&usable, args.group_pattern.as_deref()) {
                Ok(g) => g,
                Err(e) => return fail(e),
            };
            match stratified_split(
                &all_set.labels,
                groups.as_deref(),
                args.val_split,
                args.seed,
            ) {
                Ok(split) => (split.train, split.validation),
                Err(e) => return fail(e.with_class_names(&dataset.classes)),
            }
        };
    let rows = |indices: &[usize]| LabelledEmbeddings {
        embeddings: indices
            .iter()
            .map(|&i| all_set.embeddings[i].clone())
            .collect(),
        labels: indices.iter().map(|&i| all_set.labels[i]).collect(),
    };
    let mut train_set = rows(&train_rows);
    let train_files: Vec<&LabelledFile> = train_rows.iter().map(|&i| usable[i]).collect();
    let (val_set, val_files): (LabelledEmbeddings, Vec<&LabelledFile>) = match &val_folder {
        Some(_) => {
            let (set, kept, val_skipped) = embed_files(&mut backbone, &val_folder_files, &bar);
            skipped.extend(val_skipped);
            (set, kept.iter().map(|&i| val_folder_files[i]).collect())
        }
        None => (
            rows(&val_rows),
            val_rows.iter().map(|&i| usable[i]).collect(),
        ),
    };
    if !args.json {
        // Usable images per class, the validation folder's included.
        let mut counts = vec![0; dataset.classes.len()];
        let val_folder_labels = val_folder.as_ref().map(|_| &val_set.labels);
        for &label in all_set
            .labels
            .iter()
            .chain(val_folder_labels.into_iter().flatten())
        {
            counts[label] += 1;
        }
        bar.println(format!(
            "classes: {} ({} training, {} validation images)",
            dataset
                .classes
                .iter()
                .zip(counts)
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            train_files.len(),
            val_files.len()
        ));
    }
    if args.augment > 0 {
        let augment = AugmentConfig::default();
        let mut items = Vec::new();
        let mut labels = Vec::new();
        for file in &train_files {
            for index in 1..=args.augment {
                items.push((
                    file.path.clone(),
                    View::Augmented {
                        index,
                        seed: args.seed,
                    },
                ));
                labels.push(file.label);
            }
        }
        bar.inc_length(items.len() as u64);
        for (result, label) in backbone
            .embed(&items, &augment, &bar)
            .into_iter()
            .zip(labels)
        {
            if let Ok(embedding) = result {
                train_set.embeddings.push(embedding);
                train_set.labels.push(label);
            }
        }
    }
    bar.finish_and_clear();
    let embed_seconds = embed_started.elapsed().as_secs_f64();
    if !args.json {
        for s in &skipped {
            eprintln!(
                "skipped {}: {}",
                s["path"].as_str().unwrap_or("?"),
                s["error"].as_str().unwrap_or("?")
            );
        }
    }

    let validation = (!val_set.embeddings.is_empty()).then_some(&val_set);
    let device = &backbone.device.device;
    let mut trainer = match Trainer::new(&dataset.classes, &train_set, validation, &config, device)
    {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let train_started = Instant::now();
    let bar = progress_bar(config.epochs, "training", args.json);
    if let TrainEvent::Started {
        class_weights,
        loss,
        ..
    } = trainer.started_event()
        && !args.json
    {
        bar.println(format!("loss: {loss:?}, class weights: {class_weights:?}"));
    }
    while !trainer.is_done() {
        let summary = match pollster::block_on(trainer.run_epoch(&mut |_, _| {})) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        bar.inc(1);
        if !args.json {
            bar.println(epoch_line(&summary));
        }
    }
    bar.finish_and_clear();
    let trained = match pollster::block_on(trainer.finish(false)) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let train_seconds = train_started.elapsed().as_secs_f64();
    let created_by = format!("medtransfer {}", env!("CARGO_PKG_VERSION"));
    let model = ModelFile::from_trained(&trained, &created_by);
    if let Err(e) = write_atomically(&args.out, &model.to_bytes()) {
        return fail(format!("cannot write {}: {e}", args.out.display()));
    }
    let val_paths: Vec<PathBuf> = val_files.iter().map(|f| f.path.clone()).collect();
    if args.json {
        let report = json!({
            "model": args.out.display().to_string(),
            "classes": trained.classes,
            "train_images": train_files.len(),
            "train_rows": train_set.labels.len(),
            "validation_images": val_set.labels.len(),
            "skipped": skipped,
            "loss": trained.loss,
            "class_weights": trained.class_weights,
            "config": trained.train_config,
            "kept_epoch": trained.kept_epoch,
            "stop_reason": trained.stop_reason,
            "history": trained.history,
            "validation": trained.validation.as_ref().map(|v| evaluation_json(v, None)),
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

fn epoch_line(s: &medtransfer_core::train::EpochSummary) -> String {
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

/// The evaluation as the JSON object `eval --json` prints.
fn evaluation_json(e: &Evaluation, paths: Option<&[PathBuf]>) -> Value {
    let misclassified: Vec<Value> = e
        .misclassified
        .iter()
        .map(|m| {
            let mut v = json!({
                "index": m.index,
                "true": e.classes.get(m.true_class),
                "predicted": e.classes.get(m.predicted_class),
                "probability": m.probability,
            });
            if let Some(path) = paths.and_then(|p| p.get(m.index)) {
                v["path"] = json!(path.display().to_string());
            }
            v
        })
        .collect();
    json!({
        "n": e.n,
        "accuracy": e.accuracy,
        "balanced_accuracy": e.balanced_accuracy,
        "auc": e.auc,
        "accuracy_ci": e.accuracy_ci,
        "auc_ci": e.auc_ci,
        "log_loss": e.log_loss,
        "classes": e.classes,
        "per_class": e.per_class,
        "confusion_matrix": e.confusion_matrix,
        "misclassified": misclassified,
        "roc": e.roc,
    })
}

fn fmt_ci(ci: Option<[f64; 2]>) -> String {
    ci.map_or(String::new(), |[lo, hi]| {
        format!(" (95% CI {lo:.3}–{hi:.3})")
    })
}

fn print_evaluation(e: &Evaluation, paths: Option<&[PathBuf]>) {
    println!(
        "  accuracy           {:.3}{}",
        e.accuracy,
        fmt_ci(e.accuracy_ci)
    );
    println!("  balanced accuracy  {:.3}", e.balanced_accuracy);
    if let Some(auc) = e.auc {
        println!("  AUC                {auc:.3}{}", fmt_ci(e.auc_ci));
    }
    println!(
        "  {:<20} {:>9} {:>11} {:>11} {:>6} {:>7}",
        "class", "precision", "sensitivity", "specificity", "F1", "support"
    );
    for c in &e.per_class {
        println!(
            "  {:<20} {:>9.3} {:>11.3} {:>11.3} {:>6.3} {:>7}",
            c.class, c.precision, c.sensitivity, c.specificity, c.f1, c.support
        );
    }
    println!("  confusion matrix (rows: true, columns: predicted):");
    for (name, row) in e.classes.iter().zip(&e.confusion_matrix) {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:>6}")).collect();
        println!("  {name:<20} {}", cells.join(""));
    }
    if let Some(paths) = paths {
        let shown = e.misclassified.len().min(10);
        if shown > 0 {
            println!(
                "  misclassified ({} in all, first {shown}):",
                e.misclassified.len()
            );
        }
        for m in e.misclassified.iter().take(shown) {
            println!(
                "    {} — true {}, predicted {} ({:.2})",
                paths
                    .get(m.index)
                    .map_or("?".into(), |p| p.display().to_string()),
                e.classes.get(m.true_class).map_or("?", String::as_str),
                e.classes.get(m.predicted_class).map_or("?", String::as_str),
                m.probability
            );
        }
    }
}

/// Reads and checks a model file, and builds its classifier on `device`.
fn open_model(path: &Path, device: &ComputeDevice) -> Result<(ModelFile, Classifier), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let model = ModelFile::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if model.header.head.input_dim != EMBEDDING_DIM {
        return Err(format!(
            "{}: the head expects {} features, the backbone gives {EMBEDDING_DIM}",
            path.display(),
            model.header.head.input_dim
        ));
    }
    let classifier = Classifier::new(
        &model.header.head,
        &model.weights,
        &model.normalization,
        &device.device,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((model, classifier))
}

/// `medtransfer eval`.
pub fn eval(args: &EvalArgs) -> ExitCode {
    let (mut backbone, model, classifier) =
        match open_backbone_and_model(&args.backbone, &args.model) {
            Ok(opened) => opened,
            Err(e) => return fail(e),
        };
    let dataset = match FolderDataset::open(&args.data) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    // Map the folder's classes onto the model's by name.
    let mut mapping = Vec::new();
    for name in &dataset.classes {
        match model.header.classes.iter().position(|c| c == name) {
            Some(i) => mapping.push(i),
            None => {
                return fail(format!(
                    "the folder has a class \"{name}\" the model does not know (model classes: {:?})",
                    model.header.classes
                ));
            }
        }
    }
    let files: Vec<LabelledFile> = dataset
        .files
        .iter()
        .map(|f| LabelledFile {
            label: mapping[f.label],
            ..f.clone()
        })
        .collect();
    let refs: Vec<&LabelledFile> = files.iter().collect();
    let bar = progress_bar(files.len(), "embedding", args.json);
    let (data, kept, embed_skipped) = embed_files(&mut backbone, &refs, &bar);
    let mut skipped = folder_skipped(&dataset);
    skipped.extend(embed_skipped);
    bar.finish_and_clear();
    if data.embeddings.is_empty() {
        return fail("no image in the folder could be read");
    }
    let probabilities = match pollster::block_on(classifier.predict(&data.embeddings)) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let options = EvaluationOptions {
        threshold: args.threshold,
        seed: model.header.training.seed,
        ..EvaluationOptions::default()
    };
    let evaluation = match evaluate(
        &probabilities,
        &data.labels,
        &model.header.classes,
        &options,
    ) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let paths: Vec<PathBuf> = kept.iter().map(|&i| files[i].path.clone()).collect();
    if args.json {
        let mut report = evaluation_json(&evaluation, Some(&paths));
        report["skipped"] = json!(skipped);
        report["threshold"] = json!(args.threshold);
        println!("{report}");
    } else {
        for s in &skipped {
            eprintln!(
                "skipped {}: {}",
                s["path"].as_str().unwrap_or("?"),
                s["error"].as_str().unwrap_or("?")
            );
        }
        println!("{} ({} images):", args.data.display(), evaluation.n);
        print_evaluation(&evaluation, Some(&paths));
    }
    if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    }
}

/// `medtransfer predict`.
pub fn predict(args: &PredictArgs) -> ExitCode {
    let (mut backbone, model, classifier) =
        match open_backbone_and_model(&args.backbone, &args.model) {
            Ok(opened) => opened,
            Err(e) => return fail(e),
        };
    let mut paths = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            paths.extend(walk_tree(input).files.into_iter().map(|(_, path)| path));
        } else {
            paths.push(input.clone());
        }
    }
    let items: Vec<(PathBuf, View)> = paths.iter().map(|p| (p.clone(), View::Original)).collect();
    let bar = progress_bar(items.len(), "embedding", args.json);
    let embeddings = backbone.embed(&items, &AugmentConfig::default(), &bar);
    bar.finish_and_clear();
    let ok: Vec<Vec<f32>> = embeddings
        .iter()
        .filter_map(|e| e.as_ref().ok().cloned())
        .collect();
    let probabilities = match pollster::block_on(classifier.predict(&ok)) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut probabilities = probabilities.into_iter();
    let classes = &model.header.classes;
    let entries: Vec<Value> = paths
        .iter()
        .zip(&embeddings)
        .map(|(path, embedding)| {
            let path = path.display().to_string();
            match (embedding, embedding.as_ref().ok().and_then(|_| probabilities.next())) {
                (Ok(_), Some(p)) => {
                    let best = predicted_class(&p, None);
                    let probs: serde_json::Map<String, Value> = classes
                        .iter()
                        .zip(&p)
                        .map(|(c, &v)| (c.clone(), json!(v)))
                        .collect();
                    json!({ "path": path, "label": classes.get(best), "probability": p.get(best), "probabilities": probs })
                }
                (Err(error), _) => json!({ "path": path, "error": error }),
                (Ok(_), None) => json!({ "path": path, "error": "no prediction was returned" }),
            }
        })
        .collect();
    let failed = entries.iter().any(|e| e.get("error").is_some());
    if args.json {
        println!("{}", Value::Array(entries));
    } else {
        for e in &entries {
            let path = e["path"].as_str().unwrap_or("?");
            if let Some(error) = e.get("error") {
                println!("{path}: ERROR {}", error.as_str().unwrap_or("?"));
                continue;
            }
            let probs: Vec<String> = classes
                .iter()
                .map(|c| {
                    format!(
                        "{c} {:.3}",
                        e["probabilities"][c].as_f64().unwrap_or(f64::NAN)
                    )
                })
                .collect();
            println!(
                "{path}: {}  ({})",
                e["label"].as_str().unwrap_or("?"),
                probs.join(", ")
            );
        }
    }
    if failed {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// `medtransfer split`: a seeded, stratified (optionally grouped) train/test split of a
/// folder-per-class set, copied into `OUT/train/CLASS` and `OUT/test/CLASS`. Only image files
/// are split (recognised from their first bytes, as the decoder does); the others are reported.
pub fn split(args: &SplitArgs) -> ExitCode {
    let mut dataset = match FolderDataset::open(&args.data) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if let (Ok(data), Some(out)) = (std::fs::canonicalize(&args.data), resolved(&args.out))
        && out.starts_with(&data)
    {
        return fail(format!(
            "the output folder {} is inside the data folder {}: choose one outside it",
            args.out.display(),
            args.data.display()
        ));
    }
    let mut skipped = folder_skipped(&dataset);
    dataset.files.retain(|file| match not_an_image(&file.path) {
        Some(reason) => {
            skipped.push(skipped_entry(&file.path, &reason));
            false
        }
        None => true,
    });
    let labels: Vec<usize> = dataset.files.iter().map(|f| f.label).collect();
    let files: Vec<&LabelledFile> = dataset.files.iter().collect();
    let groups = match group_keys(&files, args.group_pattern.as_deref()) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let split = match stratified_split(&labels, groups.as_deref(), args.test_fraction, args.seed) {
        Ok(s) => s,
        Err(e) => return fail(e.with_class_names(&dataset.classes)),
    };
    for (part, indices) in [("train", &split.train), ("test", &split.validation)] {
        for &i in indices {
            let file = &dataset.files[i];
            let target = args
                .out
                .join(part)
                .join(&dataset.classes[file.label])
                .join(&file.in_class);
            let copied = target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::copy(&file.path, &target).map(|_| ()));
            if let Err(e) = copied {
                return fail(format!(
                    "cannot copy {} to {}: {e}",
                    file.path.display(),
                    target.display()
                ));
            }
        }
    }
    for s in &skipped {
        eprintln!(
            "skipped {}: {}",
            s["path"].as_str().unwrap_or("?"),
            s["error"].as_str().unwrap_or("?")
        );
    }
    println!(
        "{}: {} train, {} test images (seed {}) in {}",
        args.data.display(),
        split.train.len(),
        split.validation.len(),
        args.seed,
        args.out.display()
    );
    if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    }
}

/// `path` with links and `..` resolved, even when it does not exist yet: its nearest existing
/// ancestor canonicalised, and the rest appended.
fn resolved(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return Some(rest.iter().rev().fold(real, |p, c| p.join(c)));
        }
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    }
}

/// Why `path` is not an image file (empty, unreadable, or not PNG, JPEG, TIFF or DICOM by its
/// first bytes), or `None` when it is one. Reads at most 4 KiB.
fn not_an_image(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    if let Err(e) = std::fs::File::open(path).and_then(|f| f.take(4096).read_to_end(&mut head)) {
        return Some(format!("cannot read the file: {e}"));
    }
    if formats::sniff(&head).is_some() {
        return None;
    }
    Some(match formats::decode_8bit(&head) {
        Err(e) => e.to_string(),
        Ok(_) => return None,
    })
}
