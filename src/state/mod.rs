//! The project's state: one [`Project`] of `Copy` signals, handed to every component through
//! Leptos context ([`provide_project`], [`use_project`]).
//!
//! Its parts: [`images`] (classes and their images), [`training`] (settings, train, stop),
//! [`worker_events`] (the compute worker's replies and deaths), [`persistence`] (IndexedDB),
//! [`export`] (`.mtproject` files). Layering: components → state → worker client → protocol;
//! nothing here draws anything.

pub mod export;
pub mod images;
pub mod persistence;
pub mod tab_lock;
pub mod training;
pub mod worker_events;

use std::collections::HashMap;

use leptos::prelude::*;
use medtransfer_core::gradcam::Heatmap;
use medtransfer_core::metrics::Evaluation;
use medtransfer_core::recipe::Search;
use medtransfer_core::threshold::Threshold;
use medtransfer_core::train::{EpochSummary, StopReason};
use serde::{Deserialize, Serialize};

use crate::protocol::{Envelope, ImageId, ImagePrediction, MapAnswer, ToWorker};
use crate::storage::{ImageRecord, Storage};
use crate::worker_client::{EmbedQueue, WorkerClient};

pub use tab_lock::Ownership;
pub use training::{Settings, mlp_head};

/// Where an image is.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageStatus {
    /// Waiting for its embedding.
    Embedding,
    /// Embedded: ready to train on.
    Ready,
}

/// One image of a class.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageEntry {
    /// Its id.
    pub id: ImageId,
    /// Its file name.
    pub name: String,
    /// An object URL of its thumbnail, once the worker has made it.
    pub thumb: Option<String>,
    /// Its status.
    pub status: ImageStatus,
    /// Augmented views embedded with it.
    pub views: u32,
    /// Whether its activations for fine-tuning are kept.
    pub activations: bool,
}

/// A class: an editable name, its images and the files that could not be used.
#[derive(Clone, Copy, Debug)]
pub struct ClassEntry {
    /// The class's key: stable across reloads (saved images refer to it).
    pub key: u32,
    /// Unique for this page's lifetime: a restored or imported class with the same key is
    /// still a new entry for the list to draw.
    pub uid: u64,
    /// The class name.
    pub name: RwSignal<String>,
    /// Its images.
    pub images: RwSignal<Vec<ImageEntry>>,
    /// `(file name, reason)` of files that could not be used.
    pub rejected: RwSignal<Vec<(String, String)>>,
}

impl ClassEntry {
    /// A class without images.
    pub fn new(key: u32, name: String) -> Self {
        thread_local! {
            static NEXT_UID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        let uid = NEXT_UID.with(|n| {
            let uid = n.get();
            n.set(uid + 1);
            uid
        });
        Self {
            key,
            uid,
            name: RwSignal::new(name),
            images: RwSignal::new(Vec::new()),
            rejected: RwSignal::new(Vec::new()),
        }
    }
}

/// A prediction shown to the user.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionEntry {
    /// The request's id.
    pub id: ImageId,
    /// The file's name.
    pub name: String,
    /// An object URL of the picture (the file, then the worker's thumbnail).
    pub url: String,
    /// The prediction, or why there is none; `None` while computing.
    pub result: Option<Result<ImagePrediction, String>>,
}

/// What training has produced so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingState {
    /// Whether a run is going on.
    pub running: bool,
    /// The epochs planned for the run.
    pub planned_epochs: usize,
    /// The automatic recipe's cross-validation so far: (fold fits done, all of them).
    pub searching: Option<(usize, usize)>,
    /// The run's epochs so far (the last finished run's when none is going on).
    pub epochs: Vec<EpochSummary>,
    /// The model in use and its metrics: kept until a new run succeeds.
    pub result: Option<TrainedResult>,
    /// Why the last run failed.
    pub error: Option<String>,
}

impl TrainingState {
    /// `(image, predicted class)` of each misclassified validation image of the model in use.
    pub fn misclassified(&self) -> Vec<(ImageId, usize)> {
        self.result
            .as_ref()
            .and_then(|r| {
                r.validation.as_ref().map(|v| {
                    v.misclassified
                        .iter()
                        .filter_map(|m| {
                            r.validation_ids
                                .get(m.index)
                                .map(|&id| (id, m.predicted_class))
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

/// How the model in use came to be. Saved as `stop_reason`, with the same words as core's
/// [`StopReason`] (projects saved by earlier versions read back unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelOrigin {
    /// Trained here; all planned epochs ran.
    Completed,
    /// Trained here; stopped early when validation stopped improving.
    EarlyStopped,
    /// Trained here; stopped by the user (the best epoch so far is kept).
    Cancelled,
    /// Came with an imported project.
    Imported,
}

impl From<StopReason> for ModelOrigin {
    fn from(reason: StopReason) -> Self {
        match reason {
            StopReason::Completed => Self::Completed,
            StopReason::EarlyStopped => Self::EarlyStopped,
            StopReason::Cancelled => Self::Cancelled,
        }
    }
}

impl ModelOrigin {
    /// How the page says it ("completed", "early stopped", …).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::EarlyStopped => "early stopped",
            Self::Cancelled => "cancelled",
            Self::Imported => "imported",
        }
    }
}

/// A finished training run, as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedResult {
    /// The model's classes, in output order (the names it was trained with).
    pub classes: Vec<String>,
    /// The epoch whose weights are kept (1-based).
    pub kept_epoch: usize,
    /// How it came to be.
    #[serde(rename = "stop_reason")]
    pub origin: ModelOrigin,
    /// Its metrics on the validation images, or (automatic recipe) the out-of-fold metrics of
    /// every image.
    pub validation: Option<Evaluation>,
    /// The evaluated images, in the order of the evaluation's indices.
    pub validation_ids: Vec<ImageId>,
    /// The automatic recipe's search: every candidate's cross-validated score (absent for a
    /// manual recipe, and in projects saved before there was one).
    #[serde(default)]
    pub search: Option<Search>,
    /// Two classes: the decision threshold chosen for the model.
    #[serde(default)]
    pub threshold: Option<Threshold>,
    /// Training time in milliseconds.
    pub millis: f64,
    /// The backbone's last blocks were fine-tuned with the head (then the figures are those of
    /// the held-out validation images, and `search` chose the head before fine-tuning).
    #[serde(default)]
    pub fine_tuned: Option<crate::protocol::FineTunedSummary>,
}

/// ImageNet logits of one image, or why there are none.
pub type Logits = Result<Vec<f32>, String>;

/// How a project notice is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// Something worked.
    Info,
    /// Something failed; the message says what still works.
    Error,
}

/// This site's storage: `(bytes used, quota in bytes)` from `navigator.storage.estimate()`, and
/// whether the browser granted persistence (`None`: not known).
pub type StorageUse = ((f64, f64), Option<bool>);

/// All the fine-tuning state, shared by the sections (every field is a `Copy` signal).
#[derive(Clone, Copy)]
pub struct Project {
    /// The classes, in label order.
    pub classes: RwSignal<Vec<ClassEntry>>,
    /// (embedded images per class, images still embedding), derived from `classes`.
    pub(crate) counts: Memo<(Vec<usize>, usize)>,
    pub(crate) next_id: StoredValue<u32>,
    pub(crate) worker: StoredValue<Option<WorkerClient>, LocalStorage>,
    /// The worker's backend line once its network is loaded, or its failure.
    pub worker_backend: RwSignal<Option<Result<String, String>>>,
    /// Images answered (embedded or rejected) since the first pick, for the rate.
    pub embedded_count: RwSignal<usize>,
    /// When the first image was picked (`Date.now()`, ms).
    pub embed_started: RwSignal<Option<f64>>,
    /// Training's progress and the model in use.
    pub training: RwSignal<TrainingState>,
    /// The predictions asked for in this session.
    pub predictions: RwSignal<Vec<PredictionEntry>>,
    /// The embedding map last drawn (and the data check on the embeddings), or why it failed;
    /// `None` until asked for.
    pub embedding_map: RwSignal<Option<Result<MapAnswer, String>>>,
    /// Grad-CAM of validation images with the model in use (the class it gave each), by
    /// image; emptied when the model changes.
    pub validation_heatmaps: RwSignal<HashMap<ImageId, Heatmap>>,
    /// The training settings.
    pub settings: RwSignal<Settings>,
    /// Augmented views embedded with each image added from now on (0: none).
    pub augmented_views: RwSignal<u32>,
    /// The backbone's last blocks fine-tuned with the head (0: the head alone); one of
    /// [`images::TRAIN_BLOCK_CHOICES`].
    pub train_blocks: RwSignal<usize>,
    /// Two classes: the probability of the second class from which it is predicted.
    pub threshold: RwSignal<f64>,
    /// The project in IndexedDB, once open.
    pub(crate) storage: StoredValue<Option<Storage>, LocalStorage>,
    /// Whether the saved project has been read back (nothing is saved before, so an empty
    /// starting page cannot overwrite it).
    pub restored: RwSignal<bool>,
    /// The pretrained weights, kept to start a new worker if one dies.
    pub(crate) weights: StoredValue<Option<Vec<u8>>>,
    /// The embedding requests of the current worker.
    pub(crate) embeds: StoredValue<EmbedQueue>,
    /// The trained model file in use, for download and for restoring.
    pub(crate) model_file: StoredValue<Option<Vec<u8>>>,
    /// The images just read back from storage, kept until the worker has been fed from them
    /// (reading thousands of images from IndexedDB twice would double a restore's time).
    pub(crate) restored_records: StoredValue<Option<Vec<ImageRecord>>>,
    /// Whether the trained model is loaded in the current worker.
    pub has_model: RwSignal<bool>,
    /// Worker deaths since the last sign of progress, and whether the CPU is forced (after a
    /// lost GPU).
    pub(crate) restarts: StoredValue<(u32, bool)>,
    /// ImageNet logits of [`Project::classify`] requests, by id.
    pub classified: RwSignal<Vec<(ImageId, Logits)>>,
    /// Classify requests not answered yet, and the next classify id (their own id range, so an
    /// import or restore that resets image ids cannot match an old answer).
    pub(crate) classify_pending: StoredValue<(std::collections::HashSet<ImageId>, ImageId)>,
    /// Bumped when the project is replaced (import): tasks of the old project stop.
    pub(crate) generation: StoredValue<u64>,
    /// Bumped for each new worker: replies of a replaced worker are ignored.
    pub(crate) worker_generation: StoredValue<u64>,
    /// The epochs and model shown before the running training started: they come back if it
    /// fails, and are what is saved while it runs.
    pub(crate) before_training: StoredValue<(Vec<EpochSummary>, Option<TrainedResult>)>,
    /// Class names sent with the running training (the model's outputs, in order).
    pub(crate) training_classes: StoredValue<Vec<String>>,
    /// A message about the project as a whole (restored, imported, GPU lost, storage failed).
    pub notice: RwSignal<Option<(NoticeKind, String)>>,
    /// What could not be saved in this browser (shown, kept on the page, saved again on retry).
    pub unsaved: RwSignal<Vec<String>>,
    /// Image records whose write failed, kept to write again.
    pub(crate) unsaved_images: StoredValue<Vec<ImageRecord>>,
    /// This site's storage: `(bytes used, quota in bytes)` and whether it is persistent.
    pub storage_use: RwSignal<Option<StorageUse>>,
    /// Whether this tab owns the project (one tab at a time).
    pub ownership: RwSignal<Ownership>,
}

impl Project {
    /// The project with two empty classes; the worker is attached by [`Project::attach`].
    pub fn new() -> Self {
        let classes = RwSignal::new(vec![
            ClassEntry::new(0, "Class 1".into()),
            ClassEntry::new(1, "Class 2".into()),
        ]);
        // Counted once per change, however many parts of the page show them.
        let counts = Memo::new(move |_| {
            let mut ready = Vec::new();
            let mut pending = 0;
            for class in classes.get() {
                class.images.with(|images| {
                    ready.push(
                        images
                            .iter()
                            .filter(|i| i.status == ImageStatus::Ready)
                            .count(),
                    );
                    pending += images
                        .iter()
                        .filter(|i| i.status == ImageStatus::Embedding)
                        .count();
                });
            }
            (ready, pending)
        });
        Self {
            classes,
            counts,
            next_id: StoredValue::new(2),
            worker: StoredValue::new_local(None),
            worker_backend: RwSignal::new(None),
            embedded_count: RwSignal::new(0),
            embed_started: RwSignal::new(None),
            training: RwSignal::new(TrainingState::default()),
            predictions: RwSignal::new(Vec::new()),
            validation_heatmaps: RwSignal::new(HashMap::new()),
            embedding_map: RwSignal::new(None),
            settings: RwSignal::new(Settings::default()),
            augmented_views: RwSignal::new(0),
            train_blocks: RwSignal::new(0),
            threshold: RwSignal::new(0.5),
            storage: StoredValue::new_local(None),
            restored: RwSignal::new(false),
            weights: StoredValue::new(None),
            embeds: StoredValue::new(EmbedQueue::default()),
            model_file: StoredValue::new(None),
            restored_records: StoredValue::new(None),
            has_model: RwSignal::new(false),
            restarts: StoredValue::new((0, false)),
            classified: RwSignal::new(Vec::new()),
            classify_pending: StoredValue::new((Default::default(), 0x8000_0000)),
            generation: StoredValue::new(0),
            worker_generation: StoredValue::new(0),
            before_training: StoredValue::new((Vec::new(), None)),
            training_classes: StoredValue::new(Vec::new()),
            notice: RwSignal::new(None),
            unsaved: RwSignal::new(Vec::new()),
            unsaved_images: StoredValue::new(Vec::new()),
            storage_use: RwSignal::new(None),
            ownership: RwSignal::new(Ownership::Checking),
        }
    }

    /// Shows a notice about the project as a whole.
    pub fn tell(self, kind: NoticeKind, message: impl Into<String>) {
        self.notice.set(Some((kind, message.into())));
    }

    /// A new id for an image, a class key or a prediction (unique within the project).
    pub fn next_id(self) -> u32 {
        let id = self.next_id.get_value();
        self.next_id.set_value(id.wrapping_add(1));
        id
    }

    /// Images still waiting for their embedding, over all classes.
    pub fn pending(self) -> usize {
        self.counts.with(|c| c.1)
    }

    /// Embedded images per class.
    pub fn ready_counts(self) -> Vec<usize> {
        self.counts.with(|c| c.0.clone())
    }

    /// Asks the worker for the Grad-CAM of `(image, class)` pairs not shown yet; the answers
    /// land in [`Project::validation_heatmaps`].
    pub fn explain(self, requests: Vec<(ImageId, usize)>) {
        let missing: Vec<(ImageId, usize)> = self.validation_heatmaps.with_untracked(|shown| {
            requests
                .into_iter()
                .filter(|(id, class)| shown.get(id).is_none_or(|h| h.class != *class))
                .collect()
        });
        if !missing.is_empty() {
            self.send(Envelope::new(ToWorker::Explain { requests: missing }));
        }
    }

    /// The thumbnail URL and name of an image, when it is in a class.
    pub fn image_url(self, id: ImageId) -> Option<(String, String)> {
        self.classes.get_untracked().iter().find_map(|c| {
            c.images.with_untracked(|images| {
                images
                    .iter()
                    .find(|i| i.id == id)
                    .map(|i| (i.thumb.clone().unwrap_or_default(), i.name.clone()))
            })
        })
    }
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes `project` the page's project for every component below the caller.
pub fn provide_project(project: Project) {
    provide_context(project);
}

/// The page's project (provided by the app's root with [`provide_project`]).
///
/// # Panics
/// When called outside the app's root component (a programming error, not user input).
pub fn use_project() -> Project {
    expect_context::<Project>()
}
