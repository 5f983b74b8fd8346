//! The sentiment interface the escalation policy reads. The model itself (a small head over
//! the multilingual-e5 sentence embedding, trained by `kizuna train-sentiment`) lives in the
//! `sentiment/` crate; the agent only needs a reading per customer message.

use serde::{Deserialize, Serialize};

/// How a customer message feels toward us. Descriptions of the noise problem itself
/// ("上の階の足音がうるさくて眠れない") are `Neutral` or `Anxious`, not `Anger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SentimentLabel {
    /// Negative toward us: anger, complaint, accusation.
    Anger,
    /// Worried, scared, distressed.
    Anxious,
    Neutral,
    Positive,
}

impl SentimentLabel {
    pub const ALL: [SentimentLabel; 4] = [
        SentimentLabel::Anger,
        SentimentLabel::Anxious,
        SentimentLabel::Neutral,
        SentimentLabel::Positive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SentimentLabel::Anger => "anger",
            SentimentLabel::Anxious => "anxious",
            SentimentLabel::Neutral => "neutral",
            SentimentLabel::Positive => "positive",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for SentimentLabel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SentimentLabel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!("unknown sentiment label {s:?} (anger, anxious, neutral, positive)")
            })
    }
}

/// One classified message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentReading {
    pub label: SentimentLabel,
    /// Probability of `label`.
    pub score: f32,
    /// Probabilities in [`SentimentLabel::ALL`] order (anger, anxious, neutral, positive).
    pub probabilities: [f32; 4],
}

impl SentimentReading {
    pub fn probability(&self, label: SentimentLabel) -> f32 {
        self.probabilities[label.index()]
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sentiment model failed: {0}")]
pub struct SentimentError(pub String);

/// Classifies one customer message. CPU-bound: call from `spawn_blocking` in async code.
pub trait SentimentModel: Send + Sync {
    fn classify(&self, text: &str) -> Result<SentimentReading, SentimentError>;
}
