use super::*;
use crate::rng::SeededRng;
use crate::train::Classifier;
use image::{Rgb, RgbImage};

fn config(kind: HeadKind, output: OutputKind, classes: usize, dim: usize) -> HeadConfig {
    HeadConfig {
        kind,
        output,
        input_dim: dim,
        num_classes: classes,
    }
}

fn normalization(dim: usize, rng: &mut SeededRng) -> FeatureNormalization {
    FeatureNormalization {
        mean: (0..dim).map(|_| rng.uniform(-1.0, 1.0)).collect(),
        std: (0..dim).map(|_| rng.uniform(0.5, 2.0)).collect(),
    }
}

fn heads(dim: usize) -> Vec<HeadConfig> {
    let mlp = HeadKind::Mlp {
        hidden: 6,
        dropout: 0.5,
    };
    vec![
        config(HeadKind::Linear, OutputKind::Softmax, 3, dim),
        config(HeadKind::Linear, OutputKind::Sigmoid, 2, dim),
        config(mlp, OutputKind::Softmax, 3, dim),
        config(mlp, OutputKind::Sigmoid, 2, dim),
    ]
}

/// The class score as `embedding_gradient` defines it, from the host logits.
fn score(config: &HeadConfig, logits: &[f32], class: usize) -> f32 {
    match config.output {
        OutputKind::Softmax => logits[class],
        OutputKind::Sigmoid if class == 1 => logits[0],
        OutputKind::Sigmoid => -logits[0],
    }
}

#[test]
fn the_embedding_gradient_matches_finite_differences_for_every_head() {
    let dim = 5;
    let mut rng = SeededRng::new(7);
    for config in heads(dim) {
        let weights = HeadWeights::initial(&config, 11).expect("valid head");
        let norm = normalization(dim, &mut rng);
        let embedding: Vec<f32> = (0..dim).map(|_| rng.uniform(-2.0, 2.0)).collect();
        for class in 0..config.num_classes {
            let gradient =
                embedding_gradient(&config, &weights, &norm, &embedding, class).expect("class");
            for d in 0..dim {
                let h = 1e-2;
                let mut plus = embedding.clone();
                plus[d] += h;
                let mut minus = embedding.clone();
                minus[d] -= h;
                let numeric = (score(
                    &config,
                    &head_logits(&config, &weights, &norm, &plus),
                    class,
                ) - score(
                    &config,
                    &head_logits(&config, &weights, &norm, &minus),
                    class,
                )) / (2.0 * h);
                assert!(
                    (numeric - gradient[d]).abs() < 1e-3,
                    "{config:?} class {class} feature {d}: {numeric} vs {}",
                    gradient[d]
                );
            }
        }
        let err = embedding_gradient(&config, &weights, &norm, &embedding, config.num_classes);
        assert!(matches!(err, Err(GradCamError::NoSuchClass { .. })));
    }
}

#[test]
fn the_host_head_gives_the_device_heads_probabilities() {
    let dim = 5;
    let mut rng = SeededRng::new(3);
    for config in heads(dim) {
        let weights = HeadWeights::initial(&config, 5).expect("valid head");
        let norm = normalization(dim, &mut rng);
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..dim).map(|_| rng.uniform(-2.0, 2.0)).collect())
            .collect();
        let classifier =
            Classifier::new(&config, &weights, &norm, &Device::flex()).expect("classifier");
        let device = pollster::block_on(classifier.predict(&rows)).expect("predict");
        for (row, expected) in rows.iter().zip(&device) {
            let host = to_probabilities(&head_logits(&config, &weights, &norm, row), config.output);
            for (a, b) in host.iter().zip(expected) {
                assert!((a - b).abs() < 1e-5, "{config:?}: {host:?} vs {expected:?}");
            }
        }
    }
}

/// A `[channels, 7, 7]` map of zeros.
fn empty_map(channels: usize) -> FeatureMap {
    FeatureMap {
        channels,
        height: 7,
        width: 7,
        values: vec![0.0; channels * 49],
    }
}

#[test]
fn grad_cam_peaks_where_the_class_evidence_is_and_drops_the_evidence_against() {
    let mut map = empty_map(3);
    // Channel 0, the evidence for the class: strong at row 2, column 5, weaker at row 6,
    // column 0. Channel 1, evidence against it: at row 0, column 0. Channel 2: everywhere.
    map.values[2 * 7 + 5] = 4.0;
    map.values[6 * 7] = 1.0;
    map.values[49] = 9.0;
    for v in &mut map.values[98..] {
        *v = 0.5;
    }
    let cam = grad_cam(&map, &[1.0, -1.0, 0.0]);
    assert_eq!(cam.len(), 49);
    assert!(
        (cam[2 * 7 + 5] - 1.0).abs() < 1e-6,
        "the peak is scaled to 1"
    );
    assert!(
        (cam[6 * 7] - 0.25).abs() < 1e-6,
        "the weaker mark keeps its ratio"
    );
    assert_eq!(cam[0], 0.0, "evidence against the class is cut by the ReLU");
    let p = peak(&cam, 7, 7).expect("a peak");
    assert!(
        (p[0] - 5.5 / 7.0).abs() < 1e-6 && (p[1] - 2.5 / 7.0).abs() < 1e-6,
        "{p:?}"
    );
    // The opposite gradient finds the other mark, and none at all gives zeros, not NaN.
    let against = grad_cam(&map, &[-1.0, 1.0, 0.0]);
    assert_eq!(peak(&against, 7, 7), Some([0.5 / 7.0, 0.5 / 7.0]));
    let none = grad_cam(&map, &[0.0, 0.0, -1.0]);
    assert!(none.iter().all(|&v| v == 0.0));
    assert_eq!(peak(&none, 7, 7), None, "no evidence, no peak");
}

#[test]
fn the_feature_maps_embedding_is_its_channel_means() {
    let mut map = empty_map(2);
    map.values[3] = 49.0;
    for v in &mut map.values[49..] {
        *v = 2.0;
    }
    assert_eq!(map.embedding(), vec![1.0, 2.0]);
}

#[test]
fn explain_weighs_the_map_by_the_heads_gradient_and_picks_the_predicted_class() {
    // A linear softmax head on a 2-channel map: class 1 rises with channel 0, class 0 with
    // channel 1.
    let config = config(HeadKind::Linear, OutputKind::Softmax, 2, 2);
    let weights = HeadWeights {
        tensors: vec![
            (
                "output.weight".into(),
                vec![2, 2],
                vec![-1.0, 1.0, 1.0, -1.0],
            ),
            ("output.bias".into(), vec![2], vec![0.0, 0.0]),
        ],
    };
    let explainer = Explainer {
        tail: None,
        frozen_blocks: 16,
        config,
        weights,
        normalization: FeatureNormalization {
            mean: vec![0.0, 0.0],
            std: vec![1.0, 1.0],
        },
        threshold: None,
    };
    let mut map = empty_map(2);
    map.values[7 + 1] = 20.0; // channel 0 at row 1, column 1
    map.values[49 + 5 * 7 + 4] = 5.0; // channel 1 at row 5, column 4
    let predicted = explainer.explain(&map, None).expect("explained");
    assert_eq!(predicted.class, 1, "channel 0 is stronger: class 1");
    assert!(predicted.probabilities[1] > 0.5);
    assert_eq!(predicted.peak, Some([1.5 / 7.0, 1.5 / 7.0]));
    let other = explainer.explain(&map, Some(0)).expect("explained");
    assert_eq!(other.peak, Some([4.5 / 7.0, 5.5 / 7.0]));
    assert_eq!(other.rows().len(), 7);
    assert!(matches!(
        explainer.explain(&map, Some(2)),
        Err(GradCamError::NoSuchClass {
            class: 2,
            classes: 2
        })
    ));
    assert!(
        explainer.explain(&empty_map(3), None).is_err(),
        "wrong channel count"
    );
}

#[test]
fn the_overlay_colours_the_evidence_and_leaves_the_rest() {
    let mut values = vec![0.0; 49];
    values[0] = 1.0; // the top-left cell
    let heatmap = Heatmap {
        class: 0,
        probabilities: vec![1.0],
        height: 7,
        width: 7,
        values,
        peak: Some([0.5 / 7.0, 0.5 / 7.0]),
    };
    let grey = RgbImage::from_pixel(140, 70, Rgb([128, 128, 128]));
    let out = overlay(&grey, &heatmap);
    assert_eq!(out.dimensions(), (140, 70));
    let top_left = out.get_pixel(5, 3).0;
    assert!(
        top_left[0] > top_left[1] + 50 && top_left[0] > top_left[2] + 50,
        "red over the evidence: {top_left:?}"
    );
    assert_eq!(
        out.get_pixel(130, 65).0,
        [128, 128, 128],
        "untouched elsewhere"
    );
    let layer = heatmap_layer(&heatmap, 14, 14);
    assert!(layer.get_pixel(0, 0).0[3] > 100);
    assert_eq!(layer.get_pixel(13, 13).0[3], 0);
}
