//! The report over a real store (SQLite; PostgreSQL too when KIZUNA_TEST_POSTGRES_URL is
//! set) with a keyword embedder standing in for e5, so topics are known in advance.

use super::*;
use kizuna_knowledge::EmbedError;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One axis per subject word, so messages on one subject are near-parallel and different
/// subjects orthogonal; counts its calls.
struct KeywordEmbedder {
    embedded: AtomicUsize,
}

const SUBJECTS: [&str; 3] = ["料金", "予約", "騒音"];

impl Embedder for KeywordEmbedder {
    fn model_id(&self) -> &str {
        "keyword-test"
    }
    fn dim(&self) -> usize {
        6
    }
    fn embed_queries(&self, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, EmbedError> {
        self.embedded.fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = [0.0f32; 6];
                for (i, s) in SUBJECTS.iter().enumerate() {
                    if t.contains(s) {
                        v[i] = 1.0;
                    }
                }
                // A little of the length, so wordings differ but stay paraphrases.
                v[3 + t.chars().count() % 3] = 0.15;
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
    fn embed_passages(&self, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_queries(texts)
    }
}

const DAY: i64 = 86_400_000;

struct Seeded {
    from_ms: i64,
    to_ms: i64,
}

/// Three days of customer chats in a window of their own (PostgreSQL is shared by tests).
async fn seed(store: &Store) -> Seeded {
    // JST midnight of some day far from other tests' data.
    let salt = (uuid_like() % 100_000) as i64;
    let from_ms = 2_000_000_000_000 + salt * 10 * DAY - 9 * 3_600_000;
    let from_ms = from_ms - from_ms.rem_euclid(DAY) - 9 * 3_600_000;
    let conv = format!("ins-{salt}-{}", from_ms);
    store
        .create_conversation(&conv, "customer", "C-1", Some("C-1"), from_ms)
        .await
        .unwrap();
    // A manager's questions are not the customers' voice.
    let mgr = format!("{conv}-mgr");
    store
        .create_conversation(&mgr, "manager", "M-1", None, from_ms)
        .await
        .unwrap();
    let anger = json!({"label": "anger", "score": 0.8, "probabilities": [0.8, 0.1, 0.05, 0.05]});
    let calm = json!({"label": "neutral", "score": 0.7, "probabilities": [0.1, 0.1, 0.7, 0.1]});
    // (day, text, sentiment, best retrieval score, reply metadata)
    let rows: Vec<(i64, &str, &Value, f32, Value)> = vec![
        (
            0,
            "料金はいくらですか",
            &calm,
            0.95,
            json!({"model": "composed"}),
        ),
        (
            0,
            "料金プランを教えて",
            &calm,
            0.93,
            json!({"model": "composed"}),
        ),
        (
            0,
            "料金が高すぎる",
            &anger,
            0.91,
            json!({"unhelpful": false}),
        ),
        (
            0,
            "予約を変更したい",
            &calm,
            0.94,
            json!({"model": "composed"}),
        ),
        (
            1,
            "予約の空きはありますか",
            &calm,
            0.92,
            json!({"model": "composed"}),
        ),
        (1, "予約したい", &calm, 0.93, json!({"model": "composed"})),
        (
            1,
            "騒音の測定結果は裁判で使えますか",
            &calm,
            0.80,
            json!({"unhelpful": true}),
        ),
        (
            2,
            "騒音の測定結果は裁判に使える？",
            &anger,
            0.81,
            json!({"fallback": "model_timeout"}),
        ),
        (
            2,
            "騒音の測定結果を裁判の証拠にできますか",
            &calm,
            0.79,
            json!({"unhelpful": false}),
        ),
        (2, "こんにちは", &calm, 0.5, json!({"unhelpful": true})),
    ];
    for (i, (day, text, sentiment, score, reply)) in rows.iter().enumerate() {
        let at = from_ms + day * DAY + 3_600_000 + i as i64 * 1000;
        let id = format!("{conv}-u{i}");
        store
            .insert_user_message(&conv, &id, &id, text, &json!({"type": "ack"}), at)
            .await
            .unwrap();
        let intent = if *text == "こんにちは" {
            "greeting"
        } else {
            "faq"
        };
        store
            .merge_message_metadata(
                &id,
                &json!({"sentiment": sentiment, "intent": {"label": intent, "p": 0.9},
                        "retrieval": {"best_score": score}}),
            )
            .await
            .unwrap();
        store
            .record_reply(
                &conv,
                &id,
                &format!("{id}-r"),
                "assistant",
                "…",
                reply,
                &[],
                &json!({"type": "reply"}),
                at + 500,
            )
            .await
            .unwrap();
    }
    let id = format!("{mgr}-u");
    store
        .insert_user_message(
            &mgr,
            &id,
            &id,
            "料金の未払いの会社は？",
            &json!({}),
            from_ms + 1000,
        )
        .await
        .unwrap();
    for (i, (day, reason)) in [(0, "complaint"), (2, "complaint"), (2, "legal")]
        .iter()
        .enumerate()
    {
        sqlx::query(
            "INSERT INTO escalations (id, conversation_id, message_id, reason, detail, status, created_at, updated_at)
             VALUES ($1, $2, NULL, $3, '', 'open', $4, $4)",
        )
        .bind(format!("{conv}-e{i}"))
        .bind(&conv)
        .bind(*reason)
        .bind(from_ms + day * DAY + 7_200_000)
        .execute(store.pool())
        .await
        .unwrap();
    }
    Seeded {
        from_ms,
        to_ms: from_ms + 3 * DAY,
    }
}

fn uuid_like() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

fn options(seeded: &Seeded) -> ReportOptions {
    ReportOptions {
        from_ms: seeded.from_ms,
        to_ms: seeded.to_ms,
        low_score: 0.87,
        max_topics: 8,
        max_unanswered: 20,
    }
}

async fn exercise(store: &Store) {
    let seeded = seed(store).await;
    let embedder = Arc::new(KeywordEmbedder {
        embedded: AtomicUsize::new(0),
    });
    let report = build_report_with(store, Some(embedder.clone()), &options(&seeded))
        .await
        .unwrap();
    assert_eq!(
        report.customer_messages, 10,
        "the manager's message is left out"
    );

    // Topics: 料金 ×3, 予約 ×3, 騒音 ×3, こんにちは ×1 — the three subjects are three topics.
    let topics = &report.topics;
    assert_eq!(topics.model.as_deref(), Some("keyword-test"));
    assert_eq!(topics.embedded_now, 10);
    let subject_of = |t: &Topic| {
        SUBJECTS
            .iter()
            .find(|s| t.representative.contains(*s))
            .copied()
    };
    for subject in SUBJECTS {
        let topic = topics
            .topics
            .iter()
            .find(|t| subject_of(t) == Some(subject))
            .unwrap_or_else(|| panic!("no topic for {subject}: {topics:#?}"));
        assert_eq!(topic.count, 3, "{topic:?}");
        assert_eq!(topic.examples.len(), 2);
        assert!(
            topic.examples.iter().all(|e| e.contains(subject)),
            "{topic:?}"
        );
    }
    assert_eq!(topics.topics.iter().map(|t| t.count).sum::<usize>(), 10);

    // Escalations by reason, per day and week.
    let esc = &report.escalations;
    assert_eq!(esc.total, 3);
    assert_eq!(
        esc.by_reason,
        vec![
            ReasonCount {
                reason: "complaint".into(),
                count: 2
            },
            ReasonCount {
                reason: "legal".into(),
                count: 1
            },
        ]
    );
    assert_eq!(esc.by_day.len(), 3);
    assert_eq!(
        esc.by_day.iter().map(|d| d.total).collect::<Vec<_>>(),
        vec![1, 0, 2]
    );
    assert_eq!(esc.by_day[2].reasons.get("legal"), Some(&1));
    assert_eq!(esc.by_week.iter().map(|w| w.total).sum::<usize>(), 3);

    // Sentiment per day: day 0 has one angry message of four, day 1 none of three.
    let s = &report.sentiment;
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].messages, s[0].anger, s[0].neutral), (4, 1, 3));
    assert_eq!(s[0].negative_share, Some(0.25));
    assert_eq!(s[1].anger, 0);
    assert!(s[0].mean.unwrap() < s[1].mean.unwrap(), "{s:?}");

    // Unanswered: the three wordings of the court question are one, asked 3 times; the
    // greeting and the answered questions are not there; 料金が高すぎる got a real reply
    // with a good score.
    let top = &report.unanswered[0];
    assert_eq!(top.count, 3, "{:#?}", report.unanswered);
    assert!(top.representative.contains("裁判"));
    assert_eq!(top.signals, vec!["fallback", "low_score", "unhelpful"]);
    assert!((top.best_score.unwrap() - 0.81).abs() < 1e-4);
    assert_eq!(report.unanswered.len(), 1, "{:#?}", report.unanswered);

    // A rerun embeds nothing: every vector comes from the cache, and the result is the same.
    let again = build_report_with(store, Some(embedder.clone()), &options(&seeded))
        .await
        .unwrap();
    assert_eq!(again.topics.embedded_now, 0);
    assert_eq!(embedder.embedded.load(Ordering::SeqCst), 10);
    assert_eq!(again.topics.topics, report.topics.topics);
    assert_eq!(again.unanswered, report.unanswered);

    // The JSON is the struct.
    let text = serde_json::to_string(&report).unwrap();
    let back: InsightReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, report);

    // Without an embedder: no topics; questions grouped by identical text only.
    let plain = build_report_with(store, None, &options(&seeded))
        .await
        .unwrap();
    assert!(plain.topics.topics.is_empty());
    assert_eq!(plain.unanswered.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    exercise(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_on_postgres() {
    let Ok(url) = std::env::var("KIZUNA_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("KIZUNA_REQUIRE_POSTGRES").is_none(),
            "KIZUNA_REQUIRE_POSTGRES is set but no PostgreSQL (KIZUNA_TEST_POSTGRES_URL) was started"
        );
        eprintln!("skipped: set KIZUNA_TEST_POSTGRES_URL to run the PostgreSQL path");
        return;
    };
    let store = Store::connect(&url).await.unwrap();
    exercise(&store).await;
}

#[test]
fn days_cover_the_period_in_jst() {
    // 2026-12-01 00:00 JST to 2026-12-03 00:00 JST: two days.
    let from = jst()
        .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    let days = days_of(from, from + 2 * DAY);
    assert_eq!(
        days.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        vec!["2026-12-01", "2026-12-02"]
    );
}
