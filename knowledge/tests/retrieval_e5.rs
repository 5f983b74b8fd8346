//! The real thing: `knowledge/content/` ingested with multilingual-e5 and lindera into an
//! in-process index, then paraphrased questions.
//!
//! Needs `models/e5-small-q4.bin` (`scripts/setup-embedder`) and `models/lindera-ipadic/`
//! (`scripts/setup-lindera`); fails with a message saying so when they are missing, unless
//! `KIZUNA_SKIP_MODEL_TESTS=1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kizuna_agent::hub::Retriever;
use kizuna_agent::identity::Identity;
use kizuna_knowledge::embed::E5Model;
use kizuna_knowledge::{
    EdgeIndex, KnowledgeBase, NoProgress, RetrievalConfig, RetrievalMode, SearchFilter,
    SearchOptions, SparseEncoder,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The models, or `None` when they are missing and the caller asked to skip.
fn models() -> Option<(Arc<E5Model>, Arc<SparseEncoder>)> {
    let model = std::env::var_os("KIZUNA_E5_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/e5-small-q4.bin"));
    let lindera = std::env::var_os("KIZUNA_LINDERA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/lindera-ipadic"));
    let present = model.is_file() && lindera.join("metadata.json").is_file();
    if !present && std::env::var("KIZUNA_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: models missing and KIZUNA_SKIP_MODEL_TESTS=1");
        return None;
    }
    assert!(
        model.is_file(),
        "{} is missing: run scripts/setup-embedder (or set KIZUNA_SKIP_MODEL_TESTS=1)",
        model.display()
    );
    assert!(
        lindera.join("metadata.json").is_file(),
        "{} is missing: run scripts/setup-lindera (or set KIZUNA_SKIP_MODEL_TESTS=1)",
        lindera.display()
    );
    let embedder = E5Model::load(&model).expect("load e5");
    let sparse = SparseEncoder::load(&lindera).expect("load lindera");
    Some((Arc::new(embedder), Arc::new(sparse)))
}

/// Paraphrases written for this test (not copied from the FAQ or the evaluation set), each
/// with the FAQ that answers it.
const PARAPHRASES: &[(&str, &str)] = &[
    (
        "プレミアムとスタンダードって値段いくら違うの？",
        "faq-price-003",
    ),
    (
        "自宅まで来てもらう場合、移動のお金は別で払うんですか",
        "faq-price-007",
    ),
    ("予約の日を別の日に移したいです", "faq-cancel-003"),
    (
        "うちの物件管理のシステムとデータを連携させたい",
        "faq-b2b-010",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_ingests_and_paraphrases_find_their_faq() {
    let Some((embedder, sparse)) = models() else {
        return;
    };
    let index_dir = tempfile::tempdir().expect("tempdir");
    let index = Arc::new(EdgeIndex::open(index_dir.path()).await.expect("index"));
    let kb = KnowledgeBase::new(index, embedder, Some(sparse), RetrievalConfig::default());
    let content = repo().join("knowledge/content");
    let report = kb.ingest(&content, NoProgress).await.expect("ingest");
    assert!(report.problems.is_empty(), "content problems:\n{report}");
    assert!(report.added >= 100, "{report}");
    let again = kb.ingest(&content, NoProgress).await.expect("re-ingest");
    assert_eq!(again.chunks_written, 0);
    assert_eq!(again.unchanged, report.added);

    let mut misses = Vec::new();
    for mode in [RetrievalMode::Dense, RetrievalMode::Hybrid] {
        for (question, expected) in PARAPHRASES {
            let hits = kb
                .search_with(
                    question,
                    &SearchOptions {
                        mode,
                        limit: 5,
                        filter: SearchFilter {
                            kinds: kb.config().kinds.clone(),
                            ..SearchFilter::default()
                        },
                        threshold: None,
                    },
                )
                .await
                .expect("search");
            let ids: Vec<&str> = hits.iter().map(|h| h.doc_id.as_str()).collect();
            if !ids.contains(expected) {
                misses.push(format!("{mode}: {question} → {ids:?}, expected {expected}"));
            }
        }
    }
    // recall@5 is about 0.9 on the labelled set: allow one miss per mode, not more.
    for mode in ["dense", "hybrid"] {
        let n = misses.iter().filter(|m| m.starts_with(mode)).count();
        assert!(n <= 1, "{misses:#?}");
    }
    eprintln!("paraphrases not in the top 5: {misses:#?}");

    // Anonymous visitors never see business-only FAQs; signed-in customers (who may be
    // management companies) and managers do.
    let question = PARAPHRASES[3].0;
    let visitor = kb.retrieve(question, &Identity::anonymous("v-1")).await;
    assert!(visitor
        .chunks
        .iter()
        .all(|c| !c.doc_id.starts_with("faq-b2b-")));
    let customer = kb.retrieve(question, &Identity::customer("c-1")).await;
    assert!(customer.chunks.iter().any(|c| c.doc_id == "faq-b2b-010"));
    let manager = kb.retrieve(question, &Identity::manager("m-1")).await;
    assert!(manager.chunks.iter().any(|c| c.doc_id == "faq-b2b-010"));

    // An FAQ's own question is answered directly with that FAQ's answer.
    let direct = kb
        .direct_answer("キャンセル料はかかりますか？", &[])
        .await
        .expect("direct answer")
        .expect("confident enough");
    assert_eq!(direct.doc_id, "faq-cancel-002");
    // Something ZENBU does not do is not.
    assert!(kb
        .direct_answer("おいしいカレーの作り方を教えて", &[])
        .await
        .expect("direct answer")
        .is_none());
}
