use burn::tensor::Device;

use super::*;
use crate::head::HeadKind;
use crate::test_support::{blobs, names};
use crate::train::{ClassWeighting, Classifier, OptimizerKind, class_weights_for};

fn problem_for<'a>(
    design: &'a Design,
    labels: &'a [usize],
    k: usize,
    output: OutputKind,
    lambda: f64,
) -> LogisticProblem<'a> {
    let weights = class_weights_for(labels, k, ClassWeighting::On);
    LogisticProblem::new(design, labels, k, &weights, output, 0.1, lambda)
}

fn design_of(data: &LabelledEmbeddings) -> Design {
    Design::new(
        &data.embeddings,
        &FeatureNormalization::fit(&data.embeddings),
    )
}

#[test]
fn the_gradient_matches_finite_differences() {
    for (k, output) in [(2, OutputKind::Sigmoid), (3, OutputKind::Softmax)] {
        let data = blobs(&vec![7; k][..], 5, 1.0, 3);
        let design = design_of(&data);
        let problem = problem_for(&design, &data.labels, k, output, 0.3);
        let mut rng = crate::rng::SeededRng::new(4);
        let params: Vec<f64> = (0..problem.parameter_count())
            .map(|_| f64::from(rng.uniform(-0.5, 0.5)))
            .collect();
        let mut grad = vec![0.0; params.len()];
        problem.evaluate(&params, &mut grad);
        let mut scratch = vec![0.0; params.len()];
        for j in 0..params.len() {
            let h = 1e-3;
            let (mut up, mut down) = (params.clone(), params.clone());
            up[j] += h;
            down[j] -= h;
            let numeric = (problem.evaluate(&up, &mut scratch).objective
                - problem.evaluate(&down, &mut scratch).objective)
                / (2.0 * h);
            assert!(
                (numeric - grad[j]).abs() < 2e-4,
                "{output:?} parameter {j}: analytic {} numeric {numeric}",
                grad[j]
            );
        }
    }
}

#[test]
fn the_fit_reaches_a_stationary_point_and_a_stronger_penalty_shrinks_the_weights() {
    let data = blobs(&[30, 25, 20], 12, 1.0, 5);
    let design = design_of(&data);
    let mut norms = Vec::new();
    for lambda in [1e-3, 1e-1, 10.0] {
        let problem = problem_for(&design, &data.labels, 3, OutputKind::Softmax, lambda);
        let fitted = fit(&problem, None, &LbfgsOptions::default());
        assert!(fitted.end.converged, "λ {lambda}: {:?}", fitted.end);
        let mut grad = vec![0.0; fitted.params.len()];
        problem.evaluate(&fitted.params, &mut grad);
        let largest = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        assert!(largest < 1e-3, "λ {lambda}: gradient {largest}");
        // The objective only went down.
        assert!(
            fitted
                .history
                .windows(2)
                .all(|w| w[1].train_loss <= w[0].train_loss + 0.05),
            "λ {lambda}"
        );
        let d = design.d;
        norms.push(
            fitted
                .params
                .chunks(d + 1)
                .flat_map(|row| &row[..d])
                .map(|w| w * w)
                .sum::<f64>(),
        );
    }
    assert!(norms[0] > norms[1] && norms[1] > norms[2], "{norms:?}");
}

#[test]
fn a_warm_start_reaches_the_same_solution_in_fewer_iterations() {
    let data = blobs(&[40, 40], 16, 0.8, 6);
    let design = design_of(&data);
    let near = fit(
        &problem_for(&design, &data.labels, 2, OutputKind::Sigmoid, 0.05),
        None,
        &LbfgsOptions::default(),
    );
    let problem = problem_for(&design, &data.labels, 2, OutputKind::Sigmoid, 0.03);
    let cold = fit(&problem, None, &LbfgsOptions::default());
    let warm = fit(&problem, Some(&near.params), &LbfgsOptions::default());
    assert!(
        warm.end.iterations < cold.end.iterations,
        "{warm:?} {cold:?}"
    );
    for (a, b) in warm.params.iter().zip(&cold.params) {
        assert!((a - b).abs() < 1e-2, "{a} vs {b}");
    }
}

#[test]
fn a_fitted_linear_head_predicts_the_same_on_the_host_and_through_the_classifier() {
    for k in [2, 3] {
        let train = blobs(&vec![40; k][..], 10, 2.0, 7);
        let validation = blobs(&vec![20; k][..], 10, 2.0, 8);
        let config = TrainConfig {
            head: HeadKind::Linear,
            optimizer: OptimizerKind::Lbfgs,
            weight_decay: 0.01,
            epochs: 100,
            ..TrainConfig::default()
        };
        let mut events = Vec::new();
        struct Record<'a>(&'a mut Vec<String>);
        impl Progress for Record<'_> {
            fn event(&mut self, event: &TrainEvent) {
                self.0.push(match event {
                    TrainEvent::Started { .. } => "started".into(),
                    TrainEvent::Epoch(_) => "epoch".into(),
                    TrainEvent::Finished { .. } => "finished".into(),
                    TrainEvent::Batch { .. } => "batch".into(),
                });
            }
        }
        let trained = fit_linear_head(
            &names(k),
            &train,
            Some(&validation),
            &config,
            &mut Record(&mut events),
        )
        .expect("fits");
        let accuracy = trained.validation.as_ref().map(|v| v.accuracy);
        assert!(
            accuracy.is_some_and(|a| a > 0.9),
            "{k} classes: {accuracy:?}"
        );
        assert_eq!(events.first().map(String::as_str), Some("started"));
        assert_eq!(events.last().map(String::as_str), Some("finished"));
        assert_eq!(
            events.iter().filter(|e| *e == "epoch").count(),
            trained.history.len()
        );
        assert_eq!(trained.kept_epoch, trained.history.len());
        let device = Device::flex();
        let classifier = Classifier::new(
            &trained.config,
            &trained.weights,
            &trained.normalization,
            &device,
        )
        .expect("a valid head");
        let through_burn =
            pollster::block_on(classifier.predict(&validation.embeddings)).expect("predicts");
        let design = Design::new(&validation.embeddings, &trained.normalization);
        let params = fit(
            &LogisticProblem::new(
                &Design::new(&train.embeddings, &trained.normalization),
                &train.labels,
                k,
                &trained.class_weights,
                trained.config.output,
                0.0,
                0.01,
            ),
            None,
            &solver_options(&config),
        )
        .params;
        let on_host = probabilities(&params, &design, trained.config.output, k);
        for (a, b) in through_burn.iter().flatten().zip(on_host.iter().flatten()) {
            assert!((a - b).abs() < 1e-4, "{k} classes: {a} vs {b}");
        }
    }
}

#[test]
fn lbfgs_is_refused_for_an_mlp_head_and_an_out_of_range_penalty() {
    let data = blobs(&[5, 5], 4, 2.0, 9);
    for config in [
        TrainConfig {
            optimizer: OptimizerKind::Lbfgs,
            ..TrainConfig::default()
        },
        TrainConfig {
            head: HeadKind::Linear,
            optimizer: OptimizerKind::Lbfgs,
            weight_decay: 1e5,
            ..TrainConfig::default()
        },
    ] {
        let result = fit_linear_head(&names(2), &data, None, &config, &mut NoProgress);
        assert!(
            matches!(result, Err(TrainError::Config(_))),
            "{config:?}: {result:?}"
        );
    }
}

struct NoProgress;
impl Progress for NoProgress {}
