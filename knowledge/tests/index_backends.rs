//! Both vector index backends pass the same checks: the in-process qdrant-edge shard always,
//! a Qdrant server when `KIZUNA_TEST_QDRANT_URL` (or `QDRANT_URL`) points at a reachable one
//! (gRPC, e.g. `http://localhost:6334`); otherwise that test says it was skipped.

use kizuna_knowledge::index::{ChunkPayload, ChunkPoint, HybridFusion, VectorIndex};
use kizuna_knowledge::sparse::SparseVector;
use kizuna_knowledge::{
    Audience, DocumentKind, EdgeIndex, KnowledgeError, SearchFilter, ServerIndex,
};

fn point(
    doc_id: &str,
    kind: DocumentKind,
    audience: Audience,
    chunk: usize,
    chunk_count: usize,
    dense: [f32; 4],
    terms: &[(u32, f32)],
) -> ChunkPoint {
    let norm = dense.iter().map(|x| x * x).sum::<f32>().sqrt();
    ChunkPoint {
        dense: dense.iter().map(|x| x / norm).collect(),
        sparse: SparseVector {
            indices: terms.iter().map(|t| t.0).collect(),
            values: terms.iter().map(|t| t.1).collect(),
        },
        payload: ChunkPayload {
            doc_id: doc_id.into(),
            kind,
            audience,
            title: format!("{doc_id} title"),
            text: format!("{doc_id} chunk {chunk}"),
            chunk,
            chunk_count,
            content_hash: format!("hash-{doc_id}"),
            source: format!("{doc_id}.yaml"),
            tags: vec!["tag".into()],
            answer: (kind == DocumentKind::Faq).then(|| format!("{doc_id} answer")),
            metadata: Default::default(),
        },
    }
}

const FUSION: HybridFusion = HybridFusion {
    k: 2,
    sparse_weight: 1.0,
};

fn ids(hits: &[kizuna_knowledge::index::ScoredChunk]) -> Vec<String> {
    hits.iter()
        .map(|h| format!("{}#{}", h.payload.doc_id, h.payload.chunk))
        .collect()
}

async fn conformance(index: &dyn VectorIndex) {
    index.ensure_collection(4).await.expect("create");
    // Idempotent.
    index.ensure_collection(4).await.expect("ensure again");
    index
        .upsert(vec![
            point(
                "a",
                DocumentKind::Faq,
                Audience::B2c,
                0,
                1,
                [1.0, 0.0, 0.0, 0.0],
                &[(7, 1.0)],
            ),
            point(
                "b",
                DocumentKind::Scenario,
                Audience::All,
                0,
                3,
                [0.0, 1.0, 0.0, 0.0],
                &[(8, 1.0)],
            ),
            point(
                "b",
                DocumentKind::Scenario,
                Audience::All,
                1,
                3,
                [0.0, 1.0, 0.2, 0.0],
                &[(8, 0.5)],
            ),
            point(
                "b",
                DocumentKind::Scenario,
                Audience::All,
                2,
                3,
                [0.0, 1.0, 0.4, 0.0],
                // Term 7 weighs more here than in a#0, so the keyword ranking has no tie
                // (tied scores come back in any order).
                &[(7, 2.0), (8, 0.2)],
            ),
            point(
                "c",
                DocumentKind::Faq,
                Audience::B2b,
                0,
                1,
                [0.9, 0.1, 0.0, 0.0],
                &[(9, 1.0)],
            ),
        ])
        .await
        .expect("upsert");
    assert_eq!(index.count().await.expect("count"), 5);
    let docs = index.stored_documents().await.expect("documents");
    assert_eq!(docs.len(), 3);
    let b = docs.iter().find(|d| d.doc_id == "b").expect("b stored");
    assert_eq!(
        (b.chunk_count, b.content_hash.as_deref()),
        (3, Some("hash-b"))
    );
    assert_eq!(b.kind, DocumentKind::Scenario);
    assert_eq!(b.source, "b.yaml");

    let all = SearchFilter::default();
    let dense = index
        .search_dense(&[1.0, 0.0, 0.0, 0.0], 3, &all)
        .await
        .expect("dense");
    assert_eq!(ids(&dense)[..2], ["a#0", "c#0"]);
    assert!((dense[0].score - 1.0).abs() < 1e-4, "{}", dense[0].score);
    assert_eq!(dense[0].dense.as_ref().map(Vec::len), Some(4));
    assert_eq!(dense[0].payload.answer.as_deref(), Some("a answer"));

    let customers = SearchFilter {
        audiences: Audience::B2c.visible_to(),
        ..SearchFilter::default()
    };
    let visible = index
        .search_dense(&[1.0, 0.0, 0.0, 0.0], 10, &customers)
        .await
        .expect("filtered");
    assert!(!ids(&visible).contains(&"c#0".to_string()));
    assert_eq!(visible.len(), 4);
    let faqs = SearchFilter {
        kinds: vec![DocumentKind::Faq],
        ..SearchFilter::default()
    };
    let only_faq = index
        .search_dense(&[0.0, 1.0, 0.0, 0.0], 10, &faqs)
        .await
        .expect("kind filter");
    assert!(only_faq.iter().all(|h| h.payload.kind == DocumentKind::Faq));
    assert_eq!(only_faq.len(), 2);

    let sparse = index
        .search_sparse(
            &SparseVector {
                indices: vec![7],
                values: vec![1.0],
            },
            10,
            &all,
        )
        .await
        .expect("sparse");
    let mut sparse_ids = ids(&sparse);
    sparse_ids.sort();
    assert_eq!(sparse_ids, ["a#0", "b#2"]);

    let hybrid = index
        .search_hybrid(
            &[0.0, 1.0, 0.0, 0.0],
            &SparseVector {
                indices: vec![7],
                values: vec![1.0],
            },
            FUSION,
            3,
            &all,
        )
        .await
        .expect("hybrid");
    // b#2 is in both lists, so it leads the fusion.
    assert_eq!(ids(&hybrid)[0], "b#2");
    assert!(hybrid.iter().all(|h| h.dense.is_some()));
    let filtered_hybrid = index
        .search_hybrid(
            &[1.0, 0.0, 0.0, 0.0],
            &SparseVector {
                indices: vec![9],
                values: vec![1.0],
            },
            FUSION,
            10,
            &customers,
        )
        .await
        .expect("filtered hybrid");
    assert!(!ids(&filtered_hybrid).contains(&"c#0".to_string()));

    // Shrinking b to one chunk: the rest is deleted, and the leftover no longer matches its
    // recorded chunk count, so it reads as needing a rewrite.
    index.delete_chunks("b", 1).await.expect("trim");
    assert_eq!(index.count().await.expect("count"), 3);
    let docs = index.stored_documents().await.expect("documents");
    let b = docs.iter().find(|d| d.doc_id == "b").expect("b kept");
    assert_eq!((b.chunk_count, b.content_hash.as_deref()), (1, None));
    index.delete_chunks("a", 0).await.expect("delete a");
    let docs = index.stored_documents().await.expect("documents");
    assert!(docs.iter().all(|d| d.doc_id != "a"));
    assert_eq!(index.count().await.expect("count"), 2);

    match index.ensure_collection(8).await {
        Err(KnowledgeError::DimensionMismatch {
            stored: 4,
            expected: 8,
            ..
        }) => {}
        other => panic!("expected a dimension mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn edge_index_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EdgeIndex::open(dir.path().join("knowledge"))
        .await
        .expect("open");
    // Reading a collection that does not exist yet is empty, not an error.
    assert_eq!(index.count().await.expect("count"), 0);
    assert!(index
        .stored_documents()
        .await
        .expect("documents")
        .is_empty());
    conformance(&index).await;
    assert!(index.size_on_disk().await.expect("size").unwrap_or(0) > 0);
}

#[tokio::test]
async fn qdrant_server_conformance() {
    let Some(url) = std::env::var("KIZUNA_TEST_QDRANT_URL")
        .or_else(|_| std::env::var("QDRANT_URL"))
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "skipped: set KIZUNA_TEST_QDRANT_URL (or QDRANT_URL) to a Qdrant server's gRPC URL, e.g. http://localhost:6334, to test the server backend"
        );
        return;
    };
    let collection = format!("kizuna_test_{}", uuid::Uuid::new_v4().simple());
    let index = ServerIndex::connect(&url, std::env::var("QDRANT_API_KEY").ok(), &collection)
        .expect("client");
    if !index.is_reachable().await {
        eprintln!("skipped: no Qdrant server answers at {url}");
        return;
    }
    assert_eq!(index.count().await.expect("count"), 0);
    conformance(&index).await;
    index
        .delete_collection()
        .await
        .expect("drop test collection");
}
