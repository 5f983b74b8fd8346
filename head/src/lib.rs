//! A small classifier head over a sentence embedding, written and trained with candle on the
//! CPU, generic over its labels: standardise the embedding, an optional ReLU hidden layer,
//! softmax over the labels. Kizuna's sentiment model (kizuna-sentiment, 4 labels) is one;
//! any other model over the same embedding (e.g. an intent model) reuses everything here.
//!
//! Labels are indices (`usize`) into the caller's list of label names, which the caller
//! passes wherever names are needed (training reports, evaluation tables, `head.json`).
//!
//! Entry points:
//! - [`ClassifierHead`]: the head itself (classification, safetensors I/O).
//! - [`train`]: deterministic AdamW training, choosing among candidate [`HeadSpec`]s by
//!   stratified k-fold cross-validation and the one-standard-error rule.
//! - [`evaluate`] / [`EvalReport`]: accuracy, macro-F1, per-class scores, confusion matrix.
//! - [`parse_labelled_jsonl`] / [`read_labelled_jsonl`]: labelled JSONL files, with the label
//!   field named by the caller; [`drop_heldout_overlaps`].
//! - [`train_from_files`] / [`load`]: the file pipeline for a [`HeadKind`] — embed (through
//!   the [`QueryEmbedder`] trait), train, score the held-out file, write `head.safetensors`
//!   and `head.json`; load them back, checking the embedder.

pub mod data;
pub mod embed;
mod error;
pub mod eval;
pub mod head;
pub mod pipeline;
pub mod train;

pub use data::{
    drop_heldout_overlaps, overlap_key, parse_labelled_jsonl, read_labelled_jsonl, LabelledMessage,
};
pub use embed::{embed_examples, embed_messages, QueryEmbedder, EMBED_CHUNK};
pub use error::{BoxError, Error, Result};
pub use eval::{evaluate, ClassScores, EvalReport};
pub use head::{ClassifierHead, HeadArchitecture, Prediction};
pub use pipeline::{
    load, read_labelled_file, read_metadata, sha256_hex, train_from_files, DataFileSummary,
    HeadKind, HeadMetadata, HEAD_METADATA_FILE, HEAD_WEIGHTS_FILE,
};
pub use train::{
    train, CandidateScore, EmbeddedExample, HeadSpec, SplitMix64, TrainConfig, TrainReport,
    TrainedHead,
};
