//! A Qdrant server through `qdrant-client` (gRPC, port 6334), chosen when a URL is configured
//! (e.g. `QDRANT_URL`). Same schema as the in-process index: named vectors `dense` (cosine)
//! and `sparse` (IDF modifier), keyword payload indexes on `kind`, `audience`, `doc_id`.
//! Every write waits until the server has applied it.

use std::collections::HashMap;

use async_trait::async_trait;
use qdrant_client::qdrant::vector_output::Vector as OutputVector;
use qdrant_client::qdrant::{
    vectors_config, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter, Modifier,
    NamedVectors, PayloadIncludeSelector, PointStruct, PrefetchQueryBuilder, Query,
    QueryPointsBuilder, Range, RrfBuilder, ScoredPoint, ScrollPointsBuilder,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPointsBuilder, Value as QValue,
    Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder, VectorsSelector,
};
use qdrant_client::{Payload, Qdrant};

use super::{
    documents_from_chunks, ChunkPayload, ChunkPoint, ChunkSummary, HybridFusion, ScoredChunk,
    SearchFilter, StoredDocument, VectorIndex, DENSE_VECTOR, HYBRID_CANDIDATES_PER_RESULT,
    INDEXED_FIELDS, SPARSE_VECTOR, SUMMARY_FIELDS,
};
use crate::error::{KnowledgeError, Result};
use crate::sparse::SparseVector;

/// Default collection name.
pub const DEFAULT_COLLECTION: &str = "kizuna_knowledge";
/// Points read per scroll page.
const SCROLL_PAGE: u32 = 512;

/// A knowledge collection on a Qdrant server.
pub struct ServerIndex {
    client: Qdrant,
    url: String,
    collection: String,
}

impl std::fmt::Debug for ServerIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIndex")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

fn server_error(context: &str, e: impl std::fmt::Display) -> KnowledgeError {
    KnowledgeError::Index(format!("{context}: {e}"))
}

impl ServerIndex {
    /// Connects (lazily) to `url`, e.g. `http://localhost:6334`, with an optional API key.
    pub fn connect(url: &str, api_key: Option<String>, collection: &str) -> Result<Self> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .skip_compatibility_check()
            .build()
            .map_err(|e| server_error(&format!("cannot connect to Qdrant at {url}"), e))?;
        Ok(Self {
            client,
            url: url.to_string(),
            collection: collection.to_string(),
        })
    }

    /// Whether the server answers a health check.
    pub async fn is_reachable(&self) -> bool {
        self.client.health_check().await.is_ok()
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Drops the collection (tests, or a forced rebuild).
    pub async fn delete_collection(&self) -> Result<()> {
        if self.exists().await? {
            self.client
                .delete_collection(&self.collection)
                .await
                .map_err(|e| server_error("cannot delete the collection", e))?;
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool> {
        self.client
            .collection_exists(&self.collection)
            .await
            .map_err(|e| server_error("cannot reach Qdrant", e))
    }

    async fn stored_dense_dim(&self) -> Result<Option<usize>> {
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(|e| server_error("cannot read the collection info", e))?;
        let params = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        Ok(match params {
            Some(vectors_config::Config::ParamsMap(map)) => {
                map.map.get(DENSE_VECTOR).map(|p| p.size as usize)
            }
            _ => None,
        })
    }

    async fn payload_indexes(&self) -> Result<Vec<String>> {
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(|e| server_error("cannot read the collection info", e))?;
        Ok(info
            .result
            .map(|r| r.payload_schema.into_keys().collect())
            .unwrap_or_default())
    }

    async fn run_query(&self, builder: QueryPointsBuilder) -> Result<Vec<ScoredChunk>> {
        let response = self
            .client
            .query(builder)
            .await
            .map_err(|e| server_error("query failed", e))?;
        response.result.into_iter().map(to_scored_chunk).collect()
    }

    fn query_builder(&self, limit: usize, filter: &SearchFilter) -> QueryPointsBuilder {
        let mut builder = QueryPointsBuilder::new(&self.collection)
            .limit(limit as u64)
            .with_payload(true)
            .with_vectors(VectorsSelector::new(vec![DENSE_VECTOR.to_string()]));
        if let Some(filter) = to_filter(filter) {
            builder = builder.filter(filter);
        }
        builder
    }
}

fn to_filter(filter: &SearchFilter) -> Option<Filter> {
    if filter.is_empty() {
        return None;
    }
    Some(Filter::must(
        filter
            .conditions()
            .into_iter()
            .map(|(field, values)| Condition::matches(field, values)),
    ))
}

fn to_scored_chunk(point: ScoredPoint) -> Result<ScoredChunk> {
    let payload = payload_to_json(point.payload);
    let payload: ChunkPayload =
        serde_json::from_value(payload).map_err(|e| server_error("unreadable chunk payload", e))?;
    let dense = point
        .vectors
        .as_ref()
        .and_then(|v| v.get_vector_by_name(DENSE_VECTOR))
        .and_then(|v| match v {
            OutputVector::Dense(d) => Some(d.data),
            _ => None,
        });
    Ok(ScoredChunk {
        score: point.score,
        payload,
        dense,
    })
}

fn payload_to_json(payload: HashMap<String, QValue>) -> serde_json::Value {
    serde_json::Value::from(Payload::from(payload))
}

fn sparse_input(vector: &SparseVector) -> VectorInput {
    VectorInput::new_sparse(vector.indices.clone(), vector.values.clone())
}

#[async_trait]
impl VectorIndex for ServerIndex {
    fn describe(&self) -> String {
        format!(
            "Qdrant server {} (collection {})",
            self.url, self.collection
        )
    }

    async fn ensure_collection(&self, dense_dim: usize) -> Result<()> {
        if !self.exists().await? {
            let mut vectors = VectorsConfigBuilder::default();
            vectors.add_named_vector_params(
                DENSE_VECTOR,
                VectorParamsBuilder::new(dense_dim as u64, Distance::Cosine),
            );
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(
                SPARSE_VECTOR,
                SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
            );
            let created = self
                .client
                .create_collection(
                    CreateCollectionBuilder::new(&self.collection)
                        .vectors_config(vectors)
                        .sparse_vectors_config(sparse),
                )
                .await;
            // Another process may have created it meanwhile.
            if let Err(e) = created {
                if !self.exists().await? {
                    return Err(server_error("cannot create the collection", e));
                }
            } else {
                tracing::info!(collection = %self.collection, dense_dim, "created the Qdrant collection");
            }
        }
        if let Some(stored) = self.stored_dense_dim().await? {
            if stored != dense_dim {
                return Err(KnowledgeError::DimensionMismatch {
                    stored,
                    expected: dense_dim,
                    location: format!("the Qdrant collection {}", self.collection),
                });
            }
        }
        let existing = self.payload_indexes().await?;
        for field in INDEXED_FIELDS {
            if existing.iter().any(|f| f == field) {
                continue;
            }
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        &self.collection,
                        field,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(|e| server_error(&format!("cannot index the field {field}"), e))?;
        }
        Ok(())
    }

    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points
            .into_iter()
            .map(|point| {
                let id = point.point_id().to_string();
                let vectors = NamedVectors::default()
                    .add_vector(DENSE_VECTOR, Vector::new_dense(point.dense))
                    .add_vector(
                        SPARSE_VECTOR,
                        Vector::new_sparse(point.sparse.indices, point.sparse.values),
                    );
                let payload = serde_json::to_value(&point.payload)
                    .map_err(|e| server_error("bad payload", e))?;
                let payload =
                    Payload::try_from(payload).map_err(|e| server_error("bad payload", e))?;
                Ok(PointStruct::new(id, vectors, payload))
            })
            .collect::<Result<Vec<_>>>()?;
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
            .await
            .map_err(|e| server_error("upsert failed", e))?;
        Ok(())
    }

    async fn delete_chunks(&self, doc_id: &str, from_chunk: usize) -> Result<()> {
        if !self.exists().await? {
            return Ok(());
        }
        let mut conditions = vec![Condition::matches("doc_id", doc_id.to_string())];
        if from_chunk > 0 {
            conditions.push(Condition::range(
                "chunk",
                Range {
                    gte: Some(from_chunk as f64),
                    ..Default::default()
                },
            ));
        }
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(Filter::must(conditions))
                    .wait(true),
            )
            .await
            .map_err(|e| server_error("delete failed", e))?;
        Ok(())
    }

    async fn stored_documents(&self) -> Result<Vec<StoredDocument>> {
        if !self.exists().await? {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = SUMMARY_FIELDS.iter().map(|f| f.to_string()).collect();
        let mut summaries = Vec::new();
        let mut offset = None;
        loop {
            let mut request = ScrollPointsBuilder::new(&self.collection)
                .limit(SCROLL_PAGE)
                .with_payload(PayloadIncludeSelector::new(fields.clone()));
            if let Some(offset) = offset.take() {
                request = request.offset(offset);
            }
            let response = self
                .client
                .scroll(request)
                .await
                .map_err(|e| server_error("scroll failed", e))?;
            for point in response.result {
                let summary: ChunkSummary = serde_json::from_value(payload_to_json(point.payload))
                    .map_err(|e| server_error("unreadable chunk payload", e))?;
                summaries.push(summary);
            }
            match response.next_page_offset {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        Ok(documents_from_chunks(summaries))
    }

    async fn search_dense(
        &self,
        vector: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>> {
        if !self.exists().await? {
            return Ok(Vec::new());
        }
        let builder = self
            .query_builder(limit, filter)
            .query(Query::new_nearest(VectorInput::new_dense(vector.to_vec())))
            .using(DENSE_VECTOR);
        self.run_query(builder).await
    }

    async fn search_sparse(
        &self,
        vector: &SparseVector,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>> {
        if vector.is_empty() || !self.exists().await? {
            return Ok(Vec::new());
        }
        let builder = self
            .query_builder(limit, filter)
            .query(Query::new_nearest(sparse_input(vector)))
            .using(SPARSE_VECTOR);
        self.run_query(builder).await
    }

    async fn search_hybrid(
        &self,
        dense: &[f32],
        sparse: &SparseVector,
        fusion: HybridFusion,
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<ScoredChunk>> {
        if !self.exists().await? {
            return Ok(Vec::new());
        }
        let candidates = (limit * HYBRID_CANDIDATES_PER_RESULT) as u64;
        let qfilter = to_filter(filter);
        let mut dense_prefetch = PrefetchQueryBuilder::default()
            .query(Query::new_nearest(VectorInput::new_dense(dense.to_vec())))
            .using(DENSE_VECTOR)
            .limit(candidates);
        if let Some(f) = &qfilter {
            dense_prefetch = dense_prefetch.filter(f.clone());
        }
        let mut builder = self
            .query_builder(limit, filter)
            .add_prefetch(dense_prefetch);
        let mut weights = vec![1.0];
        if !sparse.is_empty() {
            weights.push(fusion.sparse_weight);
            let mut sparse_prefetch = PrefetchQueryBuilder::default()
                .query(Query::new_nearest(sparse_input(sparse)))
                .using(SPARSE_VECTOR)
                .limit(candidates);
            if let Some(f) = &qfilter {
                sparse_prefetch = sparse_prefetch.filter(f.clone());
            }
            builder = builder.add_prefetch(sparse_prefetch);
        }
        let builder = builder.query(Query::new_rrf(
            RrfBuilder::with_k(fusion.k as u32).weights(weights),
        ));
        self.run_query(builder).await
    }

    async fn count(&self) -> Result<usize> {
        if !self.exists().await? {
            return Ok(0);
        }
        let response = self
            .client
            .count(CountPointsBuilder::new(&self.collection).exact(true))
            .await
            .map_err(|e| server_error("count failed", e))?;
        Ok(response.result.map(|r| r.count as usize).unwrap_or(0))
    }

    async fn size_on_disk(&self) -> Result<Option<u64>> {
        // The server does not report a collection's disk usage over the API.
        Ok(None)
    }
}
