//! The pretrained backbone as the CLI's commands use it: its flags, loading the weights,
//! embedding files (through the embedding cache) with a progress bar, and the per-file report
//! of what could not be used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use medtransfer_core::ComputeDevice;
use medtransfer_core::augment::AugmentConfig;
use medtransfer_core::efficientnet::{
    CONVERTED_WEIGHTS_FILE_NAME, EfficientNetLite0, load_from_bytes,
};
use medtransfer_core::embeddings::{
    EmbeddingRequest, EmbeddingStore, MemoryEmbeddingStore, View, embed_cached,
};
use medtransfer_core::finetune::{CutFeatureStore, CutFeatures, cut_features_cached};
use medtransfer_core::train::LabelledEmbeddings;
use serde_json::{Value, json};

use crate::Backend;
use crate::dataset::{DiskEmbeddingStore, FolderDataset, LabelledFile, default_cache_dir};

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

/// Each file's bytes (or why they could not be read) with its view.
fn read_requests(items: &[(PathBuf, View)]) -> Vec<EmbeddingRequest> {
    items
        .iter()
        .map(|(path, view)| EmbeddingRequest {
            bytes: std::fs::read(path).map_err(|e| format!("cannot read the file: {e}")),
            view: *view,
        })
        .collect()
}

/// A cache of embeddings and of cut-point activations.
trait Cache: EmbeddingStore + CutFeatureStore {}
impl<T: EmbeddingStore + CutFeatureStore> Cache for T {}

/// The loaded backbone with its device and embedding cache.
pub(crate) struct Backbone {
    pub(crate) model: EfficientNetLite0,
    pub(crate) device: ComputeDevice,
    store: Box<dyn Cache>,
}

impl Backbone {
    pub(crate) fn open(args: &BackboneArgs) -> Result<Self, String> {
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
        let store: Box<dyn Cache> = if args.no_cache {
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
    pub(crate) fn embed(
        &mut self,
        items: &[(PathBuf, View)],
        augment: &AugmentConfig,
        bar: &ProgressBar,
    ) -> Vec<Result<Vec<f32>, String>> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(EMBED_CHUNK) {
            let requests = read_requests(chunk);
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

impl Backbone {
    /// The cut-point activations of `items` for fine-tuning the last `blocks` blocks, in order
    /// (cached ones are read, the rest computed in batches), advancing `bar` per image.
    pub(crate) fn cut_features(
        &mut self,
        items: &[(PathBuf, View)],
        blocks: usize,
        bar: &ProgressBar,
    ) -> Vec<Result<CutFeatures, String>> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(EMBED_CHUNK) {
            let requests = read_requests(chunk);
            results.extend(pollster::block_on(cut_features_cached(
                &self.model,
                &self.device.device,
                self.store.as_mut(),
                &requests,
                blocks,
                &AugmentConfig::default(),
            )));
            bar.inc(chunk.len() as u64);
        }
        results
    }
}

pub(crate) fn progress_bar(len: usize, what: &str, hidden: bool) -> ProgressBar {
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
pub(crate) fn skipped_entry(path: &Path, error: &str) -> Value {
    json!({ "path": path.display().to_string(), "error": error })
}

/// The files a data-set folder left out (dangling or duplicate links), for reports.
pub(crate) fn folder_skipped(dataset: &FolderDataset) -> Vec<Value> {
    dataset
        .skipped
        .iter()
        .map(|s| skipped_entry(&s.path, &s.reason))
        .collect()
}

/// Embeds the original view of `files`, returning the usable ones as labelled embeddings
/// (with their indices into `files`) and the failures.
pub(crate) fn embed_files(
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
