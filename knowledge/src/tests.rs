//! Ingestion and retrieval over the real in-process index, with a deterministic test-double
//! embedder (character n-gram hashing) standing in for e5.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kizuna_agent::hub::Retriever;
use kizuna_agent::identity::Identity;
use unicode_normalization::UnicodeNormalization;

use crate::document::{Audience, Document, DocumentKind};
use crate::embed::{EmbedError, Embedder};
use crate::error::KnowledgeError;
use crate::index::edge::EdgeIndex;
use crate::index::SearchFilter;
use crate::ingest::{NoProgress, UpsertOutcome};
use crate::kb::{FusionMethod, KnowledgeBase, RetrievalConfig, RetrievalMode, SearchOptions};

/// Hashes character bigrams and trigrams into a small normalised vector; counts the texts
/// it embeds.
struct NgramEmbedder {
    model_id: String,
    dim: usize,
    passages_embedded: AtomicUsize,
}

impl NgramEmbedder {
    fn new(model_id: &str) -> Arc<Self> {
        Arc::new(Self {
            model_id: model_id.into(),
            dim: 128,
            passages_embedded: AtomicUsize::new(0),
        })
    }

    fn embedded(&self) -> usize {
        self.passages_embedded.load(Ordering::SeqCst)
    }

    fn embed(&self, text: &str) -> Vec<f32> {
        let chars: Vec<char> = text.nfkc().filter(|c| !c.is_whitespace()).collect();
        let mut v = vec![0f32; self.dim];
        for n in [2, 3] {
            for window in chars.windows(n) {
                let gram: String = window.iter().collect();
                v[crate::sparse::term_id(&gram) as usize % self.dim] += 1.0;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            v[0] = 1.0;
        } else {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Embedder for NgramEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed(t)).collect())
    }
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.passages_embedded
            .fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts.iter().map(|t| self.embed(t)).collect())
    }
}

fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

const FAQ: &str = "\
- id: faq-price
  question: 騒音測定の料金はいくらですか？
  answer: 基本プランは月額3,000円（税込）です。初期費用はかかりません。
  audience: b2c
  tags: [料金]
- id: faq-cancel
  question: 解約の方法を教えてください。
  answer: マイページの契約情報から、いつでも解約の手続きができます。
  audience: all
- id: faq-curtain
  question: 防音カーテンは効果がありますか？
  answer: 高音域には一定の効果がありますが、足音などの低音にはあまり効きません。
  audience: all
- id: faq-invoice
  question: 法人で請求書払いはできますか？
  answer: 法人契約では月末締め翌月末払いの請求書払いに対応しています。
  audience: b2b
";

fn long_scenario(sentences: usize) -> String {
    let body: String = (0..sentences)
        .map(|i| format!("手順{i}では、お客様の状況を丁寧に伺い、記録を残します。"))
        .collect();
    format!(
        "---\nid: sc-noise\nkind: scenario\ntitle: 騒音トラブルの相談対応\naudience: all\ntrigger: 隣人の騒音に困っている\n---\n{body}\n"
    )
}

const TEMPLATE: &str = "\
- id: tpl-thanks
  title: ご契約の御礼
  purpose: 契約直後の挨拶
  trigger: 契約完了
  channel: email
  audience: all
  tone: 丁寧
  body: \"{{name}}様、このたびはご契約いただきありがとうございます。\"
";

fn content(dir: &Path) {
    write(dir, "faq/basics.yaml", FAQ);
    write(dir, "scenarios/noise.md", &long_scenario(60));
    write(dir, "templates/thanks.yaml", TEMPLATE);
}

fn config(mode: RetrievalMode) -> RetrievalConfig {
    RetrievalConfig {
        mode,
        threshold: 0.0,
        chunk_chars: 200,
        embed_batch: 4,
        direct_answer_threshold: 0.6,
        direct_answer_margin: 0.05,
        ..RetrievalConfig::default()
    }
}

async fn open_kb(
    index_dir: &Path,
    embedder: Arc<NgramEmbedder>,
    mode: RetrievalMode,
) -> KnowledgeBase {
    let index = EdgeIndex::open(index_dir).await.expect("open index");
    let sparse = match mode {
        RetrievalMode::Dense => None,
        _ => crate::sparse::tests::test_encoder().map(Arc::new),
    };
    KnowledgeBase::new(Arc::new(index), embedder, sparse, config(mode))
}

async fn chunk_count(kb: &KnowledgeBase, doc_id: &str) -> usize {
    kb.list_documents()
        .await
        .expect("list")
        .iter()
        .find(|d| d.doc_id == doc_id)
        .map(|d| d.chunk_count)
        .unwrap_or(0)
}

#[tokio::test]
async fn reingest_is_idempotent_and_follows_changes_and_deletions() {
    let content_dir = tempfile::tempdir().unwrap();
    let index_dir = tempfile::tempdir().unwrap();
    content(content_dir.path());
    let embedder = NgramEmbedder::new("ngram-v1");
    let kb = open_kb(index_dir.path(), embedder.clone(), RetrievalMode::Dense).await;

    let first = kb.ingest(content_dir.path(), NoProgress).await.unwrap();
    assert_eq!(
        (first.added, first.updated, first.unchanged, first.deleted),
        (6, 0, 0, 0)
    );
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    let scenario_chunks = chunk_count(&kb, "sc-noise").await;
    assert!(scenario_chunks > 3, "{scenario_chunks}");
    assert_eq!(first.chunks_written, 5 + scenario_chunks);
    // Every chunk, and the headline of each of the 6 documents.
    assert_eq!(embedder.embedded(), first.chunks_written + 6);
    assert_eq!(kb.index().count().await.unwrap(), first.chunks_written);

    // Nothing changed: nothing embedded, nothing written.
    let second = kb.ingest(content_dir.path(), NoProgress).await.unwrap();
    assert_eq!((second.unchanged, second.chunks_written), (6, 0));
    assert_eq!(embedder.embedded(), first.chunks_written + 6);

    // One answer edited, the scenario shortened, the template file removed.
    write(
        content_dir.path(),
        "faq/basics.yaml",
        &FAQ.replace("月額3,000円", "月額3,500円"),
    );
    write(content_dir.path(), "scenarios/noise.md", &long_scenario(10));
    std::fs::remove_file(content_dir.path().join("templates/thanks.yaml")).unwrap();
    let before = embedder.embedded();
    let third = kb.ingest(content_dir.path(), NoProgress).await.unwrap();
    assert_eq!(
        (third.added, third.updated, third.unchanged, third.deleted),
        (0, 2, 3, 1)
    );
    let new_scenario_chunks = chunk_count(&kb, "sc-noise").await;
    assert!(new_scenario_chunks < scenario_chunks);
    assert_eq!(embedder.embedded() - before, 1 + new_scenario_chunks + 2);
    let docs = kb.list_documents().await.unwrap();
    assert!(!docs.iter().any(|d| d.doc_id == "tpl-thanks"));
    assert!(docs.iter().all(|d| d.content_hash.is_some()));
    // Old chunks of the longer scenario are gone, not just overwritten.
    assert_eq!(kb.index().count().await.unwrap(), 4 + new_scenario_chunks);
    let hits = kb
        .search_with(
            "料金",
            &SearchOptions {
                mode: RetrievalMode::Dense,
                limit: 10,
                filter: SearchFilter {
                    doc_ids: vec!["faq-price".into()],
                    ..SearchFilter::default()
                },
                threshold: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].text.contains("3,500円"), "{}", hits[0].text);

    // A different model makes every stored vector stale.
    let kb_new_model = KnowledgeBase::new(
        kb.index().clone(),
        NgramEmbedder::new("ngram-v2"),
        None,
        config(RetrievalMode::Dense),
    );
    let fourth = kb_new_model
        .ingest(content_dir.path(), NoProgress)
        .await
        .unwrap();
    assert_eq!((fourth.updated, fourth.unchanged), (5, 0));
}

#[tokio::test]
async fn bad_files_are_reported_and_do_not_cost_their_stored_documents() {
    let content_dir = tempfile::tempdir().unwrap();
    let index_dir = tempfile::tempdir().unwrap();
    content(content_dir.path());
    write(
        content_dir.path(),
        "faq/broken.yaml",
        "- id: faq-x\n  question: [unclosed\n",
    );
    write(content_dir.path(), "notes.jsonl", "{\"id\": \"n-1\"}\n");
    let embedder = NgramEmbedder::new("ngram-v1");
    let kb = open_kb(index_dir.path(), embedder, RetrievalMode::Dense).await;
    let report = kb.ingest(content_dir.path(), NoProgress).await.unwrap();
    assert_eq!(report.added, 6);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    let broken = report
        .problems
        .iter()
        .find(|p| p.path.ends_with("faq/broken.yaml"))
        .expect("broken.yaml reported");
    assert!(broken.line.is_some());
    let notes = report
        .problems
        .iter()
        .find(|p| p.path.ends_with("notes.jsonl"))
        .expect("notes.jsonl reported");
    assert_eq!(notes.line, Some(1));
    assert!(report.to_string().contains("broken.yaml"));

    // The FAQ file breaks: its documents stay searchable instead of being deleted.
    write(
        content_dir.path(),
        "faq/basics.yaml",
        "- id: faq-price\n  question: [\n",
    );
    let report = kb.ingest(content_dir.path(), NoProgress).await.unwrap();
    assert_eq!(report.deleted, 0);
    assert!(report
        .problems
        .iter()
        .any(|p| p.path.ends_with("faq/basics.yaml")));
    let ids: Vec<String> = kb
        .list_documents()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.doc_id)
        .collect();
    assert!(ids.contains(&"faq-price".to_string()), "{ids:?}");
    assert!(ids.contains(&"faq-invoice".to_string()), "{ids:?}");
}

#[tokio::test]
async fn the_edge_index_survives_a_reopen() {
    let content_dir = tempfile::tempdir().unwrap();
    let index_dir = tempfile::tempdir().unwrap();
    content(content_dir.path());
    let embedder = NgramEmbedder::new("ngram-v1");
    let (count, top) = {
        let kb = open_kb(index_dir.path(), embedder.clone(), RetrievalMode::Dense).await;
        kb.ingest(content_dir.path(), NoProgress).await.unwrap();
        let hits = kb.search("解約の方法を教えてください", &[]).await.unwrap();
        (kb.index().count().await.unwrap(), hits[0].doc_id.clone())
    };
    assert_eq!(top, "faq-cancel");
    let kb = open_kb(index_dir.path(), embedder.clone(), RetrievalMode::Dense).await;
    assert_eq!(kb.index().count().await.unwrap(), count);
    let hits = kb.search("解約の方法を教えてください", &[]).await.unwrap();
    assert_eq!(hits[0].doc_id, "faq-cancel");
    let embedded = embedder.embedded();
    let report = kb.ingest(content_dir.path(), NoProgress).await.unwrap();
    assert_eq!(report.unchanged, 6);
    assert_eq!(embedder.embedded(), embedded);
    let size = kb.index().size_on_disk().await.unwrap().unwrap();
    assert!(size > 0);

    // The stored dimension is checked.
    match kb.index().ensure_collection(64).await {
        Err(KnowledgeError::DimensionMismatch {
            stored: 128,
            expected: 64,
            ..
        }) => {}
        other => panic!("expected a dimension mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn audiences_thresholds_and_direct_answers() {
    let content_dir = tempfile::tempdir().unwrap();
    let index_dir = tempfile::tempdir().unwrap();
    content(content_dir.path());
    let kb = open_kb(
        index_dir.path(),
        NgramEmbedder::new("ngram-v1"),
        RetrievalMode::Dense,
    )
    .await;
    kb.ingest(content_dir.path(), NoProgress).await.unwrap();

    // The b2b invoice FAQ is hidden from anonymous visitors, not from signed-in customers
    // (who may be management companies) or managers.
    let question = "法人で請求書払いはできますか？";
    let visitor = kb.retrieve(question, &Identity::anonymous("v-1")).await;
    assert!(!visitor.chunks.iter().any(|c| c.doc_id == "faq-invoice"));
    assert!(visitor.chunks.len() <= 5);
    let customer = kb.retrieve(question, &Identity::customer("c-1")).await;
    assert_eq!(customer.chunks[0].doc_id, "faq-invoice");
    let manager = kb.retrieve(question, &Identity::manager("m-1")).await;
    assert_eq!(manager.chunks[0].doc_id, "faq-invoice");
    assert!(manager.chunks[0].text.starts_with("Q: 法人で請求書払い"));
    let b2b = kb
        .search(question, &Audience::B2b.visible_to())
        .await
        .unwrap();
    assert_eq!(b2b[0].doc_id, "faq-invoice");
    assert!(b2b.iter().all(|h| h.audience != Audience::B2c));

    // Non-FAQ context carries its title.
    let scenario = kb
        .retrieve("騒音トラブルの相談対応の手順", &Identity::manager("m-1"))
        .await;
    let chunk = scenario
        .chunks
        .iter()
        .find(|c| c.doc_id == "sc-noise")
        .expect("scenario retrieved");
    assert!(chunk.text.starts_with("【騒音トラブルの相談対応】"));

    // Exactly the FAQ's question: answered directly; something unrelated: not.
    let direct = kb
        .direct_answer("防音カーテンは効果がありますか？", &[])
        .await
        .unwrap()
        .expect("a direct answer");
    assert_eq!(direct.doc_id, "faq-curtain");
    assert!(direct.answer.starts_with("高音域には"));
    assert!(direct.margin >= 0.05);
    assert!(kb
        .direct_answer("今日の天気はどうですか", &[])
        .await
        .unwrap()
        .is_none());
    let retrieval = kb
        .retrieve(
            "防音カーテンは効果がありますか？",
            &Identity::anonymous("v"),
        )
        .await;
    assert_eq!(
        retrieval.direct_answer.map(|d| d.doc_id).as_deref(),
        Some("faq-curtain")
    );

    // A threshold above every score leaves nothing.
    let mut strict = kb.config().clone();
    strict.threshold = 0.999;
    let strict_kb = KnowledgeBase::new(kb.index().clone(), kb.embedder().clone(), None, strict);
    assert!(strict_kb
        .search("今日の天気はどうですか", &[])
        .await
        .unwrap()
        .is_empty());

    // The query embedding is the embedder's, trimmed.
    let a = kb.embed_query(" 同じ質問 ").await.unwrap();
    let b = kb.embedder().embed_queries(&["同じ質問"]).unwrap();
    assert_eq!(a, b[0]);
}

#[tokio::test]
async fn documents_are_managed_through_the_api() {
    let content_dir = tempfile::tempdir().unwrap();
    let index_dir = tempfile::tempdir().unwrap();
    content(content_dir.path());
    let embedder = NgramEmbedder::new("ngram-v1");
    let kb = open_kb(index_dir.path(), embedder.clone(), RetrievalMode::Dense).await;
    kb.ingest(content_dir.path(), NoProgress).await.unwrap();

    let mut doc = Document {
        id: "faq-api".into(),
        kind: DocumentKind::Faq,
        title: "営業時間は？".into(),
        text: "平日10時から18時までです。".into(),
        audience: Audience::All,
        tags: vec![],
        metadata: Default::default(),
        source: Default::default(),
    };
    assert_eq!(
        kb.upsert_document(doc.clone()).await.unwrap(),
        UpsertOutcome::Added
    );
    let embedded = embedder.embedded();
    assert_eq!(
        kb.upsert_document(doc.clone()).await.unwrap(),
        UpsertOutcome::Unchanged
    );
    assert_eq!(embedder.embedded(), embedded);
    doc.text = "平日9時から18時までです。".into();
    assert_eq!(
        kb.upsert_document(doc.clone()).await.unwrap(),
        UpsertOutcome::Updated
    );
    let bad = Document {
        id: "bad id".into(),
        ..doc.clone()
    };
    assert!(matches!(
        kb.upsert_document(bad).await,
        Err(KnowledgeError::InvalidDocument(_))
    ));

    // An ingest of the directory leaves documents created through the API alone.
    let report = kb.ingest(content_dir.path(), NoProgress).await.unwrap();
    assert_eq!(report.deleted, 0);
    let docs = kb.list_documents().await.unwrap();
    let api_doc = docs.iter().find(|d| d.doc_id == "faq-api").expect("kept");
    assert_eq!(api_doc.source, "");
    assert_eq!(docs.len(), 7);

    assert!(kb.delete_document("faq-api").await.unwrap());
    assert!(!kb.delete_document("faq-api").await.unwrap());
    assert_eq!(kb.list_documents().await.unwrap().len(), 6);
    let stats = kb.stats().await.unwrap();
    assert_eq!(stats.documents, 6);
    assert!(stats.backend.contains("qdrant-edge"));

    // reindex re-embeds everything.
    let before = embedder.embedded();
    let report = kb.reindex(content_dir.path(), NoProgress).await.unwrap();
    assert_eq!(report.updated, 6);
    assert_eq!(embedder.embedded() - before, report.chunks_written + 6);
}

#[tokio::test]
async fn lindera_sparse_search_finds_exact_keywords() {
    let Some(encoder) = crate::sparse::tests::test_encoder() else {
        return;
    };
    let content_dir = tempfile::tempdir().unwrap();
    let index_dir = tempfile::tempdir().unwrap();
    content(content_dir.path());
    let index = Arc::new(EdgeIndex::open(index_dir.path()).await.unwrap());
    let kb = KnowledgeBase::new(
        index,
        NgramEmbedder::new("ngram-v1"),
        Some(Arc::new(encoder)),
        config(RetrievalMode::Hybrid),
    );
    kb.ingest(content_dir.path(), NoProgress).await.unwrap();
    let options = |mode| SearchOptions {
        mode,
        limit: 5,
        filter: SearchFilter::default(),
        threshold: None,
    };
    // A keyword phrased differently from the FAQ question: "カーテン" "防音" in another order.
    let sparse = kb
        .search_with("カーテンで防音したい", &options(RetrievalMode::Sparse))
        .await
        .unwrap();
    assert_eq!(sparse[0].doc_id, "faq-curtain", "{sparse:?}");
    // Only documents sharing a content word come back.
    assert!(sparse
        .iter()
        .all(|h| h.text.contains("防音") || h.text.contains("カーテン")));
    let invoice = kb
        .search_with("請求書", &options(RetrievalMode::Sparse))
        .await
        .unwrap();
    assert_eq!(invoice.len(), 1);
    assert_eq!(invoice[0].doc_id, "faq-invoice");
    // Particles alone match nothing.
    assert!(kb
        .search_with("ですか", &options(RetrievalMode::Sparse))
        .await
        .unwrap()
        .is_empty());

    for fusion in [FusionMethod::Rrf, FusionMethod::Score] {
        let mut config = kb.config().clone();
        config.fusion = fusion;
        // A keyword weight large enough to matter with the test embedder.
        config.hybrid.sparse_weight = 0.5;
        let fused = KnowledgeBase::new(
            kb.index().clone(),
            kb.embedder().clone(),
            kb.sparse().cloned(),
            config,
        );
        let hybrid = fused
            .search_with("カーテンで防音したい", &options(RetrievalMode::Hybrid))
            .await
            .unwrap();
        assert_eq!(hybrid[0].doc_id, "faq-curtain", "{fusion:?}");
        // Hits carry their dense cosine (for the threshold) besides the fused score.
        assert!(hybrid[0].score > 0.0 && hybrid[0].score <= 1.0001);
        match fusion {
            // First of the dense list (k = 2: 1/2) plus first of the keyword list
            // (weight 0.5: 1/(1/0.5 + 1) = 1/3), or less.
            FusionMethod::Rrf => assert!(
                hybrid[0].rank_score <= 0.5 + 1.0 / 3.0 + 1e-4,
                "{}",
                hybrid[0].rank_score
            ),
            // The best keyword match gets the whole bonus on top of its cosine.
            FusionMethod::Score => assert!(
                (hybrid[0].rank_score - hybrid[0].score - 0.5).abs() < 1e-4,
                "{} vs {}",
                hybrid[0].rank_score,
                hybrid[0].score
            ),
        }
        // The filter applies to both sides of the fusion.
        let filtered = fused
            .search_with(
                "請求書",
                &SearchOptions {
                    filter: SearchFilter {
                        audiences: Audience::B2c.visible_to(),
                        ..SearchFilter::default()
                    },
                    ..options(RetrievalMode::Hybrid)
                },
            )
            .await
            .unwrap();
        assert!(!filtered.is_empty());
        assert!(filtered.iter().all(|h| h.doc_id != "faq-invoice"));
    }
}
