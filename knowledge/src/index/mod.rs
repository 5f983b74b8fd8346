//! Vector storage. One collection (or shard) holds one point per chunk with two named vectors,
//! `dense` (cosine, the embedder's dimension) and `sparse` (lindera terms, IDF applied by
//! Qdrant), and a [`ChunkPayload`]. `kind`, `audience` and `doc_id` have keyword payload
//! indexes. Backends: [`edge::EdgeIndex`] (in-process qdrant-edge, the default) and
//! [`server::ServerIndex`] (a Qdrant server through qdrant-client).

pub mod edge;
pub mod server;

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::document::{Audience, DocumentKind};
use crate::error::Result;
use crate::sparse::SparseVector;

/// Name of the dense vector.
pub const DENSE_VECTOR: &str = "dense";
/// Name of the sparse vector.
pub const SPARSE_VECTOR: &str = "sparse";
/// Payload fields with a keyword index.
pub const INDEXED_FIELDS: [&str; 3] = ["kind", "audience", "doc_id"];
/// How hybrid search fuses its dense and sparse lists by reciprocal rank (Qdrant's
/// formula): a point at position p (from 0) of a list weighted w scores
/// `1 / ((p + 1) / w + k − 1)`; scores add up over the lists. The dense list weighs 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HybridFusion {
    pub k: usize,
    pub sparse_weight: f32,
}
/// Candidates each side of a hybrid query contributes, per requested result.
pub const HYBRID_CANDIDATES_PER_RESULT: usize = 4;

/// What is stored with every chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkPayload {
    pub doc_id: String,
    pub kind: DocumentKind,
    pub audience: Audience,
    pub title: String,
    /// The chunk's text as shown to readers.
    pub text: String,
    /// Position of the chunk in its document.
    pub chunk: usize,
    /// How many chunks the document has (to detect a half-written document).
    pub chunk_count: usize,
    /// Hash of the document, the chunker, the embedder and the sparse encoder: equal hash,
    /// nothing to re-embed.
    pub content_hash: String,
    /// Source file, relative to the ingested directory.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// An FAQ's answer alone (for direct answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// One point to write.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPoint {
    pub dense: Vec<f32>,
    pub sparse: SparseVector,
    pub payload: ChunkPayload,
}

impl ChunkPoint {
    pub fn point_id(&self) -> uuid::Uuid {
        point_id(&self.payload.doc_id, self.payload.chunk)
    }
}

/// The point id of a chunk: a UUID derived from (document id, chunk index), so rewriting a
/// document overwrites its points in place.
pub fn point_id(doc_id: &str, chunk: usize) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("kizuna-chunk\0{doc_id}\0{chunk}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Restricts a search; each non-empty list must match (any of its values).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    pub kinds: Vec<DocumentKind>,
    pub audiences: Vec<Audience>,
    pub doc_ids: Vec<String>,
}

impl SearchFilter {
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && self.audiences.is_empty() && self.doc_ids.is_empty()
    }

    /// `(field, accepted values)` for each restricted field.
    pub fn conditions(&self) -> Vec<(&'static str, Vec<String>)> {
        let mut conditions = Vec::new();
        if !self.kinds.is_empty() {
            conditions.push((
                "kind",
                self.kinds.iter().map(|k| k.as_str().to_string()).collect(),
            ));
        }
        if !self.audiences.is_empty() {
            conditions.push((
                "audience",
                self.audiences
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect(),
            ));
        }
        if !self.doc_ids.is_empty() {
            conditions.push(("doc_id", self.doc_ids.clone()));
        }
        conditions
    }
}

/// A search result.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChunk {
    /// The backend's score: cosine for dense, BM25 for sparse, RRF for hybrid.
    pub score: f32,
    pub payload: ChunkPayload,
    /// The stored dense vector (so callers can compute the cosine of a hybrid or sparse hit).
    pub dense: Option<Vec<f32>>,
}

/// A document as the index knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDocument {
    pub doc_id: String,
    pub kind: DocumentKind,
    pub audience: Audience,
    pub title: String,
    pub source: String,
    pub tags: Vec<String>,
    /// Chunks found.
    pub chunk_count: usize,
    /// `None` when the chunks disagree (an interrupted write): the document needs rewriting.
    pub content_hash: Option<String>,
}

/// The payload fields [`VectorIndex::stored_documents`] needs.
pub(crate) const SUMMARY_FIELDS: [&str; 9] = [
    "doc_id",
    "kind",
    "audience",
    "title",
    "chunk",
    "chunk_count",
    "content_hash",
    "source",
    "tags",
];

#[derive(Debug, Deserialize)]
pub(crate) struct ChunkSummary {
    pub doc_id: String,
    pub kind: DocumentKind,
    pub audience: Audience,
    pub title: String,
    pub chunk: usize,
    pub chunk_count: usize,
    pub content_hash: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Groups chunk summaries into documents; a document whose chunks are not exactly
/// `0..chunk_count` with one hash gets no hash.
pub(crate) fn documents_from_chunks(
    chunks: impl IntoIterator<Item = ChunkSummary>,
) -> Vec<StoredDocument> {
    let mut grouped: BTreeMap<String, Vec<ChunkSummary>> = BTreeMap::new();
    for chunk in chunks {
        grouped.entry(chunk.doc_id.clone()).or_default().push(chunk);
    }
    grouped
        .into_values()
        .filter_map(|mut chunks| {
            chunks.sort_by_key(|c| c.chunk);
            let first = chunks.first()?;
            let consistent = chunks.iter().enumerate().all(|(i, c)| {
                c.chunk == i
                    && c.chunk_count == first.chunk_count
                    && c.content_hash == first.content_hash
            }) && chunks.len() == first.chunk_count;
            Some(StoredDocument {
                doc_id: first.doc_id.clone(),
                kind: first.kind,
                audience: first.audience,
                title: first.title.clone(),
                source: first.source.clone(),
                tags: first.tags.clone(),
                chunk_count: chunks.len(),
                content_hash: consistent.then(|| first.content_hash.clone()),
            })
        })
        .collect()
}

/// Storage for chunk points. Implementations must make an acknowledged write durable.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// A short description for logs ("qdrant-edge at …").
    fn describe(&self) -> String;
    /// Creates the collection (vectors, payload indexes) if needed; fails if it exists with
    /// another dense dimension.
    async fn ensure_collection(&self, dense_dim: usize) -> Result<()>;
    /// Writes points (same document and chunk: overwritten).
    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<()>;
    /// Deletes a document's chunks from index `from_chunk` on (0: the whole document).
    async fn delete_chunks(&self, doc_id: &str, from_chunk: usize) -> Result<()>;
    /// Every stored document with its content hash.
    async fn stored_documents(&self) -> Result<Vec<StoredDocument>>;
    /// Nearest chunks by dense cosine.
    async fn search_dense(
        &self,
        vector: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>>;
    /// Best chunks by sparse (BM25) score.
    async fn search_sparse(
        &self,
        vector: &SparseVector,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>>;
    /// Dense and sparse candidates fused by reciprocal rank.
    async fn search_hybrid(
        &self,
        dense: &[f32],
        sparse: &SparseVector,
        fusion: HybridFusion,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>>;
    /// Number of stored chunks.
    async fn count(&self) -> Result<usize>;
    /// Bytes used on disk, when the backend can tell.
    async fn size_on_disk(&self) -> Result<Option<u64>>;
}

/// Bytes a directory tree occupies on disk (allocated blocks, like `du`).
pub fn disk_usage(path: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let metadata = std::fs::symlink_metadata(path)?;
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path)? {
            total += disk_usage(&entry?.path())?;
        }
    } else {
        total += allocated_bytes(&metadata);
    }
    Ok(total)
}

#[cfg(unix)]
fn allocated_bytes(metadata: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    metadata.blocks() * 512
}

#[cfg(not(unix))]
fn allocated_bytes(metadata: &std::fs::Metadata) -> u64 {
    metadata.len()
}

/// Dot product (the cosine of two normalised vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(doc: &str, chunk: usize, count: usize, hash: &str) -> ChunkSummary {
        ChunkSummary {
            doc_id: doc.into(),
            kind: DocumentKind::Article,
            audience: Audience::All,
            title: "t".into(),
            chunk,
            chunk_count: count,
            content_hash: hash.into(),
            source: String::new(),
            tags: vec![],
        }
    }

    #[test]
    fn point_ids_are_deterministic_and_distinct() {
        assert_eq!(point_id("a", 0), point_id("a", 0));
        assert_ne!(point_id("a", 0), point_id("a", 1));
        assert_ne!(point_id("a1", 0), point_id("a", 10));
    }

    #[test]
    fn half_written_documents_have_no_hash() {
        let docs = documents_from_chunks(vec![
            summary("whole", 1, 2, "h"),
            summary("whole", 0, 2, "h"),
            summary("missing", 0, 2, "h"),
            summary("mixed", 0, 2, "h1"),
            summary("mixed", 1, 2, "h2"),
        ]);
        let hash = |id: &str| {
            docs.iter()
                .find(|d| d.doc_id == id)
                .unwrap()
                .content_hash
                .clone()
        };
        assert_eq!(hash("whole"), Some("h".into()));
        assert_eq!(hash("missing"), None);
        assert_eq!(hash("mixed"), None);
    }
}
