//! The choice of fine-tuning the network's last blocks with the head, what it costs, and how
//! many images can take part.

use leptos::prelude::*;
use medtransfer_core::efficientnet::forward_macs;
use medtransfer_core::train::limits;

use crate::state::images::TRAIN_BLOCK_CHOICES;
use crate::state::{ImageStatus, use_project};

/// An epoch of fine-tuning `blocks` blocks against one forward pass of the whole network per
/// image (the tail's forward and its backward, about twice the forward).
fn epoch_cost_ratio(blocks: usize) -> f64 {
    3.0 * forward_macs(Some(blocks)) as f64 / forward_macs(None) as f64
}

fn label(blocks: usize) -> String {
    match blocks {
        0 => "No: train the head alone".into(),
        2 => "The last 2 blocks".into(),
        5 => "The last 5 blocks (2 stages)".into(),
        n => format!("The last {n} blocks (3 stages)"),
    }
}

/// The number typed into an input.
fn number(event: &leptos::ev::Event) -> Option<f64> {
    event_target_value(event).parse().ok()
}

/// "Fine-tune the last blocks": none, 2, 5 or 8, with a time estimate.
#[component]
pub fn FineTuneChoice() -> impl IntoView {
    let project = use_project();
    let blocks = project.train_blocks;
    // (embedded images with activations, embedded images)
    let counts = move || {
        let (mut with, mut all) = (0, 0);
        for class in project.classes.get() {
            class.images.with(|images| {
                for image in images.iter().filter(|i| i.status == ImageStatus::Ready) {
                    all += 1;
                    with += usize::from(image.activations);
                }
            })
        }
        (with, all)
    };
    let settings = project.settings;
    let estimate = move || {
        let n = blocks.get();
        if n == 0 {
            return None;
        }
        let ratio = epoch_cost_ratio(n);
        let (images, _) = counts();
        let training = 1.0 - settings.get().validation_share;
        let rate = project.embed_started.get().and_then(|started| {
            let done = project.embedded_count.get();
            let seconds = (js_sys::Date::now() - started) / 1000.0;
            (done > 0).then(|| done as f64 / seconds.max(1e-3))
        });
        let epochs = 10.0;
        Some(match rate {
            Some(rate) if images > 0 => format!(
                "Each epoch costs about {ratio:.2}× one embedding pass over the training images: \
                 at this session's {rate:.1} images/s, up to 10 epochs of {images} images take \
                 about {:.0} s, after the head's own fit.",
                epochs * images as f64 * training * ratio / rate
            ),
            _ => format!(
                "Each epoch costs about {ratio:.2}× one embedding pass over the training images \
                 (up to 10 epochs, after the head's own fit)."
            ),
        })
    };
    let status = move || {
        let (with, all) = counts();
        (blocks.get() > 0 && with < all).then(|| {
            format!(
                "{with} of {all} images have the activations fine-tuning starts from; the others \
                 were embedded by an older page or imported from a project file it wrote: train \
                 the head alone, or add those images again from their files."
            )
        })
    };
    view! {
        <label>
            "Fine-tune the last blocks "
            <select data-testid="train-blocks" disabled=move || project.training.get().running on:change=move |e| {
                if let Ok(n) = event_target_value(&e).parse::<usize>() {
                    blocks.set(n);
                }
            }>
                {TRAIN_BLOCK_CHOICES.iter().map(|&n| view! {
                    <option value=n.to_string() selected=move || blocks.get() == n>{label(n)}</option>
                }).collect_view()}
            </select>
            <small>"Trains the network's last blocks together with the head, at a lower learning rate, after the head is fitted by the recipe; the validation share is held out to stop on and to measure. It can fit images unlike ImageNet's better, and costs more time."</small>
        </label>
        {move || (blocks.get() > 0).then(|| view! {
            <label>
                "Held out to stop fine-tuning and to measure it "
                <input type="number" step="0.05" min="0.05" max=*limits::VALIDATION_SHARE.end() data-testid="fine-tune-share"
                    prop:value=move || settings.get().validation_share
                    on:change=move |e| if let Some(v) = number(&e) {
                        settings.update(|s| { s.validation_share = v.max(0.05); *s = s.clone().clamped() })
                    } />
                <small>"The share of each class's images (the manual recipe's validation share)."</small>
            </label>
        })}
        {move || estimate().map(|e| view! { <p class="hint" data-testid="fine-tune-estimate">{e}</p> })}
        {move || status().map(|s| view! { <p class="hint" data-testid="fine-tune-status">{s}</p> })}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeper_fine_tuning_costs_more_per_epoch() {
        let ratios: Vec<f64> = [2, 5, 8].into_iter().map(epoch_cost_ratio).collect();
        assert!(ratios.windows(2).all(|w| w[0] < w[1]), "{ratios:?}");
        assert!(ratios[0] > 0.3 && ratios[2] < 3.0, "{ratios:?}");
    }
}
