//! Kizuna's escalation head: does this message need a person, and why — read by a small head
//! over the multilingual-e5 `query: ` embedding that retrieval, sentiment and intent already
//! compute for each message.
//!
//! Why a model: the escalation rules (`agent/src/escalation.rs`) are word patterns, and on
//! fresh wording they miss paraphrases with no trigger word (a technician who never came, a
//! double charge, 「なかったことに」) and fire on policy questions that name 返金 or 弁護士
//! (docs/evals.md, development set). This head is trained on project-written messages
//! (`escalation/data/train.jsonl`) and scored on a test file written separately
//! (`escalation/test/heldout.jsonl`); see `escalation/data/README.md`. The server uses it to
//! drop the rules' escalation of a message it is sure needs no person (`src/wiring.rs`,
//! `HeadedEscalation`; docs/evals.md, "Escalation head").
//!
//! The head, its training and its files are kizuna-head's; this crate supplies the labels,
//! the head's settings and [`EscalationClassifier`].

use std::path::Path;
use std::sync::Arc;

use kizuna_head::{
    ClassifierHead, EvalReport, HeadArchitecture, HeadKind, HeadMetadata, HeadSpec, TrainConfig,
    TrainReport,
};
use kizuna_knowledge::embed::KnowledgeEmbedder;
use kizuna_knowledge::Embedder;

/// Where the committed head lives, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "escalation/model";
/// The labelled training set, relative to the repository root.
pub const DEFAULT_TRAIN_PATH: &str = "escalation/data/train.jsonl";
/// The separately written test set, relative to the repository root (report only).
pub const DEFAULT_HELDOUT_PATH: &str = "escalation/test/heldout.jsonl";
/// `head.json`'s `format` for the escalation head.
pub const METADATA_FORMAT: &str = "kizuna-escalation-head/1";

/// What a message calls for. The `None*` labels keep the bot answering; the others name the
/// escalation reason (docs/escalation.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EscalationLabel {
    /// Distress, fear or anger about the neighbour or the noise, not about us.
    NoneNoise,
    /// A question about the service or its policies (refunds, cancellation, court …).
    NoneQuestion,
    /// Anything else the bot answers: greetings, requests, corrections, small talk.
    NoneOther,
    /// Legal action against us, or a request for legal representation or advice.
    Legal,
    /// A request to cancel, end the contract or get money back.
    RefundOrCancel,
    /// Something we did wrong (no-show, wrong report, double charge, rude staff …).
    Complaint,
    /// An explicit request for a person.
    CustomerRequest,
    /// Anger or distrust aimed at us without a concrete complaint.
    AngerAtUs,
}

impl EscalationLabel {
    /// Every label, in the head's output order.
    pub const ALL: [EscalationLabel; 8] = [
        Self::NoneNoise,
        Self::NoneQuestion,
        Self::NoneOther,
        Self::Legal,
        Self::RefundOrCancel,
        Self::Complaint,
        Self::CustomerRequest,
        Self::AngerAtUs,
    ];

    /// The label as the data files write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoneNoise => "none_noise",
            Self::NoneQuestion => "none_question",
            Self::NoneOther => "none_other",
            Self::Legal => "legal",
            Self::RefundOrCancel => "refund_or_cancel",
            Self::Complaint => "complaint",
            Self::CustomerRequest => "customer_request",
            Self::AngerAtUs => "anger_at_us",
        }
    }

    /// Whether the message needs a person.
    pub fn escalates(self) -> bool {
        !matches!(self, Self::NoneNoise | Self::NoneQuestion | Self::NoneOther)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Head(#[from] kizuna_head::Error),
    #[error(transparent)]
    Embed(#[from] kizuna_knowledge::EmbedError),
    #[error("the head reads {expected}-dimensional embeddings, the embedder gives {actual}")]
    DimensionMismatch { expected: usize, actual: usize },
    #[error("the head has {0} outputs, the escalation labels are {n}", n = EscalationLabel::ALL.len())]
    WrongLabels(usize),
    #[error("the embedder returned no vector")]
    NoEmbedding,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The escalation head as kizuna-head sees it.
pub fn head_kind() -> HeadKind {
    HeadKind {
        format: METADATA_FORMAT.into(),
        labels: EscalationLabel::ALL
            .iter()
            .map(|l| l.as_str().to_string())
            .collect(),
        label_field: "label".into(),
        name: "escalation head".into(),
        retrain_command: "kizuna train-escalation".into(),
    }
}

/// Candidates compared by 5-fold cross-validation on the training set only; the test file
/// is scored once, after.
pub fn default_train_config() -> TrainConfig {
    let adam = |architecture, epochs, learning_rate, weight_decay| HeadSpec {
        architecture,
        epochs,
        learning_rate,
        weight_decay,
    };
    TrainConfig {
        seed: 20_261_206,
        batch_size: 32,
        folds: 5,
        candidates: vec![
            adam(HeadArchitecture::SoftmaxRegression, 60, 1e-3, 0.05),
            adam(HeadArchitecture::Mlp { hidden: 128 }, 30, 1e-3, 0.05),
        ],
    }
}

/// Trains on `train_path` (lines also in `heldout_path` are dropped), scores `heldout_path`
/// and writes `head.safetensors` and `head.json` into `out_dir`.
pub fn train_from_files(
    train_path: &Path,
    heldout_path: &Path,
    out_dir: &Path,
    embedder: &dyn Embedder,
) -> Result<(TrainReport, EvalReport)> {
    Ok(kizuna_head::train_from_files(
        &head_kind(),
        train_path,
        heldout_path,
        out_dir,
        &KnowledgeEmbedder(embedder),
        &default_train_config(),
    )?)
}

/// Reads and checks `head.json` in `model_dir`.
pub fn read_metadata(model_dir: &Path) -> Result<HeadMetadata> {
    Ok(kizuna_head::read_metadata(&head_kind(), model_dir)?)
}

/// Loads the head in `model_dir` for `embedder`.
pub fn load(model_dir: &Path, embedder: Arc<dyn Embedder>) -> Result<EscalationClassifier> {
    let (head, _) = kizuna_head::load(
        &head_kind(),
        model_dir,
        &KnowledgeEmbedder(embedder.as_ref()),
    )?;
    EscalationClassifier::new(embedder, head)
}

/// A message's reading: each label's probability, in [`EscalationLabel::ALL`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationReading {
    pub probabilities: Vec<f32>,
}

impl EscalationReading {
    /// The most probable label and its probability.
    pub fn top(&self) -> (EscalationLabel, f32) {
        let (i, p) = self
            .probabilities
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, 0.0));
        (EscalationLabel::ALL[i], p)
    }

    /// The probability that the message needs a person, whatever the reason.
    pub fn escalation_probability(&self) -> f32 {
        EscalationLabel::ALL
            .iter()
            .zip(&self.probabilities)
            .filter(|(l, _)| l.escalates())
            .map(|(_, p)| p)
            .sum()
    }
}

/// The escalation head over the message's e5 `query: ` embedding.
#[derive(Clone)]
pub struct EscalationClassifier {
    embedder: Arc<dyn Embedder>,
    head: ClassifierHead,
}

impl std::fmt::Debug for EscalationClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscalationClassifier")
            .field("embedder", &self.embedder.model_id())
            .field("head", &self.head.architecture())
            .finish()
    }
}

impl EscalationClassifier {
    pub fn new(embedder: Arc<dyn Embedder>, head: ClassifierHead) -> Result<Self> {
        if embedder.dim() != head.input_dim() {
            return Err(Error::DimensionMismatch {
                expected: head.input_dim(),
                actual: embedder.dim(),
            });
        }
        if head.label_count() != EscalationLabel::ALL.len() {
            return Err(Error::WrongLabels(head.label_count()));
        }
        Ok(Self { embedder, head })
    }

    /// Reads one message.
    pub fn classify(&self, text: &str) -> Result<EscalationReading> {
        let embedding = self
            .embedder
            .embed_queries(&[text])?
            .pop()
            .ok_or(Error::NoEmbedding)?;
        self.classify_embedding(&embedding)
    }

    /// Reads a message from a query embedding already at hand.
    pub fn classify_embedding(&self, embedding: &[f32]) -> Result<EscalationReading> {
        let prediction = self.head.classify_embedding(embedding)?;
        Ok(EscalationReading {
            probabilities: prediction.probabilities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_split_into_answer_and_escalate() {
        let names: std::collections::HashSet<_> =
            EscalationLabel::ALL.iter().map(|l| l.as_str()).collect();
        assert_eq!(names.len(), EscalationLabel::ALL.len());
        assert_eq!(head_kind().labels.len(), 8);
        let escalating = EscalationLabel::ALL
            .iter()
            .filter(|l| l.escalates())
            .count();
        assert_eq!(escalating, 5);
        let reading = EscalationReading {
            probabilities: vec![0.1, 0.05, 0.05, 0.1, 0.5, 0.1, 0.05, 0.05],
        };
        assert_eq!(reading.top().0, EscalationLabel::RefundOrCancel);
        assert!((reading.escalation_probability() - 0.8).abs() < 1e-6);
    }
}
