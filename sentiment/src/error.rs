use kizuna_knowledge::EmbedError;

/// Errors from loading, training or running the sentiment model.
///
/// The head itself is kizuna-head's; its errors convert into these (`From`), keeping the
/// sentiment model's own messages (e.g. naming `kizuna train-sentiment`).
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

impl From<kizuna_head::Error> for Error {
    fn from(error: kizuna_head::Error) -> Self {
        use kizuna_head::Error as Head;
        match error {
            Head::Io { path, source } => Error::Io { path, source },
            Head::BadData { path, line, reason } => Error::BadData { path, line, reason },
            Head::BadHead { path, reason } => Error::BadHead { path, reason },
            Head::EmbedderMismatch {
                dir,
                trained,
                actual,
                retrain_command: _,
            } => Error::EmbedderMismatch {
                dir,
                trained,
                actual,
            },
            Head::DimensionMismatch { expected, actual } => {
                Error::DimensionMismatch { expected, actual }
            }
            Head::Training(reason) => Error::Training(reason),
            // The embedder is kizuna-knowledge's (through `KnowledgeEmbedder`), so its error
            // is an `EmbedError`.
            Head::Embed(source) => match source.downcast::<EmbedError>() {
                Ok(embed) => Error::Embed(*embed),
                Err(other) => Error::Embed(EmbedError::Inference(other.to_string())),
            },
            Head::Tensor(error) => Error::Tensor(error),
            Head::Json(error) => Error::Json(error),
        }
    }
}
