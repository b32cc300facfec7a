//! A Grad-CAM heat map laid over an image's thumbnail (core's [`medtransfer_core::gradcam`]),
//! shared by the predictions and the confusion matrix's misclassified images.

use leptos::prelude::*;
use medtransfer_core::gradcam::{Heatmap, heatmap_png};

use crate::dom::png_data_url;

/// Side of the heat-map images in pixels (CSS scales them over the thumbnail, smoothly).
const HEATMAP_PIXELS: u32 = 112;

/// The heat map as an `<img class="heatmap">` of `size` CSS pixels, with its peak (0–1 image
/// coordinates) in `data-peak-x`/`data-peak-y` and in words in its alt text; `None` when it
/// cannot be drawn.
pub fn heatmap_overlay(heatmap: &Heatmap, size: u32) -> Option<impl IntoView + use<>> {
    let url = png_data_url(&heatmap_png(heatmap, HEATMAP_PIXELS).ok()?);
    let [x, y] = heatmap.peak;
    Some(view! {
        <img class="heatmap" data-testid="heatmap" src=url width=size height=size
            alt=format!("Grad-CAM heat map; strongest evidence at {:.0}% across, {:.0}% down", x * 100.0, y * 100.0)
            data-peak-x=x.to_string() data-peak-y=y.to_string() />
    })
}
