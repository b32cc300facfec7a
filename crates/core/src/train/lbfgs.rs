//! Limited-memory BFGS for a smooth function of a few thousand parameters, on the host: the
//! solver of the linear head's convex problem (`logistic.rs`). Nocedal & Wright, *Numerical
//! Optimization* (2nd ed., 2006): the two-loop recursion (Algorithm 7.4) with the initial
//! scaling γ = sᵀy / yᵀy (eq. 7.20) and a backtracking line search under the Armijo condition
//! (Algorithm 3.1, c₁ = 10⁻⁴); a pair (s, y) is kept only when sᵀy > 0, so the implied Hessian
//! stays positive definite.
//!
//! Written here rather than taken from a crate because it is the product's training core (a
//! few dozen lines whose cost we measure and control, with no dependency that must build for
//! wasm32).

use std::collections::VecDeque;

/// When [`minimize`] stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LbfgsOptions {
    /// Most iterations (each one line search).
    pub max_iterations: usize,
    /// Converged when the largest gradient component is at most this.
    pub gradient_tolerance: f64,
    /// Converged when an iteration lowers the value by less than this, relative to
    /// `max(|f|, 1)` (SciPy's `ftol`).
    pub relative_decrease: f64,
    /// Pairs (s, y) kept.
    pub memory: usize,
}

impl Default for LbfgsOptions {
    /// 200 iterations, gradient tolerance 10⁻⁴ (scikit-learn's `tol`), relative decrease
    /// 2.2·10⁻⁹ (SciPy's default `ftol`), memory 10.
    fn default() -> Self {
        Self {
            max_iterations: 200,
            gradient_tolerance: 1e-4,
            relative_decrease: 2.2e-9,
            memory: 10,
        }
    }
}

/// How [`minimize`] ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LbfgsEnd {
    /// Iterations run.
    pub iterations: usize,
    /// The value at the returned point.
    pub value: f64,
    /// Whether a tolerance was met (else the iteration cap, or a line search that found no
    /// decrease, ended it).
    pub converged: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises `f` from `x` in place. `f(x, grad)` returns the value at `x` and writes the
/// gradient into `grad` (same length as `x`). `after(iteration, value, step)` is called after
/// each accepted step (1-based iteration; `step` the accepted multiple of the direction).
pub(crate) fn minimize(
    x: &mut [f64],
    options: &LbfgsOptions,
    f: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
    after: &mut dyn FnMut(usize, f64, f64),
) -> LbfgsEnd {
    let n = x.len();
    let mut grad = vec![0.0; n];
    let mut value = f(x, &mut grad);
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::new();
    let mut direction = vec![0.0; n];
    let mut trial = vec![0.0; n];
    let mut trial_grad = vec![0.0; n];
    let mut alpha = vec![0.0; options.memory.max(1)];
    let largest = |g: &[f64]| g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for iteration in 1..=options.max_iterations {
        if largest(&grad) <= options.gradient_tolerance {
            return LbfgsEnd {
                iterations: iteration - 1,
                value,
                converged: true,
            };
        }
        // Two-loop recursion: direction = −H·grad.
        direction.copy_from_slice(&grad);
        for (k, (s, y, rho)) in pairs.iter().enumerate().rev() {
            alpha[k] = rho * dot(s, &direction);
            direction
                .iter_mut()
                .zip(y)
                .for_each(|(d, yi)| *d -= alpha[k] * yi);
        }
        let gamma = pairs.back().map_or(1.0, |(s, y, _)| dot(s, y) / dot(y, y));
        direction.iter_mut().for_each(|d| *d *= gamma);
        for (k, (s, y, rho)) in pairs.iter().enumerate() {
            let beta = rho * dot(y, &direction);
            direction
                .iter_mut()
                .zip(s)
                .for_each(|(d, si)| *d += (alpha[k] - beta) * si);
        }
        direction.iter_mut().for_each(|d| *d = -*d);
        let mut slope = dot(&grad, &direction);
        if slope.is_nan() || slope >= 0.0 {
            // Not a descent direction (rounding): restart from steepest descent.
            pairs.clear();
            direction.iter_mut().zip(&grad).for_each(|(d, g)| *d = -g);
            slope = -dot(&grad, &grad);
        }
        // The first step has no curvature information: scale it to a unit move.
        let mut step = if pairs.is_empty() {
            (1.0 / dot(&direction, &direction).sqrt()).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..40 {
            trial
                .iter_mut()
                .zip(x.iter().zip(&direction))
                .for_each(|(t, (xi, d))| *t = xi + step * d);
            let trial_value = f(&trial, &mut trial_grad);
            if trial_value.is_finite() && trial_value <= value + 1e-4 * step * slope {
                accepted = Some(trial_value);
                break;
            }
            step *= 0.5;
        }
        let Some(new_value) = accepted else {
            return LbfgsEnd {
                iterations: iteration - 1,
                value,
                converged: false,
            };
        };
        let s: Vec<f64> = trial.iter().zip(x.iter()).map(|(t, xi)| t - xi).collect();
        let y: Vec<f64> = trial_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if pairs.len() == options.memory.max(1) {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / sy));
        }
        x.copy_from_slice(&trial);
        grad.copy_from_slice(&trial_grad);
        let decrease = value - new_value;
        value = new_value;
        after(iteration, value, step);
        if decrease <= options.relative_decrease * value.abs().max(1.0) {
            return LbfgsEnd {
                iterations: iteration,
                value,
                converged: true,
            };
        }
    }
    LbfgsEnd {
        iterations: options.max_iterations,
        value,
        converged: largest(&grad) <= options.gradient_tolerance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_minimum_of_the_rosenbrock_function() {
        // f(a, b) = (1 − a)² + 100 (b − a²)², minimum 0 at (1, 1): a curved valley that
        // steepest descent crawls along.
        let mut x = vec![-1.2, 1.0];
        let options = LbfgsOptions {
            max_iterations: 500,
            gradient_tolerance: 1e-8,
            relative_decrease: 0.0,
            memory: 5,
        };
        let mut calls = 0;
        let end = minimize(
            &mut x,
            &options,
            &mut |p, g| {
                calls += 1;
                let (a, b) = (p[0], p[1]);
                g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
                g[1] = 200.0 * (b - a * a);
                (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
            },
            &mut |_, _, _| {},
        );
        assert!(end.converged, "{end:?}");
        assert!(
            (x[0] - 1.0).abs() < 1e-5 && (x[1] - 1.0).abs() < 1e-5,
            "{x:?}"
        );
        assert!(end.iterations < 100, "{end:?}");
        assert!(calls < 300, "{calls} evaluations");
    }

    #[test]
    fn a_quadratic_is_solved_in_few_iterations_and_values_only_decrease() {
        // ½ xᵀAx − bᵀx with A diagonal 1..=50: the minimum is x_i = b_i / A_ii.
        let n = 50;
        let a: Vec<f64> = (1..=n).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut x = vec![0.0; n];
        let mut values = Vec::new();
        let end = minimize(
            &mut x,
            &LbfgsOptions {
                gradient_tolerance: 1e-10,
                relative_decrease: 0.0,
                ..LbfgsOptions::default()
            },
            &mut |p, g| {
                let mut v = 0.0;
                for i in 0..n {
                    g[i] = a[i] * p[i] - b[i];
                    v += 0.5 * a[i] * p[i] * p[i] - b[i] * p[i];
                }
                v
            },
            &mut |_, v, _| values.push(v),
        );
        assert!(end.converged);
        for i in 0..n {
            assert!((x[i] - b[i] / a[i]).abs() < 1e-6, "x[{i}] = {}", x[i]);
        }
        assert!(values.windows(2).all(|w| w[1] <= w[0]), "{values:?}");
        assert!(end.iterations < 60, "{end:?}");
    }
}
