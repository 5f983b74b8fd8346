//! The sentiment labels as kizuna-head sees them: label `i` of the head is
//! `SentimentLabel::ALL[i]` (anger, anxious, neutral, positive), named by
//! [`SentimentLabel::as_str`].

use kizuna_agent::sentiment::{SentimentLabel, SentimentReading};
use kizuna_head::Prediction;

use crate::error::{Error, Result};

/// Number of output classes (anger, anxious, neutral, positive).
pub const LABEL_COUNT: usize = SentimentLabel::ALL.len();

/// The head's label names, in output order (what `head.json` lists).
pub fn label_names() -> Vec<String> {
    SentimentLabel::ALL
        .iter()
        .map(|label| label.as_str().to_string())
        .collect()
}

/// The head's label index of `label`.
pub fn label_index(label: SentimentLabel) -> usize {
    label.index()
}

/// The label at head index `index`, if there is one.
pub fn label_at(index: usize) -> Option<SentimentLabel> {
    SentimentLabel::ALL.get(index).copied()
}

/// The reading for a head's prediction (four probabilities in label order).
pub fn reading_from_prediction(prediction: Prediction) -> Result<SentimentReading> {
    let probabilities: [f32; LABEL_COUNT] =
        prediction
            .probabilities
            .try_into()
            .map_err(|row: Vec<f32>| {
                Error::Training(format!("head produced {} probabilities", row.len()))
            })?;
    let label = label_at(prediction.label)
        .ok_or_else(|| Error::Training(format!("head predicted label {}", prediction.label)))?;
    Ok(SentimentReading {
        label,
        score: prediction.score,
        probabilities,
    })
}

/// The reading for a probability vector: the most probable label (the first on a tie) and its
/// probability as the score.
pub fn reading_from_probabilities(probabilities: [f32; LABEL_COUNT]) -> SentimentReading {
    let prediction = Prediction::from_probabilities(probabilities.to_vec());
    SentimentReading {
        label: SentimentLabel::ALL[prediction.label],
        score: prediction.score,
        probabilities,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_the_label_order() {
        assert_eq!(label_names(), ["anger", "anxious", "neutral", "positive"]);
        for (index, label) in SentimentLabel::ALL.into_iter().enumerate() {
            assert_eq!(label_index(label), index);
            assert_eq!(label_at(index), Some(label));
            assert_eq!(label_names()[index], label.as_str());
        }
        assert_eq!(label_at(LABEL_COUNT), None);
    }

    #[test]
    fn ties_go_to_the_first_label() {
        let reading = reading_from_probabilities([0.25; 4]);
        assert_eq!(reading.label, SentimentLabel::Anger);
        assert_eq!(reading.score, 0.25);
    }

    #[test]
    fn a_prediction_becomes_a_reading() {
        let prediction = Prediction::from_probabilities(vec![0.1, 0.2, 0.3, 0.4]);
        let reading = reading_from_prediction(prediction).expect("four probabilities");
        assert_eq!(reading, reading_from_probabilities([0.1, 0.2, 0.3, 0.4]));
        assert_eq!(reading.label, SentimentLabel::Positive);
        assert_eq!(reading.score, 0.4);
        assert!(reading_from_prediction(Prediction::from_probabilities(vec![0.5; 6])).is_err());
    }
}
