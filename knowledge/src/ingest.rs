//! Ingestion: a content directory into the index, idempotently.
//!
//! Each document carries a content hash over its fields, the chunker version and size, the
//! embedder's `model_id()` and the sparse encoder version. A document whose stored hash is
//! equal costs nothing (no embedding, no write); a changed one is re-embedded and its points
//! overwritten in place (then chunks beyond its new length are deleted); a document that came
//! from a file and is no longer there is deleted. Documents of a file that failed to load are
//! left as they are, so a typo never empties part of the index. Documents created through the
//! API (no source file) are never deleted by an ingest.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::chunk::{chunk_document, headline, Chunk, CHUNKER_VERSION};
use crate::document::{load_dir, Document, DocumentKind, LoadProblem};
use crate::error::Result;
use crate::index::{ChunkPayload, ChunkPoint, StoredDocument};
use crate::kb::KnowledgeBase;
use crate::sparse::{SparseVector, SPARSE_VERSION};

/// Told how an ingest goes (the CLI shows a progress bar).
pub trait IngestProgress: Send {
    /// Work is known: `documents` to (re)write with `chunks` chunks to embed in all.
    fn started(&mut self, _documents: usize, _chunks: usize) {}
    /// `chunks` more chunks are embedded and written.
    fn advanced(&mut self, _chunks: usize) {}
    /// Done.
    fn finished(&mut self, _report: &IngestReport) {}
}

/// No progress reporting.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl IngestProgress for NoProgress {}

/// A terminal progress bar (hidden when stderr is not a terminal).
#[derive(Debug, Default)]
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressBar {
    pub fn new() -> Self {
        Self::default()
    }
}

impl IngestProgress for ProgressBar {
    fn started(&mut self, documents: usize, chunks: usize) {
        if chunks == 0 {
            return;
        }
        let bar = indicatif::ProgressBar::new(chunks as u64);
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} chunks, {per_sec}, ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(format!("embedding {documents} documents"));
        self.bar = Some(bar);
    }

    fn advanced(&mut self, chunks: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(chunks as u64);
        }
    }

    fn finished(&mut self, _report: &IngestReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// What an ingest did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct IngestReport {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub chunks_written: usize,
    /// Files and records that were skipped.
    pub problems: Vec<LoadProblem>,
    #[serde(with = "duration_ms")]
    pub elapsed: Duration,
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl fmt::Display for IngestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} added, {} updated, {} unchanged, {} deleted; {} chunks embedded in {:.1} s",
            self.added,
            self.updated,
            self.unchanged,
            self.deleted,
            self.chunks_written,
            self.elapsed.as_secs_f64()
        )?;
        if !self.problems.is_empty() {
            writeln!(f, "{} problem(s), skipped:", self.problems.len())?;
            for problem in &self.problems {
                writeln!(f, "  {problem}")?;
            }
        }
        Ok(())
    }
}

/// How a single document upsert went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpsertOutcome {
    Added,
    Updated,
    Unchanged,
}

/// Loads `dir` and brings the index in line with it. `force` re-embeds every document.
pub async fn ingest(
    kb: &KnowledgeBase,
    dir: &Path,
    force: bool,
    mut progress: impl IngestProgress,
) -> Result<IngestReport> {
    let started = Instant::now();
    let dir_owned = dir.to_path_buf();
    let outcome = tokio::task::spawn_blocking(move || load_dir(&dir_owned)).await??;
    for problem in &outcome.problems {
        tracing::warn!(%problem, "skipped while loading the knowledge base");
    }
    let protected_sources = outcome.problem_sources(dir);
    let _write = kb.write_lock().await;
    let stored = kb.index().stored_documents().await?;
    let loaded_ids: HashMap<&str, ()> = outcome
        .documents
        .iter()
        .map(|d| (d.id.as_str(), ()))
        .collect();
    let to_delete: Vec<&StoredDocument> = stored
        .iter()
        .filter(|s| {
            !s.source.is_empty()
                && !loaded_ids.contains_key(s.doc_id.as_str())
                && !protected_sources.contains(&s.source)
        })
        .collect();
    let mut report = write_documents(kb, &outcome.documents, &stored, force, &mut progress).await?;
    for doc in to_delete {
        kb.index().delete_chunks(&doc.doc_id, 0).await?;
        tracing::info!(doc_id = %doc.doc_id, "deleted a document no longer in the content");
        report.deleted += 1;
    }
    report.problems = outcome.problems;
    report.elapsed = started.elapsed();
    progress.finished(&report);
    tracing::info!(
        added = report.added,
        updated = report.updated,
        unchanged = report.unchanged,
        deleted = report.deleted,
        chunks = report.chunks_written,
        problems = report.problems.len(),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "knowledge ingest finished"
    );
    Ok(report)
}

/// Writes one document (through the API). The caller holds the write lock.
pub(crate) async fn upsert_one(kb: &KnowledgeBase, document: Document) -> Result<UpsertOutcome> {
    document
        .validate()
        .map_err(crate::KnowledgeError::InvalidDocument)?;
    let stored = kb.index().stored_documents().await?;
    let report = write_documents(
        kb,
        std::slice::from_ref(&document),
        &stored,
        false,
        &mut NoProgress,
    )
    .await?;
    Ok(if report.added > 0 {
        UpsertOutcome::Added
    } else if report.updated > 0 {
        UpsertOutcome::Updated
    } else {
        UpsertOutcome::Unchanged
    })
}

/// A document that needs writing.
struct Pending<'a> {
    document: &'a Document,
    hash: String,
    chunks: Vec<Chunk>,
    /// Chunks stored for an older version (to delete beyond the new length).
    stored_chunks: usize,
    is_new: bool,
}

/// Embeds and writes every document whose hash differs from the stored one.
async fn write_documents(
    kb: &KnowledgeBase,
    documents: &[Document],
    stored: &[StoredDocument],
    force: bool,
    progress: &mut dyn IngestProgress,
) -> Result<IngestReport> {
    let stored_by_id: HashMap<&str, &StoredDocument> =
        stored.iter().map(|s| (s.doc_id.as_str(), s)).collect();
    let mut report = IngestReport::default();
    let mut pending = Vec::new();
    for document in documents {
        let hash = content_hash(kb, document);
        let previous = stored_by_id.get(document.id.as_str());
        if !force && previous.and_then(|p| p.content_hash.as_deref()) == Some(hash.as_str()) {
            report.unchanged += 1;
            continue;
        }
        pending.push(Pending {
            document,
            hash,
            chunks: chunk_document(document, kb.config().chunk_chars),
            stored_chunks: previous.map(|p| p.chunk_count).unwrap_or(0),
            is_new: previous.is_none(),
        });
    }
    let total_chunks: usize = pending.iter().map(|p| p.chunks.len()).sum();
    progress.started(pending.len(), total_chunks);
    if pending.is_empty() {
        return Ok(report);
    }
    kb.index().ensure_collection(kb.embedder().dim()).await?;

    let batch_size = kb.config().embed_batch.max(1);
    let mut start = 0;
    while start < pending.len() {
        // Whole documents per batch, about `batch_size` chunks.
        let mut end = start;
        let mut chunks_in_batch = 0;
        while end < pending.len() && (end == start || chunks_in_batch < batch_size) {
            chunks_in_batch += pending[end].chunks.len();
            end += 1;
        }
        let batch = &pending[start..end];
        let points = embed_batch(kb, batch).await?;
        let written = points.len();
        kb.index().upsert(points).await?;
        for item in batch {
            if item.stored_chunks > item.chunks.len() {
                kb.index()
                    .delete_chunks(&item.document.id, item.chunks.len())
                    .await?;
            }
            if item.is_new {
                report.added += 1;
            } else {
                report.updated += 1;
            }
        }
        report.chunks_written += written;
        progress.advanced(written);
        start = end;
    }
    Ok(report)
}

async fn embed_batch(kb: &KnowledgeBase, batch: &[Pending<'_>]) -> Result<Vec<ChunkPoint>> {
    let chunk_texts: Vec<String> = batch
        .iter()
        .flat_map(|p| p.chunks.iter().map(|c| c.embed_text.clone()))
        .collect();
    let headlines: Vec<String> = batch.iter().map(|p| headline(p.document)).collect();
    let chunk_count = chunk_texts.len();
    let embedder = kb.embedder().clone();
    let sparse = kb.sparse().cloned();
    let (mut dense, sparse) = tokio::task::spawn_blocking(move || -> Result<_> {
        let refs: Vec<&str> = chunk_texts
            .iter()
            .chain(headlines.iter())
            .map(String::as_str)
            .collect();
        let dense = embedder.embed_passages(&refs)?;
        if dense.len() != refs.len() {
            return Err(crate::KnowledgeError::Embed(crate::EmbedError::Inference(
                format!("asked for {} embeddings, got {}", refs.len(), dense.len()),
            )));
        }
        let sparse = match sparse {
            Some(encoder) => chunk_texts
                .iter()
                .map(|t| encoder.encode_document(t))
                .collect::<Result<Vec<_>>>()?,
            None => vec![SparseVector::default(); chunk_texts.len()],
        };
        Ok((dense, sparse))
    })
    .await??;
    let headline_vectors = dense.split_off(chunk_count);
    let mut dense = dense.into_iter();
    let mut sparse = sparse.into_iter();
    let mut points = Vec::new();
    for (item, headline_vector) in batch.iter().zip(&headline_vectors) {
        let doc = item.document;
        for chunk in &item.chunks {
            let (Some(chunk_vector), Some(sparse)) = (dense.next(), sparse.next()) else {
                break;
            };
            points.push(ChunkPoint {
                dense: normalized_sum(&chunk_vector, headline_vector),
                sparse,
                payload: ChunkPayload {
                    doc_id: doc.id.clone(),
                    kind: doc.kind,
                    audience: doc.audience,
                    title: doc.title.clone(),
                    text: chunk.text.clone(),
                    chunk: chunk.index,
                    chunk_count: item.chunks.len(),
                    content_hash: item.hash.clone(),
                    source: doc.source_str(),
                    tags: doc.tags.clone(),
                    answer: (doc.kind == DocumentKind::Faq).then(|| doc.text.clone()),
                    metadata: doc.metadata.clone(),
                },
            });
        }
    }
    Ok(points)
}

/// `(a + b) / |a + b|`: the stored vector of a chunk and its document's headline.
fn normalized_sum(a: &[f32], b: &[f32]) -> Vec<f32> {
    let sum: Vec<f32> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        sum.into_iter().map(|x| x / norm).collect()
    } else {
        a.to_vec()
    }
}

/// The hash that decides whether a document must be re-embedded.
pub fn content_hash(kb: &KnowledgeBase, document: &Document) -> String {
    let sparse = if kb.sparse().is_some() {
        SPARSE_VERSION.to_string()
    } else {
        "none".to_string()
    };
    let mut hasher = Sha256::new();
    hasher.update(
        format!(
            "chunker={CHUNKER_VERSION};chars={};model={};sparse={sparse};",
            kb.config().chunk_chars,
            kb.embedder().model_id()
        )
        .as_bytes(),
    );
    // serde_json of the document is deterministic for equal input (field order is fixed,
    // metadata keeps the order of the source).
    hasher.update(serde_json::to_vec(document).unwrap_or_default());
    let digest = hasher.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
