//! The page's root component and its sections.

use leptos::prelude::*;
use leptos::task::spawn_local;
use medtransfer_core::efficientnet::{
    CONVERTED_WEIGHTS_FILE_NAME, ImageNetLabels, LABELS_FILE_NAME, NUM_CLASSES, check_weights,
};
use medtransfer_core::smoke::run_smoke;
use medtransfer_core::{BackendKind, select_device};
use wasm_bindgen::JsCast;

use crate::cached_fetch::{FetchSource, Progress, evict, fetch_cached};
use crate::components::{
    ClassesSection, EmbeddingMapSection, PredictSection, ProjectSection, ResultsSection,
    TrainSection,
};
use crate::dom::{IMAGE_ACCEPT, read_file};
use crate::gpu_probe::probe_webgpu;
use crate::protocol::ImageId;
use crate::state::{Project, provide_project, use_project};

/// Cache API bucket for the pretrained files; bump the suffix when their format changes.
const WEIGHTS_CACHE: &str = "medtransfer-weights-v1";

/// What the start-up check found: the backend line and the smoke computation's outcome.
#[derive(Clone, Debug)]
struct StartupReport {
    backend: String,
    kind: BackendKind,
    smoke: Result<String, String>,
}

/// Where the pretrained model is in its loading.
#[derive(Clone, Debug, PartialEq)]
enum ModelState {
    /// Waiting for the compute device.
    Waiting,
    /// Downloading (or reading from the cache) the weights.
    Downloading(Progress),
    /// Fetched from `source` and handed to the compute worker, which loads it.
    Fetched(FetchSource),
    /// Loading failed; the message says why.
    Failed(String),
}

/// One picked image's ImageNet top-5, or why it could not be classified.
#[derive(Clone, Debug, PartialEq)]
struct ImageNetResult {
    /// The worker request's id: a stable, unique key for the list.
    key: ImageId,
    name: String,
    outcome: Result<ImageNetTop5, String>,
}

/// Top-5 classes and the raw logits (kept for checks against reference values).
#[derive(Clone, Debug, PartialEq)]
struct ImageNetTop5 {
    top5: Vec<(usize, String, f32)>,
    logits: Vec<f32>,
}

/// The page: header, privacy line, the compute backend and the pretrained network.
#[component]
pub fn App() -> impl IntoView {
    let report = RwSignal::new(None::<StartupReport>);
    let model_state = RwSignal::new(ModelState::Waiting);
    let labels = StoredValue::new(None::<ImageNetLabels>);
    let project = Project::new();
    provide_project(project);
    if let Err(error) = project.attach() {
        project.worker_backend.set(Some(Err(error)));
    }
    project.save_on_change();
    spawn_local(project.open_here());

    spawn_local(async move {
        let device = select_device(probe_webgpu().await).await;
        let smoke = run_smoke(&device.device)
            .await
            .map(|r| format!("{:?}", r.product))
            .map_err(|e| e.to_string());
        report.set(Some(StartupReport {
            backend: device.describe(),
            kind: device.kind,
            smoke,
        }));
        match load_pretrained(model_state).await {
            Ok((loaded, source, weights)) => {
                labels.set_value(Some(loaded));
                model_state.set(ModelState::Fetched(source));
                // The network runs in the worker only: the page's thread never computes with it.
                project.load_model(weights);
            }
            Err(error) => model_state.set(ModelState::Failed(error)),
        }
    });

    view! {
        <header>
            <h1>"MedTransfer"</h1>
            <p class="privacy">
                "Images are processed on this computer, in this page. Nothing is uploaded."
            </p>
        </header>
        <main>
            <ComputeSection report=report />
            <p data-testid="worker-backend" role="status">
                {move || match project.worker_backend.get() {
                    None => "Training runs in a background worker; starting it…".to_string(),
                    Some(Ok(backend)) => format!("Training and embeddings run in a background worker on: {backend}"),
                    Some(Err(error)) => format!("The background worker failed: {error}"),
                }}
            </p>
            <ProjectSection />
            <ClassesSection />
            <TrainSection />
            <ResultsSection />
            <PredictSection />
            <EmbeddingMapSection />
            <PretrainedSection model_state=model_state labels=labels />
        </main>
    }
}

/// Downloads (or reads from the cache) the ImageNet labels and the weights, checking that the
/// weights parse (without building a network on the page's thread); returns the weights'
/// bytes for the compute worker.
async fn load_pretrained(
    state: RwSignal<ModelState>,
) -> Result<(ImageNetLabels, FetchSource, Vec<u8>), String> {
    let (labels, _, _) = fetch_and_parse(
        LABELS_FILE_NAME,
        |_| {},
        |bytes| {
            let json = std::str::from_utf8(bytes)
                .map_err(|_| "the ImageNet label list is not text".to_string())?;
            ImageNetLabels::from_json(json).map_err(|e| e.to_string())
        },
    )
    .await?;
    let ((), source, weights) = fetch_and_parse(
        CONVERTED_WEIGHTS_FILE_NAME,
        |p| state.set(ModelState::Downloading(p)),
        |bytes| check_weights(bytes).map_err(|e| e.to_string()),
    )
    .await?;
    Ok((labels, source, weights))
}

/// Fetches `url` (from the cache when there) and parses it, returning the bytes too; a cached
/// copy that fails to parse is evicted and downloaded once more, so a damaged cache heals itself.
async fn fetch_and_parse<T>(
    url: &str,
    progress: impl Fn(Progress),
    parse: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<(T, FetchSource, Vec<u8>), String> {
    let (bytes, source) = fetch_cached(url, WEIGHTS_CACHE, &progress).await?;
    match parse(&bytes) {
        Ok(value) => Ok((value, source, bytes)),
        Err(error) if source == FetchSource::Cache => {
            web_sys::console::warn_1(
                &format!("cached {url} unusable ({error}); downloading it again").into(),
            );
            evict(url, WEIGHTS_CACHE).await;
            let (bytes, source) = fetch_cached(url, WEIGHTS_CACHE, &progress).await?;
            Ok((parse(&bytes)?, source, bytes))
        }
        Err(error) => Err(error),
    }
}

/// The backend in use and the result of the start-up self-check.
#[component]
fn ComputeSection(report: RwSignal<Option<StartupReport>>) -> impl IntoView {
    view! {
        <section aria-labelledby="compute-heading">
            <h2 id="compute-heading">"Compute"</h2>
            <p data-testid="backend" data-kind=move || report.get().map(|r| format!("{:?}", r.kind))>
                {move || {
                    report
                        .get()
                        .map(|r| r.backend)
                        .unwrap_or_else(|| "Starting the compute backend…".to_string())
                }}
            </p>
            <p data-testid="smoke-result" data-ok=move || report.get().map(|r| r.smoke.is_ok().to_string())>
                {move || match report.get().map(|r| r.smoke) {
                    None => String::new(),
                    Some(Ok(values)) => format!("Self-check passed: {values}"),
                    Some(Err(error)) => format!("Self-check failed: {error}"),
                }}
            </p>
        </section>
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The pretrained network: download progress, then a way to try it on any picture (the
/// classification runs in the compute worker).
#[component]
fn PretrainedSection(
    model_state: RwSignal<ModelState>,
    labels: StoredValue<Option<ImageNetLabels>>,
) -> impl IntoView {
    let project = use_project();
    // The last pick: (request id, file name) in order, and when it started.
    let pick = RwSignal::new(Vec::<(ImageId, String)>::new());
    let started = StoredValue::new(0.0f64);
    let ready = move || {
        matches!(model_state.get(), ModelState::Fetched(_))
            && project.worker_backend.get().is_some_and(|b| b.is_ok())
    };
    let results = Memo::new(move |_| {
        let pick = pick.get();
        project.classified.with(|done| {
            pick.iter()
                .filter_map(|(id, name)| {
                    let (_, result) = done.iter().find(|(d, _)| d == id)?;
                    let outcome = result.clone().and_then(|logits| {
                        if logits.len() != NUM_CLASSES {
                            return Err(format!("the network returned {} logits", logits.len()));
                        }
                        let top5 = labels
                            .with_value(|l| {
                                l.as_ref().map(|l| {
                                    l.top_k(&logits, 5)
                                        .into_iter()
                                        .map(|(p, label)| {
                                            (p.class, label.to_string(), p.probability)
                                        })
                                        .collect::<Vec<_>>()
                                })
                            })
                            .unwrap_or_default();
                        Ok(ImageNetTop5 { top5, logits })
                    });
                    Some(ImageNetResult {
                        key: *id,
                        name: name.clone(),
                        outcome,
                    })
                })
                .collect::<Vec<_>>()
        })
    });
    let busy = move || results.with(Vec::len) < pick.with(Vec::len);
    // (images, milliseconds) of the last finished pick: read, preprocess, forward, read-back.
    let timing = RwSignal::new(None::<(usize, f64)>);
    Effect::new(move || {
        let n = pick.with(Vec::len);
        if n > 0 && results.with(Vec::len) == n {
            timing.set(Some((n, js_sys::Date::now() - started.get_value())));
        }
    });
    let status_text = move || match model_state.get() {
        ModelState::Waiting => "Waiting for the compute backend…".to_string(),
        ModelState::Downloading(Progress {
            loaded,
            total: Some(total),
        }) => format!(
            "Loading the pretrained network: {} of {}",
            megabytes(loaded),
            megabytes(total)
        ),
        ModelState::Downloading(Progress {
            loaded,
            total: None,
        }) => format!("Loading the pretrained network: {}", megabytes(loaded)),
        ModelState::Fetched(source) => match project.worker_backend.get() {
            None => "Starting the pretrained network in the background worker…".to_string(),
            Some(Err(error)) => format!("The pretrained network could not be loaded: {error}"),
            Some(Ok(_)) if source == FetchSource::Cache => {
                "EfficientNet-Lite0 (ImageNet) ready, from this browser's cache.".to_string()
            }
            Some(Ok(_)) => {
                "EfficientNet-Lite0 (ImageNet) ready; kept in this browser for next time."
                    .to_string()
            }
        },
        ModelState::Failed(error) => format!("The pretrained network could not be loaded: {error}"),
    };
    let state_attr = move || match (model_state.get(), project.worker_backend.get()) {
        (ModelState::Failed(_), _) | (ModelState::Fetched(_), Some(Err(_))) => "failed",
        (ModelState::Fetched(_), Some(Ok(_))) => "ready",
        _ => "loading",
    };
    let source_attr = move || match model_state.get() {
        ModelState::Fetched(FetchSource::Cache) if ready() => Some("cache"),
        ModelState::Fetched(FetchSource::Network) if ready() => Some("network"),
        _ => None,
    };
    let progress_value = move || match model_state.get() {
        ModelState::Downloading(p) => p.loaded as f64,
        ModelState::Fetched(_) => 1.0,
        _ => 0.0,
    };
    let progress_max = move || match model_state.get() {
        ModelState::Downloading(Progress { total: Some(t), .. }) => t as f64,
        _ => 1.0,
    };
    let on_pick = move |event: leptos::ev::Event| {
        let Some(input) = event
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        else {
            return;
        };
        let files: Vec<web_sys::File> = input
            .files()
            .map(|list| (0..list.length()).filter_map(|i| list.get(i)).collect())
            .unwrap_or_default();
        input.set_value("");
        if files.is_empty() {
            return;
        }
        started.set_value(js_sys::Date::now());
        timing.set(None);
        pick.set(Vec::new());
        spawn_local(async move {
            let mut requests = Vec::with_capacity(files.len());
            for file in files {
                let bytes = read_file(&file).await;
                requests.push((project.classify(bytes), file.name()));
            }
            pick.set(requests);
        });
    };
    view! {
        <section aria-labelledby="pretrained-heading">
            <h2 id="pretrained-heading">"Pretrained network"</h2>
            <p data-testid="model-status" data-state=state_attr data-source=source_attr role="status">
                {status_text}
            </p>
            <progress
                data-testid="model-progress"
                aria-label="Pretrained network download"
                value=progress_value
                max=progress_max
            ></progress>
            <label class="picker">
                "Try it on pictures (ImageNet classes): "
                <input
                    type="file"
                    accept=IMAGE_ACCEPT
                    multiple
                    data-testid="imagenet-files"
                    disabled=move || !ready() || busy()
                    on:change=on_pick
                />
            </label>
            <p role="status">{move || busy().then_some("Running the network…")}</p>
            <p
                data-testid="imagenet-timing"
                data-count=move || timing.get().map(|(n, _)| n)
                data-ms=move || timing.get().map(|(_, ms)| ms)
            >
                {move || {
                    timing
                        .get()
                        .map(|(n, ms)| {
                            format!(
                                "{n} image(s) in {:.2} s ({:.1} images/s)",
                                ms / 1000.0,
                                n as f64 / (ms / 1000.0).max(1e-9),
                            )
                        })
                }}
            </p>
            <ul class="imagenet-results">
                <For each=move || results.get() key=|r| r.key let:result>
                    <ImageNetResultItem result=result />
                </For>
            </ul>
        </section>
    }
}

/// One image's result: its top-5 classes, or its error.
#[component]
fn ImageNetResultItem(result: ImageNetResult) -> impl IntoView {
    let name = result.name.clone();
    match result.outcome {
        Ok(top) => {
            let logits = format!("{:?}", top.logits);
            let top1 = top.top5.first().map(|(index, _, _)| *index);
            view! {
                <li data-testid="imagenet-result" data-name=name data-top1=top1 data-logits=logits>
                    <strong>{result.name}</strong>
                    <ol>
                        {top
                            .top5
                            .into_iter()
                            .map(|(index, label, prob)| {
                                view! { <li>{format!("{label} ({index}) — {:.1}%", prob * 100.0)}</li> }
                            })
                            .collect_view()}
                    </ol>
                </li>
            }
            .into_any()
        }
        Err(error) => {
            let message = error.clone();
            view! {
                <li data-testid="imagenet-result" data-name=name data-error=error class="error">
                    <strong>{result.name}</strong>
                    ": "
                    {message}
                </li>
            }
            .into_any()
        }
    }
}
