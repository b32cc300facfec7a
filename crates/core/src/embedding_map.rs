//! The embedding map: every image's 1280-d embedding projected on its first two principal
//! components (PCA, Pearson 1901; computed as scikit-learn's `PCA(n_components=2)` does, up to
//! the sign of each axis), so a person can see which images the network finds alike.
//!
//! The embeddings are centred (not standardised: the map shows the network's own geometry),
//! then the top two eigenvectors come from a symmetric eigendecomposition (nalgebra) of the
//! smaller of the `n × n` Gram matrix and the `1280 × 1280` covariance: both give the same
//! scores. Each axis's sign is fixed as scikit-learn's `svd_flip` fixes it (the score of
//! largest magnitude is positive), so the same images give the same map.

use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

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
    let mut x = DMatrix::<f64>::from_fn(n, d, |i, j| f64::from(rows[i][j]));
    for mut column in x.column_iter_mut() {
        let mean = column.mean();
        column.add_scalar_mut(-mean);
    }
    let scores = if n <= d {
        gram_scores(&x)
    } else {
        covariance_scores(&x)
    };
    let total: f64 = x.iter().map(|v| v * v).sum();
    let ratio = |k: usize| {
        if total > 0.0 {
            scores.column(k).norm_squared() / total
        } else {
            0.0
        }
    };
    Ok(EmbeddingMap {
        points: (0..n)
            .map(|i| [scores[(i, 0)] as f32, scores[(i, 1)] as f32])
            .collect(),
        explained_variance_ratio: [ratio(0), ratio(1)],
    })
}

/// The indices of the two largest eigenvalues, largest first.
fn top_two(values: &nalgebra::DVector<f64>) -> [usize; 2] {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    [order[0], order.get(1).copied().unwrap_or(order[0])]
}

/// Scores `[n, 2]` from the Gram matrix `X Xᵀ` (few images): its eigenvectors `u` are the
/// scores' directions, `√λ · u` the scores.
fn gram_scores(x: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(x * x.transpose());
    let mut scores = DMatrix::zeros(x.nrows(), 2);
    for (k, index) in top_two(&eigen.eigenvalues).into_iter().enumerate() {
        let scale = eigen.eigenvalues[index].max(0.0).sqrt();
        scores.set_column(k, &(eigen.eigenvectors.column(index) * scale));
    }
    flip_signs(scores)
}

/// Scores `[n, 2]` from the covariance `XᵀX` (many images): `X v` for its eigenvectors `v`.
fn covariance_scores(x: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(x.transpose() * x);
    let mut scores = DMatrix::zeros(x.nrows(), 2);
    for (k, index) in top_two(&eigen.eigenvalues).into_iter().enumerate() {
        scores.set_column(k, &(x * eigen.eigenvectors.column(index)));
    }
    flip_signs(scores)
}

/// Makes each column's entry of largest magnitude positive (scikit-learn's `svd_flip`).
fn flip_signs(mut scores: DMatrix<f64>) -> DMatrix<f64> {
    for mut column in scores.column_iter_mut() {
        let largest = column
            .iter()
            .copied()
            .fold(0.0f64, |a, v| if v.abs() > a.abs() { v } else { a });
        if largest < 0.0 {
            column.neg_mut();
        }
    }
    scores
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
            // Both paths: the Gram matrix (n ≤ d) and the covariance (n > d).
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
    fn gram_and_covariance_give_the_same_map() {
        let (rows, _) = elongated(12, 10, 9);
        let mut x = DMatrix::<f64>::from_fn(12, 10, |i, j| f64::from(rows[i][j]));
        for mut column in x.column_iter_mut() {
            let mean = column.mean();
            column.add_scalar_mut(-mean);
        }
        let (a, b) = (gram_scores(&x), covariance_scores(&x));
        assert!((a - b).abs().max() < 1e-6);
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
