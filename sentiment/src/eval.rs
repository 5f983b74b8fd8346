//! Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

use std::fmt;

use kizuna_agent::sentiment::SentimentLabel;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::head::{SentimentHead, LABEL_COUNT};
use crate::train::EmbeddedExample;

/// Scores of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub label: SentimentLabel,
    /// Of the messages predicted as this label, the share that truly are (0 when none is).
    pub precision: f64,
    /// Of the messages truly of this label, the share predicted as it.
    pub recall: f64,
    pub f1: f64,
    /// Messages truly of this label.
    pub support: usize,
}

/// Classification quality on a labelled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub examples: usize,
    pub accuracy: f64,
    /// Mean F1 over the labels that occur in the truth or the predictions.
    pub macro_f1: f64,
    /// In [`SentimentLabel::ALL`] order.
    pub per_class: Vec<ClassScores>,
    /// `confusion[true][predicted]`, indices in [`SentimentLabel::ALL`] order.
    pub confusion: [[usize; LABEL_COUNT]; LABEL_COUNT],
}

impl EvalReport {
    /// Scores `(truth, predicted)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (SentimentLabel, SentimentLabel)>) -> Self {
        let mut confusion = [[0usize; LABEL_COUNT]; LABEL_COUNT];
        for (truth, predicted) in pairs {
            confusion[truth.index()][predicted.index()] += 1;
        }
        let examples: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..LABEL_COUNT).map(|i| confusion[i][i]).sum();
        let ratio = |num: usize, den: usize| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };

        let mut per_class = Vec::with_capacity(LABEL_COUNT);
        let mut f1_sum = 0.0;
        let mut labels_seen = 0;
        for label in SentimentLabel::ALL {
            let i = label.index();
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
                label,
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

    /// The scores of `label`.
    pub fn class(&self, label: SentimentLabel) -> &ClassScores {
        &self.per_class[label.index()]
    }
}

/// Classifies `examples` with `head` and scores the result.
pub fn evaluate(head: &SentimentHead, examples: &[EmbeddedExample]) -> Result<EvalReport> {
    let embeddings: Vec<Vec<f32>> = examples.iter().map(|e| e.embedding.clone()).collect();
    let readings = head.classify_embeddings(&embeddings)?;
    Ok(EvalReport::from_pairs(
        examples
            .iter()
            .zip(&readings)
            .map(|(e, r)| (e.label, r.label)),
    ))
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} messages  accuracy {:.3}  macro-F1 {:.3}",
            self.examples, self.accuracy, self.macro_f1
        )?;
        writeln!(
            f,
            "{:<10} {:>9} {:>7} {:>7} {:>8}",
            "label", "precision", "recall", "F1", "support"
        )?;
        for scores in &self.per_class {
            writeln!(
                f,
                "{:<10} {:>9.3} {:>7.3} {:>7.3} {:>8}",
                scores.label.as_str(),
                scores.precision,
                scores.recall,
                scores.f1,
                scores.support
            )?;
        }
        writeln!(f, "confusion matrix (rows: true label, columns: predicted)")?;
        write!(f, "{:<10}", "")?;
        for label in SentimentLabel::ALL {
            write!(f, " {:>8}", label.as_str())?;
        }
        writeln!(f)?;
        for label in SentimentLabel::ALL {
            write!(f, "{:<10}", label.as_str())?;
            for count in self.confusion[label.index()] {
                write!(f, " {count:>8}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SentimentLabel::{Anger, Anxious, Neutral, Positive};

    #[test]
    fn scores_match_a_hand_computed_example() {
        // anger: 3 true, predicted anger, anger, neutral; anxious: 1 true, predicted anger;
        // neutral: 2 true, both right; positive never occurs.
        let report = EvalReport::from_pairs([
            (Anger, Anger),
            (Anger, Anger),
            (Anger, Neutral),
            (Anxious, Anger),
            (Neutral, Neutral),
            (Neutral, Neutral),
        ]);
        assert_eq!(report.examples, 6);
        assert!((report.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let anger = report.class(Anger);
        assert!((anger.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((anger.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(anger.support, 3);
        assert_eq!(report.class(Anxious).f1, 0.0);
        let neutral = report.class(Neutral);
        assert!((neutral.precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(neutral.recall, 1.0);
        assert!((neutral.f1 - 0.8).abs() < 1e-12);
        // positive is absent from truth and predictions, so it is left out of the mean
        let expected_macro = (2.0 / 3.0 + 0.0 + 0.8) / 3.0;
        assert!((report.macro_f1 - expected_macro).abs() < 1e-12);
        assert_eq!(report.confusion[Anxious.index()][Anger.index()], 1);
        assert_eq!(report.confusion[Positive.index()], [0; 4]);
    }

    #[test]
    fn display_is_a_table_with_every_label() {
        let report = EvalReport::from_pairs([(Anger, Anger), (Positive, Neutral)]);
        let text = report.to_string();
        assert!(text.contains("accuracy 0.500"), "{text}");
        for label in SentimentLabel::ALL {
            assert!(text.contains(label.as_str()), "{text}");
        }
        assert!(text.contains("confusion matrix"), "{text}");
    }
}
