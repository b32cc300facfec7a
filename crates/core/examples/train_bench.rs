//! Benchmark: training a head on 5,000 cached embeddings (synthetic, 1280-d, two classes)
//! for 20 epochs, batch 32, on native `flex`; no validation, no early stopping.
//!
//! ```sh
//! cargo run -p medtransfer-core --example train_bench
//! ```

use std::time::Instant;

use burn::tensor::Device;
use medtransfer_core::efficientnet::EMBEDDING_DIM;
use medtransfer_core::head::HeadKind;
use medtransfer_core::rng::SeededRng;
use medtransfer_core::train::{CancelToken, LabelledEmbeddings, Schedule, TrainConfig, train};

fn main() {
    let mut rng = SeededRng::new(1);
    let mut data = LabelledEmbeddings::default();
    for i in 0..5000 {
        let label = usize::from(i % 4 == 0);
        data.embeddings.push(
            (0..EMBEDDING_DIM)
                .map(|d| rng.normal() + if d % 7 == label { 0.5 } else { 0.0 })
                .collect(),
        );
        data.labels.push(label);
    }
    let classes = vec!["a".to_string(), "b".to_string()];
    for (name, head) in [
        ("linear", HeadKind::Linear),
        (
            "mlp-1024",
            HeadKind::Mlp {
                hidden: 1024,
                dropout: 0.5,
            },
        ),
        (
            "mlp-256",
            HeadKind::Mlp {
                hidden: 256,
                dropout: 0.5,
            },
        ),
    ] {
        let config = TrainConfig {
            head,
            epochs: 20,
            patience: None,
            schedule: Schedule::Cosine,
            ..TrainConfig::default()
        };
        let started = Instant::now();
        let trained = pollster::block_on(train(
            &classes,
            &data,
            None,
            &config,
            &Device::flex(),
            &CancelToken::new(),
            &mut |_| {},
        ));
        let seconds = started.elapsed().as_secs_f64();
        match trained {
            Ok(t) => println!(
                "{name:<9} 5000 × 1280, 20 epochs, batch 32: {seconds:.2} s (final train loss {:.4})",
                t.history.last().map_or(f64::NAN, |h| h.train_loss)
            ),
            Err(e) => println!("{name}: failed: {e}"),
        }
    }
}
