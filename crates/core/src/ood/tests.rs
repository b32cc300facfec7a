use super::*;

const DIM: usize = 32;

/// `n` embeddings scattered around the unit vector along `axis` (noise of `spread` per value).
fn cluster(axis: usize, n: usize, spread: f32, rng: &mut SeededRng) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            (0..DIM)
                .map(|j| f32::from(u8::from(j == axis)) + spread * rng.normal())
                .collect()
        })
        .collect()
}

fn two_classes(n: usize, rng: &mut SeededRng) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut embeddings = cluster(0, n, 0.1, rng);
    embeddings.extend(cluster(1, n, 0.1, rng));
    let labels = (0..2 * n).map(|i| usize::from(i >= n)).collect();
    (embeddings, labels)
}

fn flagged(reference: &OodReference, images: &[Vec<f32>]) -> f64 {
    let hits = images
        .iter()
        .filter(|e| reference.score(e).expect("scores").out_of_distribution)
        .count();
    hits as f64 / images.len() as f64
}

#[test]
fn new_images_like_the_training_ones_pass_and_unlike_ones_are_flagged() {
    let mut rng = SeededRng::new(1);
    let (embeddings, labels) = two_classes(150, &mut rng);
    let reference = OodReference::fit(&embeddings, &labels, None, 7).expect("fits");
    assert_eq!(reference.calibration.calibration_images, 300);
    // Held-out images from the same two classes: about 5 % flagged by construction.
    let (held_out, _) = two_classes(200, &mut rng);
    let rate = flagged(&reference, &held_out);
    assert!(rate <= 0.12, "{rate} of in-distribution images flagged");
    // Images of a third kind, and of the same kind but much noisier, are flagged.
    assert_eq!(flagged(&reference, &cluster(2, 50, 0.1, &mut rng)), 1.0);
    assert!(flagged(&reference, &cluster(0, 50, 0.6, &mut rng)) >= 0.95);
    // The score is the distance over the threshold, and scale does not matter (cosine).
    let s = reference.score(&held_out[0]).expect("scores");
    assert!((s.score - s.distance / reference.calibration.threshold).abs() < 1e-6);
    let scaled: Vec<f32> = held_out[0].iter().map(|v| v * 40.0).collect();
    assert!((reference.score(&scaled).expect("scores").distance - s.distance).abs() < 1e-5);
}

#[test]
fn references_are_capped_seeded_and_keep_a_rare_class() {
    let mut rng = SeededRng::new(2);
    let mut embeddings = cluster(0, 1000, 0.1, &mut rng);
    embeddings.extend(cluster(1, 20, 0.1, &mut rng));
    let labels: Vec<usize> = (0..1020).map(|i| usize::from(i >= 1000)).collect();
    let a = OodReference::fit(&embeddings, &labels, None, 3).expect("fits");
    assert_eq!(a.calibration.references, MAX_REFERENCES);
    assert_eq!(a.embeddings.len(), MAX_REFERENCES * DIM);
    // Every image of the rare class is a reference: its new images are not flagged for
    // being rare.
    let rare_rows = a
        .embeddings
        .chunks_exact(DIM)
        .filter(|r| r[1] > r[0])
        .count();
    assert_eq!(rare_rows, 20);
    assert_eq!(
        a,
        OodReference::fit(&embeddings, &labels, None, 3).expect("fits")
    );
    assert_ne!(
        a.embeddings,
        OodReference::fit(&embeddings, &labels, None, 4)
            .expect("fits")
            .embeddings
    );
    for row in a.embeddings.chunks_exact(DIM) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn a_patients_other_images_are_not_its_out_of_fold_neighbours() {
    // Each patient has six near-copies of one image; patients differ from each other.
    let mut rng = SeededRng::new(5);
    let mut embeddings = Vec::new();
    let mut groups = Vec::new();
    for patient in 0..40 {
        let base = &cluster(0, 1, 0.15, &mut rng)[0];
        for _ in 0..6 {
            embeddings.push(base.iter().map(|v| v + 0.005 * rng.normal()).collect());
            groups.push(format!("p{patient}"));
        }
    }
    let labels = vec![0; embeddings.len()];
    let grouped = OodReference::fit(&embeddings, &labels, Some(&groups), 1).expect("fits");
    let ungrouped = OodReference::fit(&embeddings, &labels, None, 1).expect("fits");
    // Without the groups, the threshold is the distance between copies and a new patient
    // is flagged; with them, new patients pass.
    let new_patients: Vec<Vec<f32>> = cluster(0, 100, 0.15, &mut rng);
    assert!(grouped.calibration.threshold > 5.0 * ungrouped.calibration.threshold);
    assert!(flagged(&ungrouped, &new_patients) > 0.9);
    assert!(flagged(&grouped, &new_patients) <= 0.15);
}

#[test]
fn bad_inputs_are_errors() {
    let mut rng = SeededRng::new(9);
    let (embeddings, labels) = two_classes(10, &mut rng);
    assert_eq!(
        OodReference::fit(
            &embeddings[..MIN_IMAGES - 1],
            &labels[..MIN_IMAGES - 1],
            None,
            0
        ),
        Err(OodError::TooFew(MIN_IMAGES - 1))
    );
    let mut degenerate = embeddings.clone();
    degenerate[3] = vec![0.0; DIM];
    assert_eq!(
        OodReference::fit(&degenerate, &labels, None, 0),
        Err(OodError::Degenerate)
    );
    degenerate[3] = vec![f32::NAN; DIM];
    assert_eq!(
        OodReference::fit(&degenerate, &labels, None, 0),
        Err(OodError::Degenerate)
    );
    let mut ragged = embeddings.clone();
    ragged[2].pop();
    assert!(matches!(
        OodReference::fit(&ragged, &labels, None, 0),
        Err(OodError::Dimension { .. })
    ));
    assert!(matches!(
        OodReference::fit(&embeddings, &labels[1..], None, 0),
        Err(OodError::Dimension { .. })
    ));
    let reference = OodReference::fit(&embeddings, &labels, None, 0).expect("fits");
    assert!(matches!(
        reference.score(&[1.0; 3]),
        Err(OodError::Dimension { .. })
    ));
    assert_eq!(reference.score(&[0.0; DIM]), Err(OodError::Degenerate));
    // A stored reference must fit its calibration.
    let parts = |f: &dyn Fn(&mut OodCalibration, &mut Vec<f32>)| {
        let (mut c, mut e) = (reference.calibration.clone(), reference.embeddings.clone());
        f(&mut c, &mut e);
        OodReference::from_parts(c, DIM, e)
    };
    assert_eq!(parts(&|_, _| {}), Ok(reference.clone()));
    assert!(parts(&|c, _| c.method = "mahalanobis".into()).is_err());
    assert!(parts(&|_, e| e.truncate(5)).is_err());
    assert!(parts(&|_, e| e[0] = f32::INFINITY).is_err());
    assert!(parts(&|c, _| c.threshold = 0.0).is_err());
    assert!(parts(&|c, _| c.neighbours = c.references + 1).is_err());
}
