use super::*;
use crate::rng::SeededRng;

fn facts(hash: &str, width: u32, height: u32, extension: &str) -> Option<ImageFacts> {
    Some(ImageFacts {
        content_hash: hash.into(),
        width,
        height,
        format: "JPEG".into(),
        extension: extension.into(),
        dark_share: 0.1,
        hashes: Vec::new(),
    })
}

/// `n` random directions in 16 dimensions.
fn random_embeddings(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SeededRng::new(seed);
    (0..n)
        .map(|_| (0..16).map(|_| rng.uniform(-0.5, 0.5)).collect())
        .collect()
}

#[test]
fn a_file_under_two_classes_is_a_label_conflict_and_not_also_a_near_duplicate() {
    let labels = [0, 1, 0, 1];
    let mut embeddings = random_embeddings(4, 1);
    embeddings[3] = embeddings[0].clone();
    let f = vec![
        facts("a", 8, 8, "png"),
        facts("b", 8, 8, "png"),
        facts("c", 8, 8, "png"),
        facts("a", 8, 8, "png"),
    ];
    let check = DataCheck::run(2, &labels, &embeddings, &f, None, 7).expect("checked");
    let exact: Vec<&Finding> = check
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::ExactDuplicate { .. }))
        .collect();
    assert_eq!(
        exact,
        [&Finding::ExactDuplicate {
            items: vec![0, 3],
            classes: vec![0, 1]
        }]
    );
    let names = ["NORMAL".to_string(), "PNEUMONIA".to_string()];
    assert!(
        exact[0]
            .advice(&names, &labels)
            .starts_with("Label conflict: the same image is filed under NORMAL and PNEUMONIA")
    );
    assert!(
        !check
            .findings
            .iter()
            .any(|f| matches!(f, Finding::NearDuplicate { .. }))
    );
    assert_eq!(check.duplicate_pairs(), [(0, 3)]);
    let flags = check.flags();
    assert_eq!(flags.len(), 4);
    assert_eq!(flags[0], ["exact_duplicate"]);
    assert_eq!(flags[3], ["exact_duplicate"]);
    assert!(flags[1].is_empty() && flags[2].is_empty());
}

#[test]
fn a_slightly_changed_copy_is_a_near_duplicate_and_a_different_image_is_not() {
    let labels = [0, 0, 1, 1, 0];
    let mut embeddings = random_embeddings(5, 2);
    embeddings[4] = embeddings[1].iter().map(|v| v * 1.3 + 0.001).collect();
    let f: Vec<Option<ImageFacts>> = (0..5).map(|i| facts(&i.to_string(), 8, 8, "jpg")).collect();
    let check = DataCheck::run(2, &labels, &embeddings, &f, None, 7).expect("checked");
    let near: Vec<(usize, usize)> = check
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::NearDuplicate {
                a,
                b,
                cosine,
                hash_bits,
            } => {
                let cosine = cosine.expect("both embedded");
                assert!((NEAR_DUPLICATE_COSINE..=1.0).contains(&cosine));
                assert_eq!(*hash_bits, None, "no hashes");
                Some((*a, *b))
            }
            _ => None,
        })
        .collect();
    assert_eq!(near, [(1, 4)]);
}

#[test]
fn an_image_among_another_class_is_a_label_suspect() {
    // Class 0 around one direction, class 1 around the opposite; item 6 (labelled 1) sits
    // among class 0.
    let mut rng = SeededRng::new(3);
    let mut around = |sign: f32| -> Vec<f32> {
        (0..16)
            .map(|d| if d == 0 { sign } else { 0.0 } + 0.2 * (rng.uniform(-0.5, 0.5)))
            .collect()
    };
    let mut embeddings: Vec<Vec<f32>> = (0..6).map(|_| around(1.0)).collect();
    embeddings.extend((0..6).map(|_| around(-1.0)));
    embeddings[6] = around(1.0);
    let labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
    let f = vec![None; 12];
    let check = DataCheck::run(2, &labels, &embeddings, &f, None, 7).expect("checked");
    let suspects: Vec<(usize, usize, usize)> = check
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::LabelSuspect {
                item,
                neighbours,
                neighbours_class,
            } => Some((*item, neighbours.len(), *neighbours_class)),
            _ => None,
        })
        .collect();
    assert_eq!(suspects, [(6, NEIGHBOURS, 0)]);
    // Without facts there are no exact duplicates or shortcuts to report.
    assert!(check.properties.is_empty());
}

#[test]
fn a_size_that_gives_the_class_away_is_a_shortcut_and_random_sizes_are_not() {
    let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
    let embeddings = random_embeddings(40, 4);
    let telling: Vec<Option<ImageFacts>> = (0..40)
        .map(|i| {
            facts(
                &i.to_string(),
                if i % 2 == 0 { 256 } else { 400 },
                256,
                "jpg",
            )
        })
        .collect();
    let check = DataCheck::run(2, &labels, &embeddings, &telling, None, 7).expect("checked");
    let size = check
        .properties
        .iter()
        .find(|s| s.property == Property::PixelSize)
        .expect("scored");
    assert!(size.flagged && size.balanced_accuracy > 0.95, "{size:?}");
    assert_eq!(size.chance, 0.5);
    assert_eq!(size.examples[0].1.iter().sum::<usize>(), 20);
    let format = check
        .properties
        .iter()
        .find(|s| s.property == Property::FileFormat)
        .expect("scored");
    assert!(!format.flagged, "one format for all: {format:?}");
    let names = ["a".to_string(), "b".to_string()];
    assert!(check.findings.iter().any(
        |f| matches!(f, Finding::Shortcut(s) if s.property == Property::PixelSize
        && f.advice(&names, &labels).contains("The pixel size alone predicts the class"))
    ));

    let mut rng = SeededRng::new(5);
    let random: Vec<Option<ImageFacts>> = (0..40)
        .map(|i| facts(&i.to_string(), 200 + rng.below(3) as u32, 256, "jpg"))
        .collect();
    let check = DataCheck::run(2, &labels, &embeddings, &random, None, 7).expect("checked");
    let size = check
        .properties
        .iter()
        .find(|s| s.property == Property::PixelSize)
        .expect("scored");
    assert!(!size.flagged, "{size:?}");
}

#[test]
fn split_groups_join_duplicates_and_patients_transitively() {
    let base: Vec<String> = ["p1", "p1", "p2", "p3", "p4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let groups = split_groups(5, Some(&base), &[(1, 2), (4, 3)]);
    assert_eq!(groups, ["p1", "p1", "p1", "p3", "p3"]);
    let groups = split_groups(4, None, &[(2, 3)]);
    assert_eq!(groups, ["dup-0", "dup-1", "dup-2", "dup-2"]);
}

#[test]
fn mismatched_inputs_are_refused() {
    let err = DataCheck::run(2, &[0, 1], &random_embeddings(1, 1), &[None, None], None, 1);
    assert!(matches!(
        err,
        Err(CheckError::Length {
            what: "embeddings",
            found: 1,
            expected: 2
        })
    ));
    let err = DataCheck::run(2, &[0, 2], &random_embeddings(2, 1), &[None, None], None, 1);
    assert_eq!(
        err,
        Err(CheckError::Label {
            label: 2,
            classes: 2
        })
    );
}

#[test]
fn facts_read_the_size_extension_and_black_border_of_a_file() {
    // A 100×50 grey image with a black band 20 pixels wide on the left: 40% near-black.
    let image =
        image::GrayImage::from_fn(100, 50, |x, _| image::Luma([if x < 40 { 5 } else { 128 }]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageLuma8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .expect("encoded");
    let f = ImageFacts::from_bytes("scan.Final.PNG", &bytes).expect("read");
    assert_eq!(
        (f.width, f.height, f.format.as_str(), f.extension.as_str()),
        (100, 50, "PNG", "png")
    );
    assert!((f.dark_share - 0.4).abs() < 1e-6, "{}", f.dark_share);
    assert_eq!(f.content_hash, crate::embeddings::content_hash(&bytes));
    assert_eq!(
        ImageFacts::from_bytes(".hidden", &bytes)
            .expect("read")
            .extension,
        ""
    );
    assert!(ImageFacts::from_bytes("x.png", b"not an image").is_err());
}

#[test]
fn a_resized_or_mirrored_copy_has_nearly_the_same_hash_and_another_image_does_not() {
    let scene = image::GrayImage::from_fn(120, 90, |x, y| {
        image::Luma([((x * 7 + y * y / 3) % 251) as u8 / 2
            + if (x / 30 + y / 20) % 2 == 0 { 100 } else { 0 }])
    });
    let other =
        image::GrayImage::from_fn(120, 90, |x, y| image::Luma([((x * x + 3 * y) % 199) as u8]));
    let resized = image::imageops::resize(&scene, 84, 63, image::imageops::FilterType::Triangle);
    let mirrored = image::imageops::flip_horizontal(&scene);
    let facts_of = |img: &image::GrayImage, name: &str| {
        let mut bytes = Vec::new();
        image::DynamicImage::ImageLuma8(img.clone())
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .expect("encoded");
        Some(ImageFacts::from_bytes(name, &bytes).expect("read"))
    };
    // The same picture a little brighter: the same hash, but (say) a dissimilar embedding.
    let brighter = image::GrayImage::from_fn(120, 90, |x, y| {
        image::Luma([scene.get_pixel(x, y).0[0].saturating_add(3)])
    });
    let f = vec![
        facts_of(&scene, "a.png"),
        facts_of(&resized, "b.png"),
        facts_of(&mirrored, "c.png"),
        facts_of(&other, "d.png"),
        facts_of(&brighter, "e.png"),
    ];
    let bits = |i: usize, j: usize| {
        let (a, b) = (f[i].as_ref().expect("facts"), f[j].as_ref().expect("facts"));
        facts::hash_distance(a, b).expect("hashes")
    };
    assert!(bits(0, 1) <= NEAR_DUPLICATE_BITS, "resized: {}", bits(0, 1));
    assert_eq!(bits(0, 2), 0, "mirrored");
    assert!(
        bits(0, 3) > 3 * NEAR_DUPLICATE_BITS,
        "another image: {}",
        bits(0, 3)
    );
    // The copies' embeddings are alike (cosine ≥ 0.97), the others' are not.
    let mut embeddings = random_embeddings(5, 9);
    for i in 1..3 {
        embeddings[i] = embeddings[0].iter().map(|v| v + 0.01).collect();
    }
    assert!(
        bits(0, 4) <= NEAR_DUPLICATE_BITS,
        "brighter: {}",
        bits(0, 4)
    );
    let check = DataCheck::run(2, &[0, 1, 0, 1, 0], &embeddings, &f, None, 7).expect("checked");
    let near: Vec<(usize, usize)> = check
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::NearDuplicate { a, b, .. } => Some((*a, *b)),
            _ => None,
        })
        .collect();
    assert_eq!(near, [(0, 1), (0, 2), (1, 2)]);
}
