//! Kizuna's sentiment model: a small classifier head, written and trained with candle on the
//! CPU, over the multilingual-e5 `query: ` sentence embedding that retrieval already computes
//! for each customer message. It reads a message as `anger` (negative toward us), `anxious`,
//! `neutral` or `positive`, with the probability of that label as its score.
//!
//! The head, its training, evaluation and files are kizuna-head's (generic over the labels);
//! this crate is the sentiment model on top: the label mapping ([`label_index`],
//! [`label_at`]), [`SentimentReading`](kizuna_agent::sentiment::SentimentReading)s, the
//! committed head's settings ([`head_kind`], [`default_train_config`], the default paths) and
//! [`SentimentClassifier`].
//!
//! Entry points:
//! - [`SentimentClassifier`] implements [`kizuna_agent::sentiment::SentimentModel`]; use
//!   [`SentimentClassifier::classify_with_embedding`] when the query embedding is at hand.
//! - [`load`] reads the committed head from `sentiment/model/` and checks it was trained for
//!   the embedder it is given.
//! - [`train_from_files`] (behind `kizuna train-sentiment`) embeds the labelled set, picks the
//!   head architecture by cross-validation on the training data, trains deterministically,
//!   evaluates on the held-out file and writes `head.safetensors` + `head.json`.
//! - [`score_lines`] classifies one message per line (`label<TAB>score`).

mod classifier;
pub mod data;
mod error;
pub mod eval;
mod labels;
mod pipeline;

pub use classifier::SentimentClassifier;
pub use data::LabelledMessage;
pub use error::{Error, Result};
pub use eval::{ClassScores, EvalReport};
pub use kizuna_head::{
    CandidateScore, ClassifierHead, DataFileSummary, EmbeddedExample, HeadArchitecture, HeadKind,
    HeadMetadata, HeadSpec, Prediction, TrainConfig, TrainReport, TrainedHead, HEAD_METADATA_FILE,
    HEAD_WEIGHTS_FILE,
};
pub use labels::{
    label_at, label_index, label_names, reading_from_prediction, reading_from_probabilities,
    LABEL_COUNT,
};
pub use pipeline::{
    default_train_config, embed_messages, head_kind, load, read_metadata, score_lines,
    train_from_files, train_from_files_with, DEFAULT_HELDOUT_PATH, DEFAULT_MODEL_DIR,
    DEFAULT_TRAIN_PATH, METADATA_FORMAT,
};
