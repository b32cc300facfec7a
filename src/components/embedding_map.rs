//! The embedding map: every embedded image as a point on the first two principal components of
//! the embeddings (core's [`medtransfer_core::embedding_map`]), coloured by class, the
//! validation's misclassified images ringed in black and the data check's near-duplicates and
//! label suspects in orange, a thumbnail on hover or focus, a click keeps it open; below, the
//! check's findings with what to do.

use std::collections::HashSet;

use leptos::prelude::*;

use crate::protocol::{ImageId, MapAnswer};
use crate::state::{Project, use_project};

/// Class colours (Tableau 10), repeated past ten classes.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// The plot's size in SVG units, and the margin kept free around the points.
const WIDTH: f32 = 480.0;
const HEIGHT: f32 = 320.0;
const MARGIN: f32 = 12.0;

/// The embedding map section.
#[component]
pub fn EmbeddingMapSection() -> impl IntoView {
    let project = use_project();
    let shown = RwSignal::new(None::<ImageId>);
    let kept = RwSignal::new(None::<ImageId>);
    let can_draw = move || {
        project.ready_counts().iter().sum::<usize>() >= 2
            && project.worker_backend.get().is_some_and(|b| b.is_ok())
    };
    view! {
        <section aria-labelledby="map-heading" data-testid="embedding-map">
            <h2 id="map-heading">"Embedding map"</h2>
            <p class="hint">"Every embedded image as a point on the two directions along which the network's embeddings vary most (PCA): images it finds alike lie close together. A class that mixes with another is hard to tell apart; a lone point among another class may be mislabelled."</p>
            <button data-testid="draw-map" disabled=move || !can_draw()
                on:click=move |_| project.draw_embedding_map()>"Draw the map"</button>
            {move || match project.embedding_map.get() {
                None => None,
                Some(Err(error)) => Some(view! { <p class="error" data-testid="map-error">{error}</p> }.into_any()),
                Some(Ok(answer)) => Some(map_view(project, answer, shown, kept).into_any()),
            }}
        </section>
    }
}

fn map_view(
    project: Project,
    answer: MapAnswer,
    shown: RwSignal<Option<ImageId>>,
    kept: RwSignal<Option<ImageId>>,
) -> impl IntoView {
    let names: Vec<String> = project
        .classes
        .get_untracked()
        .iter()
        .map(|c| c.name.get_untracked())
        .collect();
    let points = &answer.map.points;
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for p in points {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let scale = |v: f32, k: usize, size: f32| {
        let span = (hi[k] - lo[k]).max(f32::EPSILON);
        MARGIN + (v - lo[k]) / span * (size - 2.0 * MARGIN)
    };
    let wrong: HashSet<ImageId> = project
        .training
        .with(|t| t.misclassified().into_iter().map(|(id, _)| id).collect());
    let circles = answer
        .ids
        .iter()
        .zip(points)
        .zip(answer.labels.iter().zip(&answer.flags))
        .map(|((&id, p), (&label, flags))| {
            let class = names.get(label).cloned().unwrap_or_default();
            let name = project.image_url(id).map(|(_, n)| n).unwrap_or_default();
            // SVG's y grows downwards: the second axis is drawn upwards.
            let (cx, cy) = (scale(p[0], 0, WIDTH), HEIGHT - scale(p[1], 1, HEIGHT));
            view! {
                <circle class="map-point" class:misclassified=wrong.contains(&id) class:flagged=!flags.is_empty()
                    data-testid="map-point" data-id=id.to_string() data-class=class.clone()
                    data-flags=flags.join(" ") data-x=p[0].to_string() data-y=p[1].to_string()
                    cx=cx.to_string() cy=cy.to_string() r="5" fill=PALETTE[label % PALETTE.len()]
                    tabindex="0" role="button" aria-label=format!("{name}, {class}")
                    on:mouseenter=move |_| shown.set(Some(id))
                    on:focus=move |_| shown.set(Some(id))
                    on:mouseleave=move |_| shown.set(None)
                    on:blur=move |_| shown.set(None)
                    on:keydown=move |e: leptos::ev::KeyboardEvent| {
                        if e.key() == "Enter" || e.key() == " " {
                            e.prevent_default();
                            kept.set(Some(id));
                        }
                    }
                    on:click=move |_| kept.set(Some(id))>
                    <title>{format!("{name} ({class})")}</title>
                </circle>
            }
        })
        .collect_view();
    let [first, second] = answer.map.explained_variance_ratio;
    let legend = names
        .iter()
        .enumerate()
        .map(|(i, n)| view! { <li><svg width="10" height="10" aria-hidden="true"><circle cx="5" cy="5" r="5" fill=PALETTE[i % PALETTE.len()] /></svg>" "{n.clone()}</li> })
        .collect_view();
    let findings = answer
        .findings
        .iter()
        .map(|f| {
            let files: Vec<String> = f.ids.iter().filter_map(|&id| project.image_url(id).map(|(_, n)| n)).collect();
            view! {
                <li data-testid="map-finding" data-kind=f.kind.clone()>
                    <strong>{f.kind.replace('_', " ")}</strong>": "{files.join(", ")}". "{f.advice.clone()}
                </li>
            }
        })
        .collect_view();
    let count = answer.ids.len();
    let none_found = answer.findings.is_empty();
    view! {
        <div class="map">
            <svg class="map-plot" viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img"
                aria-label=format!("Embedding map of {count} images")>
                {circles}
            </svg>
            <div class="map-side">
                <ul class="map-legend">{legend}
                    <li><span class="ring-black">"○"</span>" misclassified on validation"</li>
                    <li><span class="ring-orange">"○"</span>" near-duplicate or label suspect"</li>
                </ul>
                {move || shown.get().or(kept.get()).and_then(|id| project.image_url(id).map(|(url, name)| view! {
                    <figure data-testid="map-preview">
                        <img src=url alt=name.clone() width="112" height="112" />
                        <figcaption>{name}</figcaption>
                    </figure>
                }))}
            </div>
        </div>
        <p class="hint" data-testid="map-axes">{format!(
            "{count} images. Across: the first principal component ({:.0}% of the embeddings' variance); up: the second ({:.0}%). Draw again after adding or removing images.",
            first * 100.0, second * 100.0
        )}</p>
        <h3>"Data check on the embeddings"</h3>
        {none_found.then(|| view! { <p data-testid="map-no-findings">"No near-duplicates and no label suspects. (Exact duplicates and shortcuts such as image size need the files: run `medtransfer check` on the folder.)"</p> })}
        <ul class="map-findings" data-testid="map-findings">{findings}</ul>
    }
}
