//! A Grad-CAM heat map laid over an image's thumbnail (core's [`medtransfer_core::gradcam`]),
//! shared by the predictions and the confusion matrix's misclassified images.

use leptos::prelude::*;
use medtransfer_core::gradcam::{Heatmap, heatmap_png};

use crate::dom::png_data_url;

/// The checkbox that shows or hides a section's heat maps (`testid`: its `data-testid`).
#[component]
pub fn HeatmapToggle(
    show: RwSignal<bool>,
    testid: &'static str,
    label: &'static str,
) -> impl IntoView {
    view! {
        <label class="gradcam-toggle">
            <input type="checkbox" data-testid=testid
                prop:checked=move || show.get()
                on:change=move |e| show.set(event_target_checked(&e)) />
            " "{label}
        </label>
    }
}

/// Side of the heat-map images in pixels (CSS scales them over the thumbnail, smoothly).
const HEATMAP_PIXELS: u32 = 112;

/// The heat map as an `<img class="heatmap">` of `size` CSS pixels, with its peak (0–1 image
/// coordinates; absent without evidence) in `data-peak-x`/`data-peak-y` and in words in its alt text; `None` when it
/// cannot be drawn.
pub fn heatmap_overlay(heatmap: &Heatmap, size: u32) -> Option<impl IntoView + use<>> {
    let url = png_data_url(&heatmap_png(heatmap, HEATMAP_PIXELS).ok()?);
    let alt = match heatmap.peak {
        Some([x, y]) => format!(
            "Grad-CAM heat map; strongest evidence at {:.0}% across, {:.0}% down",
            x * 100.0,
            y * 100.0
        ),
        None => "Grad-CAM heat map; no evidence for this class anywhere in the image".into(),
    };
    let [x, y] = heatmap
        .peak
        .map_or([None, None], |[x, y]| [Some(x), Some(y)]);
    Some(view! {
        <img class="heatmap" data-testid="heatmap" src=url width=size height=size alt=alt
            data-peak-x=x.map(|v| v.to_string()) data-peak-y=y.map(|v| v.to_string()) />
    })
}
