use super::*;

#[test]
fn errors_name_classes_by_their_names() {
    let classes = vec!["NORMAL".to_string(), "PNEUMONIA".into(), "COVID".into()];
    let error = stratified_split(&[0, 0, 1, 1, 2], None, 0.2, 1).expect_err("one COVID image");
    assert_eq!(error, SplitError::TooFewItems { class: 2, count: 1 });
    let message = error.with_class_names(&classes);
    assert!(
        message.starts_with("the class \u{201c}COVID\u{201d} has only 1 item(s)"),
        "{message}"
    );
    assert!(!message.contains("class 2"), "{message}");
    // A label without a name still says which.
    assert!(
        error
            .with_class_names(&[])
            .starts_with("class 2 has only 1")
    );
}

fn labels_with(counts: &[usize]) -> Vec<usize> {
    // Interleaved so that classes are not in contiguous blocks.
    let mut labels = Vec::new();
    let mut left = counts.to_vec();
    while left.iter().any(|&c| c > 0) {
        for (class, c) in left.iter_mut().enumerate() {
            if *c > 0 {
                labels.push(class);
                *c -= 1;
            }
        }
    }
    labels
}

fn count_class(labels: &[usize], indices: &[usize], class: usize) -> usize {
    indices.iter().filter(|&&i| labels[i] == class).count()
}

fn assert_partition(split: &Split, n: usize) {
    let mut all: Vec<usize> = split
        .train
        .iter()
        .chain(&split.validation)
        .copied()
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every index exactly once");
    assert!(split.train.is_sorted());
    assert!(split.validation.is_sorted());
}

#[test]
fn fractions_per_class_are_respected() {
    let labels = labels_with(&[100, 30]);
    let split = stratified_split(&labels, None, 0.2, 42).unwrap();
    assert_partition(&split, 130);
    assert_eq!(count_class(&labels, &split.validation, 0), 20);
    assert_eq!(count_class(&labels, &split.validation, 1), 6);
    assert_eq!(count_class(&labels, &split.train, 0), 80);
    assert_eq!(count_class(&labels, &split.train, 1), 24);
}

#[test]
fn rounding_and_bounds_per_class() {
    // 2 items: 0.1 × 2 rounds to 0 → at least 1; 0.9 × 2 rounds to 2 → at most 1.
    // 5 items at 0.5: 2.5 rounds to 3.
    let labels = labels_with(&[2, 2, 5]);
    let low = stratified_split(&labels, None, 0.1, 1).unwrap();
    let high = stratified_split(&labels, None, 0.9, 1).unwrap();
    for class in 0..2 {
        assert_eq!(count_class(&labels, &low.validation, class), 1);
        assert_eq!(count_class(&labels, &high.validation, class), 1);
    }
    assert_eq!(count_class(&labels, &low.validation, 2), 1);
    assert_eq!(count_class(&labels, &high.validation, 2), 4);
    let half = stratified_split(&labels, None, 0.5, 1).unwrap();
    assert_eq!(count_class(&labels, &half.validation, 2), 3);
}

#[test]
fn deterministic_per_seed_and_different_for_another_seed() {
    let labels = labels_with(&[100, 30, 17]);
    let a = stratified_split(&labels, None, 0.25, 7).unwrap();
    let b = stratified_split(&labels, None, 0.25, 7).unwrap();
    let c = stratified_split(&labels, None, 0.25, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.validation.len(), c.validation.len());
}

#[test]
fn label_gaps_are_fine() {
    // Labels 0 and 3 only: absent classes are simply not split.
    let labels = vec![0, 3, 0, 3, 0, 3];
    let split = stratified_split(&labels, None, 0.3, 0).unwrap();
    assert_partition(&split, 6);
    assert_eq!(count_class(&labels, &split.validation, 0), 1);
    assert_eq!(count_class(&labels, &split.validation, 3), 1);
}

#[test]
fn empty_input_gives_empty_split() {
    assert_eq!(
        stratified_split(&[], None, 0.2, 0).unwrap(),
        Split::default()
    );
}

#[test]
fn bad_fractions_are_errors() {
    let labels = labels_with(&[10, 10]);
    for f in [0.0, 1.0, -0.2, 1.5, f64::NAN, f64::INFINITY] {
        let err = stratified_split(&labels, None, f, 0).unwrap_err();
        assert!(matches!(err, SplitError::BadFraction(_)), "{f}: {err}");
    }
}

#[test]
fn single_item_class_is_an_error_naming_the_class() {
    let labels = vec![0, 0, 0, 1, 2, 2];
    let err = stratified_split(&labels, None, 0.2, 0).unwrap_err();
    assert_eq!(err, SplitError::TooFewItems { class: 1, count: 1 });
    assert!(err.to_string().contains("class 1"), "{err}");
}

fn grouped_fixture() -> (Vec<usize>, Vec<String>) {
    // Class 0: 40 patients with 1..=4 images; class 1: 15 patients with 1..=3 images.
    let mut labels = Vec::new();
    let mut keys = Vec::new();
    for p in 0..40 {
        for _ in 0..(p % 4 + 1) {
            labels.push(0);
            keys.push(format!("person{p}"));
        }
    }
    for p in 0..15 {
        for _ in 0..(p % 3 + 1) {
            labels.push(1);
            keys.push(format!("IM-{p:04}"));
        }
    }
    // Interleave deterministically so groups are not contiguous.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    SeededRng::new(99).shuffle(&mut order);
    let labels = order.iter().map(|&i| labels[i]).collect();
    let keys = order.iter().map(|&i| keys[i].clone()).collect();
    (labels, keys)
}

#[test]
fn groups_never_straddle_and_fractions_are_close() {
    let (labels, keys) = grouped_fixture();
    for seed in 0..20 {
        let split = stratified_split(&labels, Some(&keys), 0.2, seed).unwrap();
        assert_partition(&split, labels.len());
        let train_keys: std::collections::HashSet<&str> =
            split.train.iter().map(|&i| keys[i].as_str()).collect();
        for &i in &split.validation {
            assert!(
                !train_keys.contains(keys[i].as_str()),
                "{} on both sides",
                keys[i]
            );
        }
        // Class 0 has 100 items (target 20), class 1 has 30 (target 6); a group passes the
        // target by less than its size (≤ 4, resp. ≤ 3).
        let v0 = count_class(&labels, &split.validation, 0);
        let v1 = count_class(&labels, &split.validation, 1);
        assert!((20..20 + 4).contains(&v0), "seed {seed}: {v0}");
        assert!((6..6 + 3).contains(&v1), "seed {seed}: {v1}");
    }
    let a = stratified_split(&labels, Some(&keys), 0.2, 3).unwrap();
    let b = stratified_split(&labels, Some(&keys), 0.2, 3).unwrap();
    let c = stratified_split(&labels, Some(&keys), 0.2, 4).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn never_all_groups_of_a_class() {
    // Class 0: two groups of sizes 1 and 9; even 0.9 moves only one group.
    let labels = vec![0; 10];
    let keys: Vec<String> = (0..10)
        .map(|i| if i == 0 { "a" } else { "b" }.into())
        .collect();
    for seed in 0..10 {
        let split = stratified_split(&labels, Some(&keys), 0.9, seed).unwrap();
        assert!(!split.train.is_empty() && !split.validation.is_empty());
        assert_partition(&split, 10);
    }
}

#[test]
fn group_class_is_majority_with_ties_to_lowest() {
    assert_eq!(majority_label(&[1, 0, 1, 2], &[0, 1, 2, 3]), 1);
    assert_eq!(majority_label(&[2, 1, 1, 2], &[0, 1, 2, 3]), 1);
    assert_eq!(majority_label(&[3, 0], &[0, 1]), 0);
}

#[test]
fn too_few_groups_is_an_error_naming_the_class() {
    // Class 1 has two items but both belong to one patient.
    let labels = vec![0, 0, 1, 1];
    let keys: Vec<String> = ["a", "b", "c", "c"].map(String::from).to_vec();
    let err = stratified_split(&labels, Some(&keys), 0.5, 0).unwrap_err();
    assert_eq!(err, SplitError::TooFewGroups { class: 1, count: 1 });
    assert!(err.to_string().contains("class 1"), "{err}");
    // A class whose only item sits in another class's majority group owns no group.
    let labels = vec![0, 0, 1, 0];
    let keys: Vec<String> = ["a", "b", "b", "c"].map(String::from).to_vec();
    let err = stratified_split(&labels, Some(&keys), 0.5, 0).unwrap_err();
    assert_eq!(err, SplitError::TooFewGroups { class: 1, count: 0 });
}

#[test]
fn key_count_mismatch_is_an_error() {
    let keys = vec!["a".to_string()];
    let err = stratified_split(&[0, 0], Some(&keys), 0.5, 0).unwrap_err();
    assert_eq!(
        err,
        SplitError::GroupCountMismatch {
            labels: 2,
            groups: 1
        }
    );
}

#[test]
fn chest_xray_pattern_keys() {
    let pattern = GroupPattern::new(r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)").unwrap();
    assert_eq!(pattern.key("person1_bacteria_1.jpeg"), "person1");
    assert_eq!(pattern.key("person1_virus_6.jpeg"), "person1");
    assert_eq!(pattern.key("person10_virus_35.jpeg"), "person10");
    assert_eq!(pattern.key("IM-0115-0001.jpeg"), "IM-0115");
    assert_eq!(pattern.key("NORMAL2-IM-0372-0001.jpeg"), "NORMAL2-IM-0372");
    assert_eq!(pattern.key("other.png"), "other.png");
    assert_eq!(pattern.as_str(), r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)");
}

#[test]
fn whole_match_without_group_and_empty_matches() {
    let pattern = GroupPattern::new(r"patient\d+").unwrap();
    assert_eq!(pattern.key("scan_patient12_a.png"), "patient12");
    // An empty match is no key: the name is its own group.
    let pattern = GroupPattern::new(r"x*").unwrap();
    assert_eq!(pattern.key("abc.png"), "abc.png");
    // An optional group that did not take part falls back to the whole match.
    let pattern = GroupPattern::new(r"p(\d+)?").unwrap();
    assert_eq!(pattern.key("p_1.png"), "p");
    assert_eq!(pattern.key("p7.png"), "7");
}

#[test]
fn bad_pattern_is_an_error() {
    let err = GroupPattern::new("(").unwrap_err();
    assert!(matches!(err, SplitError::BadPattern(_)));
    assert!(
        err.to_string().starts_with("invalid group pattern \"(\""),
        "{err}"
    );
}

#[test]
fn split_round_trips_through_serde() {
    let split = Split {
        train: vec![0, 2],
        validation: vec![1],
    };
    let json = serde_json::to_string(&split).unwrap();
    assert_eq!(serde_json::from_str::<Split>(&json).unwrap(), split);
}
