//! The compute Web Worker: the same wasm as the page, started by `public/worker.js` without the
//! UI. It holds the network, the embeddings and the trained head, and answers the page's
//! [`ToWorker`] messages with [`FromWorker`] ones, so that decoding, forward passes and training
//! never block the page.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect};
use medtransfer_core::augment::AugmentConfig;
use medtransfer_core::check::{DataCheck, Finding};
use medtransfer_core::efficientnet::{EfficientNetLite0, load_from_bytes};
use medtransfer_core::embedding_map::pca_map;
use medtransfer_core::embeddings::{
    content_hash, encode_embedding, encode_rows, inputs_with_views,
};
use medtransfer_core::finetune::{CutFeatures, STORED_BLOCKS, embed_with_activations};
use medtransfer_core::inference::run_each;
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::preprocess::{decode_image, preprocess_decoded, preprocess_image};
use medtransfer_core::thumbnail::thumbnail_of;
use medtransfer_core::train::{CancelToken, limits};
use medtransfer_core::{BackendKind, ComputeDevice, select_device};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

mod predictor;
use predictor::ModelInUse;
mod training;

use crate::gpu_probe::probe_webgpu;
use crate::protocol::{
    Envelope, FromWorker, ImageId, ImageRows, MapAnswer, MapFinding, ToWorker, restore_activations,
    restore_rows,
};

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
    /// Augmented views to embed with the image ([`JobKind::Embed`] only) and their seed.
    views: u32,
    seed: u64,
}

impl Job {
    fn new(id: ImageId, bytes: Option<Vec<u8>>, kind: JobKind) -> Self {
        Self {
            id,
            bytes: bytes.unwrap_or_default(),
            kind,
            views: 0,
            seed: 0,
        }
    }

    /// Forward passes it takes.
    fn inputs(&self) -> usize {
        1 + self.views as usize
    }
}

#[derive(Default)]
struct State {
    device: Option<ComputeDevice>,
    model: Option<Rc<EfficientNetLite0>>,
    embeddings: HashMap<ImageId, Vec<f32>>,
    /// The augmented views' embeddings of the images that have them.
    views: HashMap<ImageId, Vec<Vec<f32>>>,
    /// The activations for fine-tuning ([`STORED_BLOCKS`]) of the images that have them.
    activations: HashMap<ImageId, CutFeatures>,
    /// Images being embedded now: one forgotten meanwhile is not kept when its rows arrive.
    embedding_now: HashSet<ImageId>,
    queue: VecDeque<Job>,
    draining: bool,
    classifier: Option<Rc<ModelInUse>>,
    cancel: CancelToken,
    training: bool,
}

impl State {
    /// Keeps an image's embedding and its views' (replacing what it had).
    fn keep(&mut self, id: ImageId, rows: ImageRows) {
        self.embeddings.insert(id, rows.embedding);
        if rows.views.is_empty() {
            self.views.remove(&id);
        } else {
            self.views.insert(id, rows.views);
        }
    }
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
        ToWorker::Restore { ids, views } => {
            let rows = restore_rows(&ids, &views, &bytes.unwrap_or_default());
            STATE.with_borrow_mut(|s| {
                for (id, rows) in rows {
                    s.keep(id, rows);
                }
            });
        }
        ToWorker::RestoreActivations { ids } => {
            let rows = restore_activations(&ids, &bytes.unwrap_or_default());
            STATE.with_borrow_mut(|s| s.activations.extend(rows));
        }
        ToWorker::LoadClassifier => load_classifier(&bytes.unwrap_or_default()),
        ToWorker::Classify { id } => enqueue(Job::new(id, bytes, JobKind::Classify)),
        ToWorker::SimulateCrash { device_lost } => simulate_crash(device_lost),
        ToWorker::Embed { id, views, seed } => enqueue(Job {
            views: views.min(*limits::AUGMENTED_VIEWS.end()),
            seed,
            ..Job::new(id, bytes, JobKind::Embed)
        }),
        ToWorker::Predict { id } => enqueue(Job::new(id, bytes, JobKind::Predict)),
        ToWorker::Explain { requests } => spawn_local(explain_images(requests)),
        ToWorker::Map { classes, items } => {
            let result = STATE.with_borrow(|s| map_images(&classes, &items, &s.embeddings));
            post(&FromWorker::Mapped { result });
        }
        ToWorker::Forget { id } => STATE.with_borrow_mut(|s| {
            s.embeddings.remove(&id);
            s.views.remove(&id);
            s.activations.remove(&id);
            s.embedding_now.remove(&id);
            s.queue
                .retain(|job| job.id != id || job.kind != JobKind::Embed);
        }),
        ToWorker::Train {
            classes,
            items,
            config,
            fine_tune,
        } => spawn_local(training::train(classes, items, config, fine_tune)),
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
        s.classifier = Some(Rc::new(ModelInUse::from_file(file, &device)?));
        Ok::<(), String>(())
    });
    post(&FromWorker::ClassifierLoaded {
        error: result.err(),
    });
}

/// Answers a [`ToWorker::Map`]: the PCA map of the images whose embedding is held, and the
/// data check on those embeddings (no file facts: the originals are not kept, so exact
/// duplicates and shortcuts are the CLI's `check`).
fn map_images(
    classes: &[String],
    items: &[(ImageId, usize)],
    embeddings: &HashMap<ImageId, Vec<f32>>,
) -> Result<MapAnswer, String> {
    let (mut ids, mut labels, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for &(id, label) in items {
        if let Some(row) = embeddings.get(&id) {
            ids.push(id);
            labels.push(label);
            rows.push(row.clone());
        }
    }
    let map = pca_map(&rows).map_err(|e| e.to_string())?;
    let facts = vec![None; rows.len()];
    let check = DataCheck::run(classes.len(), &labels, &rows, &facts, None, 0)
        .map_err(|e| e.to_string())?;
    let findings = check
        .findings
        .iter()
        .filter_map(|f| {
            let (kind, items) = match f {
                Finding::NearDuplicate { a, b, .. } => ("near_duplicate", vec![*a, *b]),
                Finding::LabelSuspect { item, .. } => ("label_suspect", vec![*item]),
                _ => return None,
            };
            Some(MapFinding {
                kind: kind.into(),
                ids: items.iter().filter_map(|&i| ids.get(i).copied()).collect(),
                advice: f.advice(classes, &labels),
            })
        })
        .collect();
    Ok(MapAnswer {
        flags: check
            .flags()
            .into_iter()
            .map(|f| f.into_iter().map(String::from).collect())
            .collect(),
        ids,
        labels,
        map,
        findings,
    })
}

/// Answers a [`ToWorker::Explain`]: each image's Grad-CAM from its stored activations.
async fn explain_images(requests: Vec<(ImageId, usize)>) {
    for (id, class) in requests {
        let (model, classifier, activations) = STATE.with_borrow(|s| {
            (
                s.model.clone(),
                s.classifier.clone(),
                s.activations.get(&id).cloned(),
            )
        });
        let heatmap = match (model, classifier, activations) {
            (None, _, _) | (_, None, _) => Err("train a model first".to_string()),
            (_, _, None) => Err("this image's activations are not kept".to_string()),
            (Some(model), Some(in_use), Some(activations)) => {
                predictor::explain(&in_use, &model, (&activations, STORED_BLOCKS), [class])
                    .await
                    .and_then(|mut maps| maps.pop().ok_or("no heat map was made".into()))
            }
        };
        post(&FromWorker::Explained { id, heatmap });
        yield_now().await;
    }
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

/// A job's network inputs (flat CHW, the image's then its views'), or its per-file message.
type NetworkInputs = Result<Vec<Vec<f32>>, String>;

/// Decodes a job's file once and gives the network's inputs (the image's, then its augmented
/// views', or the per-file message) and the thumbnail of the same pixels; the decoded image is
/// dropped on return.
fn network_inputs_and_thumbnail(job: &Job) -> (NetworkInputs, Option<Vec<u8>>) {
    let bytes = &job.bytes;
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
            let thumbnail = thumbnail_of(&image).ok();
            let inputs = if job.views == 0 {
                preprocess_decoded(&image).map(|input| vec![input])
            } else {
                let hash = content_hash(bytes);
                inputs_with_views(
                    &image,
                    &hash,
                    job.views,
                    job.seed,
                    &AugmentConfig::default(),
                )
            };
            (inputs.map_err(|e| e.to_string()), thumbnail)
        }
    }
}

/// How many of the queued jobs, costing `passes` forward passes each, go in one batch: as many
/// as fit in [`BATCH`] passes, and at least one when any is queued (however many views it
/// has).
fn jobs_in_batch(passes: impl Iterator<Item = usize>) -> usize {
    let (mut jobs, mut total) = (0, 0);
    for p in passes {
        if jobs > 0 && total + p > BATCH {
            break;
        }
        jobs += 1;
        total += p;
    }
    jobs
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
            let n = jobs_in_batch(s.queue.iter().map(Job::inputs));
            let jobs: Vec<Job> = s.queue.drain(..n).collect();
            s.embedding_now.extend(
                jobs.iter()
                    .filter(|job| job.kind == JobKind::Embed)
                    .map(|job| job.id),
            );
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
        // A job's inputs are its image's and its views'; one bad file fails alone.
        let (inputs, thumbnails): (Vec<_>, Vec<_>) =
            jobs.iter().map(network_inputs_and_thumbnail).unzip();
        let counts: Vec<usize> = inputs
            .iter()
            .map(|inputs| inputs.as_ref().map_or(1, Vec::len))
            .collect();
        let flat: Vec<Result<Vec<f32>, String>> = inputs
            .into_iter()
            .flat_map(|inputs| match inputs {
                Ok(inputs) => inputs.into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error)],
            })
            .collect();
        // Each image's activations for fine-tuning come from the same pass (its views' are
        // not kept).
        let mut outputs = embed_with_activations(&model, flat, STORED_BLOCKS, &device.device)
            .await
            .into_iter();
        let results = counts.into_iter().map(|count| {
            outputs
                .by_ref()
                .take(count)
                // Every output of the job is taken before its first error decides, so that
                // the next job's outputs stay its own.
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Result<Vec<_>, String>>()
        });
        let jobs: Vec<(ImageId, JobKind)> =
            jobs.into_iter().map(|job| (job.id, job.kind)).collect();
        for (((id, kind), result), thumbnail) in jobs.into_iter().zip(results).zip(thumbnails) {
            // The image's row first, then its views'.
            let result = result.and_then(|rows| {
                let mut rows = rows.into_iter();
                let image = rows.next().ok_or("no embedding was returned")?;
                Ok((image, rows.map(|view| view.embedding).collect::<Vec<_>>()))
            });
            match kind {
                JobKind::Embed => match result {
                    Ok((image, views)) => {
                        let mut bytes = encode_embedding(&image.embedding);
                        bytes.extend(encode_rows(&views));
                        bytes.extend(image.activations.to_bytes());
                        bytes.extend(thumbnail.unwrap_or_default());
                        let message = FromWorker::Embedded {
                            id,
                            error: None,
                            views: views.len() as u32,
                            activations: true,
                        };
                        STATE.with_borrow_mut(|s| {
                            if s.embedding_now.remove(&id) {
                                s.activations.insert(id, image.activations);
                                s.keep(
                                    id,
                                    ImageRows {
                                        embedding: image.embedding,
                                        views,
                                    },
                                );
                            }
                        });
                        post_with(&message, Some(bytes));
                    }
                    Err(error) => {
                        STATE.with_borrow_mut(|s| s.embedding_now.remove(&id));
                        post(&FromWorker::Embedded {
                            id,
                            error: Some(error),
                            views: 0,
                            activations: false,
                        });
                    }
                },
                JobKind::Classify => {}
                JobKind::Predict => {
                    let result = match (result, &classifier) {
                        (Err(error), _) => Err(error),
                        (Ok(_), None) => Err("train a model first".to_string()),
                        (Ok((image, _)), Some(in_use)) => {
                            predictor::predict(in_use, &model, image, &device).await
                        }
                    };
                    post_with(&FromWorker::Prediction { id, result }, thumbnail);
                }
            }
        }
        yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_packs_jobs_up_to_its_forward_passes_and_takes_a_large_one_alone() {
        assert_eq!(jobs_in_batch([1; 20].into_iter()), BATCH);
        assert_eq!(jobs_in_batch([3, 3, 3, 1].into_iter()), 2);
        assert_eq!(jobs_in_batch([9, 1].into_iter()), 1);
        assert_eq!(jobs_in_batch([1, 9].into_iter()), 1);
        assert_eq!(jobs_in_batch(std::iter::empty()), 0);
    }
}
