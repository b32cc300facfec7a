//! The page's root component.

use leptos::prelude::*;
use leptos::task::spawn_local;
use medtransfer_core::smoke::run_smoke;
use medtransfer_core::{BackendKind, select_device};

use crate::gpu_probe::probe_webgpu;

/// What the start-up check found: the backend line and the smoke computation's outcome.
#[derive(Clone, Debug)]
struct StartupReport {
    backend: String,
    kind: BackendKind,
    smoke: Result<String, String>,
}

/// The page: header, privacy line and the compute backend in use.
#[component]
pub fn App() -> impl IntoView {
    let report = RwSignal::new(None::<StartupReport>);
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
    });

    view! {
        <header>
            <h1>"MedTransfer"</h1>
            <p class="privacy">
                "Images are processed on this computer, in this page. Nothing is uploaded."
            </p>
        </header>
        <main>
            <section aria-labelledby="compute-heading">
                <h2 id="compute-heading">"Compute"</h2>
                <p data-testid="backend" data-kind=move || report.get().map(|r| format!("{:?}", r.kind))>
                    {move || report.get().map(|r| r.backend).unwrap_or_else(|| "Starting the compute backend…".to_string())}
                </p>
                <p data-testid="smoke-result" data-ok=move || report.get().map(|r| r.smoke.is_ok().to_string())>
                    {move || match report.get().map(|r| r.smoke) {
                        None => String::new(),
                        Some(Ok(values)) => format!("Self-check passed: {values}"),
                        Some(Err(error)) => format!("Self-check failed: {error}"),
                    }}
                </p>
            </section>
        </main>
    }
}
