//! Errors of the knowledge base.

use std::path::PathBuf;

use crate::embed::EmbedError;

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("vector index: {0}")]
    Index(String),
    #[error(
        "the vector index holds {stored}-dimensional vectors but the embedder makes {expected}; \
         delete {location} and ingest again"
    )]
    DimensionMismatch {
        stored: usize,
        expected: usize,
        location: String,
    },
    #[error("Japanese tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "sparse (keyword) search needs the lindera dictionary; run scripts/setup-lindera \
         or use dense retrieval"
    )]
    SparseUnavailable,
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    #[error("invalid evaluation set {path}: {message}")]
    EvalSet { path: PathBuf, message: String },
    #[error("background task failed: {0}")]
    Task(String),
}

impl KnowledgeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KnowledgeError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<tokio::task::JoinError> for KnowledgeError {
    fn from(e: tokio::task::JoinError) -> Self {
        KnowledgeError::Task(e.to_string())
    }
}

pub type Result<T, E = KnowledgeError> = std::result::Result<T, E>;
