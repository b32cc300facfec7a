//! Times EfficientNet-Lite0 forward passes on Burn's `flex` CPU backend at batch 1 and 8.
//!
//! `cargo run -p medtransfer-core --example efficientnet_bench [-- weights/efficientnet-lite0.pth]`
//! (needs `scripts/fetch-weights.sh` first). The checkpoint is converted in memory. Native only.

/// The benchmark itself (native only).
#[cfg(not(target_arch = "wasm32"))]
mod bench {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use burn::tensor::{Device, Tensor};
    use medtransfer_core::efficientnet::{
        EfficientNetLite0, convert_pytorch_weights_to_bytes, load_from_bytes,
    };
    use medtransfer_core::smoke::read_f32;

    /// Runs one forward of a batch of `n` and reads the logits back (so the work really happens).
    fn forward(model: &EfficientNetLite0, n: usize, device: &Device) -> Result<Duration, String> {
        let input = Tensor::<4>::zeros([n, 3, 224, 224], device).add_scalar(0.25);
        let started = Instant::now();
        let logits = model.forward_logits(input);
        pollster::block_on(read_f32(logits)).map_err(|e| e.to_string())?;
        Ok(started.elapsed())
    }

    /// Converts the checkpoint, loads it and times forwards at batch 1 and 8.
    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let pth = std::env::args()
            .nth(1)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../weights/efficientnet-lite0.pth")
            });
        let device = Device::flex();
        let started = Instant::now();
        let bytes = convert_pytorch_weights_to_bytes(&pth)?;
        let converted = started.elapsed();
        let started = Instant::now();
        let model = load_from_bytes(&bytes, &device)?;
        println!(
            "convert {converted:.2?}, load from {} bytes {:.2?}",
            bytes.len(),
            started.elapsed()
        );
        for n in [1, 8] {
            forward(&model, n, &device)?; // warm-up
            let mut times: Vec<Duration> = (0..5)
                .map(|_| forward(&model, n, &device))
                .collect::<Result<_, _>>()?;
            times.sort();
            println!(
                "batch {n}: median {:.1?} (min {:.1?}, max {:.1?}) = {:.1?} per image",
                times[2],
                times[0],
                times[4],
                times[2] / n as u32
            );
        }
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    bench::main()
}

/// Nothing to time in a wasm build (conversion needs the filesystem).
#[cfg(target_arch = "wasm32")]
fn main() {}
