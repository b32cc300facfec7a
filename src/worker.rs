//! The compute Web Worker: the same wasm as the page, started by `public/worker.js` without the
//! UI. It holds the network, the embeddings and the trained head, and answers the page's
//! [`ToWorker`] messages with [`FromWorker`] ones, so that decoding, forward passes and training
//! never block the page.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect};
use medtransfer_core::efficientnet::{EMBEDDING_DIM, EfficientNetLite0, load_from_bytes};
use medtransfer_core::embeddings::{decode_embedding, encode_embedding};
use medtransfer_core::inference::run_each;
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::preprocess::{decode_image, preprocess_decoded, preprocess_image};
use medtransfer_core::recipe::SearchEvent;
use medtransfer_core::run::{Progress, Recipe, RunConfig, Validation, run};
use medtransfer_core::thumbnail::thumbnail_of;
use medtransfer_core::train::{
    CancelToken, Classifier, LabelledEmbeddings, TrainError, TrainEvent,
};
use medtransfer_core::{BackendKind, ComputeDevice, select_device};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::gpu_probe::probe_webgpu;
use crate::protocol::{EMBEDDING_BYTES, Envelope, FromWorker, ImageId, ToWorker};

/// Images embedded per forward pass (the core splits larger batches anyway).
const BATCH: usize = 8;

/// What a queued image is for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum JobKind {
    Embed,
    Predict,
    Classify,
}

struct Job {
    id: ImageId,
    bytes: Vec<u8>,
    kind: JobKind,
}

#[derive(Default)]
struct State {
    device: Option<ComputeDevice>,
    model: Option<Rc<EfficientNetLite0>>,
    embeddings: HashMap<ImageId, Vec<f32>>,
    queue: VecDeque<Job>,
    draining: bool,
    classifier: Option<Rc<Classifier>>,
    cancel: CancelToken,
    training: bool,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Starts answering messages; called once by `public/worker.js` after the wasm is loaded. A
/// panic's message is posted to the page ([`FromWorker::Crashed`]) before the wasm dies, so
/// that the page can tell a lost GPU from a bug.
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post(&FromWorker::Crashed {
            message: info.to_string(),
        });
    }));
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let handler = Closure::<dyn FnMut(MessageEvent)>::new(on_message);
    scope.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    handler.forget();
    post(&FromWorker::Started);
}

fn post(message: &FromWorker) {
    send(Envelope::new(message.clone()));
}

/// Posts a message with `bytes` transferred (not copied) after its JSON.
fn post_with(message: &FromWorker, bytes: Option<Vec<u8>>) {
    send(Envelope {
        message: message.clone(),
        bytes,
    });
}

fn send(envelope: Envelope<FromWorker>) {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let result = envelope.to_js().and_then(|(array, transfer)| {
        scope
            .post_message_with_transfer(&array, &transfer)
            .map_err(|e| format!("{e:?}"))
    });
    if let Err(error) = result {
        web_sys::console::error_1(&format!("the worker could not post a message: {error}").into());
    }
}

fn on_message(event: MessageEvent) {
    let Envelope { message, bytes } = match Envelope::<ToWorker>::from_js(&event.data()) {
        Ok(envelope) => envelope,
        Err(error) => {
            web_sys::console::error_1(&format!("bad message to the worker: {error}").into());
            return;
        }
    };
    match message {
        ToWorker::LoadModel { force_cpu } => {
            spawn_local(load_model(bytes.unwrap_or_default(), force_cpu))
        }
        ToWorker::Restore { ids } => {
            let bytes = bytes.unwrap_or_default();
            STATE.with_borrow_mut(|s| {
                for (id, row) in ids.into_iter().zip(bytes.chunks_exact(EMBEDDING_BYTES)) {
                    if let Some(embedding) = decode_embedding(row) {
                        s.embeddings.insert(id, embedding);
                    }
                }
            });
        }
        ToWorker::LoadClassifier => load_classifier(&bytes.unwrap_or_default()),
        ToWorker::Classify { id } => enqueue(Job {
            id,
            bytes: bytes.unwrap_or_default(),
            kind: JobKind::Classify,
        }),
        ToWorker::SimulateCrash { device_lost } => simulate_crash(device_lost),
        ToWorker::Embed { id } => enqueue(Job {
            id,
            bytes: bytes.unwrap_or_default(),
            kind: JobKind::Embed,
        }),
        ToWorker::Predict { id } => enqueue(Job {
            id,
            bytes: bytes.unwrap_or_default(),
            kind: JobKind::Predict,
        }),
        ToWorker::Forget { id } => STATE.with_borrow_mut(|s| {
            s.embeddings.remove(&id);
            s.queue
                .retain(|job| job.id != id || job.kind != JobKind::Embed);
        }),
        ToWorker::Train {
            classes,
            items,
            config,
        } => spawn_local(train(classes, items, config)),
        ToWorker::Stop => STATE.with_borrow(|s| s.cancel.cancel()),
    }
}

/// The test hook [`ToWorker::SimulateCrash`]: panics in test builds, is ignored otherwise.
#[cfg(feature = "test-hooks")]
fn simulate_crash(device_lost: bool) {
    if device_lost {
        panic!("simulated loss of the GPU: the device was lost (test hook)");
    }
    panic!("simulated bug in the compute worker (test hook)");
}

#[cfg(not(feature = "test-hooks"))]
fn simulate_crash(_device_lost: bool) {}

async fn load_model(bytes: Vec<u8>, force_cpu: bool) {
    let device = if force_cpu {
        ComputeDevice::cpu("the GPU stopped working, so this session continues on the CPU")
    } else {
        select_device(probe_webgpu().await).await
    };
    match load_from_bytes(&bytes, &device.device) {
        Ok(model) => {
            post(&FromWorker::ModelReady {
                backend: device.describe(),
                gpu: device.kind == BackendKind::Gpu,
            });
            STATE.with_borrow_mut(|s| {
                s.model = Some(Rc::new(model));
                s.device = Some(device);
            });
            start_draining();
        }
        Err(error) => post(&FromWorker::ModelFailed {
            error: error.to_string(),
        }),
    }
}

/// Puts a trained model file to use for predictions (a reloaded or imported project's model).
fn load_classifier(bytes: &[u8]) {
    let result = STATE.with_borrow_mut(|s| {
        let device = s
            .device
            .clone()
            .ok_or("the network is not loaded yet".to_string())?;
        let file = ModelFile::from_bytes(bytes).map_err(|e| e.to_string())?;
        if file.header.head.input_dim != EMBEDDING_DIM {
            return Err(format!(
                "the model takes {} features, the network gives {EMBEDDING_DIM}",
                file.header.head.input_dim
            ));
        }
        let classifier = Classifier::new(
            &file.header.head,
            &file.weights,
            &file.normalization,
            &device.device,
        )
        .map_err(|e| e.to_string())?;
        s.classifier = Some(Rc::new(classifier));
        Ok::<(), String>(())
    });
    post(&FromWorker::ClassifierLoaded {
        error: result.err(),
    });
}

fn enqueue(job: Job) {
    STATE.with_borrow_mut(|s| s.queue.push_back(job));
    start_draining();
}

fn start_draining() {
    let start = STATE.with_borrow_mut(|s| {
        let start = !s.draining && s.model.is_some() && !s.queue.is_empty();
        if start {
            s.draining = true;
        }
        start
    });
    if start {
        spawn_local(drain());
    }
}

/// Lets the worker's event loop run (so messages such as Stop are received).
async fn yield_now() {
    let promise = Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(set_timeout) =
            Reflect::get(&global, &"setTimeout".into()).and_then(|f| f.dyn_into::<Function>())
        {
            let _ = set_timeout.call2(&global, &resolve, &JsValue::from(0));
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// Decodes one file once and gives the network's input (or the per-file message) and, when
/// `with_thumbnail`, the thumbnail of the same pixels; the decoded image is dropped on return.
fn network_input_and_thumbnail(
    bytes: &[u8],
    with_thumbnail: bool,
) -> (Result<Vec<f32>, String>, Option<Vec<u8>>) {
    if bytes.is_empty() {
        return (
            Err("empty file (0 bytes), or it could not be read".to_string()),
            None,
        );
    }
    #[cfg(feature = "test-hooks")]
    if bytes.starts_with(crate::test_hooks::CRASH_MAGIC) {
        panic!("a test file that breaks the decoder (test hook)");
    }
    match decode_image(bytes) {
        Err(error) => (Err(error.to_string()), None),
        Ok(image) => {
            let thumbnail = with_thumbnail.then(|| thumbnail_of(&image).ok()).flatten();
            (
                preprocess_decoded(&image).map_err(|e| e.to_string()),
                thumbnail,
            )
        }
    }
}

/// Embeds queued images a batch at a time until the queue is empty.
async fn drain() {
    loop {
        let next = STATE.with_borrow_mut(|s| {
            let (Some(model), Some(device)) = (s.model.clone(), s.device.clone()) else {
                s.draining = false;
                return None;
            };
            if s.queue.is_empty() {
                s.draining = false;
                return None;
            }
            let n = s.queue.len().min(BATCH);
            let jobs: Vec<Job> = s.queue.drain(..n).collect();
            Some((jobs, model, device, s.classifier.clone()))
        });
        let Some((jobs, model, device, classifier)) = next else {
            return;
        };
        let (classify, jobs): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.kind == JobKind::Classify);
        if !classify.is_empty() {
            let inputs = classify
                .iter()
                .map(|job| {
                    if job.bytes.is_empty() {
                        Err("empty file (0 bytes), or it could not be read".to_string())
                    } else {
                        preprocess_image(&job.bytes).map_err(|e| e.to_string())
                    }
                })
                .collect();
            let outputs = run_each(&model, inputs, &device.device).await;
            for (job, output) in classify.iter().zip(outputs) {
                post(&FromWorker::Classified {
                    id: job.id,
                    result: output.map(|o| o.logits),
                });
            }
        }
        // Each file is decoded once: the thumbnail (of images being added or predicted: the page
        // cannot show a DICOM or a 16-bit TIFF itself) and the network's input come from the
        // same pixels; the decoded image is dropped as soon as both exist.
        let (inputs, thumbnails): (Vec<_>, Vec<_>) = jobs
            .iter()
            .map(|job| network_input_and_thumbnail(&job.bytes, job.kind != JobKind::Classify))
            .unzip();
        let jobs: Vec<(ImageId, JobKind)> =
            jobs.into_iter().map(|job| (job.id, job.kind)).collect();
        let results = run_each(&model, inputs, &device.device)
            .await
            .into_iter()
            .map(|output| output.map(|o| o.embedding));
        for (((id, kind), result), thumbnail) in jobs.into_iter().zip(results).zip(thumbnails) {
            match kind {
                JobKind::Embed => match result {
                    Ok(embedding) => {
                        let mut bytes = encode_embedding(&embedding);
                        bytes.extend(thumbnail.unwrap_or_default());
                        STATE.with_borrow_mut(|s| s.embeddings.insert(id, embedding));
                        post_with(&FromWorker::Embedded { id, error: None }, Some(bytes));
                    }
                    Err(error) => post(&FromWorker::Embedded {
                        id,
                        error: Some(error),
                    }),
                },
                JobKind::Classify => {}
                JobKind::Predict => {
                    let result = match (result, &classifier) {
                        (Err(error), _) => Err(error),
                        (Ok(_), None) => Err("train a model first".to_string()),
                        (Ok(embedding), Some(classifier)) => classifier
                            .predict(&[embedding])
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|rows| {
                                rows.into_iter()
                                    .next()
                                    .ok_or_else(|| "no prediction was returned".to_string())
                            }),
                    };
                    post_with(&FromWorker::Prediction { id, result }, thumbnail);
                }
            }
        }
        yield_now().await;
    }
}

async fn train(classes: Vec<String>, items: Vec<(ImageId, usize)>, config: RunConfig) {
    let started = STATE.with_borrow_mut(|s| {
        if s.training {
            return Err("training is already running".to_string());
        }
        let device = s
            .device
            .clone()
            .ok_or("the network is not loaded yet".to_string())?;
        let mut rows = LabelledEmbeddings::default();
        for (id, label) in &items {
            let embedding = s
                .embeddings
                .get(id)
                .ok_or(format!("image {id} has no embedding yet"))?;
            rows.embeddings.push(embedding.clone());
            rows.labels.push(*label);
        }
        s.training = true;
        s.cancel = CancelToken::new();
        Ok((device, rows, s.cancel.clone()))
    });
    let ids: Vec<ImageId> = items.iter().map(|(id, _)| *id).collect();
    let result = match started {
        Ok((device, rows, cancel)) => {
            run_training(classes, &ids, rows, config, device, cancel).await
        }
        Err(error) => {
            post(&FromWorker::TrainFailed { error });
            return;
        }
    };
    STATE.with_borrow_mut(|s| s.training = false);
    if let Err(error) = result {
        post(&FromWorker::TrainFailed { error });
    }
}

/// The automatic recipe's MLP budget in the page (floating-point operations; the CLI's is
/// 150 times larger): about ten seconds on the browser's CPU path.
const PAGE_MLP_BUDGET: f64 = 2e9;

/// The worker's side of a run: posts the start and each epoch, and yields to the event loop
/// between epochs so that [`ToWorker::Stop`] can arrive.
struct WorkerProgress;

impl Progress for WorkerProgress {
    fn event(&mut self, event: &TrainEvent) {
        match event {
            TrainEvent::Started {
                epochs,
                train_items,
                validation_items,
                ..
            } => post(&FromWorker::TrainStarted {
                epochs: *epochs,
                train_items: *train_items,
                validation_items: *validation_items,
            }),
            TrainEvent::Epoch(summary) => post(&FromWorker::Epoch(summary.clone())),
            TrainEvent::Batch { .. } | TrainEvent::Finished { .. } => {}
        }
    }

    fn search(&mut self, event: &SearchEvent) {
        if let SearchEvent::Fitted { done, total } = event {
            post(&FromWorker::Searching {
                done: *done,
                total: *total,
            });
        }
    }

    async fn between_epochs(&mut self) {
        yield_now().await;
    }
}

/// Runs core's [`run`] on `items` (image `ids[i]` is item `i`), keeps the classifier and posts
/// [`FromWorker::Trained`] with the model file; the error is the message the page shows.
async fn run_training(
    classes: Vec<String>,
    ids: &[ImageId],
    items: LabelledEmbeddings,
    config: RunConfig,
    device: ComputeDevice,
    cancel: CancelToken,
) -> Result<(), String> {
    let started = js_sys::Date::now();
    // The page's compute (one thread in wasm, or a GPU that may be a software one): the
    // automatic recipe tries the MLP only on the smallest sets.
    let config = RunConfig {
        mlp_budget: PAGE_MLP_BUDGET,
        ..config
    };
    let finished = run(
        &classes,
        &items,
        Validation::Split { groups: None },
        &config,
        &device.device,
        &cancel,
        &mut WorkerProgress,
    )
    .await
    .map_err(|e| match e {
        TrainError::Split { .. } if config.recipe == Recipe::Automatic => {
            format!("{e}. The automatic recipe cross-validates: add images to that class")
        }
        TrainError::Split { .. } => {
            format!("{e}. Add images, or set the validation share to 0 to train on all of them")
        }
        e => e.to_string(),
    })?;
    let trained = finished.trained;
    let mut model_file = ModelFile::from_trained(&trained, "MedTransfer web app");
    if let Some(search) = &finished.search {
        model_file = model_file.with_search(search);
    }
    let model_file = model_file.to_bytes();
    // The automatic recipe's figures are out of fold over every image.
    let (validation, validation_items) = match &finished.search {
        Some(search) => (
            Some(search.evaluation.clone()),
            (0..ids.len()).collect::<Vec<_>>(),
        ),
        None => (
            trained.validation.clone(),
            finished.validation_items.clone(),
        ),
    };
    let classifier = Classifier::new(
        &trained.config,
        &trained.weights,
        &trained.normalization,
        &device.device,
    )
    .map_err(|e| e.to_string())?;
    STATE.with_borrow_mut(|s| s.classifier = Some(Rc::new(classifier)));
    post_with(
        &FromWorker::Trained {
            kept_epoch: trained.kept_epoch,
            stop_reason: trained.stop_reason,
            validation: validation.map(Box::new),
            validation_ids: validation_items
                .iter()
                .filter_map(|&i| ids.get(i).copied())
                .collect(),
            search: finished
                .search
                .as_ref()
                .map(|search| Box::new(search.without_probabilities())),
            threshold: trained.threshold,
            millis: js_sys::Date::now() - started,
        },
        Some(model_file),
    );
    Ok(())
}
