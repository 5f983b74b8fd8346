/// What an embedder's failure is carried as (see [`crate::QueryEmbedder`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from loading, training or running a classifier head.
///
/// The messages are generic ("classifier head"); a crate built on this one (e.g.
/// kizuna-sentiment) may map the variants into its own error type to name its model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot access {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A labelled file's line (1-based; 0 for the file as a whole) that cannot be read.
    #[error("{path}, line {line}: {reason}")]
    BadData {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("bad classifier head {path}: {reason}")]
    BadHead { path: String, reason: String },
    #[error(
        "the head in {dir} was trained on {trained} embeddings, but the embedder in use is \
         {actual}; retrain it with `{retrain_command}`"
    )]
    EmbedderMismatch {
        dir: String,
        trained: String,
        actual: String,
        /// The command that retrains the head ([`crate::HeadKind::retrain_command`]).
        retrain_command: String,
    },
    #[error("embedding has {actual} dimensions, the head expects {expected}")]
    DimensionMismatch { expected: usize, actual: usize },
    #[error("cannot train the head: {0}")]
    Training(String),
    /// The embedder failed (its own error, boxed).
    #[error(transparent)]
    Embed(BoxError),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("cannot encode head metadata: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// For `map_err`: an I/O error on `path`.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
