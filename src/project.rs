//! The fine-tuning flow of the page: classes of images → embeddings (in the worker) → training
//! → validation metrics → predictions. State lives in a few signals; all computation happens in
//! the compute Web Worker through [`WorkerClient`].

use std::collections::HashSet;

use js_sys::{Array, Reflect, Uint8Array};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_chartistry::{
    AspectRatio, AxisMarker, Chart, Interpolation, IntoInner, Legend, Line, Padding, Series,
    TickLabels, XGridLine, YGridLine,
};
use medtransfer_core::dataset_folder::{class_name, is_os_junk, layout_of_drop};
use medtransfer_core::embeddings::{decode_embedding, encode_embedding};
use medtransfer_core::head::HeadKind;
use medtransfer_core::metrics::{Evaluation, predicted_class};
use medtransfer_core::model_file::MODEL_FILE_EXTENSION;
use medtransfer_core::project_file::{PROJECT_FILE_EXTENSION, ProjectArchive, ProjectImage};
use medtransfer_core::train::{ClassWeighting, EpochSummary, TrainConfig};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

use crate::protocol::{EMBEDDING_BYTES, FromWorker, ImageId, ToWorker};
use crate::storage::{ImageRecord, MODEL_KEY, PROJECT_KEY, Storage};

/// File types the image pickers offer (the core sniffs the content whatever the name).
pub const IMAGE_ACCEPT: &str =
    "image/png,image/jpeg,image/tiff,application/dicom,.dcm,.dicom,.png,.jpg,.jpeg,.tif,.tiff";

/// Restarts of a failed worker before the page gives up (a worker that dies at once each time
/// would otherwise restart forever).
const MAX_WORKER_RESTARTS: u32 = 3;

/// Thumbnails shown per class: drawing thousands would hold the page's thread for seconds.
const MAX_THUMBNAILS: usize = 48;

/// The page's handle on the compute worker.
#[derive(Clone)]
pub struct WorkerClient {
    worker: Worker,
}

impl WorkerClient {
    /// Starts `worker.js` as a module worker and hands it the page's own wasm; `on_message`
    /// receives every reply with its bytes, `on_error` the reason if the worker dies (a panic in
    /// its wasm, for instance when the GPU is lost).
    pub fn start(
        on_message: impl Fn(FromWorker, Option<Vec<u8>>) + 'static,
        on_error: impl Fn(String) + 'static,
    ) -> Result<Self, String> {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options("./worker.js", &options)
            .map_err(|e| format!("the compute worker could not start: {e:?}"))?;
        let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = Array::from(&event.data());
            let bytes = data
                .get(1)
                .dyn_into::<js_sys::ArrayBuffer>()
                .ok()
                .map(|buffer| Uint8Array::new(&buffer).to_vec());
            if let Some(message) = data
                .get(0)
                .as_string()
                .and_then(|json| serde_json::from_str::<FromWorker>(&json).ok())
            {
                on_message(message, bytes);
            }
        });
        worker.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        handler.forget();
        let error_handler = Closure::<dyn FnMut(ErrorEvent)>::new(move |event: ErrorEvent| {
            event.prevent_default();
            on_error(event.message());
        });
        worker.set_onerror(Some(error_handler.as_ref().unchecked_ref()));
        error_handler.forget();
        // boot.js keeps the hashed names of the page's JS and wasm on `globalThis.medtransferBoot`.
        let boot = Reflect::get(&js_sys::global(), &"medtransferBoot".into())
            .map_err(|_| "the page's boot information is missing".to_string())?;
        worker
            .post_message(&boot)
            .map_err(|e| format!("the compute worker could not be started: {e:?}"))?;
        Ok(Self { worker })
    }

    /// Stops the worker at once.
    pub fn terminate(&self) {
        self.worker.set_onmessage(None);
        self.worker.set_onerror(None);
        self.worker.terminate();
    }

    /// Sends a message, with `bytes` transferred (not copied) when given.
    pub fn send(&self, message: &ToWorker, bytes: Option<Uint8Array>) {
        let Ok(json) = serde_json::to_string(message) else {
            return;
        };
        let array = Array::of1(&json.into());
        let result = match bytes {
            Some(bytes) => {
                let buffer = bytes.buffer();
                array.push(&buffer);
                self.worker
                    .post_message_with_transfer(&array, &Array::of1(&buffer))
            }
            None => self.worker.post_message(&array),
        };
        if let Err(error) = result {
            web_sys::console::error_1(&format!("posting to the worker failed: {error:?}").into());
        }
    }
}

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
}

/// A class: an editable name, its images and the files that could not be used.
#[derive(Clone, Copy, Debug)]
pub struct ClassEntry {
    /// The class's key: stable across reloads (saved images refer to it).
    pub key: u32,
    /// Unique for this page's lifetime: a restored or imported class with the same key is
    /// still a new entry for the list to draw.
    uid: u64,
    /// The class name.
    pub name: RwSignal<String>,
    /// Its images.
    pub images: RwSignal<Vec<ImageEntry>>,
    /// `(file name, reason)` of files that could not be used.
    pub rejected: RwSignal<Vec<(String, String)>>,
}

impl ClassEntry {
    fn new(key: u32, name: String) -> Self {
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
    id: ImageId,
    name: String,
    url: String,
    result: Option<Result<Vec<f32>, String>>,
}

/// What training has produced so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingState {
    running: bool,
    planned_epochs: usize,
    epochs: Vec<EpochSummary>,
    result: Option<TrainedResult>,
    error: Option<String>,
}

/// A finished training run, as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedResult {
    classes: Vec<String>,
    kept_epoch: usize,
    stop_reason: String,
    validation: Option<Evaluation>,
    validation_ids: Vec<ImageId>,
    millis: f64,
}

/// All the fine-tuning state, shared by the sections (every field is a `Copy` signal).
#[derive(Clone, Copy)]
pub struct Project {
    classes: RwSignal<Vec<ClassEntry>>,
    /// (embedded images per class, images still embedding), derived from `classes`.
    counts: Memo<(Vec<usize>, usize)>,
    next_id: StoredValue<u32>,
    worker: StoredValue<Option<WorkerClient>, LocalStorage>,
    /// The worker's backend line once its network is loaded, or its failure.
    pub worker_backend: RwSignal<Option<Result<String, String>>>,
    embedded_count: RwSignal<usize>,
    embed_started: RwSignal<Option<f64>>,
    training: RwSignal<TrainingState>,
    predictions: RwSignal<Vec<PredictionEntry>>,
    settings: RwSignal<Settings>,
    /// Two classes: the probability of the second class from which it is predicted.
    threshold: RwSignal<f64>,
    /// The project in IndexedDB, once open.
    storage: StoredValue<Option<Storage>, LocalStorage>,
    /// Whether the saved project has been read back (nothing is saved before, so an empty
    /// starting page cannot overwrite it).
    pub restored: RwSignal<bool>,
    /// The pretrained weights, kept to start a new worker if one dies.
    weights: StoredValue<Option<Vec<u8>>>,
    /// Images whose bytes or embedding the current worker has been given.
    sent: StoredValue<HashSet<ImageId>>,
    /// The trained model file, for download and for restoring.
    model_file: StoredValue<Option<Vec<u8>>>,
    /// The images just read back from storage, kept until the worker has been fed from them
    /// (reading thousands of images from IndexedDB twice would double a restore's time).
    restored_records: StoredValue<Option<Vec<ImageRecord>>>,
    /// Whether the trained model is loaded in the current worker.
    pub has_model: RwSignal<bool>,
    /// Worker restarts so far, and whether the CPU is forced (after a GPU loss).
    restarts: StoredValue<(u32, bool)>,
    /// ImageNet logits of [`Project::classify`] requests, by id.
    pub classified: RwSignal<Vec<(ImageId, Logits)>>,
    /// Classify requests not answered yet, and the next classify id (their own id range, so an
    /// import or restore that resets image ids cannot match an old answer).
    classify_pending: StoredValue<(HashSet<ImageId>, ImageId)>,
    /// Bumped when the project is replaced (import): tasks of the old project stop.
    generation: StoredValue<u64>,
    /// Bumped for each new worker: replies of a replaced worker are ignored.
    worker_generation: StoredValue<u64>,
    /// Images sent to the current worker to embed and not answered yet.
    in_flight: StoredValue<HashSet<ImageId>>,
    /// Images in flight when the previous worker died: if the next one dies with them in
    /// flight too, they are rejected (a file that crashes the worker must not do so forever).
    suspects: StoredValue<HashSet<ImageId>>,
    /// Class names sent with the running training (the model's outputs, in order).
    training_classes: StoredValue<Vec<String>>,
    /// A message about the project as a whole (restored, imported, GPU lost, storage failed).
    pub notice: RwSignal<Option<(NoticeKind, String)>>,
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

/// What is kept of the project in the browser besides its images (see [`crate::storage`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct SavedProject {
    /// `(key, name)` of each class, in order.
    classes: Vec<(u32, String)>,
    next_id: u32,
    settings: Settings,
    threshold: f64,
    epochs: Vec<EpochSummary>,
    result: Option<TrainedResult>,
}

/// The training settings as the page edits them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Settings {
    mlp: bool,
    epochs: usize,
    batch: usize,
    learning_rate: f64,
    class_weights: ClassWeighting,
    validation_share: f64,
    seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let d = TrainConfig::default();
        Self {
            mlp: matches!(d.head, HeadKind::Mlp { .. }),
            epochs: d.epochs,
            batch: d.batch_size,
            learning_rate: d.learning_rate,
            class_weights: d.class_weights,
            validation_share: 0.2,
            seed: d.seed,
        }
    }
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
            settings: RwSignal::new(Settings::default()),
            threshold: RwSignal::new(0.5),
            storage: StoredValue::new_local(None),
            restored: RwSignal::new(false),
            weights: StoredValue::new(None),
            sent: StoredValue::new(HashSet::new()),
            model_file: StoredValue::new(None),
            restored_records: StoredValue::new(None),
            has_model: RwSignal::new(false),
            restarts: StoredValue::new((0, false)),
            classified: RwSignal::new(Vec::new()),
            classify_pending: StoredValue::new((HashSet::new(), 0x8000_0000)),
            generation: StoredValue::new(0),
            worker_generation: StoredValue::new(0),
            in_flight: StoredValue::new(HashSet::new()),
            suspects: StoredValue::new(HashSet::new()),
            training_classes: StoredValue::new(Vec::new()),
            notice: RwSignal::new(None),
        }
    }

    /// Starts the compute worker and routes its replies into the project's signals; also
    /// exposes `globalThis.medtransferTest.crashWorker()` for the recovery test.
    pub fn attach(self) -> Result<(), String> {
        self.worker_generation.update_value(|g| *g += 1);
        let generation = self.worker_generation.get_value();
        let current = move || self.worker_generation.get_value() == generation;
        let client = WorkerClient::start(
            move |message, bytes| {
                if current() {
                    self.on_worker_message(message, bytes);
                }
            },
            move |reason| {
                if current() {
                    self.on_worker_lost(reason);
                }
            },
        )?;
        self.worker.set_value(Some(client));
        self.sent.set_value(HashSet::new());
        self.in_flight.set_value(HashSet::new());
        let hooks = js_sys::Object::new();
        let crash = Closure::<dyn Fn()>::new(move || self.send(&ToWorker::SimulateCrash, None));
        let _ = Reflect::set(&hooks, &"crashWorker".into(), crash.as_ref());
        crash.forget();
        let _ = Reflect::set(&js_sys::global(), &"medtransferTest".into(), &hooks);
        Ok(())
    }

    /// Hands the pretrained weights to the worker (and keeps them for a restart).
    pub fn load_model(self, weights: Vec<u8>) {
        let force_cpu = self.restarts.get_value().1;
        self.send(
            &ToWorker::LoadModel { force_cpu },
            Some(Uint8Array::from(weights.as_slice())),
        );
        self.weights.set_value(Some(weights));
    }

    /// The worker died (its wasm panicked: a lost GPU, or a bug). Starts a new one on the CPU
    /// and gives it the saved project, so the user's work continues.
    fn on_worker_lost(self, reason: String) {
        web_sys::console::warn_1(&format!("the compute worker stopped: {reason}").into());
        self.worker.update_value(|w| {
            if let Some(w) = w.take() {
                w.terminate();
            }
        });
        let (restarts, _) = self.restarts.get_value();
        self.fail_pending_classifications("the compute worker stopped; pick the picture again");
        // Images in flight now and when the previous worker died: reject them.
        let in_flight = self.in_flight.get_value();
        let poison: Vec<ImageId> = self
            .suspects
            .with_value(|s| s.intersection(&in_flight).copied().collect());
        self.suspects.set_value(in_flight);
        for id in poison {
            self.reject_image(
                id,
                "this file stopped the compute worker twice, so it was left out".into(),
            );
        }
        self.worker_backend.set(None);
        self.has_model.set(false);
        self.training.update(|t| {
            if t.running {
                t.running = false;
                t.error = Some(
                    "training was interrupted when the compute worker stopped; press Train to run it again"
                        .into(),
                );
            }
        });
        self.predictions.update(|list| {
            for p in list.iter_mut().filter(|p| p.result.is_none()) {
                p.result = Some(Err(
                    "interrupted when the compute worker stopped; pick the image again".into(),
                ));
            }
        });
        if restarts >= MAX_WORKER_RESTARTS {
            self.notice.set(Some((
                NoticeKind::Error,
                format!("The compute worker stopped again ({reason}). Your images and model are saved in this browser: reload the page to go on."),
            )));
            return;
        }
        self.restarts.set_value((restarts + 1, true));
        self.notice.set(Some((
            NoticeKind::Error,
            format!("The GPU or the compute worker stopped working ({reason}). MedTransfer switched to the CPU; your images, embeddings and model are kept."),
        )));
        self.restart_worker();
    }

    /// Reads the saved project (if any) into the page; then saves every change. Called once at
    /// start-up.
    pub async fn restore(self) {
        match Storage::open().await {
            Ok(storage) => {
                self.storage.set_value(Some(storage));
                match self.load_saved().await {
                    Ok(0) => {}
                    Ok(n) => self.notice.set(Some((
                        NoticeKind::Info,
                        format!("Your project was restored from this browser: {n} images."),
                    ))),
                    Err(error) => {
                        // Saving now would overwrite what could not be read: stay read-only.
                        self.notice.set(Some((
                            NoticeKind::Error,
                            format!("The saved project could not be read ({error}). Nothing will be saved in this session, so the saved copy is left as it is."),
                        )));
                        return;
                    }
                }
            }
            Err(error) => self.notice.set(Some((
                NoticeKind::Error,
                format!("Your work cannot be saved in this browser ({error}); it is lost on reload. Export the project to keep it."),
            ))),
        }
        self.restored.set(true);
        if self
            .worker_backend
            .get_untracked()
            .is_some_and(|b| b.is_ok())
        {
            spawn_local(self.feed_worker());
        }
    }

    /// Replaces the page's project with the saved one; returns how many images it has.
    async fn load_saved(self) -> Result<usize, String> {
        let Some(storage) = self.storage.get_value() else {
            return Ok(0);
        };
        let saved: Option<SavedProject> = storage
            .meta(PROJECT_KEY)
            .await?
            .and_then(|v| v.as_string())
            .map(|json| serde_json::from_str(&json).map_err(|e| e.to_string()))
            .transpose()?;
        let Some(saved) = saved else {
            return Ok(0);
        };
        let started = js_sys::Date::now();
        let records = storage.images().await?;
        log_step("read the saved images", started);
        let classes: Vec<ClassEntry> = saved
            .classes
            .iter()
            .map(|(key, name)| ClassEntry::new(*key, name.clone()))
            .collect();
        let mut orphans = Vec::new();
        let mut max_id = saved.next_id;
        for (key, _) in &saved.classes {
            max_id = max_id.max(key.saturating_add(1));
        }
        for record in &records {
            max_id = max_id.max(record.id.saturating_add(1));
            let Some(class) = classes.iter().find(|c| c.key == record.class_key) else {
                orphans.push(record.id);
                continue;
            };
            let entry = ImageEntry {
                id: record.id,
                name: record.name.clone(),
                thumb: record.thumbnail.as_deref().and_then(jpeg_url),
                status: if record.embedding.is_some() {
                    ImageStatus::Ready
                } else {
                    ImageStatus::Embedding
                },
            };
            class.images.update(|images| images.push(entry));
        }
        log_step("rebuilt the image list", started);
        let _ = storage.delete_images(&orphans).await;
        let old = self.classes.get_untracked();
        for class in old {
            for image in class.images.get_untracked() {
                if let Some(url) = image.thumb {
                    let _ = web_sys::Url::revoke_object_url(&url);
                }
            }
        }
        self.next_id.set_value(max_id);
        self.classes.set(classes);
        self.settings.set(saved.settings);
        self.threshold.set(saved.threshold);
        let model = storage.model().await?;
        self.training.set(TrainingState {
            running: false,
            planned_epochs: saved.epochs.len(),
            epochs: saved.epochs,
            result: if model.is_some() { saved.result } else { None },
            error: None,
        });
        self.model_file.set_value(model);
        let count = records.len() - orphans.len();
        self.restored_records.set_value(Some(records));
        Ok(count)
    }

    /// Saves the project's classes, settings and results whenever they change (once the saved
    /// project has been read back). Call it where a reactive owner exists (in a component).
    pub fn save_on_change(self) {
        Effect::new(move || {
            let saved = SavedProject {
                classes: self
                    .classes
                    .get()
                    .iter()
                    .map(|c| (c.key, c.name.get()))
                    .collect(),
                next_id: self.next_id.get_value(),
                settings: self.settings.get(),
                threshold: self.threshold.get(),
                epochs: self.training.with(|t| t.epochs.clone()),
                result: self.training.with(|t| t.result.clone()),
            };
            if !self.restored.get() {
                return;
            }
            let Ok(json) = serde_json::to_string(&saved) else {
                return;
            };
            self.store(move |storage| async move {
                storage
                    .put_meta(PROJECT_KEY, &JsValue::from_str(&json))
                    .await
            });
        });
    }

    /// Runs a storage write in the background; a failure is shown, nothing else is lost.
    fn store<F, Fut>(self, write: F)
    where
        F: FnOnce(Storage) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + 'static,
    {
        let Some(storage) = self.storage.get_value() else {
            return;
        };
        spawn_local(async move {
            if let Err(error) = write(storage).await {
                self.notice.set(Some((
                    NoticeKind::Error,
                    format!("Saving failed ({error}); export the project to keep your work."),
                )));
            }
        });
    }

    /// Gives a freshly loaded worker everything saved that it does not have yet: embeddings,
    /// images still to embed, and the trained model.
    async fn feed_worker(self) {
        let Some(storage) = self.storage.get_value() else {
            return;
        };
        let started = js_sys::Date::now();
        let cached = self
            .restored_records
            .try_update_value(Option::take)
            .flatten();
        let records = match cached {
            Some(records) => Ok(records),
            None => storage.images().await,
        };
        let records = match records {
            Ok(records) => records,
            Err(error) => {
                self.notice.set(Some((
                    NoticeKind::Error,
                    format!("Reading the saved images failed: {error}"),
                )));
                return;
            }
        };
        log_step("read the saved images for the worker", started);
        let sent = self.sent.get_value();
        let mut ids = Vec::new();
        let mut rows = Vec::new();
        for record in records.into_iter().filter(|r| !sent.contains(&r.id)) {
            match (record.embedding, record.original) {
                (Some(embedding), _) if embedding.len() == EMBEDDING_BYTES => {
                    ids.push(record.id);
                    rows.extend(embedding);
                }
                (_, Some(original)) => {
                    self.sent.update_value(|s| {
                        s.insert(record.id);
                    });
                    self.in_flight.update_value(|s| {
                        s.insert(record.id);
                    });
                    self.send(
                        &ToWorker::Embed { id: record.id },
                        Some(Uint8Array::from(original.as_slice())),
                    );
                }
                _ => {}
            }
        }
        if !ids.is_empty() {
            self.sent.update_value(|s| s.extend(ids.iter().copied()));
            self.send(
                &ToWorker::Restore { ids },
                Some(Uint8Array::from(rows.as_slice())),
            );
        }
        log_step("fed the worker", started);
        if let Some(model) = self.model_file.get_value() {
            self.send(
                &ToWorker::LoadClassifier,
                Some(Uint8Array::from(model.as_slice())),
            );
        }
    }

    /// Sends an image to the worker for its ImageNet logits; the answer lands in
    /// [`Project::classified`] under the returned id.
    pub fn classify(self, bytes: Uint8Array) -> ImageId {
        let mut id = 0;
        self.classify_pending.update_value(|(pending, next)| {
            id = *next;
            *next = next.wrapping_add(1).max(0x8000_0000);
            pending.insert(id);
        });
        self.send(&ToWorker::Classify { id }, Some(bytes));
        id
    }

    /// Answers every unanswered classify request with `reason` (its worker is gone).
    fn fail_pending_classifications(self, reason: &str) {
        let pending: Vec<ImageId> = self
            .classify_pending
            .try_update_value(|(p, _)| p.drain().collect())
            .unwrap_or_default();
        if !pending.is_empty() {
            self.classified
                .update(|c| c.extend(pending.into_iter().map(|id| (id, Err(reason.to_string())))));
        }
    }

    /// Takes an image out of its class and lists it as rejected, with the reason; forgets its
    /// saved copy.
    fn reject_image(self, id: ImageId, reason: String) {
        for class in self.classes.get_untracked() {
            let Some(entry) = class
                .images
                .with_untracked(|images| images.iter().find(|i| i.id == id).cloned())
            else {
                continue;
            };
            class.images.update(|images| images.retain(|i| i.id != id));
            class
                .rejected
                .update(|r| r.push((entry.name.clone(), reason.clone())));
            if let Some(url) = entry.thumb {
                let _ = web_sys::Url::revoke_object_url(&url);
            }
            self.store(move |s| async move { s.delete_images(&[id]).await });
            break;
        }
    }

    fn send(self, message: &ToWorker, bytes: Option<Uint8Array>) {
        self.worker.with_value(|w| {
            if let Some(w) = w {
                w.send(message, bytes);
            }
        });
    }

    fn next_id(self) -> u32 {
        let id = self.next_id.get_value();
        self.next_id.set_value(id.wrapping_add(1));
        id
    }

    fn on_worker_message(self, message: FromWorker, bytes: Option<Vec<u8>>) {
        match message {
            FromWorker::Started => {}
            FromWorker::ModelReady { backend, .. } => {
                self.worker_backend.set(Some(Ok(backend)));
                if self.restored.get_untracked() {
                    spawn_local(self.feed_worker());
                }
            }
            FromWorker::ModelFailed { error } => self.worker_backend.set(Some(Err(error))),
            FromWorker::ClassifierLoaded { error } => match error {
                None => self.has_model.set(true),
                Some(error) => self.notice.set(Some((
                    NoticeKind::Error,
                    format!("The saved model could not be loaded ({error}); train again."),
                ))),
            },
            FromWorker::Classified { id, result } => {
                self.classify_pending.update_value(|(p, _)| {
                    p.remove(&id);
                });
                self.classified.update(|c| c.push((id, result)));
            }
            FromWorker::Embedded { id, error } => {
                self.in_flight.update_value(|f| {
                    f.remove(&id);
                });
                self.suspects.update_value(|f| {
                    f.remove(&id);
                });
                for class in self.classes.get_untracked() {
                    let Some(entry) = class
                        .images
                        .with_untracked(|images| images.iter().find(|i| i.id == id).cloned())
                    else {
                        continue;
                    };
                    match error {
                        None => {
                            let bytes = bytes.unwrap_or_default();
                            let (embedding, thumbnail) =
                                bytes.split_at(EMBEDDING_BYTES.min(bytes.len()));
                            let thumb = jpeg_url(thumbnail);
                            class.images.update(|images| {
                                if let Some(image) = images.iter_mut().find(|i| i.id == id) {
                                    image.status = ImageStatus::Ready;
                                    image.thumb = thumb;
                                }
                            });
                            let record = ImageRecord {
                                id,
                                class_key: class.key,
                                name: entry.name.clone(),
                                original: None,
                                thumbnail: (!thumbnail.is_empty()).then(|| thumbnail.to_vec()),
                                embedding: Some(embedding.to_vec()),
                            };
                            self.store(move |s| async move { s.put_images(&[record]).await });
                        }
                        Some(ref reason) => {
                            class.images.update(|images| images.retain(|i| i.id != id));
                            class
                                .rejected
                                .update(|r| r.push((entry.name.clone(), reason.clone())));
                            self.store(move |s| async move { s.delete_images(&[id]).await });
                        }
                    }
                    self.embedded_count.update(|n| *n += 1);
                    break;
                }
            }
            FromWorker::TrainStarted { epochs, .. } => self.training.update(|t| {
                t.planned_epochs = epochs;
            }),
            FromWorker::Epoch(summary) => self.training.update(|t| t.epochs.push(summary)),
            FromWorker::Trained {
                kept_epoch,
                stop_reason,
                validation,
                validation_ids,
                millis,
            } => {
                if let Some(model) = bytes {
                    let stored = Uint8Array::from(model.as_slice());
                    self.model_file.set_value(Some(model));
                    self.has_model.set(true);
                    self.store(move |s| async move { s.put_meta(MODEL_KEY, &stored).await });
                }
                self.training.update(|t| {
                    t.running = false;
                    t.result = Some(TrainedResult {
                        classes: self.training_classes.get_value(),
                        kept_epoch,
                        stop_reason,
                        validation,
                        validation_ids,
                        millis,
                    });
                })
            }
            FromWorker::TrainFailed { error } => self.training.update(|t| {
                t.running = false;
                t.error = Some(error);
            }),
            FromWorker::Prediction { id, result } => self.predictions.update(|list| {
                if let Some(p) = list.iter_mut().find(|p| p.id == id) {
                    p.result = Some(result);
                    // The worker's thumbnail replaces the file itself, which the page cannot
                    // show when it is a DICOM or a 16-bit TIFF.
                    if let Some(thumb) = bytes.as_deref().and_then(jpeg_url) {
                        let _ = web_sys::Url::revoke_object_url(&p.url);
                        p.url = thumb;
                    }
                }
            }),
        }
    }

    /// Adds files to a class: each is listed at once, saved, and sent to the worker, whose
    /// embedding brings its thumbnail.
    fn add_files(self, class: ClassEntry, files: Vec<web_sys::File>) {
        if !self.restored.get_untracked() {
            self.notice.set(Some((
                NoticeKind::Error,
                "Wait a moment: the project is still being loaded; add the images again then."
                    .into(),
            )));
            return;
        }
        if self.embed_started.get_untracked().is_none() {
            self.embed_started.set(Some(js_sys::Date::now()));
        }
        // One list update for the whole pick (a thousand single updates would re-render a
        // thousand times). OS junk (`.DS_Store`, `._*`, `Thumbs.db`…) picked or dropped with
        // the images is ignored silently, as in a picked folder.
        let entries: Vec<(ImageEntry, web_sys::File)> = files
            .into_iter()
            .filter(|file| !is_os_junk(&file.name()))
            .map(|file| {
                let entry = ImageEntry {
                    id: self.next_id(),
                    name: file.name(),
                    thumb: None,
                    status: ImageStatus::Embedding,
                };
                (entry, file)
            })
            .collect();
        class
            .images
            .update(|images| images.extend(entries.iter().map(|(e, _)| e.clone())));
        // Read, save and send the files one after another in a single task: each read yields to
        // the event loop, so the page stays responsive however many files were picked. The
        // original is saved until its embedding arrives, so a reload loses nothing.
        let class_key = class.key;
        let generation = self.generation.get_value();
        spawn_local(async move {
            for (entry, file) in entries {
                if self.generation.get_value() != generation {
                    return;
                }
                let bytes = read_file(&file).await;
                if let Some(storage) = self.storage.get_value() {
                    let record = ImageRecord {
                        id: entry.id,
                        class_key,
                        name: entry.name.clone(),
                        original: Some(bytes.to_vec()),
                        thumbnail: None,
                        embedding: None,
                    };
                    if let Err(error) = storage.put_images(&[record]).await {
                        self.notice.set(Some((
                            NoticeKind::Error,
                            format!(
                                "Saving {} failed ({error}); it is lost on reload.",
                                entry.name
                            ),
                        )));
                    }
                }
                // The image may have been removed while it was read.
                if self.generation.get_value() != generation {
                    return;
                }
                // A worker restarted meanwhile has been fed this image from storage already.
                if self.sent.with_value(|s| s.contains(&entry.id)) {
                    continue;
                }
                if class
                    .images
                    .with_untracked(|i| i.iter().any(|i| i.id == entry.id))
                {
                    self.sent.update_value(|s| {
                        s.insert(entry.id);
                    });
                    self.in_flight.update_value(|s| {
                        s.insert(entry.id);
                    });
                    self.send(&ToWorker::Embed { id: entry.id }, Some(bytes));
                } else {
                    self.store(move |s| async move { s.delete_images(&[entry.id]).await });
                }
            }
        });
    }

    fn remove_image(self, class: ClassEntry, id: ImageId) {
        class.images.update(|images| {
            if let Some(pos) = images.iter().position(|i| i.id == id) {
                let image = images.remove(pos);
                if let Some(url) = &image.thumb {
                    let _ = web_sys::Url::revoke_object_url(url);
                }
                if image.status == ImageStatus::Embedding {
                    self.embedded_count.update(|n| *n += 1);
                }
            }
        });
        self.send(&ToWorker::Forget { id }, None);
        self.store(move |s| async move { s.delete_images(&[id]).await });
    }

    /// Images still waiting for their embedding, over all classes.
    fn pending(self) -> usize {
        self.counts.with(|c| c.1)
    }

    /// Embedded images per class.
    fn ready_counts(self) -> Vec<usize> {
        self.counts.with(|c| c.0.clone())
    }

    fn start_training(self) {
        let settings = self.settings.get_untracked();
        let classes = self.classes.get_untracked();
        let names: Vec<String> = classes.iter().map(|c| c.name.get_untracked()).collect();
        self.training_classes.set_value(names.clone());
        // The previous model no longer matches what is shown; a new one replaces it.
        self.model_file.set_value(None);
        self.has_model.set(false);
        self.store(|s| async move { s.delete_meta(MODEL_KEY).await });
        let items: Vec<(ImageId, usize)> = classes
            .iter()
            .enumerate()
            .flat_map(|(label, c)| {
                c.images
                    .get_untracked()
                    .into_iter()
                    .filter(|i| i.status == ImageStatus::Ready)
                    .map(move |i| (i.id, label))
            })
            .collect();
        let defaults = TrainConfig::default();
        let config = TrainConfig {
            head: if settings.mlp {
                defaults.head
            } else {
                HeadKind::Linear
            },
            epochs: settings.epochs,
            batch_size: settings.batch,
            learning_rate: settings.learning_rate,
            class_weights: settings.class_weights,
            seed: settings.seed,
            ..defaults
        };
        self.training.set(TrainingState {
            running: true,
            planned_epochs: settings.epochs,
            ..TrainingState::default()
        });
        self.send(
            &ToWorker::Train {
                classes: names,
                items,
                validation_share: settings.validation_share,
                config,
            },
            None,
        );
    }

    fn image_url(self, id: ImageId) -> Option<(String, String)> {
        self.classes.get_untracked().iter().find_map(|c| {
            c.images.with_untracked(|images| {
                images
                    .iter()
                    .find(|i| i.id == id)
                    .map(|i| (i.thumb.clone().unwrap_or_default(), i.name.clone()))
            })
        })
    }

    /// The project as a `.mtproject` file: every embedded image (thumbnail, embedding, name,
    /// class), the settings and the trained model. Returns the bytes and how many images still
    /// waiting for their embedding were left out.
    async fn export(self) -> Result<(Vec<u8>, usize), String> {
        let storage = self
            .storage
            .get_value()
            .ok_or("this browser's storage is not available")?;
        let records = storage.images().await?;
        let classes = self.classes.get_untracked();
        let mut images = Vec::new();
        let mut left_out = 0;
        for record in records {
            let Some(class) = classes.iter().position(|c| c.key == record.class_key) else {
                continue;
            };
            match record.embedding.as_deref().and_then(decode_embedding) {
                Some(embedding) => images.push(ProjectImage {
                    name: record.name,
                    class,
                    thumbnail: record.thumbnail,
                    embedding,
                }),
                None => left_out += 1,
            }
        }
        let archive = ProjectArchive {
            classes: classes.iter().map(|c| c.name.get_untracked()).collect(),
            images,
            settings: serde_json::to_value(self.settings.get_untracked())
                .map_err(|e| e.to_string())?,
            model: None,
        };
        let names = archive.classes.clone();
        let archive = ProjectArchive {
            model: self.model_file.get_value().filter(|bytes| {
                medtransfer_core::model_file::ModelFile::from_bytes(bytes)
                    .is_ok_and(|m| m.header.classes == names)
            }),
            ..archive
        };
        let bytes = archive
            .to_bytes("MedTransfer web app")
            .map_err(|e| e.to_string())?;
        Ok((bytes, left_out))
    }

    /// Replaces the project with an imported `.mtproject` file (checked before anything is
    /// replaced), saves it, and gives it to a new worker.
    async fn import(self, bytes: Vec<u8>) -> Result<usize, String> {
        let archive = ProjectArchive::from_bytes(&bytes).map_err(|e| e.to_string())?;
        let storage = self
            .storage
            .get_value()
            .ok_or("this browser's storage is not available")?;
        let settings: Settings = serde_json::from_value(archive.settings.clone())
            .unwrap_or_else(|_| self.settings.get_untracked());
        // Class keys 0.., image ids after them.
        let classes: Vec<(u32, String)> = archive
            .classes
            .iter()
            .enumerate()
            .map(|(i, name)| (i as u32, name.clone()))
            .collect();
        let first_id = classes.len() as u32;
        let records: Vec<ImageRecord> = archive
            .images
            .iter()
            .enumerate()
            .map(|(i, image)| ImageRecord {
                id: first_id + i as u32,
                class_key: image.class as u32,
                name: image.name.clone(),
                original: None,
                thumbnail: image.thumbnail.clone(),
                embedding: Some(encode_embedding(&image.embedding)),
            })
            .collect();
        let saved = SavedProject {
            classes,
            next_id: first_id + records.len() as u32,
            settings,
            threshold: 0.5,
            epochs: Vec::new(),
            result: None,
        };
        let json = serde_json::to_string(&saved).map_err(|e| e.to_string())?;
        // From here the old project goes: its worker and its pending tasks stop first.
        self.generation.update_value(|g| *g += 1);
        self.worker_generation.update_value(|g| *g += 1);
        self.worker.update_value(|w| {
            if let Some(w) = w.take() {
                w.terminate();
            }
        });
        self.fail_pending_classifications("a project was imported; pick the picture again");
        self.restored.set(false);
        let started = js_sys::Date::now();
        let written = async {
            storage.clear().await?;
            storage.put_images(&records).await?;
            storage
                .put_meta(PROJECT_KEY, &JsValue::from_str(&json))
                .await?;
            if let Some(model) = &archive.model {
                storage
                    .put_meta(MODEL_KEY, &Uint8Array::from(model.as_slice()))
                    .await?;
            }
            Ok::<(), String>(())
        }
        .await;
        log_step("saved the imported images", started);
        let count = match written {
            Ok(()) => self.load_saved().await,
            Err(error) => Err(error),
        };
        let count = match count {
            Ok(count) => count,
            Err(error) => {
                // Saving goes on with whatever the page now shows; the worker restarts.
                self.restored.set(true);
                self.restart_worker();
                return Err(format!(
                    "{error}; the import stopped part-way and the project saved before it may be incomplete"
                ));
            }
        };
        // The imported model has no validation ids of this session: show its own metrics.
        if let Some(model) = &archive.model
            && let Ok(file) = medtransfer_core::model_file::ModelFile::from_bytes(model)
        {
            self.training.set(TrainingState {
                running: false,
                planned_epochs: file.header.history.len(),
                epochs: file.header.history.clone(),
                result: Some(TrainedResult {
                    classes: file.header.classes.clone(),
                    kept_epoch: file.header.kept_epoch,
                    stop_reason: "imported".into(),
                    validation: file.header.validation.clone(),
                    validation_ids: Vec::new(),
                    millis: 0.0,
                }),
                error: None,
            });
        }
        for p in self.predictions.get_untracked() {
            let _ = web_sys::Url::revoke_object_url(&p.url);
        }
        self.predictions.set(Vec::new());
        self.restored.set(true);
        // A new worker holds exactly the imported project.
        self.restart_worker();
        Ok(count)
    }

    /// Replaces the worker by a new one (fed from storage once its network is loaded).
    fn restart_worker(self) {
        self.worker.update_value(|w| {
            if let Some(w) = w.take() {
                w.terminate();
            }
        });
        self.worker_backend.set(None);
        self.has_model.set(false);
        if let Err(error) = self.attach() {
            self.worker_backend.set(Some(Err(error)));
            return;
        }
        if let Some(weights) = self.weights.get_value() {
            self.load_model(weights);
        }
    }
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs how long a step of restoring or importing took (the console is the place to look when
/// a large project is slow).
fn log_step(step: &str, started: f64) {
    web_sys::console::info_1(&format!("{step}: {:.0} ms", js_sys::Date::now() - started).into());
}

/// A picked file's bytes; empty when the browser cannot read it (the worker then reports the
/// file as unreadable).
pub async fn read_file(file: &web_sys::File) -> Uint8Array {
    match JsFuture::from(file.array_buffer()).await {
        Ok(buffer) => Uint8Array::new(&buffer),
        Err(_) => Uint8Array::new_with_length(0),
    }
}

/// An object URL of `bytes` as a blob of type `mime`.
fn blob_url(bytes: &[u8], mime: &str) -> Result<String, JsValue> {
    let parts = Array::of1(&Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)?;
    web_sys::Url::create_object_url_with_blob(&blob)
}

/// An object URL of JPEG bytes (a thumbnail), `None` for no bytes.
fn jpeg_url(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty())
        .then(|| blob_url(bytes, "image/jpeg").ok())
        .flatten()
}

/// Offers bytes to the user as a downloaded file.
fn download(bytes: &[u8], file_name: &str) -> Result<(), String> {
    let fail = |e: JsValue| format!("the download could not start: {e:?}");
    let parts = Array::of1(&Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("application/octet-stream");
    let blob =
        web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).map_err(fail)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(fail)?;
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let anchor: web_sys::HtmlAnchorElement =
        document.create_element("a").map_err(fail)?.unchecked_into();
    anchor.set_href(&url);
    anchor.set_download(file_name);
    anchor.click();
    // The browser has taken the URL once the click is handled; free it a little later.
    let revoke = Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    if let Some(window) = web_sys::window() {
        let _ = window
            .set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 60_000);
    }
    Ok(())
}

/// The project as a whole: restore and save notices, export and import, the model file.
#[component]
pub fn ProjectSection(project: Project) -> impl IntoView {
    let busy = RwSignal::new(false);
    let export_project = move |_| {
        busy.set(true);
        spawn_local(async move {
            let outcome = project.export().await.and_then(|(bytes, left_out)| {
                download(
                    &bytes,
                    &format!("medtransfer-project.{PROJECT_FILE_EXTENSION}"),
                )?;
                Ok(left_out)
            });
            project.notice.set(Some(match outcome {
                Ok(0) => (NoticeKind::Info, "Project exported.".to_string()),
                Ok(n) => (
                    NoticeKind::Info,
                    format!("Project exported; {n} images still computing their embeddings were left out."),
                ),
                Err(error) => (NoticeKind::Error, format!("The project could not be exported: {error}")),
            }));
            busy.set(false);
        });
    };
    let export_model = move |_| {
        let outcome = match project.model_file.get_value() {
            Some(bytes) => download(&bytes, &format!("medtransfer-model.{MODEL_FILE_EXTENSION}")),
            None => Err("train a model first".to_string()),
        };
        if let Err(error) = outcome {
            project.notice.set(Some((
                NoticeKind::Error,
                format!("The model could not be saved: {error}"),
            )));
        }
    };
    let on_import = move |event: leptos::ev::Event| {
        let Some(file) = files_of_input(&event).into_iter().next() else {
            return;
        };
        busy.set(true);
        spawn_local(async move {
            let name = file.name();
            let outcome = match JsFuture::from(file.array_buffer()).await {
                Ok(buffer) => project.import(Uint8Array::new(&buffer).to_vec()).await,
                Err(_) => Err("the file could not be read".to_string()),
            };
            project.notice.set(Some(match outcome {
                Ok(n) => (NoticeKind::Info, format!("Imported {name}: {n} images.")),
                Err(error) => (
                    NoticeKind::Error,
                    format!("{name} was not imported: {error}. Your current project is unchanged."),
                ),
            }));
            busy.set(false);
        });
    };
    view! {
        <section aria-labelledby="project-heading" data-testid="project" data-restored=move || project.restored.get().to_string()>
            <h2 id="project-heading">"Project"</h2>
            <p>"Your classes, images (as thumbnails and embeddings), settings and model are saved in this browser as you work, and come back when you reopen the page."</p>
            <p role="status" data-testid="project-notice"
                data-kind=move || project.notice.get().map(|(k, _)| if k == NoticeKind::Error { "error" } else { "info" })
                class:error=move || project.notice.get().is_some_and(|(k, _)| k == NoticeKind::Error)>
                {move || project.notice.get().map(|(_, m)| m)}
            </p>
            <div class="project-actions">
                <button data-testid="export-project" disabled=move || busy.get() || !project.restored.get() on:click=export_project>
                    "Export project (.mtproject)"
                </button>
                <label class="picker">
                    "Import a project "
                    <input type="file" accept=format!(".{PROJECT_FILE_EXTENSION}") data-testid="import-project"
                        disabled=move || busy.get() || !project.restored.get() on:change=on_import />
                </label>
                <button data-testid="export-model" disabled=move || !project.has_model.get() on:click=export_model>
                    "Download the model (.mtmodel, for the medtransfer CLI)"
                </button>
            </div>
        </section>
    }
}

fn files_of_input(event: &leptos::ev::Event) -> Vec<web_sys::File> {
    event
        .target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        .and_then(|input| {
            let files = input.files()?;
            let list = (0..files.length()).filter_map(|i| files.get(i)).collect();
            // Picking the same files again must fire `change` again.
            input.set_value("");
            Some(list)
        })
        .unwrap_or_default()
}

/// The classes: names, images (pick or drop), counts, thumbnails, rejected files.
#[component]
pub fn ClassesSection(project: Project) -> impl IntoView {
    let add_class = move |_| {
        let key = project.next_id();
        let n = project.classes.with(Vec::len) + 1;
        project
            .classes
            .update(|c| c.push(ClassEntry::new(key, format!("Class {n}"))));
    };
    let embed_rate = move || {
        let done = project.embedded_count.get();
        let started = project.embed_started.get()?;
        let seconds = (js_sys::Date::now() - started) / 1000.0;
        (done > 0).then(|| format!("{:.1} images/s", done as f64 / seconds.max(1e-3)))
    };
    let ready_total = move || project.ready_counts().iter().sum::<usize>();
    let progress_value = move || ready_total() as f64;
    let progress_max = move || (ready_total() + project.pending()).max(1) as f64;
    // `webkitdirectory` (pick a whole folder) is not in Leptos' attribute list: set it directly.
    let folder_input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move || {
        if let Some(input) = folder_input.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    let on_folder_pick = move |event: leptos::ev::Event| {
        let files = files_of_input(&event)
            .into_iter()
            .map(|f| {
                let path = Reflect::get(&f, &"webkitRelativePath".into())
                    .ok()
                    .and_then(|p| p.as_string())
                    .unwrap_or_default();
                (path, f)
            })
            .collect();
        project.add_folder_files(files);
    };
    view! {
        <section
            aria-labelledby="classes-heading"
            on:dragover=|e: web_sys::DragEvent| e.prevent_default()
            on:drop=move |e: web_sys::DragEvent| on_folder_drop(project, e)
        >
            <h2 id="classes-heading">"1. Classes and images"</h2>
            <p>"Name each class and add its images: pick files or drop them on the class. Drop a data set's folder anywhere here and each of its sub-folders becomes a class."</p>
            <div class="classes">
                <For each=move || project.classes.get() key=|c| c.uid let:class>
                    <ClassCard project=project class=class />
                </For>
            </div>
            <button data-testid="add-class" on:click=add_class>"Add a class"</button>
            <label class="picker">
                "Add a folder (each sub-folder becomes a class) "
                <input
                    type="file"
                    multiple
                    node_ref=folder_input
                    data-testid="folder-files"
                    on:change=on_folder_pick
                />
            </label>
            <p role="status" data-testid="embed-status" data-pending=move || project.pending()>
                {move || {
                    let pending = project.pending();
                    let counts = project.ready_counts();
                    let ready: usize = counts.iter().sum();
                    if pending > 0 {
                        format!(
                            "Computing embeddings: {ready} ready, {pending} to go ({})",
                            embed_rate().unwrap_or_default()
                        )
                    } else if ready > 0 {
                        format!("All {ready} images are ready to train on.")
                    } else {
                        String::new()
                    }
                }}
            </p>
            <progress aria-label="Embeddings" value=progress_value max=progress_max></progress>
        </section>
    }
}

#[component]
fn ClassCard(project: Project, class: ClassEntry) -> impl IntoView {
    let input_id = format!("class-files-{}", class.key);
    let on_pick = move |event: leptos::ev::Event| {
        project.add_files(class, files_of_input(&event));
    };
    let on_drop = move |event: web_sys::DragEvent| {
        event.prevent_default();
        event.stop_propagation();
        let files: Vec<web_sys::File> = event
            .data_transfer()
            .and_then(|t| t.files())
            .map(|f| (0..f.length()).filter_map(|i| f.get(i)).collect())
            .unwrap_or_default();
        project.add_files(class, files);
    };
    let remove_class = move |_| {
        if project.classes.with(Vec::len) > 2 {
            for image in class.images.get_untracked() {
                project.remove_image(class, image.id);
            }
            project.classes.update(|c| c.retain(|x| x.key != class.key));
        }
    };
    view! {
        <div
            class="class-card"
            data-testid="class-card"
            on:dragover=|e: web_sys::DragEvent| e.prevent_default()
            on:drop=on_drop
        >
            <label>
                "Class name "
                <input
                    type="text"
                    data-testid="class-name"
                    prop:value=move || class.name.get()
                    on:input=move |e| class.name.set(event_target_value(&e))
                />
            </label>
            <p>
                <span data-testid="class-count">{move || class.images.with(Vec::len)}</span>
                " images"
            </p>
            <label for=input_id.clone() class="picker">"Add images"</label>
            <input
                id=input_id
                type="file"
                multiple
                accept=IMAGE_ACCEPT
                data-testid="class-files"
                on:change=on_pick
            />
            <button
                on:click=remove_class
                disabled=move || project.classes.with(Vec::len) <= 2
                aria-label=move || format!("Remove class {}", class.name.get())
            >
                "Remove class"
            </button>
            <ul class="thumbs">
                <For each=move || class.images.with(|images| images.iter().take(MAX_THUMBNAILS).cloned().collect::<Vec<_>>()) key=|i| (i.id, i.status == ImageStatus::Ready) let:image>
                    <li class:pending=image.status == ImageStatus::Embedding>
                        {match image.thumb.clone() {
                            Some(url) => view! { <img src=url alt=image.name.clone() width="56" height="56" /> }.into_any(),
                            None => view! { <span class="placeholder" title=image.name.clone()>{image.name.clone()}</span> }.into_any(),
                        }}
                        <button
                            aria-label=format!("Remove {}", image.name)
                            on:click=move |_| project.remove_image(class, image.id)
                        >
                            "×"
                        </button>
                    </li>
                </For>
            </ul>
            <p class="more">
                {move || {
                    let n = class.images.with(Vec::len);
                    (n > MAX_THUMBNAILS).then(|| format!("and {} more", n - MAX_THUMBNAILS))
                }}
            </p>
            <ul class="rejected" data-testid="class-rejected">
                {move || {
                    class
                        .rejected
                        .get()
                        .into_iter()
                        .map(|(name, reason)| view! { <li class="error">{name} ": " {reason}</li> })
                        .collect_view()
                }}
            </ul>
        </div>
    }
}

/// Settings, Train / Stop, and the epochs as they finish.
#[component]
pub fn TrainSection(project: Project) -> impl IntoView {
    let settings = project.settings;
    let can_train = move || {
        let counts = project.ready_counts();
        project.worker_backend.get().is_some_and(|b| b.is_ok())
            && counts.len() >= 2
            && counts.iter().all(|&n| n >= 1)
            && project.pending() == 0
            && !project.training.get().running
    };
    let number = |e: &leptos::ev::Event| event_target_value(e).parse::<f64>().ok();
    view! {
        <section aria-labelledby="train-heading">
            <h2 id="train-heading">"2. Train"</h2>
            <div class="settings">
                <label>
                    "Head "
                    <select on:change=move |e| settings.update(|s| s.mlp = event_target_value(&e) == "mlp")>
                        <option value="mlp" selected=move || settings.get().mlp>"MLP (1024 hidden units)"</option>
                        <option value="linear" selected=move || !settings.get().mlp>"Linear"</option>
                    </select>
                    <small>"The MLP is the source recipe's head and did best on validation data; linear trains fastest."</small>
                </label>
                <label>
                    "Epochs "
                    <input type="number" min="1" max="500" prop:value=move || settings.get().epochs
                        on:change=move |e| if let Some(v) = number(&e) { settings.update(|s| s.epochs = (v as usize).clamp(1, 500)) } />
                    <small>"Passes over the images; training stops early when validation stops improving."</small>
                </label>
                <label>
                    "Batch size "
                    <input type="number" min="1" max="256" prop:value=move || settings.get().batch
                        on:change=move |e| if let Some(v) = number(&e) { settings.update(|s| s.batch = (v as usize).clamp(1, 256)) } />
                    <small>"Images per step."</small>
                </label>
                <label>
                    "Learning rate "
                    <input type="number" step="any" min="0.000001" max="1" prop:value=move || settings.get().learning_rate
                        on:change=move |e| if let Some(v) = number(&e).filter(|v| *v > 0.0 && *v < 1.0) { settings.update(|s| s.learning_rate = v) } />
                    <small>"Step size; 0.0001 suits the MLP, 0.001 the linear head."</small>
                </label>
                <label>
                    "Class weights "
                    <select on:change=move |e| settings.update(|s| s.class_weights = match event_target_value(&e).as_str() {
                        "on" => ClassWeighting::On, "off" => ClassWeighting::Off, _ => ClassWeighting::Auto })>
                        <option value="auto" selected=move || settings.get().class_weights == ClassWeighting::Auto>"Automatic"</option>
                        <option value="on" selected=move || settings.get().class_weights == ClassWeighting::On>"Always"</option>
                        <option value="off" selected=move || settings.get().class_weights == ClassWeighting::Off>"Never"</option>
                    </select>
                    <small>"Rare classes count more, so an imbalanced set does not favour its largest class."</small>
                </label>
                <label>
                    "Validation share "
                    <input type="number" step="0.05" min="0" max="0.5" prop:value=move || settings.get().validation_share
                        on:change=move |e| if let Some(v) = number(&e) { settings.update(|s| s.validation_share = v.clamp(0.0, 0.5)) } />
                    <small>"Images held out of training to measure the model (at least one per class)."</small>
                </label>
                <label>
                    "Seed "
                    <input type="number" min="0" prop:value=move || settings.get().seed
                        on:change=move |e| if let Some(v) = number(&e) { settings.update(|s| s.seed = v.max(0.0) as u64) } />
                    <small>"The same seed and images give the same model."</small>
                </label>
            </div>
            <button data-testid="train" disabled=move || !can_train() on:click=move |_| project.start_training()>
                "Train"
            </button>
            <button data-testid="stop" disabled=move || !project.training.get().running
                on:click=move |_| project.send(&ToWorker::Stop, None)>
                "Stop"
            </button>
            <p role="status" data-testid="train-status">
                {move || {
                    let t = project.training.get();
                    if let Some(error) = t.error {
                        format!("Training failed: {error}")
                    } else if t.running {
                        format!("Training: epoch {} of {}", t.epochs.len(), t.planned_epochs)
                    } else if let Some(r) = t.result.as_ref().filter(|r| r.stop_reason == "imported") {
                        format!("Model imported with the project (kept epoch {}).", r.kept_epoch)
                    } else if let Some(r) = &t.result {
                        format!("Trained in {:.1} s; kept epoch {} ({}).", r.millis / 1000.0, r.kept_epoch, r.stop_reason.replace('_', " "))
                    } else {
                        String::new()
                    }
                }}
            </p>
            <TrainingCurves project=project />
            <table class="epochs" tabindex="0" aria-label="Epochs: loss and accuracy">
                <thead><tr><th>"Epoch"</th><th>"Train loss"</th><th>"Train acc."</th><th>"Val. loss"</th><th>"Val. acc."</th></tr></thead>
                <tbody>
                    {move || project.training.get().epochs.into_iter().map(|e| view! {
                        <tr data-testid="epoch-row">
                            <td>{e.epoch}</td>
                            <td>{format!("{:.4}", e.train_loss)}</td>
                            <td>{format!("{:.3}", e.train_accuracy)}</td>
                            <td>{e.validation_loss.map(|v| format!("{v:.4}"))}</td>
                            <td>{e.validation_accuracy.map(|v| format!("{v:.3}"))}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

/// Training and validation loss and accuracy per epoch, as the epochs finish.
#[component]
fn TrainingCurves(project: Project) -> impl IntoView {
    let rows = Signal::derive(move || {
        project
            .training
            .get()
            .epochs
            .iter()
            .map(|e| {
                (
                    e.epoch as f64,
                    e.train_loss,
                    e.validation_loss.unwrap_or(f64::NAN),
                    e.train_accuracy,
                    e.validation_accuracy.unwrap_or(f64::NAN),
                )
            })
            .collect::<Vec<_>>()
    });
    let losses = Series::new(|r: &(f64, f64, f64, f64, f64)| r.0)
        .line(
            Line::new(|r: &(f64, f64, f64, f64, f64)| r.1)
                .with_name("training loss")
                .with_interpolation(Interpolation::Linear),
        )
        .line(
            Line::new(|r: &(f64, f64, f64, f64, f64)| r.2)
                .with_name("validation loss")
                .with_interpolation(Interpolation::Linear),
        );
    let accuracies = Series::new(|r: &(f64, f64, f64, f64, f64)| r.0)
        .line(
            Line::new(|r: &(f64, f64, f64, f64, f64)| r.3)
                .with_name("training accuracy")
                .with_interpolation(Interpolation::Linear),
        )
        .line(
            Line::new(|r: &(f64, f64, f64, f64, f64)| r.4)
                .with_name("validation accuracy")
                .with_interpolation(Interpolation::Linear),
        )
        .with_y_range(0.0, 1.0);
    view! {
        <div class="charts" data-testid="training-curves" tabindex="0" role="group" aria-label="Training curves">
            <figure>
                <Chart
                    aspect_ratio=AspectRatio::from_outer_ratio(520.0, 260.0)
                    padding=Padding::sides(8.0, 24.0, 8.0, 8.0)
                    series=losses
                    data=rows
                    left=TickLabels::aligned_floats()
                    bottom=TickLabels::aligned_floats()
                    top=Legend::middle()
                    inner=[AxisMarker::left_edge().into_inner(), AxisMarker::bottom_edge().into_inner(),
                        XGridLine::default().into_inner(), YGridLine::default().into_inner()]
                />
                <figcaption>"Loss per epoch"</figcaption>
            </figure>
            <figure>
                <Chart
                    aspect_ratio=AspectRatio::from_outer_ratio(520.0, 260.0)
                    padding=Padding::sides(8.0, 24.0, 8.0, 8.0)
                    series=accuracies
                    data=rows
                    left=TickLabels::aligned_floats()
                    bottom=TickLabels::aligned_floats()
                    top=Legend::middle()
                    inner=[AxisMarker::left_edge().into_inner(), AxisMarker::bottom_edge().into_inner(),
                        XGridLine::default().into_inner(), YGridLine::default().into_inner()]
                />
                <figcaption>"Accuracy per epoch"</figcaption>
            </figure>
        </div>
    }
}

/// The ROC curve(s) of the validation images: one for two classes, one per class above.
#[component]
fn RocChart(evaluation: Evaluation) -> impl IntoView {
    let binary = evaluation.classes.len() == 2;
    let curves: Vec<(String, Vec<(f64, f64)>)> = evaluation
        .roc
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.is_empty())
        .map(|(i, curve)| {
            let name = if binary {
                evaluation.classes.get(1).cloned().unwrap_or_default()
            } else {
                evaluation.classes.get(i).cloned().unwrap_or_default()
            };
            let mut points: Vec<(f64, f64)> = curve
                .iter()
                .map(|p| (p.false_positive_rate, p.true_positive_rate))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            (name, points)
        })
        .collect();
    curves
        .into_iter()
        .map(|(name, points)| {
            let data = Signal::derive(move || points.clone());
            let series = Series::new(|p: &(f64, f64)| p.0)
                .line(Line::new(|p: &(f64, f64)| p.1).with_name(format!("ROC, {name} vs rest")).with_interpolation(Interpolation::Linear))
                .line(Line::new(|p: &(f64, f64)| p.0).with_name("chance").with_interpolation(Interpolation::Linear))
                .with_x_range(0.0, 1.0)
                .with_y_range(0.0, 1.0);
            view! {
                <figure data-testid="roc-curve" tabindex="0" aria-label=format!("ROC curve, {name} against the rest")>
                    <Chart
                        aspect_ratio=AspectRatio::from_outer_ratio(420.0, 340.0)
                        series=series
                        data=data
                        left=TickLabels::aligned_floats()
                        bottom=TickLabels::aligned_floats()
                        top=Legend::middle()
                        inner=[AxisMarker::left_edge().into_inner(), AxisMarker::bottom_edge().into_inner()]
                    />
                    <figcaption>"True positive rate (up) against false positive rate (right)"</figcaption>
                </figure>
            }
        })
        .collect_view()
}

fn set_threshold(project: Project, event: &leptos::ev::Event) {
    if let Ok(t) = event_target_value(event).parse::<f64>() {
        project.threshold.set(t.clamp(0.0, 1.0));
    }
}

fn fmt_ci(ci: Option<[f64; 2]>) -> String {
    ci.map_or(String::new(), |[lo, hi]| {
        format!(" (95% CI {lo:.3}–{hi:.3})")
    })
}

/// Validation metrics of the trained model.
#[component]
pub fn ResultsSection(project: Project) -> impl IntoView {
    view! {
        <section aria-labelledby="results-heading">
            <h2 id="results-heading">"3. Results on validation images"</h2>
            {move || {
                let result = project.training.get().result?;
                let Some(v) = result.validation.clone() else {
                    return Some(view! { <p>"No validation images were held out, so there are no metrics (raise the validation share)."</p> }.into_any());
                };
                let classes = result.classes.clone();
                let ids = result.validation_ids.clone();
                let matrix = v.confusion_matrix.clone();
                let misclassified = v.misclassified.clone();
                Some(view! {
                    <dl class="metrics">
                        <dt>"Accuracy"</dt>
                        <dd><span data-testid="metric-accuracy">{format!("{:.3}", v.accuracy)}</span>{fmt_ci(v.accuracy_ci)}</dd>
                        <dt>"Balanced accuracy"</dt>
                        <dd data-testid="metric-balanced-accuracy">{format!("{:.3}", v.balanced_accuracy)}</dd>
                        <dt>"AUC"</dt>
                        <dd data-testid="metric-auc">{v.auc.map_or("not computable".to_string(), |a| format!("{a:.3}{}", fmt_ci(v.auc_ci)))}</dd>
                    </dl>
                    {(classes.len() == 2 && !v.roc.first().is_none_or(Vec::is_empty)).then(|| {
                        let curve = v.roc.first().cloned().unwrap_or_default();
                        let at = move |t: f64| {
                            // The lowest ROC threshold at or above t: the counts of scores ≥ t.
                            curve.iter().rev().find(|p| p.threshold >= t)
                                .map_or((0.0, 1.0), |p| (p.true_positive_rate, 1.0 - p.false_positive_rate))
                        };
                        let positive = classes[1].clone();
                        view! {
                            <div class="threshold">
                                <label>
                                    {format!("Decision threshold for {positive}: ")}
                                    <input type="range" min="0.01" max="0.99" step="0.01" data-testid="threshold"
                                        prop:value=move || project.threshold.get()
                                        on:input=move |e| set_threshold(project, &e) />
                                    {move || format!(" {:.2}", project.threshold.get())}
                                </label>
                                <p data-testid="threshold-effect">
                                    {move || {
                                        let (sensitivity, specificity) = at(project.threshold.get());
                                        format!("On the validation images: sensitivity {sensitivity:.3}, specificity {specificity:.3}. Predictions below use this threshold.")
                                    }}
                                </p>
                            </div>
                        }
                    })}
                    <table class="per-class" tabindex="0" aria-label="Per-class figures">
                        <thead><tr><th>"Class"</th><th>"Sensitivity"</th><th>"Specificity"</th><th>"Precision"</th><th>"F1"</th><th>"Images"</th></tr></thead>
                        <tbody>
                            {v.per_class.iter().map(|c| view! {
                                <tr><td>{c.class.clone()}</td><td>{format!("{:.3}", c.sensitivity)}</td><td>{format!("{:.3}", c.specificity)}</td>
                                <td>{format!("{:.3}", c.precision)}</td><td>{format!("{:.3}", c.f1)}</td><td>{c.support}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    <table class="confusion" data-testid="confusion-matrix" tabindex="0">
                        <caption>"Confusion matrix: rows are the true class, columns the predicted one; wrong cells show their images."</caption>
                        <thead><tr><th></th>{classes.iter().map(|c| view! { <th scope="col">{c.clone()}</th> }).collect_view()}</tr></thead>
                        <tbody>
                            {matrix.iter().enumerate().map(|(t, row)| {
                                let cells = row.iter().enumerate().map(|(p, n)| {
                                    let thumbs = misclassified.iter()
                                        .filter(|m| m.true_class == t && m.predicted_class == p)
                                        .filter_map(|m| ids.get(m.index).and_then(|&id| project.image_url(id)))
                                        .map(|(url, name)| view! { <img src=url alt=name.clone() title=name width="32" height="32" /> })
                                        .collect_view();
                                    view! { <td>{*n}<div class="cell-thumbs">{thumbs}</div></td> }
                                }).collect_view();
                                view! { <tr><th scope="row">{classes.get(t).cloned()}</th>{cells}</tr> }
                            }).collect_view()}
                        </tbody>
                    </table>
                    <RocChart evaluation=v.clone() />
                }.into_any())
            }}
        </section>
    }
}

/// New images → class probabilities.
#[component]
pub fn PredictSection(project: Project) -> impl IntoView {
    let trained =
        move || project.has_model.get() && project.worker_backend.get().is_some_and(|b| b.is_ok());
    let on_pick = move |event: leptos::ev::Event| {
        for file in files_of_input(&event) {
            let id = project.next_id();
            let url = web_sys::Url::create_object_url_with_blob(&file).unwrap_or_default();
            project.predictions.update(|p| {
                p.push(PredictionEntry {
                    id,
                    name: file.name(),
                    url,
                    result: None,
                })
            });
            spawn_local(async move {
                let bytes = read_file(&file).await;
                project.send(&ToWorker::Predict { id }, Some(bytes));
            });
        }
    };
    view! {
        <section aria-labelledby="predict-heading">
            <h2 id="predict-heading">"4. Predict"</h2>
            <label class="picker">
                "Images to classify "
                <input type="file" multiple accept=IMAGE_ACCEPT data-testid="predict-files"
                    disabled=move || !trained() on:change=on_pick />
            </label>
            <ul class="predictions">
                {move || {
                    let classes = project.training.get().result.map(|r| r.classes).unwrap_or_default();
                    project.predictions.get().into_iter().map(|p| {
                        match p.result {
                            None => view! { <li><img src=p.url alt=p.name.clone() width="56" height="56" />{p.name}": computing…"</li> }.into_any(),
                            Some(Err(error)) => view! { <li class="error" data-testid="prediction-error">{p.name}": "{error}</li> }.into_any(),
                            Some(Ok(probs)) => {
                                let threshold = (probs.len() == 2).then(|| project.threshold.get());
                                let best = predicted_class(&probs, threshold);
                                let label = classes.get(best).cloned().unwrap_or_default();
                                let prob = probs.get(best).copied().unwrap_or(0.0);
                                let label_attr = label.clone();
                                view! {
                                    <li data-testid="prediction" data-label=label_attr data-prob=prob.to_string()>
                                        <img src=p.url alt=p.name.clone() width="56" height="56" />
                                        <div>
                                        <strong>{p.name}</strong>": "{label}
                                        <ul>
                                            {classes.iter().zip(probs.iter()).map(|(c, &v)| view! {
                                                <li>
                                                    <label>{c.clone()}" "
                                                        <meter min="0" max="1" value=v.to_string()></meter>
                                                        {format!(" {:.1}%", v * 100.0)}
                                                    </label>
                                                </li>
                                            }).collect_view()}
                                        </ul>
                                        </div>
                                    </li>
                                }.into_any()
                            }
                        }
                    }).collect_view()
                }}
            </ul>
        </section>
    }
}

/// Whether this global scope is a page (not a worker).
pub fn is_page() -> bool {
    web_sys::window().is_some_and(|w| w.document().is_some())
}

impl Project {
    /// Adds the files of a picked or dropped folder, by their paths from the folder's own name
    /// (`dataset/normal/a.png`), laid out by core's one rule
    /// ([`medtransfer_core::dataset_folder::layout_of_drop`]: OS junk ignored, each sub-folder a
    /// class, nested folders in their class, names compared in NFC): into the class of that name
    /// if there is one, else into a new class; the untouched starting classes are replaced by
    /// the first folders.
    pub fn add_folder_files(self, files: Vec<(String, web_sys::File)>) {
        let layout = layout_of_drop(files);
        let mut groups: Vec<Vec<web_sys::File>> = vec![Vec::new(); layout.classes.len()];
        for file in layout.files {
            groups[file.class].push(file.item);
        }
        for (name, files) in layout.classes.into_iter().zip(groups) {
            let classes = self.classes.get_untracked();
            let existing = classes
                .iter()
                .find(|c| class_name(&c.name.get_untracked()) == name)
                .copied();
            let untouched = classes.iter().find(|c| {
                c.images.with_untracked(Vec::is_empty)
                    && c.rejected.with_untracked(Vec::is_empty)
                    && c.name.get_untracked().starts_with("Class ")
            });
            let class = match (existing, untouched) {
                (Some(class), _) => class,
                (None, Some(class)) => {
                    class.name.set(name);
                    *class
                }
                (None, None) => {
                    let class = ClassEntry::new(self.next_id(), name);
                    self.classes.update(|c| c.push(class));
                    class
                }
            };
            self.add_files(class, files);
        }
    }
}

/// Calls `object.method(resolve, reject)` and awaits the callback's value.
async fn callback_promise(object: &JsValue, method: &str) -> Result<JsValue, JsValue> {
    let function = Reflect::get(object, &method.into())?.dyn_into::<js_sys::Function>()?;
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let _ = function.call2(object, &resolve, &reject);
    });
    JsFuture::from(promise).await
}

/// Every file under a dropped `FileSystemEntry`, with its path (`root/sub/file`).
async fn entry_files(entry: JsValue) -> Vec<(String, web_sys::File)> {
    let mut out = Vec::new();
    let mut stack = vec![entry];
    while let Some(entry) = stack.pop() {
        let path = Reflect::get(&entry, &"fullPath".into())
            .ok()
            .and_then(|p| p.as_string())
            .unwrap_or_default();
        let is_dir = Reflect::get(&entry, &"isDirectory".into())
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if is_dir {
            let Ok(reader) = Reflect::get(&entry, &"createReader".into())
                .and_then(|f| f.dyn_into::<js_sys::Function>())
                .and_then(|f| f.call0(&entry))
            else {
                continue;
            };
            // readEntries returns a batch at a time until it returns an empty one.
            while let Ok(batch) = callback_promise(&reader, "readEntries").await {
                let batch = Array::from(&batch);
                if batch.length() == 0 {
                    break;
                }
                stack.extend(batch.iter());
            }
        } else if let Ok(file) = callback_promise(&entry, "file").await
            && let Ok(file) = file.dyn_into::<web_sys::File>()
        {
            out.push((path, file));
        }
    }
    out
}

/// Handles a drop on the classes area: folders become classes by their sub-folders.
fn on_folder_drop(project: Project, event: web_sys::DragEvent) {
    event.prevent_default();
    let Some(items) = event.data_transfer().map(|t| t.items()) else {
        return;
    };
    // Entries must be taken synchronously, inside the drop event.
    let entries: Vec<JsValue> = (0..items.length())
        .filter_map(|i| items.get(i))
        .filter_map(|item| {
            Reflect::get(&item, &"webkitGetAsEntry".into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                .and_then(|f| f.call0(&item).ok())
                .filter(|e| !e.is_null() && !e.is_undefined())
        })
        .collect();
    spawn_local(async move {
        let mut files = Vec::new();
        for entry in entries {
            files.extend(entry_files(entry).await);
        }
        project.add_folder_files(files);
    });
}
