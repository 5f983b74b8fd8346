//! Kizuna's intent model: what a message asks for (the 25 labels of `nlu/INTENTS.md`), read
//! by a small head over the multilingual-e5 `query: ` embedding that retrieval and the
//! sentiment model already compute for each message (one embedding per message, cached).
//!
//! The head, its training and its files are kizuna-head's; this crate supplies the intent
//! head's settings (format, labels, paths, training configuration) and [`IntentClassifier`],
//! which implements [`kizuna_agent::intent::IntentModel`].
//!
//! Data (see docs/evals.md for where each file came from): `nlu/data/train.jsonl` (3,310
//! project-written lines across registers) and `nlu/data/heldout.jsonl` (638 lines written
//! separately, never trained or tuned on; only its scores are reported).

use std::path::Path;
use std::sync::Arc;

use kizuna_agent::intent::{IntentError, IntentModel, IntentReading};
use kizuna_head::{
    ClassifierHead, EvalReport, HeadArchitecture, HeadKind, HeadMetadata, HeadSpec, TrainConfig,
    TrainReport,
};
use kizuna_knowledge::embed::KnowledgeEmbedder;
use kizuna_knowledge::Embedder;
use kizuna_nlu::intent::Intent;

/// Where the committed head lives, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "intent/model";
/// The labelled training set, relative to the repository root.
pub const DEFAULT_TRAIN_PATH: &str = "nlu/data/train.jsonl";
/// The held-out evaluation set, relative to the repository root.
pub const DEFAULT_HELDOUT_PATH: &str = "nlu/data/heldout.jsonl";
/// `head.json`'s `format` for the intent head.
pub const METADATA_FORMAT: &str = "kizuna-intent-head/1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Head(#[from] kizuna_head::Error),
    #[error("the head reads {expected}-dimensional embeddings, the embedder gives {actual}")]
    DimensionMismatch { expected: usize, actual: usize },
    #[error("the head has {0} outputs, the intent labels are {n}", n = Intent::ALL.len())]
    WrongLabels(usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The intent head as kizuna-head sees it: its format, its labels (the files' `intent`
/// field) and its names in logs and errors.
pub fn head_kind() -> HeadKind {
    HeadKind {
        format: METADATA_FORMAT.into(),
        labels: Intent::names(),
        label_field: "intent".into(),
        name: "intent head".into(),
        retrain_command: "kizuna train-intents".into(),
    }
}

/// The configuration of the committed head. Candidates are compared by 5-fold
/// cross-validation on the training set only; the held-out set is scored once, after.
pub fn default_train_config() -> TrainConfig {
    let adam = |architecture, epochs, learning_rate, weight_decay| HeadSpec {
        architecture,
        epochs,
        learning_rate,
        weight_decay,
    };
    TrainConfig {
        seed: 20_261_204,
        batch_size: 32,
        folds: 5,
        candidates: vec![
            adam(HeadArchitecture::SoftmaxRegression, 60, 1e-3, 0.05),
            adam(HeadArchitecture::Mlp { hidden: 128 }, 30, 1e-3, 0.05),
            adam(HeadArchitecture::Mlp { hidden: 256 }, 30, 1e-3, 0.05),
        ],
    }
}

/// Reads the labelled files, drops training lines that also occur in the held-out set,
/// embeds both, trains (the head chosen by cross-validation on the training data only),
/// scores the held-out set and writes `head.safetensors` and `head.json` into `out_dir`.
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

/// Loads the head in `model_dir` for `embedder`; refuses a head trained on another
/// embedding model.
pub fn load(model_dir: &Path, embedder: Arc<dyn Embedder>) -> Result<IntentClassifier> {
    let (head, _) = kizuna_head::load(
        &head_kind(),
        model_dir,
        &KnowledgeEmbedder(embedder.as_ref()),
    )?;
    IntentClassifier::new(embedder, head)
}

/// The intent model: the message's e5 `query: ` embedding, then the trained head.
#[derive(Clone)]
pub struct IntentClassifier {
    embedder: Arc<dyn Embedder>,
    head: ClassifierHead,
}

impl std::fmt::Debug for IntentClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntentClassifier")
            .field("embedder", &self.embedder.model_id())
            .field("head", &self.head.architecture())
            .finish()
    }
}

impl IntentClassifier {
    pub fn new(embedder: Arc<dyn Embedder>, head: ClassifierHead) -> Result<Self> {
        if embedder.dim() != head.input_dim() {
            return Err(Error::DimensionMismatch {
                expected: head.input_dim(),
                actual: embedder.dim(),
            });
        }
        if head.label_count() != Intent::ALL.len() {
            return Err(Error::WrongLabels(head.label_count()));
        }
        Ok(Self { embedder, head })
    }

    /// Classifies from a query embedding already at hand.
    pub fn classify_embedding(&self, embedding: &[f32]) -> Result<IntentReading> {
        let prediction = self.head.classify_embedding(embedding)?;
        Ok(IntentReading {
            probabilities: prediction.probabilities,
        })
    }
}

impl IntentModel for IntentClassifier {
    fn classify(&self, text: &str) -> Result<IntentReading, IntentError> {
        let embedding = self
            .embedder
            .embed_queries(&[text])
            .map_err(|e| IntentError(e.to_string()))?
            .pop()
            .ok_or_else(|| IntentError("the embedder returned no vector".into()))?;
        self.classify_embedding(&embedding)
            .map_err(|e| IntentError(e.to_string()))
    }
}
