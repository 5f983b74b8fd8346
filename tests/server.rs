//! The websocket protocol, identity rules, persistence and the OpenAI-compatible backend,
//! against the real `kizuna serve` binary. The model is a recorded-response HTTP fixture.

mod common;

use std::time::Duration;

use common::*;
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn start(fixture: &ModelFixture) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &fixture.env()).await;
    (server, dir)
}

#[tokio::test]
async fn plan_conversation_over_the_openai_backend_quotes_the_seed_price() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (server, _dir) = start(&fixture).await;
    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({"token": token("customer", "C-1001")})).await;
    // A recommendation is answered from the tool's own text: no model call (docs/architecture.md).
    send(
        &mut ws,
        message_frame(
            "m1",
            "上の階の足音が1ヶ月前から深夜23時以降にうるさいです。どのプランがおすすめですか？",
        ),
    )
    .await;
    let frames = recv_until(&mut ws, "reply", Some("m1"), 30).await;
    let ack = frames
        .iter()
        .find(|f| f["type"] == "ack")
        .expect("ack before the reply");
    assert_eq!(ack["seq"], 1);
    let reply = frames.last().unwrap();
    assert_eq!(reply["seq"], 2);
    assert!(
        reply["text"].as_str().unwrap().contains("12,800円"),
        "{reply}"
    );
    let tools = tool_names(reply);
    assert!(tools.iter().any(|t| t == "recommend_plan"), "{tools:?}");
    assert_eq!(
        fixture.request_count(),
        0,
        "a structured answer needs no model"
    );

    // A question nothing structured answers (no knowledge is ingested here) goes to the
    // model, which may call a read-only tool natively; its text streams as deltas.
    send(
        &mut ws,
        message_frame("m2", "足音の測定では、床のどのあたりに機械を置くんですか？"),
    )
    .await;
    let frames = recv_until(&mut ws, "reply", Some("m2"), 30).await;
    let reply = frames.last().unwrap();
    let deltas: String = frames
        .iter()
        .filter(|f| f["type"] == "delta")
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(
        deltas.contains("12,800円"),
        "the reply streamed as deltas: {deltas} / {reply}"
    );
    // The endpoint got native tool specs (a write the model calls only becomes a proposal)
    // and, later, the tool result.
    let requests = fixture.requests.lock().unwrap().clone();
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(offered.contains(&"check_availability"), "{offered:?}");
    assert!(requests.iter().any(|r| r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "tool")));
    assert_eq!(requests[0]["stream"], true);
}

#[tokio::test]
async fn a_resent_message_id_is_acknowledged_but_processed_once() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (server, _dir) = start(&fixture).await;
    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({})).await;
    send(&mut ws, message_frame("same", "こんにちは")).await;
    recv_until(&mut ws, "reply", Some("same"), 30).await;
    let calls = fixture.request_count();
    send(&mut ws, message_frame("same", "こんにちは")).await;
    let dup = recv(&mut ws, 10).await;
    assert_eq!(
        (dup["type"].as_str(), dup["duplicate"].as_bool()),
        (Some("ack"), Some(true)),
        "{dup}"
    );
    // Prove nothing else is coming for it: a ping is answered next, and the model was not called.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws, 10).await["type"], "pong");
    assert_eq!(fixture.request_count(), calls);
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_it_missed() {
    let fixture = ModelFixture::start(Duration::from_millis(800)).await;
    let (server, _dir) = start(&fixture).await;
    let mut ws = connect(&server.url()).await;
    let welcome = hello(&mut ws, json!({})).await;
    let conv = welcome["conversation_id"].as_str().unwrap().to_string();
    send(&mut ws, message_frame("m1", "こんにちは")).await;
    let ack = recv(&mut ws, 10).await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_i64()),
        (Some("ack"), Some(1))
    );
    drop(ws); // gone before the reply

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws = connect(&server.url()).await;
    let welcome = hello(&mut ws, json!({"conversation_id": conv, "last_seq": 1})).await;
    assert_eq!(welcome["last_seq"], 2);
    let reply = recv(&mut ws, 10).await;
    assert_eq!(
        (reply["type"].as_str(), reply["seq"].as_i64()),
        (Some("reply"), Some(2)),
        "{reply}"
    );
    // Nothing is delivered twice.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws, 10).await["type"], "pong");

    // From scratch, the whole history replays in order.
    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({"conversation_id": conv, "last_seq": 0})).await;
    let seqs: Vec<i64> = vec![
        recv(&mut ws, 5).await["seq"].as_i64().unwrap(),
        recv(&mut ws, 5).await["seq"].as_i64().unwrap(),
    ];
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn bad_frames_get_typed_errors_and_the_connection_stays_usable() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (server, _dir) = start(&fixture).await;
    let mut ws = connect(&server.url()).await;

    send(&mut ws, message_frame("early", "hi")).await;
    assert_eq!(recv(&mut ws, 5).await["code"], "not_open");
    ws.send(Message::Text("this is not json".into()))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws, 5).await["code"], "bad_json");
    send(&mut ws, json!({"type": "launch_missiles"})).await;
    assert_eq!(recv(&mut ws, 5).await["code"], "unknown_type");
    send(&mut ws, json!({"no_type": 1})).await;
    assert_eq!(recv(&mut ws, 5).await["code"], "bad_request");
    ws.send(Message::Binary(vec![0xff, 0xfe, 0x7b].into()))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws, 5).await["code"], "invalid_utf8");
    send(&mut ws, message_frame("big", "あ".repeat(20_000))).await;
    let err = recv(&mut ws, 5).await;
    assert_eq!(err["code"], "too_large");

    hello(&mut ws, json!({})).await;
    send(&mut ws, json!({"type": "message", "text": "no id"})).await;
    assert_eq!(recv(&mut ws, 5).await["code"], "bad_request");
    send(&mut ws, message_frame("long", "長".repeat(2001))).await;
    let err = recv(&mut ws, 5).await;
    assert_eq!(
        (err["code"].as_str(), err["id"].as_str()),
        (Some("bad_request"), Some("long"))
    );
    // Still usable.
    send(&mut ws, message_frame("ok", "こんにちは")).await;
    let frames = recv_until(&mut ws, "reply", Some("ok"), 30).await;
    let greeting = frames.last().unwrap()["text"].as_str().unwrap().to_string();
    assert!(greeting.contains("ZENBU"), "{greeting}");
}

#[tokio::test]
async fn identity_rules_hold_over_the_wire() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (server, _dir) = start(&fixture).await;
    let mut alice = connect(&server.url()).await;
    let w = hello(&mut alice, json!({"token": token("customer", "C-1")})).await;
    assert_eq!(w["role"], "customer");
    let conv = w["conversation_id"].as_str().unwrap().to_string();
    send(&mut alice, message_frame("a1", "こんにちは")).await;
    recv_until(&mut alice, "reply", Some("a1"), 30).await;

    // Another customer cannot open or write to it.
    let mut bob = connect(&server.url()).await;
    send(
        &mut bob,
        json!({"type": "hello", "token": token("customer", "C-2"), "conversation_id": conv}),
    )
    .await;
    assert_eq!(recv(&mut bob, 5).await["code"], "forbidden");
    // Neither can an anonymous visitor who learned the id.
    let mut anon = connect(&server.url()).await;
    send(&mut anon, json!({"type": "hello", "conversation_id": conv})).await;
    assert_eq!(recv(&mut anon, 5).await["code"], "forbidden");

    // A forged or foreign token is refused and the socket closed.
    let mut mallory = connect(&server.url()).await;
    let forged = token("customer", "C-1").replace("v1.", "v1.x");
    send(&mut mallory, json!({"type": "hello", "token": forged})).await;
    assert_eq!(recv(&mut mallory, 5).await["code"], "unauthorized");

    // The token also works in the query string.
    let mut manager = connect(&format!(
        "{}?token={}",
        server.url(),
        token("manager", "M-1")
    ))
    .await;
    assert_eq!(hello(&mut manager, json!({})).await["role"], "manager");
}

#[tokio::test]
async fn an_acknowledged_message_survives_sigkill_and_is_answered_after_restart() {
    // The model never answers in time: the server is killed mid-turn.
    let slow = ModelFixture::start(Duration::from_secs(600)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &slow.env()).await;
    let mut ws = connect(&server.url()).await;
    let conv = hello(&mut ws, json!({"token": token("customer", "C-7")})).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    send(
        &mut ws,
        message_frame(
            "m1",
            "停電しても消えないでほしい相談です。足音の測定では、床のどのあたりに機械を置くんですか？",
        ),
    )
    .await;
    let ack = recv(&mut ws, 10).await;
    assert_eq!(ack["type"], "ack");
    // Wait until the model call is under way, then kill -9.
    for _ in 0..100 {
        if slow.request_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(slow.request_count(), 1);
    server.kill9().await;

    let fast = ModelFixture::start(Duration::ZERO).await;
    let server = Server::start(dir.path(), &fast.env()).await;
    let mut ws = connect(&server.url()).await;
    hello(
        &mut ws,
        json!({"token": token("customer", "C-7"), "conversation_id": conv, "last_seq": 1}),
    )
    .await;
    let frames = recv_until(&mut ws, "reply", Some("m1"), 30).await;
    assert_eq!(frames.last().unwrap()["seq"], 2);
    // The model was asked about the message stored before the crash.
    let requests = fast.requests.lock().unwrap().clone();
    let last_user = requests[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    assert!(last_user["content"]
        .as_str()
        .unwrap()
        .contains("停電しても消えない"));
}

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (server, _dir) = start(&fixture).await;
    server.wait_ready("/readyz", Duration::from_secs(10)).await;
    let (status, text) = http_get(&server.addr, "/healthz").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        text.to_ascii_lowercase()
            .contains("x-request-id: test-req-1"),
        "{text}"
    );
    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({})).await;
    send(&mut ws, message_frame("m", "こんにちは")).await;
    recv_until(&mut ws, "reply", Some("m"), 30).await;
    let (status, metrics) = http_get(&server.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("kizuna_turns_total 1"), "{metrics}");
    assert!(
        metrics.contains("kizuna_websocket_connections 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1012_and_exits_cleanly() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &fixture.env()).await;
    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({})).await;
    let pid = server.child.id().unwrap() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let close = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut ws))
        .await
        .unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1012),
        other => panic!("expected a 1012 close frame, got {other:?}"),
    }
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn message_floods_are_rate_limited_per_connection() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kizuna.toml");
    std::fs::write(
        &config,
        "[limits]\nmessages_per_minute_per_connection = 6\n",
    )
    .unwrap();
    let mut env = fixture.env();
    env.push(("KIZUNA_CONFIG", config.display().to_string()));
    let server = Server::start(dir.path(), &env).await;
    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({})).await;
    // Burst allowance is a sixth of the per-minute rate (here 1): the second message is refused.
    send(&mut ws, message_frame("r1", "一通目")).await;
    send(&mut ws, message_frame("r2", "二通目")).await;
    let mut limited = None;
    for _ in 0..10 {
        let f = recv(&mut ws, 10).await;
        if f["type"] == "error" {
            limited = Some(f);
            break;
        }
    }
    let limited = limited.expect("a rate_limited error");
    assert_eq!(
        (limited["code"].as_str(), limited["id"].as_str()),
        (Some("rate_limited"), Some("r2"))
    );
}

#[tokio::test]
async fn a_second_hello_releases_the_first_conversation() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (server, _dir) = start(&fixture).await;
    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({})).await;
    hello(&mut ws, json!({})).await;
    let (_, metrics) = http_get(&server.addr, "/metrics").await.unwrap();
    assert!(metrics.contains("kizuna_live_conversations 1"), "{metrics}");
}
