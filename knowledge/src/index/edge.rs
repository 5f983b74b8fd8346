//! In-process Qdrant (`qdrant-edge`): one shard in a directory, e.g. `<data_dir>/knowledge/`.
//!
//! qdrant-edge is a blocking API, so every call runs on tokio's blocking pool. Each write is
//! appended to the shard's write-ahead log and then flushed (WAL and segments), so a write
//! that returned survives a crash.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams,
    EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter, Fusion, JsonPath, Match,
    Modifier, NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, Prefetch, QueryEnum, QueryRequest, Range, ScoredPoint,
    ScoringQuery, ScrollRequest, UpdateOperation, Vector, VectorInternal, VectorStructInternal,
    Vectors, WalOptions, WithPayloadInterface, WithVector,
};
use serde_json::Value;

use super::{
    documents_from_chunks, ChunkPayload, ChunkPoint, ChunkSummary, HybridFusion, ScoredChunk,
    SearchFilter, StoredDocument, VectorIndex, DENSE_VECTOR, HYBRID_CANDIDATES_PER_RESULT,
    INDEXED_FIELDS, SPARSE_VECTOR, SUMMARY_FIELDS,
};
use crate::error::{KnowledgeError, Result};
use crate::sparse::SparseVector;

/// WAL segment size: the default 32 MiB is far more than a knowledge base writes between
/// flushes.
const WAL_SEGMENT_BYTES: usize = 4 << 20;
/// Points read per scroll page.
const SCROLL_PAGE: usize = 512;

/// A knowledge index in a local directory.
pub struct EdgeIndex {
    path: PathBuf,
    /// `None` until the collection is created (a fresh directory).
    shard: RwLock<Option<Arc<EdgeShard>>>,
}

impl std::fmt::Debug for EdgeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeIndex")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn index_error(context: &str, e: impl std::fmt::Display) -> KnowledgeError {
    KnowledgeError::Index(format!("{context}: {e}"))
}

impl EdgeIndex {
    /// Opens the shard in `path` if there is one (replaying its WAL); otherwise the shard is
    /// created by [`VectorIndex::ensure_collection`].
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let load_path = path.clone();
        let shard = tokio::task::spawn_blocking(move || -> Result<Option<EdgeShard>> {
            if !shard_exists(&load_path) {
                return Ok(None);
            }
            EdgeShard::load(&load_path, None)
                .map(Some)
                .map_err(|e| index_error(&format!("cannot open {}", load_path.display()), e))
        })
        .await??;
        if shard.is_some() {
            tracing::debug!(path = %path.display(), "opened the knowledge shard");
        }
        Ok(Self {
            path,
            shard: RwLock::new(shard.map(Arc::new)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn current(&self) -> Option<Arc<EdgeShard>> {
        self.shard.read().expect("shard lock").clone()
    }

    fn require(&self) -> Result<Arc<EdgeShard>> {
        self.current().ok_or_else(|| {
            KnowledgeError::Index(format!(
                "no knowledge collection at {} yet (ingest documents first)",
                self.path.display()
            ))
        })
    }

    /// Runs a read on the blocking pool; an index that was never created reads as empty.
    async fn read<T: Send + 'static>(
        &self,
        empty: T,
        f: impl FnOnce(&EdgeShard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let Some(shard) = self.current() else {
            return Ok(empty);
        };
        tokio::task::spawn_blocking(move || f(&shard)).await?
    }

    /// Applies updates then flushes, on the blocking pool.
    async fn write(&self, operations: Vec<UpdateOperation>) -> Result<()> {
        let shard = self.require()?;
        tokio::task::spawn_blocking(move || {
            for operation in operations {
                shard
                    .update(operation)
                    .map_err(|e| index_error("update failed", e))?;
            }
            shard.flush().map_err(|e| index_error("flush failed", e))
        })
        .await?
    }
}

fn shard_exists(path: &Path) -> bool {
    path.join("edge_config.json").is_file() || path.join("segments").is_dir()
}

fn shard_config(dense_dim: usize) -> EdgeConfig {
    let wal = WalOptions {
        segment_capacity: WAL_SEGMENT_BYTES,
        segment_queue_len: 0,
        retain_closed: NonZeroUsize::MIN,
    };
    EdgeConfig::builder()
        .vector(
            DENSE_VECTOR,
            EdgeVectorParams::builder(dense_dim, Distance::Cosine).build(),
        )
        .sparse_vector(
            SPARSE_VECTOR,
            EdgeSparseVectorParams::builder()
                .modifier(Modifier::Idf)
                .build(),
        )
        .wal_options(wal)
        .build()
}

fn field_path(field: &str) -> Result<JsonPath> {
    field
        .parse()
        .map_err(|_| KnowledgeError::Index(format!("invalid payload field name {field:?}")))
}

fn create_index_operation(field: &str) -> Result<UpdateOperation> {
    Ok(UpdateOperation::FieldIndexOperation(
        FieldIndexOperations::CreateIndex(CreateIndex {
            field_name: field_path(field)?,
            field_schema: Some(PayloadFieldSchema::FieldType(PayloadSchemaType::Keyword)),
        }),
    ))
}

fn to_filter(filter: &SearchFilter) -> Result<Option<Filter>> {
    if filter.is_empty() {
        return Ok(None);
    }
    let must = filter
        .conditions()
        .into_iter()
        .map(|(field, values)| {
            Ok(Condition::Field(FieldCondition::new_match(
                field_path(field)?,
                Match::from(values),
            )))
        })
        .collect::<Result<_>>()?;
    Ok(Some(Filter {
        must: Some(must),
        ..Filter::new()
    }))
}

fn to_point(point: ChunkPoint) -> Result<PointStruct> {
    let id = PointId::Uuid(point.point_id());
    let sparse = Vector::new_sparse(point.sparse.indices, point.sparse.values)
        .map_err(|e| index_error("bad sparse vector", e))?;
    let vectors = Vectors::new_named([
        (DENSE_VECTOR, Vector::new_dense(point.dense)),
        (SPARSE_VECTOR, sparse),
    ]);
    let payload =
        serde_json::to_value(&point.payload).map_err(|e| index_error("bad payload", e))?;
    Ok(PointStruct::new(id, vectors, payload))
}

fn to_scored_chunk(point: ScoredPoint) -> Result<ScoredChunk> {
    let payload = point
        .payload
        .ok_or_else(|| KnowledgeError::Index("a search result has no payload".into()))?;
    let payload: ChunkPayload = serde_json::from_value(Value::Object(payload.0))
        .map_err(|e| index_error("unreadable chunk payload", e))?;
    let dense = match point.vector {
        Some(VectorStructInternal::Named(mut vectors)) => match vectors.remove(DENSE_VECTOR) {
            Some(VectorInternal::Dense(v)) => Some(v),
            _ => None,
        },
        Some(VectorStructInternal::Single(v)) => Some(v),
        _ => None,
    };
    Ok(ScoredChunk {
        score: point.score,
        payload,
        dense,
    })
}

fn nearest(vector: VectorInternal, using: &str) -> ScoringQuery {
    ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(vector, using)))
}

fn sparse_internal(vector: &SparseVector) -> Result<VectorInternal> {
    let Vector(internal) = Vector::new_sparse(vector.indices.clone(), vector.values.clone())
        .map_err(|e| index_error("bad sparse query", e))?;
    Ok(internal)
}

fn result_request(query: ScoringQuery, limit: usize, filter: Option<Filter>) -> QueryRequest {
    QueryRequest {
        query: Some(query),
        filter,
        with_payload: WithPayloadInterface::Bool(true),
        with_vector: WithVector::Selector(vec![DENSE_VECTOR.to_string()]),
        ..QueryRequest::new(limit)
    }
}

fn run_query(shard: &EdgeShard, request: QueryRequest) -> Result<Vec<ScoredChunk>> {
    shard
        .query(request)
        .map_err(|e| index_error("query failed", e))?
        .into_iter()
        .map(to_scored_chunk)
        .collect()
}

#[async_trait]
impl VectorIndex for EdgeIndex {
    fn describe(&self) -> String {
        format!("qdrant-edge at {}", self.path.display())
    }

    async fn ensure_collection(&self, dense_dim: usize) -> Result<()> {
        let shard = match self.current() {
            Some(shard) => shard,
            None => {
                let path = self.path.clone();
                let created = tokio::task::spawn_blocking(move || {
                    EdgeShard::new(&path, shard_config(dense_dim))
                        .map_err(|e| index_error(&format!("cannot create {}", path.display()), e))
                })
                .await??;
                tracing::info!(path = %self.path.display(), dense_dim, "created the knowledge shard");
                let created = Arc::new(created);
                let mut slot = self.shard.write().expect("shard lock");
                // Another task may have created it meanwhile; keep the first.
                slot.get_or_insert(created).clone()
            }
        };
        let stored = shard.config().vectors.get(DENSE_VECTOR).map(|v| v.size);
        if let Some(stored) = stored.filter(|&s| s != dense_dim) {
            return Err(KnowledgeError::DimensionMismatch {
                stored,
                expected: dense_dim,
                location: self.path.display().to_string(),
            });
        }
        let info = {
            let shard = shard.clone();
            tokio::task::spawn_blocking(move || shard.info())
                .await?
                .map_err(|e| index_error("cannot read the shard info", e))?
        };
        let missing: Vec<UpdateOperation> = INDEXED_FIELDS
            .iter()
            .filter(|f| !info.payload_schema.keys().any(|k| k.to_string() == **f))
            .map(|f| create_index_operation(f))
            .collect::<Result<_>>()?;
        if !missing.is_empty() {
            self.write(missing).await?;
        }
        Ok(())
    }

    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points
            .into_iter()
            .map(|p| to_point(p).map(Into::into))
            .collect::<Result<Vec<_>>>()?;
        self.write(vec![UpdateOperation::PointOperation(
            PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
        )])
        .await
    }

    async fn delete_chunks(&self, doc_id: &str, from_chunk: usize) -> Result<()> {
        if self.current().is_none() {
            return Ok(());
        }
        let mut must = vec![Condition::Field(FieldCondition::new_match(
            field_path("doc_id")?,
            Match::from(doc_id.to_string()),
        ))];
        if from_chunk > 0 {
            must.push(Condition::Field(FieldCondition::new_range(
                field_path("chunk")?,
                Range {
                    gte: Some(OrderedFloat(from_chunk as f64)),
                    ..Default::default()
                },
            )));
        }
        let filter = Filter {
            must: Some(must),
            ..Filter::new()
        };
        self.write(vec![UpdateOperation::PointOperation(
            PointOperations::DeletePointsByFilter(filter),
        )])
        .await
    }

    async fn stored_documents(&self) -> Result<Vec<StoredDocument>> {
        self.read(Vec::new(), |shard| {
            let fields = SUMMARY_FIELDS
                .iter()
                .map(|f| field_path(f))
                .collect::<Result<Vec<_>>>()?;
            let mut summaries = Vec::new();
            let mut offset = None;
            loop {
                let request = ScrollRequest {
                    offset,
                    limit: Some(SCROLL_PAGE),
                    with_payload: Some(WithPayloadInterface::Fields(fields.clone())),
                    ..ScrollRequest::new()
                };
                let (records, next) = shard
                    .scroll(request)
                    .map_err(|e| index_error("scroll failed", e))?;
                for record in records {
                    let Some(payload) = record.payload else {
                        continue;
                    };
                    let summary: ChunkSummary = serde_json::from_value(Value::Object(payload.0))
                        .map_err(|e| index_error("unreadable chunk payload", e))?;
                    summaries.push(summary);
                }
                match next {
                    Some(next) => offset = Some(next),
                    None => break,
                }
            }
            Ok(documents_from_chunks(summaries))
        })
        .await
    }

    async fn search_dense(
        &self,
        vector: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>> {
        let request = result_request(
            nearest(VectorInternal::Dense(vector.to_vec()), DENSE_VECTOR),
            limit,
            to_filter(filter)?,
        );
        self.read(Vec::new(), move |shard| run_query(shard, request))
            .await
    }

    async fn search_sparse(
        &self,
        vector: &SparseVector,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>> {
        if vector.is_empty() {
            return Ok(Vec::new());
        }
        let request = result_request(
            nearest(sparse_internal(vector)?, SPARSE_VECTOR),
            limit,
            to_filter(filter)?,
        );
        self.read(Vec::new(), move |shard| run_query(shard, request))
            .await
    }

    async fn search_hybrid(
        &self,
        dense: &[f32],
        sparse: &SparseVector,
        fusion: HybridFusion,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>> {
        let candidates = limit * HYBRID_CANDIDATES_PER_RESULT;
        let filter = to_filter(filter)?;
        let mut prefetches = vec![Prefetch {
            query: Some(nearest(VectorInternal::Dense(dense.to_vec()), DENSE_VECTOR)),
            filter: filter.clone(),
            ..Prefetch::new(candidates)
        }];
        let mut weights = vec![OrderedFloat(1.0)];
        if !sparse.is_empty() {
            weights.push(OrderedFloat(fusion.sparse_weight));
            prefetches.push(Prefetch {
                query: Some(nearest(sparse_internal(sparse)?, SPARSE_VECTOR)),
                filter: filter.clone(),
                ..Prefetch::new(candidates)
            });
        }
        let request = QueryRequest {
            prefetches,
            ..result_request(
                ScoringQuery::Fusion(Fusion::Rrf {
                    k: fusion.k,
                    weights: Some(weights),
                }),
                limit,
                filter,
            )
        };
        self.read(Vec::new(), move |shard| run_query(shard, request))
            .await
    }

    async fn count(&self) -> Result<usize> {
        self.read(0, |shard| {
            shard
                .count(CountRequest::new())
                .map_err(|e| index_error("count failed", e))
        })
        .await
    }

    async fn size_on_disk(&self) -> Result<Option<u64>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if !path.exists() {
                return Ok(Some(0));
            }
            super::disk_usage(&path)
                .map(Some)
                .map_err(|e| KnowledgeError::io(&path, e))
        })
        .await?
    }
}
