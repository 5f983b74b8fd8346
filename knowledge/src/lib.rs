//! Kizuna's knowledge base: documents (FAQ, scenarios, templates) parsed from Markdown, YAML,
//! CSV and JSONL, chunked on Japanese sentence boundaries, embedded with multilingual-e5 and
//! searched in Qdrant (in-process `qdrant-edge` by default, a server via `qdrant-client`),
//! densely, by lindera keywords, or both fused by reciprocal rank. Knows nothing about HTTP.
//!
//! Entry points: [`KnowledgeBase`] (search, FAQ direct answers, document management,
//! ingestion), [`document::load_dir`], [`evaluate::evaluate`] and [`evaluate::calibrate`].

pub mod chunk;
pub mod document;
pub mod embed;
pub mod error;
pub mod evaluate;
pub mod index;
pub mod ingest;
pub mod kb;
pub mod sparse;

pub use document::{Audience, Document, DocumentKind, LoadOutcome, LoadProblem};
pub use embed::{EmbedError, Embedder};
pub use error::{KnowledgeError, Result};
pub use index::edge::EdgeIndex;
pub use index::server::ServerIndex;
pub use index::{SearchFilter, StoredDocument, VectorIndex};
pub use ingest::{IngestProgress, IngestReport, NoProgress, ProgressBar, UpsertOutcome};
pub use kb::{
    audiences_for, DirectAnswer, Hit, IndexStats, KnowledgeBase, RetrievalConfig, RetrievalMode,
    SearchOptions,
};
pub use sparse::SparseEncoder;

#[cfg(test)]
mod tests;
