//! Embeddings per second of EfficientNet-Lite0 at batch 1 and 32, natively.
//!
//! `cargo run -p medtransfer-core --example efficientnet_bench -- [flex|wgpu] [WEIGHTS.bpk]`
//! (`flex`, the default, is Burn's pure-Rust CPU backend; `wgpu` the GPU through wgpu, here a
//! software renderer when no GPU driver exists). Needs the converted weights (scripts/setup.sh).
//! Reports the median of 5 timed runs after one warm-up, and the per-op profile is left to the
//! benchmarks issue. Native only.

/// The benchmark itself (native only).
#[cfg(not(target_arch = "wasm32"))]
mod bench {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use burn::tensor::Device;
    use medtransfer_core::efficientnet::{EfficientNetLite0, load_from_bytes};
    use medtransfer_core::inference::run_batch;
    use medtransfer_core::{GpuPreference, select_device};

    /// Embeddings of `n` preprocessed images as the app and CLI compute them ([`run_batch`]:
    /// upload, forward passes of at most 8, async read-back).
    fn forward(model: &EfficientNetLite0, n: usize, device: &Device) -> Result<Duration, String> {
        let images = vec![vec![0.25f32; 3 * 224 * 224]; n];
        let started = Instant::now();
        pollster::block_on(run_batch(model, &images, device)).map_err(|e| e.to_string())?;
        Ok(started.elapsed())
    }

    /// Loads the weights and times embeddings at batch 1 and 32.
    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let mut args = std::env::args().skip(1);
        let backend = args.next().unwrap_or_else(|| "flex".to_string());
        let weights = args.next().map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../weights/efficientnet-lite0.bpk")
        });
        let device = match backend.as_str() {
            "flex" => Device::flex(),
            "wgpu" => {
                let selected = pollster::block_on(select_device(GpuPreference::PreferGpu {
                    adapter_label: None,
                }));
                println!("device: {}", selected.describe());
                selected.device
            }
            other => return Err(format!("unknown backend {other}: use flex or wgpu").into()),
        };
        let model = load_from_bytes(&std::fs::read(&weights)?, &device)?;
        for n in [1, 32] {
            forward(&model, n, &device)?; // warm-up (and kernel compilation on wgpu)
            let runs = if n == 1 { 9 } else { 3 };
            let mut times: Vec<Duration> = (0..runs)
                .map(|_| forward(&model, n, &device))
                .collect::<Result<_, _>>()?;
            times.sort();
            let median = times[runs / 2];
            println!(
                "{backend} batch {n:>2}: median {median:.1?} per batch ({} runs) = {:.1} embeddings/s",
                runs,
                n as f64 / median.as_secs_f64()
            );
        }
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    bench::main()
}

/// Nothing to time in a wasm build (it reads the weights from a file).
#[cfg(target_arch = "wasm32")]
fn main() {}
