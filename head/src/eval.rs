//! Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::head::ClassifierHead;
use crate::train::EmbeddedExample;

/// Scores of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// The label's name.
    pub label: String,
    /// Of the messages predicted as this label, the share that truly are (0 when none is).
    pub precision: f64,
    /// Of the messages truly of this label, the share predicted as it.
    pub recall: f64,
    pub f1: f64,
    /// Messages truly of this label.
    pub support: usize,
}

/// Classification quality on a labelled set. The label names are those of `per_class`, in
/// index order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub examples: usize,
    pub accuracy: f64,
    /// Mean F1 over the labels that occur in the truth or the predictions.
    pub macro_f1: f64,
    /// One per label, in label order.
    pub per_class: Vec<ClassScores>,
    /// `confusion[true][predicted]`, label indices.
    pub confusion: Vec<Vec<usize>>,
}

impl EvalReport {
    /// Scores `(truth, predicted)` pairs of label indices into `labels`.
    ///
    /// # Panics
    /// When a pair holds an index outside `labels`.
    pub fn from_pairs(
        labels: &[impl AsRef<str>],
        pairs: impl IntoIterator<Item = (usize, usize)>,
    ) -> Self {
        let label_count = labels.len();
        let mut confusion = vec![vec![0usize; label_count]; label_count];
        for (truth, predicted) in pairs {
            confusion[truth][predicted] += 1;
        }
        let examples: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..label_count).map(|i| confusion[i][i]).sum();
        let ratio = |num: usize, den: usize| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };

        let mut per_class = Vec::with_capacity(label_count);
        let mut f1_sum = 0.0;
        let mut labels_seen = 0;
        for (i, label) in labels.iter().enumerate() {
            let support: usize = confusion[i].iter().sum();
            let predicted: usize = confusion.iter().map(|row| row[i]).sum();
            let precision = ratio(confusion[i][i], predicted);
            let recall = ratio(confusion[i][i], support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            if support + predicted > 0 {
                f1_sum += f1;
                labels_seen += 1;
            }
            per_class.push(ClassScores {
                label: label.as_ref().to_string(),
                precision,
                recall,
                f1,
                support,
            });
        }
        Self {
            examples,
            accuracy: ratio(correct, examples),
            macro_f1: if labels_seen == 0 {
                0.0
            } else {
                f1_sum / labels_seen as f64
            },
            per_class,
            confusion,
        }
    }

    /// The scores of the label at `index`.
    ///
    /// # Panics
    /// When `index` is not a label index.
    pub fn class(&self, index: usize) -> &ClassScores {
        &self.per_class[index]
    }

    /// The scores of the label named `label`.
    pub fn class_named(&self, label: &str) -> Option<&ClassScores> {
        self.per_class.iter().find(|scores| scores.label == label)
    }

    /// The label names, in index order.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.per_class.iter().map(|scores| scores.label.as_str())
    }
}

/// Classifies `examples` with `head` and scores the result; `labels` names the head's outputs.
pub fn evaluate(
    head: &ClassifierHead,
    labels: &[impl AsRef<str>],
    examples: &[EmbeddedExample],
) -> Result<EvalReport> {
    if labels.len() != head.label_count() {
        return Err(Error::Training(format!(
            "{} label names for a head with {} outputs",
            labels.len(),
            head.label_count()
        )));
    }
    if let Some(example) = examples.iter().find(|e| e.label >= labels.len()) {
        return Err(Error::Training(format!(
            "an example has label {}, there are {} labels",
            example.label,
            labels.len()
        )));
    }
    let embeddings: Vec<Vec<f32>> = examples.iter().map(|e| e.embedding.clone()).collect();
    let predictions = head.classify_embeddings(&embeddings)?;
    Ok(EvalReport::from_pairs(
        labels,
        examples
            .iter()
            .zip(&predictions)
            .map(|(e, p)| (e.label, p.label)),
    ))
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Columns as wide as the longest label needs (10 and 8 at least, the widths the
        // four sentiment labels always had).
        let longest = self.labels().map(|l| l.chars().count()).max().unwrap_or(0);
        let row = longest.max(9) + 1;
        let column = longest.max(8);
        writeln!(
            f,
            "{} messages  accuracy {:.3}  macro-F1 {:.3}",
            self.examples, self.accuracy, self.macro_f1
        )?;
        writeln!(
            f,
            "{:<row$} {:>9} {:>7} {:>7} {:>8}",
            "label", "precision", "recall", "F1", "support"
        )?;
        for scores in &self.per_class {
            writeln!(
                f,
                "{:<row$} {:>9.3} {:>7.3} {:>7.3} {:>8}",
                scores.label, scores.precision, scores.recall, scores.f1, scores.support
            )?;
        }
        writeln!(f, "confusion matrix (rows: true label, columns: predicted)")?;
        write!(f, "{:<row$}", "")?;
        for label in self.labels() {
            write!(f, " {label:>column$}")?;
        }
        writeln!(f)?;
        for (label, counts) in self.labels().zip(&self.confusion) {
            write!(f, "{label:<row$}")?;
            for count in counts {
                write!(f, " {count:>column$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: [&str; 4] = ["anger", "anxious", "neutral", "positive"];
    const ANGER: usize = 0;
    const ANXIOUS: usize = 1;
    const NEUTRAL: usize = 2;
    const POSITIVE: usize = 3;

    #[test]
    fn scores_match_a_hand_computed_example() {
        // anger: 3 true, predicted anger, anger, neutral; anxious: 1 true, predicted anger;
        // neutral: 2 true, both right; positive never occurs.
        let report = EvalReport::from_pairs(
            &LABELS,
            [
                (ANGER, ANGER),
                (ANGER, ANGER),
                (ANGER, NEUTRAL),
                (ANXIOUS, ANGER),
                (NEUTRAL, NEUTRAL),
                (NEUTRAL, NEUTRAL),
            ],
        );
        assert_eq!(report.examples, 6);
        assert!((report.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let anger = report.class(ANGER);
        assert_eq!(anger.label, "anger");
        assert!((anger.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((anger.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(anger.support, 3);
        assert_eq!(report.class(ANXIOUS).f1, 0.0);
        let neutral = report.class_named("neutral").expect("neutral");
        assert!((neutral.precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(neutral.recall, 1.0);
        assert!((neutral.f1 - 0.8).abs() < 1e-12);
        // positive is absent from truth and predictions, so it is left out of the mean
        let expected_macro = (2.0 / 3.0 + 0.0 + 0.8) / 3.0;
        assert!((report.macro_f1 - expected_macro).abs() < 1e-12);
        assert_eq!(report.confusion[ANXIOUS][ANGER], 1);
        assert_eq!(report.confusion[POSITIVE], [0; 4]);
    }

    #[test]
    fn display_is_a_table_with_every_label() {
        let report = EvalReport::from_pairs(&LABELS, [(ANGER, ANGER), (POSITIVE, NEUTRAL)]);
        let text = report.to_string();
        assert!(text.contains("accuracy 0.500"), "{text}");
        for label in LABELS {
            assert!(text.contains(label), "{text}");
        }
        assert!(text.contains("confusion matrix"), "{text}");
        // The layout the four sentiment labels have always had.
        assert!(
            text.contains("\nlabel      precision  recall      F1  support\n"),
            "{text}"
        );
        assert!(
            text.contains("\n              anger  anxious  neutral positive\n"),
            "{text}"
        );
        assert!(
            text.contains("\npositive          0        0        1        0\n"),
            "{text}"
        );
    }

    #[test]
    fn long_label_names_widen_the_columns() {
        let labels = ["cancel_subscription", "greeting"];
        let report = EvalReport::from_pairs(&labels, [(0, 0), (1, 0)]);
        let text = report.to_string();
        let wide = " ".repeat(20);
        assert!(
            text.contains("\ncancel_subscription      0.500   1.000   0.667        1\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "\n{wide} cancel_subscription            greeting\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("\ngreeting                               1                   0\n"),
            "{text}"
        );
    }

    #[test]
    fn evaluate_checks_the_label_count() {
        let head = crate::head::ClassifierHead::from_tensors(
            candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu)
                .expect("mean"),
            candle_core::Tensor::ones(2, candle_core::DType::F32, &candle_core::Device::Cpu)
                .expect("scale"),
            None,
            (
                candle_core::Tensor::zeros(
                    (3, 2),
                    candle_core::DType::F32,
                    &candle_core::Device::Cpu,
                )
                .expect("weight"),
                candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu)
                    .expect("bias"),
            ),
        )
        .expect("head");
        let examples = [EmbeddedExample {
            embedding: vec![0.0, 0.0],
            label: 2,
        }];
        assert!(evaluate(&head, &["a", "b"], &examples).is_err());
        let report = evaluate(&head, &["a", "b", "c"], &examples).expect("evaluate");
        // All logits are equal: the tie goes to the first label.
        assert_eq!(report.confusion[2][0], 1);
    }
}
