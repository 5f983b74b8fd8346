//! The real embedded model (Qwen2.5-Coder-1.5B GGUF on the CPU) over a real websocket: a
//! Japanese conversation in which the planner answers a recommendation from structure (the
//! seed's price, no model call) and the model writes a free answer that streams as deltas.
//! Needs `scripts/setup`; fails if the model is missing unless KIZUNA_SKIP_MODEL_TESTS=1.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn model_files_present() -> bool {
    let root = repo_root();
    root.join("models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
        .exists()
        && root.join("models/qwen2.5-tokenizer.json").exists()
}

#[tokio::test]
async fn japanese_plan_conversation_with_the_embedded_model() {
    if !model_files_present() {
        if std::env::var("KIZUNA_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: model files missing and KIZUNA_SKIP_MODEL_TESTS=1");
            return;
        }
        panic!("model files missing under models/: run scripts/setup (or set KIZUNA_SKIP_MODEL_TESTS=1)");
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("KIZUNA_LLM", "local".into()),
            ("KIZUNA_MAX_REPLY_TOKENS", "40".into()),
        ],
    )
    .await;
    // Ready once the model is loaded and the system prompt is prefilled.
    server.wait_ready("/readyz", Duration::from_secs(300)).await;

    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({"token": token("customer", "C-1001")})).await;

    let started = Instant::now();
    send(
        &mut ws,
        message_frame(
            "t1",
            "上の階の足音が1ヶ月前から深夜23時以降にうるさいです。どのプランがおすすめですか？",
        ),
    )
    .await;
    let frames = recv_until(&mut ws, "reply", Some("t1"), 300).await;
    let reply = frames.last().unwrap();
    let text = reply["text"].as_str().unwrap();
    eprintln!("turn 1 took {:?}: {text}", started.elapsed());

    let tools = tool_names(reply);
    assert!(tools.iter().any(|t| t == "recommend_plan"), "{reply}");
    assert_eq!(reply["tool_calls"][0]["result"]["plan"], "standard");
    assert!(
        text.contains("12,800円"),
        "the seed's price is quoted: {text}"
    );
    assert!(text.contains("スタンダード"), "{text}");

    // A free question with nothing structured to answer it (this data dir has no ingested
    // knowledge) goes to the model; what it writes passes the output validator first.
    send(
        &mut ws,
        message_frame(
            "t2",
            "ありがとうございます。足音の測定では、床のどのあたりに機械を置くんですか？",
        ),
    )
    .await;
    let frames = recv_until(&mut ws, "reply", Some("t2"), 300).await;
    let reply = frames.last().unwrap();
    let text = reply["text"].as_str().unwrap();
    eprintln!("turn 2: {text}");
    assert!(!text.trim().is_empty());
    for leak in ["<tool", "[faq-", "質問:", "上の結果をもとに"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    let deltas = frames.iter().filter(|f| f["type"] == "delta").count();
    eprintln!("turn 2 streamed {deltas} deltas");
    let (_, metrics) = http_get(&server.addr, "/metrics").await.unwrap();
    assert!(metrics.contains("kizuna_turns_total 2"), "{metrics}");
}
