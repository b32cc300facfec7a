//! The kernels against a naive planar (NCHW) reference written straight from the definitions,
//! in f64, on small random networks: odd sizes (asymmetric SAME padding), strides 1 and 2,
//! kernels 3 and 5, blocks with and without expansion and skip, batches run image by image and
//! across threads, and layers larger than one tile.

use super::*;
use crate::depthwise::{Geometry, depthwise_row, depthwise_row_dispatch};

/// Deterministic pseudo-random values in [-scale, scale).
struct Lcg(u64);

impl Lcg {
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

/// A planar activation `[C, H, W]` in f64.
#[derive(Clone)]
struct Planar {
    c: usize,
    h: usize,
    w: usize,
    v: Vec<f64>,
}

/// SAME convolution with `groups` (1 or C), bias, optional ReLU6, from OIHW weights.
#[allow(clippy::too_many_arguments)]
fn reference_conv(
    x: &Planar,
    weight: &[f32],
    bias: &[f32],
    out_c: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
    relu6: bool,
) -> Planar {
    let (ho, wo) = (x.h.div_ceil(stride), x.w.div_ceil(stride));
    let pad = |size: usize| {
        let total = (((size.div_ceil(stride)) - 1) * stride + k).saturating_sub(size);
        total / 2
    };
    let (pt, pl) = (pad(x.h), pad(x.w));
    let in_per_group = if depthwise { 1 } else { x.c };
    let mut v = vec![0.0; out_c * ho * wo];
    for o in 0..out_c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = f64::from(bias[o]);
                for i in 0..in_per_group {
                    let ci = if depthwise { o } else { i };
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pt as isize;
                            let ix = (ox * stride + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                continue;
                            }
                            let xv = x.v[(ci * x.h + iy as usize) * x.w + ix as usize];
                            let wv = weight[((o * in_per_group + i) * k + ky) * k + kx];
                            acc += xv * f64::from(wv);
                        }
                    }
                }
                if relu6 {
                    acc = acc.clamp(0.0, 6.0);
                }
                v[(o * ho + oy) * wo + ox] = acc;
            }
        }
    }
    Planar {
        c: out_c,
        h: ho,
        w: wo,
        v,
    }
}

/// A block's raw parameters, kept for the reference.
struct RawBlock {
    expand: Option<(Vec<f32>, Vec<f32>, usize)>,
    depthwise: (Vec<f32>, Vec<f32>, usize, usize),
    project: (Vec<f32>, Vec<f32>, usize),
    skip: bool,
}

struct RawNet {
    stem: (Vec<f32>, Vec<f32>, usize),
    blocks: Vec<RawBlock>,
    head: (Vec<f32>, Vec<f32>, usize),
    /// `[in, out]`.
    fc: (Vec<f32>, Vec<f32>, usize),
}

/// A small random network: (kernel, stride, expand ratio, out channels) per block.
fn random_net(seed: u64, specs: &[(usize, usize, usize, usize)]) -> (RawNet, Network) {
    let mut rng = Lcg(seed);
    let stem_c = 8;
    let stem_w = rng.values(stem_c * 3 * 9, 0.4);
    let stem_b = rng.values(stem_c, 0.5);
    let stem = Stem::from_oihw("stem", &stem_w, stem_b.clone(), stem_c, 3, 3, 2).unwrap();
    let mut c = stem_c;
    let mut raw_blocks = Vec::new();
    let mut blocks = Vec::new();
    for (index, &(k, stride, ratio, out_c)) in specs.iter().enumerate() {
        let name = format!("block {index}");
        let mid = c * ratio;
        let expand = (ratio != 1).then(|| {
            let w = rng.values(mid * c, 0.5);
            let b = rng.values(mid, 0.3);
            (w, b, mid)
        });
        let dw_w = rng.values(mid * k * k, 0.4);
        let dw_b = rng.values(mid, 0.3);
        let pr_w = rng.values(out_c * mid, 0.4);
        let pr_b = rng.values(out_c, 0.3);
        let skip = stride == 1 && out_c == c;
        blocks.push(Block {
            expand: expand
                .as_ref()
                .map(|(w, b, mid)| Pointwise::from_oihw(&name, w, b.clone(), *mid, c).unwrap()),
            depthwise: Depthwise::from_oihw(&name, &dw_w, dw_b.clone(), mid, k, stride).unwrap(),
            project: Pointwise::from_oihw(&name, &pr_w, pr_b.clone(), out_c, mid).unwrap(),
            skip,
        });
        raw_blocks.push(RawBlock {
            expand,
            depthwise: (dw_w, dw_b, k, stride),
            project: (pr_w, pr_b, out_c),
            skip,
        });
        c = out_c;
    }
    let head_c = 24;
    let head_w = rng.values(head_c * c, 0.5);
    let head_b = rng.values(head_c, 0.5);
    let classes = 5;
    let fc_w = rng.values(head_c * classes, 0.5);
    let fc_b = rng.values(classes, 0.5);
    let network = Network::new(
        stem,
        blocks,
        Pointwise::from_oihw("head", &head_w, head_b.clone(), head_c, c).unwrap(),
        Pointwise::from_in_out("fc", fc_w.clone(), fc_b.clone(), head_c, classes).unwrap(),
    )
    .unwrap();
    let raw = RawNet {
        stem: (stem_w, stem_b, stem_c),
        blocks: raw_blocks,
        head: (head_w, head_b, head_c),
        fc: (fc_w, fc_b, classes),
    };
    (raw, network)
}

/// The reference forward pass of one planar image: (embedding, logits).
fn reference_forward(net: &RawNet, image: &[f32], h: usize, w: usize) -> (Vec<f64>, Vec<f64>) {
    let x = Planar {
        c: 3,
        h,
        w,
        v: image.iter().map(|&v| f64::from(v)).collect(),
    };
    let mut x = reference_conv(&x, &net.stem.0, &net.stem.1, net.stem.2, 3, 2, false, true);
    for block in &net.blocks {
        let input = x.clone();
        let mid = match &block.expand {
            Some((w, b, mid)) => reference_conv(&x, w, b, *mid, 1, 1, false, true),
            None => x,
        };
        let (dw_w, dw_b, k, stride) = &block.depthwise;
        let d = reference_conv(&mid, dw_w, dw_b, mid.c, *k, *stride, true, true);
        let (pw, pb, out_c) = &block.project;
        let mut y = reference_conv(&d, pw, pb, *out_c, 1, 1, false, false);
        if block.skip {
            for (a, b) in y.v.iter_mut().zip(&input.v) {
                *a += b;
            }
        }
        x = y;
    }
    let head = reference_conv(&x, &net.head.0, &net.head.1, net.head.2, 1, 1, false, true);
    let pixels = head.h * head.w;
    let embedding: Vec<f64> = (0..head.c)
        .map(|c| head.v[c * pixels..(c + 1) * pixels].iter().sum::<f64>() / pixels as f64)
        .collect();
    let (fc_w, fc_b, classes) = &net.fc;
    let logits = (0..*classes)
        .map(|o| {
            f64::from(fc_b[o])
                + embedding
                    .iter()
                    .enumerate()
                    .map(|(i, e)| e * f64::from(fc_w[i * classes + o]))
                    .sum::<f64>()
        })
        .collect();
    (embedding, logits)
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-4 * scale,
            "{what}[{i}]: kernels {g}, reference {w}"
        );
    }
}

/// Every layer type, odd and even sizes, strides 1 and 2, kernels 3 and 5, skip and no skip.
const SPECS: [(usize, usize, usize, usize); 6] = [
    (3, 1, 1, 8),  // no expansion, skip (8 → 8)
    (3, 2, 6, 16), // stride 2, 48 channels (3 register blocks)
    (5, 1, 6, 16), // 5×5, skip
    (5, 2, 3, 20), // 5×5 stride 2, 48 mid channels, then a remainder-free 20
    (3, 1, 2, 20), // 40 channels: 2 register blocks + 8 leftover, skip
    (3, 2, 1, 12), // 20 channels: 8 + 8 in vectors, 4 one by one
];

#[test]
fn matches_the_reference_on_odd_and_even_sizes() {
    let (raw, network) = random_net(7, &SPECS);
    let mut rng = Lcg(99);
    for (h, w) in [(17, 23), (16, 16), (9, 31), (1, 1), (2, 3)] {
        let image = rng.values(3 * h * w, 1.5);
        let out = network.forward(&[&image], h, w).unwrap();
        let (embedding, logits) = reference_forward(&raw, &image, h, w);
        assert_close(&out.embeddings, &embedding, &format!("embedding {h}×{w}"));
        assert_close(&out.logits, &logits, &format!("logits {h}×{w}"));
    }
}

#[test]
fn a_batch_gives_each_image_its_own_result() {
    let (raw, network) = random_net(11, &SPECS);
    let mut rng = Lcg(5);
    let (h, w) = (19, 14);
    // More images than threads, so that natively the images run side by side.
    let images: Vec<Vec<f32>> = (0..9).map(|_| rng.values(3 * h * w, 1.0)).collect();
    let refs: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let out = network.forward(&refs, h, w).unwrap();
    let dim = network.embedding_dim();
    let classes = network.classes();
    for (i, image) in images.iter().enumerate() {
        let (embedding, logits) = reference_forward(&raw, image, h, w);
        assert_close(
            &out.embeddings[i * dim..(i + 1) * dim],
            &embedding,
            "embedding",
        );
        assert_close(
            &out.logits[i * classes..(i + 1) * classes],
            &logits,
            "logits",
        );
        // And the same image alone gives the same numbers.
        let alone = network.forward(&[image], h, w).unwrap();
        assert_close(&alone.embeddings, &embedding, "alone");
    }
}

#[test]
fn layers_larger_than_one_tile_match_the_reference() {
    // 8 output channels at 66×66 after the stem: 4,356 pixels, more than one tile of
    // TILE_VALUES / 8 = 4,096 pixels; the expansion to 48 channels spans several tiles too.
    let (raw, network) = random_net(3, &[(3, 1, 6, 8)]);
    let (h, w) = (131, 132);
    let image = Lcg(1).values(3 * h * w, 1.0);
    let out = network.forward(&[&image], h, w).unwrap();
    let (embedding, logits) = reference_forward(&raw, &image, h, w);
    assert_close(&out.embeddings, &embedding, "embedding");
    assert_close(&out.logits, &logits, "logits");
}

#[test]
fn wrong_sizes_are_errors_not_panics() {
    let (_, network) = random_net(1, &SPECS);
    let image = vec![0.0; 3 * 8 * 8];
    assert!(matches!(
        network.forward(&[&image], 8, 9),
        Err(KernelError::InputLength {
            index: 0,
            got: 192,
            expected: 216,
            ..
        })
    ));
    assert!(matches!(
        network.forward(&[&image, &image[..10]], 8, 8),
        Err(KernelError::InputLength { index: 1, .. })
    ));
    assert!(network.forward(&[&[]], 0, 0).is_err());
    assert_eq!(
        network.forward(&[], 8, 8).unwrap(),
        BatchOutput {
            embeddings: vec![],
            logits: vec![]
        }
    );
    assert!(matches!(
        Pointwise::from_oihw("p", &[0.0; 5], vec![0.0; 2], 2, 3),
        Err(KernelError::WeightLength {
            what: "weight",
            got: 5,
            expected: 6,
            ..
        })
    ));
    assert!(matches!(
        Depthwise::from_oihw("d", &[0.0; 18], vec![0.0; 3], 2, 3, 1),
        Err(KernelError::WeightLength { what: "bias", .. })
    ));
    // A head that does not take what the last block gives.
    let stem = Stem::from_oihw("stem", &[0.0; 4 * 27], vec![0.0; 4], 4, 3, 3, 2).unwrap();
    let head = Pointwise::from_oihw("head", &[0.0; 10], vec![0.0; 2], 2, 5).unwrap();
    let fc = Pointwise::from_in_out("fc", vec![0.0; 2], vec![0.0; 1], 2, 1).unwrap();
    assert!(matches!(
        Network::new(stem, vec![], head, fc),
        Err(KernelError::Channels {
            got: 4,
            expected: 5,
            ..
        })
    ));
}

#[test]
fn same_padding_matches_tensorflow() {
    assert_eq!(same_padding_before(224, 3, 2), 0);
    assert_eq!(same_padding_before(112, 3, 1), 1);
    assert_eq!(same_padding_before(56, 5, 2), 1);
    assert_eq!(same_padding_before(7, 3, 2), 1);
    assert_eq!(same_padding_before(14, 5, 1), 2);
    assert_eq!(same_padding_before(1, 5, 2), 2);
}

/// Channels-last `[H, W, C]` values of a planar activation, as f32.
fn to_channels_last(x: &Planar) -> Vec<f32> {
    let mut out = vec![0.0; x.c * x.h * x.w];
    for c in 0..x.c {
        for p in 0..x.h * x.w {
            out[p * x.c + c] = x.v[c * x.h * x.w + p] as f32;
        }
    }
    out
}

#[test]
fn portable_and_vector_depthwise_rows_both_match_the_reference() {
    // The portable rows are what the browser runs; on an AVX2 machine the layer would never
    // reach them, so each row is computed both ways here. 44 channels: one 32-wide and one
    // 8-wide vector block plus 4 one by one; 16-wide portable blocks plus 12 one by one.
    let mut rng = Lcg(21);
    for (h, w, k, stride) in [(9, 11, 5, 2), (7, 6, 3, 1), (1, 2, 5, 1), (4, 5, 3, 2)] {
        let c = 44;
        let planar = Planar {
            c,
            h,
            w,
            v: rng
                .values(c * h * w, 2.0)
                .into_iter()
                .map(f64::from)
                .collect(),
        };
        let weight = rng.values(c * k * k, 0.5);
        let bias = rng.values(c, 0.5);
        let layer = Depthwise::from_oihw("dw", &weight, bias.clone(), c, k, stride).unwrap();
        let want = reference_conv(&planar, &weight, &bias, c, k, stride, true, true);
        let input = to_channels_last(&planar);
        let geometry = Geometry {
            h,
            w,
            kernel: k,
            stride,
            pad_top: same_padding_before(h, k, stride),
            pad_left: same_padding_before(w, k, stride),
        };
        let want_rows: Vec<f64> = to_channels_last(&want).into_iter().map(f64::from).collect();
        let row_len = want.w * c;
        for oy in 0..want.h {
            let want_row = &want_rows[oy * row_len..(oy + 1) * row_len];
            let mut portable = vec![f32::NAN; row_len];
            depthwise_row(&layer, &geometry, &input, oy, &mut portable, 0);
            assert_close(
                &portable,
                want_row,
                &format!("portable row {oy} ({h}×{w}, k{k})"),
            );
            let mut dispatched = vec![f32::NAN; row_len];
            depthwise_row_dispatch(&layer, &geometry, &input, oy, &mut dispatched);
            assert_close(&dispatched, want_row, &format!("row {oy} ({h}×{w}, k{k})"));
        }
    }
}

#[test]
fn portable_and_vector_stem_rows_both_match_the_reference() {
    let mut rng = Lcg(8);
    let (h, w, k, stride, cout) = (10, 7, 3, 2, 12);
    let image = rng.values(3 * h * w, 1.5);
    let weight = rng.values(cout * 3 * k * k, 0.4);
    let bias = rng.values(cout, 0.5);
    let stem = Stem::from_oihw("stem", &weight, bias.clone(), cout, 3, k, stride).unwrap();
    let planar = Planar {
        c: 3,
        h,
        w,
        v: image.iter().copied().map(f64::from).collect(),
    };
    let want = reference_conv(&planar, &weight, &bias, cout, k, stride, false, true);
    let want_rows: Vec<f64> = to_channels_last(&want).into_iter().map(f64::from).collect();
    let geometry = Geometry {
        h,
        w,
        kernel: k,
        stride,
        pad_top: same_padding_before(h, k, stride),
        pad_left: same_padding_before(w, k, stride),
    };
    let row_len = want.w * cout;
    for oy in 0..want.h {
        let mut portable = vec![f32::NAN; row_len];
        stem.row(&geometry, &image, oy, &mut portable);
        assert_close(
            &portable,
            &want_rows[oy * row_len..(oy + 1) * row_len],
            &format!("stem row {oy}"),
        );
    }
    let mut whole = vec![f32::NAN; want.h * row_len];
    stem.run(&image, h, w, &mut whole, Threads::Serial);
    assert_close(&whole, &want_rows, "stem");
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn the_profile_times_every_kind_of_layer_and_checks_sizes() {
    let (_, network) = random_net(4, &SPECS);
    let (h, w) = (12, 10);
    let image = Lcg(2).values(3 * h * w, 1.0);
    let times = network.profile(&[&image, &image], h, w).unwrap();
    let kinds: Vec<&str> = times.by_kind.keys().map(String::as_str).collect();
    for kind in [
        "stem 3x3/2 + relu6",
        "expand 1x1 + relu6",
        "depthwise 3x3/1 + relu6",
        "depthwise 3x3/2 + relu6",
        "depthwise 5x5/1 + relu6",
        "depthwise 5x5/2 + relu6",
        "project 1x1",
        "project 1x1 + skip add",
        "head 1x1 + relu6",
        "global average pool",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(kinds.len(), 10, "{kinds:?}");
    assert!(matches!(
        network.profile(&[&image, &image[1..]], h, w),
        Err(KernelError::InputLength { index: 1, .. })
    ));
}
