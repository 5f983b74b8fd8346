//! Sentence embeddings. [`Embedder`] is what retrieval (and the sentiment model) needs; the
//! shipped implementation is multilingual-e5-small run with candle on the CPU.

mod cache;
mod e5;

pub use cache::CachedQueryEmbedder;
pub use e5::{E5Model, E5Tokenizer, TextKind};

/// Errors from loading or running an embedding model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot read embedding model {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad embedding model file {path}: {reason}")]
    BadModel { path: String, reason: String },
    #[error("embedding failed: {0}")]
    Inference(String),
}

/// A sentence embedder. Outputs are L2-normalised, so a dot product is the cosine similarity.
/// Implementations are CPU-bound: call them from `spawn_blocking` in async code.
pub trait Embedder: Send + Sync {
    /// A stable identifier of the model and its settings (stored with the index, so a model
    /// change forces a re-embed).
    fn model_id(&self) -> &str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Embeds search queries (e5: the `query: ` prefix).
    fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// Embeds documents (e5: the `passage: ` prefix).
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// An [`Embedder`] as the [`kizuna_head::QueryEmbedder`] the classifier heads (sentiment,
/// intent) read: its query (`query: `) embeddings.
#[derive(Clone, Copy)]
pub struct KnowledgeEmbedder<'a>(pub &'a dyn Embedder);

impl kizuna_head::QueryEmbedder for KnowledgeEmbedder<'_> {
    fn model_id(&self) -> &str {
        self.0.model_id()
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, kizuna_head::BoxError> {
        self.0
            .embed_queries(texts)
            .map_err(kizuna_head::BoxError::from)
    }
}
