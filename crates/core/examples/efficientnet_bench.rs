//! Embeddings per second of EfficientNet-Lite0 at batch 1 and 32, natively.
//!
//! `cargo run -p medtransfer-core --example efficientnet_bench -- [flex|flex-graph|wgpu] [profile]
//!  [WEIGHTS.bpk] [--batch N] [--runs R] [--json]`
//! (`flex`, the default, is the CPU path as the app and CLI run it: MedTransfer's own CPU kernels,
//! `crates/kernels`; `flex-graph` the Burn graph op by op on Burn's pure-Rust CPU backend, which
//! the CPU path ran before those kernels; `wgpu` the GPU through wgpu, here a software renderer
//! when no GPU driver exists). Needs the converted weights (scripts/setup.sh).
//! Reports the median of several timed runs after one warm-up, at batch 1 and 32 or only at
//! `--batch N`. With `--json`, one JSON object per batch size on its own line (every run's
//! seconds, the median, embeddings/s, and the process's peak resident memory so far, which
//! `tools/bench/native.py` reads; run one batch size per process for a per-batch peak). With
//! `profile`, also the time spent in each kind of layer: for `flex`, in the CPU kernels over 8
//! images run one at a time; otherwise in each op of the Burn graph at batch 8 (each op is
//! synchronised by a one-value read-back, which adds a little to every op). Native only.

/// The benchmark itself (native only).
#[cfg(not(target_arch = "wasm32"))]
mod bench {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use std::collections::BTreeMap;

    use burn::tensor::activation::relu6;
    use burn::tensor::{Device, Tensor};
    use medtransfer_core::efficientnet::cpu::cpu_network;
    use medtransfer_core::efficientnet::{EfficientNetLite0, load_from_bytes};
    use medtransfer_core::inference::{Engine, run_batch_on};
    use medtransfer_core::readback::read_f32;
    use medtransfer_core::{GpuPreference, select_device};

    /// Embeddings of `n` preprocessed images as the app and CLI compute them ([`run_batch_on`],
    /// results read back), with the given engine.
    fn forward(
        model: &EfficientNetLite0,
        n: usize,
        device: &Device,
        engine: Engine,
    ) -> Result<Duration, String> {
        let images = vec![vec![0.25f32; 3 * 224 * 224]; n];
        let started = Instant::now();
        pollster::block_on(run_batch_on(model, &images, device, engine))
            .map_err(|e| e.to_string())?;
        Ok(started.elapsed())
    }

    /// Waits for `x` to be computed by reading one value back.
    fn sync(x: &Tensor<4>) -> Result<(), String> {
        let one = x.clone().slice([0..1, 0..1, 0..1, 0..1]);
        pollster::block_on(read_f32(one))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Runs `op`, synchronises, and adds its time to `name` in `totals`.
    fn timed(
        totals: &mut BTreeMap<String, Duration>,
        name: String,
        op: impl FnOnce() -> Tensor<4>,
    ) -> Result<Tensor<4>, String> {
        let started = Instant::now();
        let out = op();
        sync(&out)?;
        *totals.entry(name).or_default() += started.elapsed();
        Ok(out)
    }

    /// Time per kind of layer in MedTransfer's CPU kernels (the `flex` path), over `n` images
    /// run one at a time (each layer split over the cores).
    fn profile_kernels(model: &EfficientNetLite0, n: usize) -> Result<(), String> {
        let network = pollster::block_on(cpu_network(model)).map_err(|e| e.to_string())?;
        let image = vec![0.25f32; 3 * 224 * 224];
        let images = vec![image.as_slice(); n];
        let times = network
            .profile(&images, 224, 224)
            .map_err(|e| e.to_string())?;
        print_profile(
            &format!("per-layer profile of the CPU kernels, {n} images one at a time"),
            times.by_kind.into_iter().collect(),
        );
        Ok(())
    }

    /// Prints `totals` largest first, with each one's share of the sum.
    fn print_profile(title: &str, totals: BTreeMap<String, Duration>) {
        let total: Duration = totals.values().sum();
        println!("{title}, total {total:.1?}:");
        let mut rows: Vec<_> = totals.into_iter().collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.1));
        for (name, time) in rows {
            let share = 100.0 * time.as_secs_f64() / total.as_secs_f64();
            println!("  {name:<36} {time:>10.1?}  {share:5.1}%");
        }
    }

    /// Time per kind of operation of the Burn graph (stem, 1×1 expand, k×k depthwise by kernel
    /// and stride, 1×1 project, skip add, head, pooling) over one forward of `n` images.
    fn profile(model: &EfficientNetLite0, n: usize, device: &Device) -> Result<(), String> {
        let mut totals = BTreeMap::new();
        let x = Tensor::<4>::zeros([n, 3, 224, 224], device).add_scalar(0.25);
        sync(&x)?;
        let mut x = timed(&mut totals, "stem conv 3x3/2 + relu6".into(), || {
            relu6(model.stem.forward(x))
        })?;
        for block in &model.blocks {
            let input = x.clone();
            if let Some(expand) = &block.expand {
                x = timed(&mut totals, "expand conv 1x1 + relu6".into(), || {
                    relu6(expand.forward(x))
                })?;
            }
            let [_, _, k, _] = block.depthwise.weight.dims();
            let name = format!("depthwise conv {k}x{k}/{} + relu6", block.depthwise.stride);
            x = timed(&mut totals, name, || relu6(block.depthwise.forward(x)))?;
            x = timed(&mut totals, "project conv 1x1".into(), || {
                block.project.forward(x)
            })?;
            if block.skip {
                x = timed(&mut totals, "skip add".into(), || x + input)?;
            }
        }
        let x = timed(&mut totals, "head conv 1x1 + relu6".into(), || {
            relu6(model.head.forward(x))
        })?;
        let started = Instant::now();
        let [b, c, h, w] = x.dims();
        let pooled = x.reshape([b, c, h * w]).mean_dim(2).reshape([b, c]);
        pollster::block_on(read_f32(pooled)).map_err(|e| e.to_string())?;
        totals.insert("global average pool + read-back".into(), started.elapsed());
        print_profile(
            &format!("per-op profile of the Burn graph on {device:?}, batch {n}"),
            totals,
        );
        Ok(())
    }

    /// Peak resident memory of this process so far in bytes (`VmHWM`; Linux only).
    fn peak_rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Takes `--name VALUE` out of `args`, parsed.
    fn take_option(args: &mut Vec<String>, name: &str) -> Result<Option<usize>, String> {
        let Some(at) = args.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if at + 1 >= args.len() {
            return Err(format!("{name} needs a value"));
        }
        let value = args.remove(at + 1);
        args.remove(at);
        value
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}: not a positive whole number: {value}"))
    }

    /// Loads the weights and times embeddings at batch 1 and 32 (or `--batch N`).
    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        let with_profile = args.iter().any(|a| a == "profile");
        let json = args.iter().any(|a| a == "--json");
        args.retain(|a| a != "profile" && a != "--json");
        let batches = match take_option(&mut args, "--batch")? {
            Some(0) => return Err("--batch must be at least 1".into()),
            Some(n) => vec![n],
            None => vec![1, 32],
        };
        let runs_option = take_option(&mut args, "--runs")?;
        let mut args = args.into_iter();
        let backend = args.next().unwrap_or_else(|| "flex".to_string());
        let weights = args.next().map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../weights/efficientnet-lite0.bpk")
        });
        let engine = if backend == "flex-graph" {
            Engine::BurnGraph
        } else {
            Engine::Auto
        };
        let device = match backend.as_str() {
            "flex" | "flex-graph" => Device::flex(),
            "wgpu" => {
                let selected = pollster::block_on(select_device(GpuPreference::PreferGpu {
                    adapter_label: None,
                }));
                if !json {
                    println!("device: {}", selected.describe());
                }
                selected.device
            }
            other => {
                return Err(
                    format!("unknown backend {other}: use flex, flex-graph or wgpu").into(),
                );
            }
        };
        let model = load_from_bytes(&std::fs::read(&weights)?, &device)?;
        for n in batches {
            forward(&model, n, &device, engine)?; // warm-up (and kernel compilation on wgpu)
            let runs = runs_option.unwrap_or(if n == 1 { 9 } else { 3 }).max(1);
            let times: Vec<Duration> = (0..runs)
                .map(|_| forward(&model, n, &device, engine))
                .collect::<Result<_, _>>()?;
            let mut sorted = times.clone();
            sorted.sort();
            let median = sorted[runs / 2];
            let per_second = n as f64 / median.as_secs_f64();
            if json {
                let report = serde_json::json!({
                    "engine": "medtransfer",
                    "backend": backend,
                    "batch": n,
                    "runs_s": times.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                    "median_s": median.as_secs_f64(),
                    "per_s": per_second,
                    "peak_rss_bytes": peak_rss_bytes(),
                });
                println!("{report}");
            } else {
                println!(
                    "{backend} batch {n:>2}: median {median:.1?} per batch ({runs} runs) = \
                     {per_second:.1} embeddings/s"
                );
            }
        }
        if with_profile {
            if engine == Engine::Auto && device == Device::flex() {
                profile_kernels(&model, 1)?; // warm-up
                profile_kernels(&model, 8)?;
            } else {
                profile(&model, 8, &device)?; // warm-up
                profile(&model, 8, &device)?;
            }
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
