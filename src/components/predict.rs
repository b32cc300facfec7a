//! New images → class probabilities, with the model in use.

use leptos::prelude::*;
use leptos::task::spawn_local;
use medtransfer_core::metrics::predicted_class;

use crate::dom::{IMAGE_ACCEPT, file_url, files_of_input, read_file};
use crate::protocol::{Envelope, ToWorker};
use crate::state::{PredictionEntry, use_project};

/// New images → class probabilities.
#[component]
pub fn PredictSection() -> impl IntoView {
    let project = use_project();
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
