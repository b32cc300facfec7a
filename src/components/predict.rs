//! New images → class probabilities, with the model in use.

use leptos::prelude::*;
use leptos::task::spawn_local;
use medtransfer_core::metrics::predicted_class;

use super::heatmap::{HeatmapToggle, heatmap_overlay};
use crate::dom::{IMAGE_ACCEPT, file_url, files_of_input, read_file};
use crate::protocol::{Envelope, ToWorker};
use crate::state::{PredictionEntry, use_project};

/// New images → class probabilities.
#[component]
pub fn PredictSection() -> impl IntoView {
    let project = use_project();
    let show_heatmaps = RwSignal::new(false);
    let trained =
        move || project.has_model.get() && project.worker_backend.get().is_some_and(|b| b.is_ok());
    let on_pick = move |event: leptos::ev::Event| {
        for file in files_of_input(&event) {
            let id = project.next_id();
            let url = file_url(&file);
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
                project.send(Envelope::with_bytes(ToWorker::Predict { id }, bytes));
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
            {move || {
                // Which rule decides, for two classes: the threshold of the Results section.
                let classes = project.training.get().result.map(|r| r.classes).unwrap_or_default();
                (classes.len() == 2 && !project.predictions.get().is_empty()).then(|| {
                    let positive = classes[1].clone();
                    view! {
                        <p data-testid="prediction-rule">
                            {move || format!(
                                "An image is called {positive} when its probability of {positive} is at least {:.3}, the decision threshold under Results.",
                                project.threshold.get()
                            )}
                        </p>
                    }
                })
            }}
            {move || {
                // A model without a reference (too few training images, or an older file).
                let unchecked = project.predictions.get().iter().any(|p| {
                    matches!(&p.result, Some(Ok(prediction)) if prediction.ood.is_none())
                });
                unchecked.then(|| view! {
                    <p class="hint" data-testid="ood-unavailable">
                        {format!(
                            "These predictions are not checked for images unlike the training images: that check needs a model trained on at least {} images with this version.",
                            medtransfer_core::ood::MIN_IMAGES
                        )}
                    </p>
                })
            }}
            {move || {
                let explained = project.predictions.get().iter().any(|p| {
                    matches!(&p.result, Some(Ok(prediction)) if !prediction.heatmaps.is_empty())
                });
                explained.then(|| view! {
                    <HeatmapToggle show=show_heatmaps testid="gradcam-toggle"
                        label="Show where the model looked (Grad-CAM: red marks the strongest evidence for the class it gives)" />
                })
            }}
            <ul class="predictions" class:with-heatmaps=move || show_heatmaps.get()>
                {move || {
                    let classes = project.training.get().result.map(|r| r.classes).unwrap_or_default();
                    project.predictions.get().into_iter().map(|p| {
                        match p.result {
                            None => view! { <li><img src=p.url alt=p.name.clone() width="56" height="56" />{p.name}": computing…"</li> }.into_any(),
                            Some(Err(error)) => view! { <li class="error" data-testid="prediction-error">{p.name}": "{error}</li> }.into_any(),
                            Some(Ok(prediction)) => {
                                let probs = prediction.probabilities;
                                let threshold = (probs.len() == 2).then(|| project.threshold.get());
                                let best = predicted_class(&probs, threshold);
                                let label = classes.get(best).cloned().unwrap_or_default();
                                let prob = probs.get(best).copied().unwrap_or(0.0);
                                let label_attr = label.clone();
                                let ood_attr = prediction.ood.map(|o| o.score.to_string());
                                let calibrated_on = prediction.ood_calibration_images;
                                let warning = prediction.ood.filter(|o| o.out_of_distribution).map(|o| view! {
                                    <p class="ood-warning" role="note" data-testid="ood-warning">
                                        {ood_warning(o.score, calibrated_on)}
                                    </p>
                                });
                                let heatmap = prediction.heatmaps.get(best).cloned();
                                view! {
                                    <li data-testid="prediction" data-label=label_attr data-prob=prob.to_string() data-ood-score=ood_attr>
                                        <span class="thumb">
                                            <img src=p.url alt=p.name.clone() width="56" height="56" />
                                            {move || show_heatmaps.get().then(|| heatmap.as_ref().and_then(|h| heatmap_overlay(h, 56))).flatten()}
                                        </span>
                                        <div>
                                        <strong>{p.name}</strong>": "{label}
                                        {warning}
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

/// The warning on a prediction whose OOD `score` is above 1, from a threshold calibrated on
/// `calibrated_on` training images.
fn ood_warning(score: f32, calibrated_on: usize) -> String {
    let rough = if calibrated_on < ROUGH_BELOW {
        format!(
            " With only {calibrated_on} training images this check is rough: add images to make it surer."
        )
    } else {
        String::new()
    };
    // Just above the threshold is a weaker sign than far above it.
    let unlike = if score < 1.25 {
        "Somewhat unlike"
    } else {
        "Unlike"
    };
    format!(
        "{unlike} the training images (out-of-distribution score {score:.2}: above 1, it is farther from them than 95% of the {calibrated_on} training images are from the others). This prediction may not hold: check that it is the kind of image the model was trained on.{rough}"
    )
}

/// Under this many calibration images the 95% quantile is their largest out-of-fold distance
/// (one of them sets the threshold).
const ROUGH_BELOW: usize = 20;
