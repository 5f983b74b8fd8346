//! The knowledge base: retrieval for the agent, FAQ direct answers, document management.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use kizuna_agent::engine::ContextChunk;
use kizuna_agent::hub::{self, Retrieval, Retriever};
use kizuna_agent::identity::{Identity, Role};
use serde::{Deserialize, Serialize};

use crate::document::{Audience, Document, DocumentKind};
use crate::embed::Embedder;
use crate::error::{KnowledgeError, Result};
use crate::index::{dot, HybridFusion, ScoredChunk, SearchFilter, StoredDocument, VectorIndex};
use crate::ingest::{IngestProgress, IngestReport, UpsertOutcome};
use crate::sparse::SparseEncoder;

/// How candidates are found and ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    /// e5 cosine similarity.
    Dense,
    /// lindera keywords, BM25.
    Sparse,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

impl RetrievalMode {
    pub const ALL: [RetrievalMode; 3] = [
        RetrievalMode::Dense,
        RetrievalMode::Sparse,
        RetrievalMode::Hybrid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalMode::Dense => "dense",
            RetrievalMode::Sparse => "sparse",
            RetrievalMode::Hybrid => "hybrid",
        }
    }
}

impl std::fmt::Display for RetrievalMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How hybrid mode combines dense and keyword results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    /// Reciprocal rank fusion in the index (weighted, see [`HybridFusion`]).
    Rrf,
    /// Cosine + `sparse_weight` × BM25 / best BM25 of the query, fused here.
    Score,
}

/// Retrieval settings. The thresholds apply to the dense cosine score of a hit in every mode
/// (hybrid RRF scores only order hits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetrievalConfig {
    /// Chunks given to the agent.
    pub top_k: usize,
    /// Hits below this cosine are dropped. e5 scores cluster in 0.7–1.0, so the design
    /// card's 0.75 keeps everything (no off-topic question rejected). 0.87 comes from
    /// [`crate::evaluate::calibrate`] on the labelled set (question-level optimum, rounded
    /// down): 85% of on-topic questions keep a relevant hit, 56% of off-topic ones get none.
    pub threshold: f32,
    pub mode: RetrievalMode,
    /// Kinds searched for the agent. Templates are left out by default: they are outreach
    /// messages with placeholders, found by kind when drafting, not answers to questions.
    pub kinds: Vec<DocumentKind>,
    /// How hybrid search combines the dense and keyword lists. Score fusion with weight
    /// 0.01 measured best (recall@5 0.909, recall@1 0.706, MRR 0.789 against dense 0.887,
    /// 0.697, 0.781); RRF at any weight lowered recall@1 (the keyword side alone reaches
    /// only 0.41).
    pub fusion: FusionMethod,
    /// Parameters of the fusion (`k` for RRF; `sparse_weight` for both).
    pub hybrid: HybridFusion,
    /// The best FAQ is answered directly (without the LLM) at or above this cosine… (0.92:
    /// on the labelled set, 19 of the 20 questions it answered got the right FAQ.)
    pub direct_answer_threshold: f32,
    /// …when it leads the next FAQ by at least this much.
    pub direct_answer_margin: f32,
    /// A message the intent model reads as a question about the service (`faq`) is answered
    /// with the best FAQ from this cosine up…
    pub faq_answer_threshold: f32,
    /// …when it leads the next FAQ by at least this much. (0.88 / 0.01 chosen on
    /// `evals/retrieval/dev.yaml` as the most precise setting answering ≥ 50 questions:
    /// 42 of 57 right; reported on `test.yaml`: 35 of 40 right. See evals/retrieval/README.md.)
    pub faq_answer_margin: f32,
    /// Chunk length in characters.
    pub chunk_chars: usize,
    /// Chunks per embedding call during ingestion.
    pub embed_batch: usize,
    /// Query embeddings the server keeps in memory (its embedder is a
    /// [`crate::embed::CachedQueryEmbedder`] of this size, shared with the sentiment model).
    pub query_cache_size: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            top_k: 5,
            threshold: 0.87,
            mode: RetrievalMode::Hybrid,
            kinds: vec![
                DocumentKind::Faq,
                DocumentKind::Scenario,
                DocumentKind::Article,
            ],
            fusion: FusionMethod::Score,
            hybrid: HybridFusion {
                k: 2,
                sparse_weight: 0.01,
            },
            direct_answer_threshold: 0.92,
            direct_answer_margin: 0.02,
            faq_answer_threshold: 0.88,
            faq_answer_margin: 0.01,
            chunk_chars: crate::chunk::DEFAULT_CHUNK_CHARS,
            embed_batch: 16,
            query_cache_size: 256,
        }
    }
}

/// A retrieved chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub doc_id: String,
    pub kind: DocumentKind,
    pub audience: Audience,
    pub title: String,
    /// The chunk's text (an FAQ: `Q: …\nA: …`).
    pub text: String,
    /// Cosine similarity between the query and the chunk (what thresholds compare).
    pub score: f32,
    /// The score the mode ranked by (cosine, BM25 or RRF).
    pub rank_score: f32,
    pub chunk: usize,
    /// An FAQ's answer alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// An FAQ answer confident enough to send without the LLM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirectAnswer {
    pub doc_id: String,
    pub question: String,
    pub answer: String,
    pub score: f32,
    /// Lead over the next FAQ.
    pub margin: f32,
}

/// One search, fully specified (evaluation and tools use it; [`KnowledgeBase::search`]
/// fills it from the config).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    pub mode: RetrievalMode,
    pub limit: usize,
    pub filter: SearchFilter,
    /// Drop hits whose cosine is below this.
    pub threshold: Option<f32>,
}

/// Index figures for dashboards and benchmarks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexStats {
    pub documents: usize,
    pub chunks: usize,
    pub size_on_disk: Option<u64>,
    pub backend: String,
}

/// The document audiences a caller may read: managers everything, others b2c and all.
pub fn audiences_for(identity: &Identity) -> Vec<Audience> {
    // Signed-in customers may be B2B (管理会社) and the identity does not say which, so they
    // see every audience (nothing in the knowledge base is confidential); anonymous visitors
    // on the public site see the B2C and general documents.
    match identity.role {
        Role::Manager | Role::Customer => Vec::new(),
        Role::Anonymous => Audience::B2c.visible_to(),
    }
}

/// Retrieval over a vector index with an embedder and (optionally) the lindera encoder.
pub struct KnowledgeBase {
    index: Arc<dyn VectorIndex>,
    embedder: Arc<dyn Embedder>,
    sparse: Option<Arc<SparseEncoder>>,
    config: RetrievalConfig,
    /// Ingests and document edits one at a time.
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("index", &self.index.describe())
            .field("model", &self.embedder.model_id())
            .field("sparse", &self.sparse.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KnowledgeBase {
    /// Without a sparse encoder only dense retrieval works (hybrid falls back to dense).
    pub fn new(
        index: Arc<dyn VectorIndex>,
        embedder: Arc<dyn Embedder>,
        sparse: Option<Arc<SparseEncoder>>,
        config: RetrievalConfig,
    ) -> Self {
        Self {
            index,
            embedder,
            sparse,
            config,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &RetrievalConfig {
        &self.config
    }

    /// Changes retrieval settings (e.g. a calibrated threshold). Settings that affect the
    /// stored chunks (`chunk_chars`) change the content hash: the next ingest re-embeds.
    pub fn set_config(&mut self, config: RetrievalConfig) {
        self.config = config;
    }

    pub fn index(&self) -> &Arc<dyn VectorIndex> {
        &self.index
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    pub fn sparse(&self) -> Option<&Arc<SparseEncoder>> {
        self.sparse.as_ref()
    }

    pub(crate) async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// The query embedding of `text`. Repeats are cheap when the embedder is a
    /// [`crate::embed::CachedQueryEmbedder`] (the server's is, shared with the sentiment model).
    pub async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let embedder = self.embedder.clone();
        let input = text.trim().to_string();
        tokio::task::spawn_blocking(move || embedder.embed_queries(&[&input]))
            .await??
            .into_iter()
            .next()
            .ok_or_else(|| {
                KnowledgeError::Embed(crate::EmbedError::Inference(
                    "the embedder returned no vector".into(),
                ))
            })
    }

    /// The top chunks for a question, with the configured mode, k and threshold, among
    /// documents of the given audiences (empty: all).
    pub async fn search(&self, query: &str, audiences: &[Audience]) -> Result<Vec<Hit>> {
        let options = SearchOptions {
            mode: self.config.mode,
            limit: self.config.top_k,
            filter: SearchFilter {
                kinds: self.config.kinds.clone(),
                audiences: audiences.to_vec(),
                ..SearchFilter::default()
            },
            threshold: Some(self.config.threshold),
        };
        self.search_with(query, &options).await
    }

    /// A search with explicit options.
    pub async fn search_with(&self, query: &str, options: &SearchOptions) -> Result<Vec<Hit>> {
        let dense = self.embed_query(query).await?;
        // With a threshold, fetch extra candidates so dropping low-cosine hits that ranked
        // high (hybrid) still leaves up to `limit` hits.
        let candidates = if options.threshold.is_some() {
            options.limit * 2
        } else {
            options.limit
        };
        let chunks = match options.mode {
            RetrievalMode::Dense => {
                self.index
                    .search_dense(&dense, candidates, &options.filter)
                    .await?
            }
            RetrievalMode::Sparse => {
                let sparse = self.encode_query(query)?;
                self.index
                    .search_sparse(&sparse, candidates, &options.filter)
                    .await?
            }
            RetrievalMode::Hybrid => match &self.sparse {
                Some(_) => {
                    let sparse = self.encode_query(query)?;
                    match self.config.fusion {
                        FusionMethod::Rrf => {
                            self.index
                                .search_hybrid(
                                    &dense,
                                    &sparse,
                                    self.config.hybrid,
                                    candidates,
                                    &options.filter,
                                )
                                .await?
                        }
                        FusionMethod::Score => {
                            self.score_fusion(&dense, &sparse, candidates, &options.filter)
                                .await?
                        }
                    }
                }
                None => {
                    self.index
                        .search_dense(&dense, candidates, &options.filter)
                        .await?
                }
            },
        };
        let mut hits: Vec<Hit> = chunks
            .into_iter()
            .map(|chunk| to_hit(chunk, &dense, options.mode))
            .collect();
        if let Some(threshold) = options.threshold {
            hits.retain(|h| h.score >= threshold);
        }
        hits.truncate(options.limit);
        Ok(hits)
    }

    /// Cosine plus `sparse_weight` × the BM25 score relative to the query's best: keeps the
    /// dense order and lets keyword matches break near-ties.
    async fn score_fusion(
        &self,
        dense: &[f32],
        sparse: &crate::sparse::SparseVector,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>> {
        let candidates = limit * crate::index::HYBRID_CANDIDATES_PER_RESULT;
        let dense_hits = self.index.search_dense(dense, candidates, filter).await?;
        let sparse_hits = self.index.search_sparse(sparse, candidates, filter).await?;
        let best_bm25 = sparse_hits.iter().map(|h| h.score).fold(0.0f32, f32::max);
        let mut fused: HashMap<(String, usize), (ScoredChunk, f32)> = HashMap::new();
        for hit in dense_hits {
            let cosine = hit.score;
            fused.insert(
                (hit.payload.doc_id.clone(), hit.payload.chunk),
                (hit, cosine),
            );
        }
        for hit in sparse_hits {
            let bonus = if best_bm25 > 0.0 {
                self.config.hybrid.sparse_weight * hit.score / best_bm25
            } else {
                0.0
            };
            let key = (hit.payload.doc_id.clone(), hit.payload.chunk);
            match fused.get_mut(&key) {
                Some((_, score)) => *score += bonus,
                None => {
                    let cosine = hit.dense.as_deref().map(|v| dot(dense, v)).unwrap_or(0.0);
                    fused.insert(key, (hit, cosine + bonus));
                }
            }
        }
        let mut fused: Vec<ScoredChunk> = fused
            .into_values()
            .map(|(mut hit, score)| {
                hit.score = score;
                hit
            })
            .collect();
        fused.sort_by(|a, b| b.score.total_cmp(&a.score));
        fused.truncate(limit);
        Ok(fused)
    }

    fn encode_query(&self, query: &str) -> Result<crate::sparse::SparseVector> {
        self.sparse
            .as_ref()
            .ok_or(KnowledgeError::SparseUnavailable)?
            .encode_query(query)
    }

    /// The best FAQ as a ready answer, when it scores at least the direct-answer threshold
    /// and leads the next FAQ by the margin.
    pub async fn direct_answer(
        &self,
        query: &str,
        audiences: &[Audience],
    ) -> Result<Option<DirectAnswer>> {
        let best = self.best_faq(query, audiences).await?;
        Ok(best.filter(|d| {
            d.score >= self.config.direct_answer_threshold
                && d.margin >= self.config.direct_answer_margin
        }))
    }

    /// The best FAQ for a question about the service: the bar is lower than
    /// [`Self::direct_answer`]'s because the intent model already says it is one.
    pub async fn faq_answer(
        &self,
        query: &str,
        audiences: &[Audience],
    ) -> Result<Option<DirectAnswer>> {
        let best = self.best_faq(query, audiences).await?;
        Ok(best.filter(|d| {
            d.score >= self.config.faq_answer_threshold && d.margin >= self.config.faq_answer_margin
        }))
    }

    /// The FAQ closest to the question, with its lead over the next one.
    pub async fn best_faq(
        &self,
        query: &str,
        audiences: &[Audience],
    ) -> Result<Option<DirectAnswer>> {
        let options = SearchOptions {
            mode: RetrievalMode::Dense,
            limit: 2,
            filter: SearchFilter {
                kinds: vec![DocumentKind::Faq],
                audiences: audiences.to_vec(),
                ..SearchFilter::default()
            },
            threshold: None,
        };
        let hits = self.search_with(query, &options).await?;
        let Some(best) = hits.first() else {
            return Ok(None);
        };
        let runner_up = hits.get(1).map(|h| h.score).unwrap_or(0.0);
        let margin = best.score - runner_up;
        Ok(Some(DirectAnswer {
            doc_id: best.doc_id.clone(),
            question: best.title.clone(),
            answer: best.answer.clone().unwrap_or_else(|| best.text.clone()),
            score: best.score,
            margin,
        }))
    }

    /// Every stored document.
    pub async fn list_documents(&self) -> Result<Vec<StoredDocument>> {
        self.index.stored_documents().await
    }

    /// Adds or replaces one document (re-embedded only if it changed).
    pub async fn upsert_document(&self, document: Document) -> Result<UpsertOutcome> {
        let _write = self.write_lock().await;
        crate::ingest::upsert_one(self, document).await
    }

    /// Deletes a document; `false` if there was none with this id.
    pub async fn delete_document(&self, doc_id: &str) -> Result<bool> {
        let _write = self.write_lock().await;
        let exists = self
            .index
            .stored_documents()
            .await?
            .iter()
            .any(|d| d.doc_id == doc_id);
        if exists {
            self.index.delete_chunks(doc_id, 0).await?;
        }
        Ok(exists)
    }

    /// Brings the index in line with a content directory (only what changed is embedded).
    pub async fn ingest(&self, dir: &Path, progress: impl IngestProgress) -> Result<IngestReport> {
        crate::ingest::ingest(self, dir, false, progress).await
    }

    /// Like [`Self::ingest`] but re-embeds every document.
    pub async fn reindex(&self, dir: &Path, progress: impl IngestProgress) -> Result<IngestReport> {
        crate::ingest::ingest(self, dir, true, progress).await
    }

    pub async fn stats(&self) -> Result<IndexStats> {
        Ok(IndexStats {
            documents: self.index.stored_documents().await?.len(),
            chunks: self.index.count().await?,
            size_on_disk: self.index.size_on_disk().await?,
            backend: self.index.describe(),
        })
    }
}

fn to_hit(chunk: ScoredChunk, query: &[f32], mode: RetrievalMode) -> Hit {
    let cosine = match (&chunk.dense, mode) {
        (_, RetrievalMode::Dense) => chunk.score,
        (Some(vector), _) => dot(query, vector),
        (None, _) => 0.0,
    };
    let payload = chunk.payload;
    Hit {
        doc_id: payload.doc_id,
        kind: payload.kind,
        audience: payload.audience,
        title: payload.title,
        text: payload.text,
        score: cosine,
        rank_score: chunk.score,
        chunk: payload.chunk,
        answer: payload.answer,
    }
}

#[async_trait]
impl Retriever for KnowledgeBase {
    async fn retrieve(&self, query: &str, identity: &Identity) -> Retrieval {
        let audiences = audiences_for(identity);
        let chunks: Vec<ContextChunk> = match self.search(query, &audiences).await {
            Ok(hits) => hits.into_iter().map(context_chunk).collect(),
            Err(e) => {
                tracing::error!(error = %e, "knowledge retrieval failed; answering without context");
                return Retrieval::default();
            }
        };
        let best = match self.best_faq(query, &audiences).await {
            Ok(best) => best,
            Err(e) => {
                tracing::warn!(error = %e, "FAQ answer lookup failed");
                None
            }
        };
        let answer = |d: &DirectAnswer| hub::DirectAnswer {
            doc_id: d.doc_id.clone(),
            title: d.question.clone(),
            text: d.answer.clone(),
            score: d.score,
        };
        let best_score = chunks
            .iter()
            .map(|c| c.score)
            .chain(best.as_ref().map(|d| d.score))
            .reduce(f32::max);
        let cfg = &self.config;
        let direct_answer = best
            .as_ref()
            .filter(|d| {
                d.score >= cfg.direct_answer_threshold && d.margin >= cfg.direct_answer_margin
            })
            .map(answer);
        let faq_answer = best
            .as_ref()
            .filter(|d| d.score >= cfg.faq_answer_threshold && d.margin >= cfg.faq_answer_margin)
            .map(answer);
        Retrieval {
            chunks,
            direct_answer,
            faq_answer,
            best_score,
        }
    }
}

/// A hit as model context: an FAQ's answer travels separately (a composed reply quotes
/// it); other chunks get their title on top.
fn context_chunk(hit: Hit) -> ContextChunk {
    let text = if hit.kind == DocumentKind::Faq {
        hit.text
    } else {
        format!("【{}】\n{}", hit.title, hit.text)
    };
    ContextChunk {
        doc_id: hit.doc_id,
        title: hit.title,
        text,
        score: hit.score,
        answer: hit.answer,
    }
}
