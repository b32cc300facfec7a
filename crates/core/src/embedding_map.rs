//! The embedding map: every image's 1280-d embedding projected on its first two principal
//! components (PCA, Pearson 1901), so a person can see which images the network finds alike.
//!
//! The embeddings are centred (not standardised: the map shows the network's own geometry).
//! The top two right singular vectors of the centred `n × 1280` matrix come from randomized
//! subspace iteration (Halko, Martinsson & Tropp 2011, algorithm 4.4: a seeded Gaussian start
//! of [`SUBSPACE`] columns, [`POWER_ITERATIONS`] power iterations re-orthonormalised by QR,
//! then the SVD of the small projected matrix, nalgebra's), which costs `O(n · 1280 · 12)` per
//! iteration instead of a full eigendecomposition, so a map of thousands of images takes about
//! a second in the browser's worker. Each axis's sign is fixed as scikit-learn's `PCA` fixes it
//! (`svd_flip` on the components: each component's largest-magnitude loading is positive), so
//! the same images give the same map.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;

/// Why no map could be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MapError {
    /// Fewer than two images.
    #[error("an embedding map needs at least two images, got {0}")]
    TooFew(usize),
    /// Rows of different lengths, empty rows or non-finite values.
    #[error("the embeddings are not usable: {0}")]
    Embeddings(String),
}

/// The map of `n` images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingMap {
    /// Each image's `[pc1, pc2]` score, in input order (the embedding's units: distances on
    /// the map are distances between embeddings, projected).
    pub points: Vec<[f32; 2]>,
    /// The share of the embeddings' total variance each axis holds, `0..=1`.
    pub explained_variance_ratio: [f64; 2],
}

/// Columns of the random start (2 wanted plus oversampling).
pub const SUBSPACE: usize = 12;
/// Power iterations of the subspace: the top two come out exact to float precision when
/// their variances stand apart from the rest (tested against the full eigendecomposition).
pub const POWER_ITERATIONS: usize = 6;
/// Seed of the random start (fixed: the same images give the same map).
const START_SEED: u64 = 0x9CA;

/// Projects `rows` (`n` embeddings of one length) on their first two principal components.
///
/// # Errors
/// [`MapError::TooFew`] under two rows; [`MapError::Embeddings`] for ragged, empty or
/// non-finite rows.
pub fn pca_map(rows: &[Vec<f32>]) -> Result<EmbeddingMap, MapError> {
    let n = rows.len();
    if n < 2 {
        return Err(MapError::TooFew(n));
    }
    let d = rows[0].len();
    if d == 0 || rows.iter().any(|r| r.len() != d) {
        return Err(MapError::Embeddings("rows of different lengths".into()));
    }
    if rows.iter().flatten().any(|v| !v.is_finite()) {
        return Err(MapError::Embeddings("a value is not finite".into()));
    }
    let x = centred(rows);
    let components = top_components(&x);
    let scores = &x * &components;
    let total: f64 = x.iter().map(|v| v * v).sum();
    let ratio = |k: usize| {
        if total > 0.0 && k < scores.ncols() {
            scores.column(k).norm_squared() / total
        } else {
            0.0
        }
    };
    let score = |i: usize, k: usize| {
        if k < scores.ncols() {
            scores[(i, k)] as f32
        } else {
            0.0
        }
    };
    Ok(EmbeddingMap {
        points: (0..n).map(|i| [score(i, 0), score(i, 1)]).collect(),
        explained_variance_ratio: [ratio(0), ratio(1)],
    })
}

/// The rows as an `n × d` matrix, each column's mean subtracted.
fn centred(rows: &[Vec<f32>]) -> DMatrix<f64> {
    let d = rows.first().map_or(0, Vec::len);
    let mut x = DMatrix::<f64>::from_fn(rows.len(), d, |i, j| f64::from(rows[i][j]));
    for mut column in x.column_iter_mut() {
        let mean = column.mean();
        column.add_scalar_mut(-mean);
    }
    x
}

/// The top two principal directions `[d, ≤2]` (unit columns, largest variance first, signs
/// by [`flip_signs`]) of a centred matrix, by randomized subspace iteration.
fn top_components(x: &DMatrix<f64>) -> DMatrix<f64> {
    let (n, d) = x.shape();
    let k = SUBSPACE.min(n).min(d);
    let mut rng = SeededRng::new(START_SEED);
    let start = DMatrix::<f64>::from_fn(d, k, |_, _| f64::from(rng.normal()));
    // Q spans the range of (X Xᵀ)^q X Ω.
    let mut q = (x * start).qr().q();
    for _ in 0..POWER_ITERATIONS {
        let z = (x.transpose() * &q).qr().q();
        q = (x * z).qr().q();
    }
    // B = Qᵀ X is small (k × d); its right singular vectors are X's.
    let b = q.transpose() * x;
    let svd = b.svd(false, true);
    let Some(v_t) = svd.v_t else {
        return DMatrix::zeros(d, 0);
    };
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&a, &c| svd.singular_values[c].total_cmp(&svd.singular_values[a]));
    let keep = order.len().min(2);
    let mut components = DMatrix::zeros(d, keep);
    for (column, &index) in order.iter().take(keep).enumerate() {
        components.set_column(column, &v_t.row(index).transpose());
    }
    flip_signs(components)
}

/// Makes each component's loading of largest magnitude positive (scikit-learn's `svd_flip`
/// with `u_based_decision=False`, which its `PCA` uses).
fn flip_signs(mut components: DMatrix<f64>) -> DMatrix<f64> {
    for mut column in components.column_iter_mut() {
        let largest = column
            .iter()
            .copied()
            .fold(0.0f64, |a, v| if v.abs() > a.abs() { v } else { a });
        if largest < 0.0 {
            column.neg_mut();
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;

    /// Points along a direction in `d` dimensions (strong), across another (weaker), plus
    /// noise.
    fn elongated(n: usize, d: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<f32>) {
        let mut rng = SeededRng::new(seed);
        let mut along = Vec::new();
        let rows = (0..n)
            .map(|_| {
                let (a, b) = (rng.normal() * 10.0, rng.normal() * 3.0);
                along.push(a);
                (0..d)
                    .map(|j| {
                        let direction = if j % 2 == 0 { a } else { b };
                        direction / (d as f32 / 2.0).sqrt() + 0.1 * rng.normal() + 5.0
                    })
                    .collect()
            })
            .collect();
        (rows, along)
    }

    #[test]
    fn the_first_axis_follows_the_widest_spread_and_the_shares_add_up() {
        for (n, d) in [(8, 40), (200, 6)] {
            // Wide (fewer images than dimensions) and tall.
            let (rows, along) = elongated(n, d, 5);
            let map = pca_map(&rows).expect("a map");
            assert_eq!(map.points.len(), n);
            let [first, second] = map.explained_variance_ratio;
            assert!(
                first > 0.8 && second > 0.005 && first + second <= 1.0 + 1e-9,
                "{n}×{d}: {first}, {second}"
            );
            // The first score is the position along the strong direction (up to its sign).
            let correlation = {
                let xs: Vec<f64> = map.points.iter().map(|p| f64::from(p[0])).collect();
                let ys: Vec<f64> = along.iter().map(|&v| f64::from(v)).collect();
                let (mx, my) = (
                    xs.iter().sum::<f64>() / n as f64,
                    ys.iter().sum::<f64>() / n as f64,
                );
                let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
                let vx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
                let vy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
                cov / (vx * vy).sqrt()
            };
            assert!(
                correlation.abs() > 0.99,
                "{n}×{d}: correlation {correlation}"
            );
            // The scores are centred and uncorrelated.
            let sum: [f64; 2] = map.points.iter().fold([0.0, 0.0], |s, p| {
                [s[0] + f64::from(p[0]), s[1] + f64::from(p[1])]
            });
            let cross: f64 = map
                .points
                .iter()
                .map(|p| f64::from(p[0]) * f64::from(p[1]))
                .sum();
            assert!(sum[0].abs() < 1e-2 * n as f64 && sum[1].abs() < 1e-2 * n as f64);
            let norm0: f64 = map.points.iter().map(|p| f64::from(p[0]).powi(2)).sum();
            assert!(cross.abs() < 1e-3 * norm0, "{n}×{d}: cross {cross}");
        }
    }

    #[test]
    fn subspace_iteration_finds_the_exact_principal_components() {
        // Against the full eigendecomposition of the covariance, on wide and tall data.
        for (n, d, seed) in [(12, 30, 9), (300, 20, 4)] {
            let (rows, _) = elongated(n, d, seed);
            let x = centred(&rows);
            let eigen = nalgebra::SymmetricEigen::new(x.transpose() * &x);
            let mut order: Vec<usize> = (0..d).collect();
            order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
            let found = top_components(&x);
            for (k, &index) in order.iter().take(2).enumerate() {
                let exact = eigen.eigenvectors.column(index);
                let cosine = found.column(k).dot(&exact).abs();
                assert!(
                    cosine > 1.0 - 1e-9,
                    "{n}×{d}, component {k}: |cos| {cosine}"
                );
                // The sign rule: the largest loading is positive.
                let largest = found
                    .column(k)
                    .iter()
                    .copied()
                    .fold(0.0f64, |a, v| if v.abs() > a.abs() { v } else { a });
                assert!(largest > 0.0);
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(pca_map(&[vec![1.0, 2.0]]), Err(MapError::TooFew(1)));
        assert!(matches!(
            pca_map(&[vec![1.0], vec![1.0, 2.0]]),
            Err(MapError::Embeddings(_))
        ));
        assert!(matches!(
            pca_map(&[vec![f32::NAN], vec![1.0]]),
            Err(MapError::Embeddings(_))
        ));
        // Identical images: a map of one point, no variance, no NaN.
        let same = pca_map(&[vec![1.0, 2.0], vec![1.0, 2.0], vec![1.0, 2.0]]).expect("a map");
        assert!(
            same.points
                .iter()
                .flatten()
                .all(|v| v.is_finite() && v.abs() < 1e-6)
        );
        assert_eq!(same.explained_variance_ratio, [0.0, 0.0]);
    }
}
