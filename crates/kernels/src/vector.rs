//! The two vector loops of the linear head's solver (`medtransfer-core`'s `train/logistic.rs`):
//! a dot product and `acc += r·x`. They live here for the same reason as the network's
//! kernels: this crate is built at full optimisation even in the dev profile (the page's and
//! the tests' builds), where the solver reads the design matrix twice per iteration.

/// `Σ aᵢ·bᵢ` over the shorter of the two slices, in 8 independent lanes the compiler turns
/// into SIMD (summed at the end, so the order of additions is fixed: same inputs, same result).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `acc[i] += r · x[i]` over the shorter of the two slices.
pub fn axpy(acc: &mut [f32], r: f32, x: &[f32]) {
    acc.iter_mut().zip(x).for_each(|(a, v)| *a += r * v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_match_the_plain_sums_at_every_length() {
        for n in [0, 1, 7, 8, 9, 31, 1280] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-3, "n = {n}");
            let mut acc = b.clone();
            axpy(&mut acc, 0.5, &a);
            for i in 0..n {
                assert_eq!(acc[i], b[i] + 0.5 * a[i]);
            }
        }
    }
}
