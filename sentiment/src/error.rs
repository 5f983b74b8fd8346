use kizuna_knowledge::EmbedError;

/// Errors from loading, training or running the sentiment model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot access {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {reason}")]
    BadData {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("bad sentiment head {path}: {reason}")]
    BadHead { path: String, reason: String },
    #[error(
        "the sentiment head in {dir} was trained on {trained} embeddings, but the embedder in \
         use is {actual}; retrain it with `kizuna train-sentiment`"
    )]
    EmbedderMismatch {
        dir: String,
        trained: String,
        actual: String,
    },
    #[error("embedding has {actual} dimensions, the sentiment head expects {expected}")]
    DimensionMismatch { expected: usize, actual: usize },
    #[error("cannot train the sentiment head: {0}")]
    Training(String),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Model(#[from] kizuna_agent::sentiment::SentimentError),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("cannot encode head metadata: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
