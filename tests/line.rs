//! The LINE channel end to end (docs/line.md): the real `kizuna serve` with its LINE webhook,
//! webhook payloads built as LINE documents them and signed with the channel secret, and a
//! loopback stand-in for the Messaging API that checks each request (path, channel access
//! token, body shape) and records what reached the user.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::{token, ModelFixture, Server};
use serde_json::{json, Value};

const CHANNEL_SECRET: &str = "line-test-channel-secret";
const ACCESS_TOKEN: &str = "line-test-channel-access-token";
const USER: &str = "U4af4980629aaaaaaaaaaaaaaaaaaaaaa";

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

async fn messaging_api(
    State(seen): State<(Seen, &'static str)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (seen, path) = seen;
    let auth_ok = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {ACCESS_TOKEN}"));
    let messages_ok = body["messages"].as_array().is_some_and(|m| {
        (1..=5).contains(&m.len())
            && m.iter().all(|m| {
                m["type"] == "text"
                    && m["text"]
                        .as_str()
                        .is_some_and(|t| (1..=5000).contains(&t.chars().count()))
            })
    });
    let target_ok = match path {
        "reply" => body["replyToken"].is_string(),
        _ => body["to"].is_string() && headers.contains_key("x-line-retry-key"),
    };
    if !(auth_ok && messages_ok && target_ok) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "invalid request"})),
        );
    }
    seen.lock().unwrap().push((path.to_string(), body));
    (StatusCode::OK, Json(json!({})))
}

async fn stand_in() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/v2/bot/message/reply",
            post(messaging_api).with_state((seen.clone(), "reply")),
        )
        .route(
            "/v2/bot/message/push",
            post(messaging_api).with_state((seen.clone(), "push")),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn sign(body: &[u8]) -> String {
    kizuna_line::webhook::sign(CHANNEL_SECRET.as_bytes(), body)
}

fn text_event(id: &str, text: &str, reply_token: &str) -> Value {
    json!({
        "type": "message", "mode": "active", "timestamp": chrono::Utc::now().timestamp_millis(),
        "webhookEventId": id, "deliveryContext": {"isRedelivery": false},
        "source": {"type": "user", "userId": USER}, "replyToken": reply_token,
        "message": {"type": "text", "id": format!("m-{id}"), "quoteToken": "q", "text": text}
    })
}

async fn post_webhook(server: &Server, body: &[u8], signature: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/channels/line/webhook", server.addr))
        .header("content-type", "application/json")
        .header("x-line-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_for(
    seen: &Seen,
    what: &str,
    pred: impl Fn(&(String, Value)) -> bool,
) -> (String, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(hit) = seen.lock().unwrap().iter().find(|r| pred(r)).cloned() {
            return hit;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn store(server: &Server) -> kizuna_store::Store {
    kizuna_store::Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        server.data_dir.join("kizuna.db").display()
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn a_line_user_chats_escalates_and_gets_the_csms_reply() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (api, seen) = stand_in().await;
    let mut env = fixture.env();
    env.extend([
        ("KIZUNA_LINE_CHANNEL_SECRET", CHANNEL_SECRET.to_string()),
        ("KIZUNA_LINE_CHANNEL_ACCESS_TOKEN", ACCESS_TOKEN.to_string()),
        ("KIZUNA_LINE_API_BASE_URL", api),
    ]);
    let server = Server::start(dir.path(), &env).await;

    // A bad signature: 401, nothing stored.
    let first =
        json!({"destination": "Ubot", "events": [text_event("EV-1", "こんにちは", "rt-1")]})
            .to_string();
    assert_eq!(
        post_webhook(&server, first.as_bytes(), &sign(b"something else")).await,
        401
    );
    assert_eq!(post_webhook(&server, first.as_bytes(), "").await, 401);
    let db = store(&server).await;
    assert!(db.line_user(USER).await.unwrap().is_none());
    assert!(!db.line_event_seen("EV-1").await.unwrap());

    // Signed: the agent answers through the reply token.
    assert_eq!(
        post_webhook(&server, first.as_bytes(), &sign(first.as_bytes())).await,
        200
    );
    let (_, reply) = wait_for(&seen, "the agent's reply", |(k, b)| {
        k == "reply" && b["replyToken"] == "rt-1"
    })
    .await;
    assert!(!reply["messages"][0]["text"].as_str().unwrap().is_empty());
    let user = db.line_user(USER).await.unwrap().unwrap();
    let conversation = user.conversation_id.clone();

    // The same event again (LINE redelivers): handled once.
    assert_eq!(
        post_webhook(&server, first.as_bytes(), &sign(first.as_bytes())).await,
        200
    );

    // An unknown event type and a sticker: acknowledged, nothing breaks.
    let odd = json!({"destination": "Ubot", "events": [
        {"type": "beacon", "webhookEventId": "EV-B", "timestamp": 1, "mode": "active", "source": {"type": "user", "userId": USER}, "beacon": {"hwid": "d41d8cd98f", "type": "enter"}},
        {"type": "message", "webhookEventId": "EV-S", "timestamp": 1, "mode": "active", "source": {"type": "user", "userId": USER}, "replyToken": "rt-s", "message": {"type": "sticker", "id": "1", "packageId": "446", "stickerId": "1988"}}
    ]}).to_string();
    assert_eq!(
        post_webhook(&server, odd.as_bytes(), &sign(odd.as_bytes())).await,
        200
    );
    assert!(db.line_event_seen("EV-B").await.unwrap() && db.line_event_seen("EV-S").await.unwrap());

    // A 1 MB body: 400 follow events (padded as a large delivery would be), every one kept.
    let pad = "x".repeat(2_500);
    let many: Vec<Value> = (0..400)
        .map(|i| json!({"type": "follow", "webhookEventId": format!("EV-F{i}"), "timestamp": 1, "mode": "active",
                        "source": {"type": "user", "userId": format!("Ufollow{i:04}")}, "replyToken": format!("rt-f{i}"),
                        "follow": {"isUnblocked": false}, "padding": pad}))
        .collect();
    let big = json!({"destination": "Ubot", "events": many}).to_string();
    assert!(big.len() >= 1_000_000, "{} bytes", big.len());
    assert_eq!(
        post_webhook(&server, big.as_bytes(), &sign(big.as_bytes())).await,
        200
    );
    for i in [0, 199, 399] {
        let u = db
            .line_user(&format!("Ufollow{i:04}"))
            .await
            .unwrap()
            .unwrap();
        assert!(u.following);
    }

    // A legal threat escalates; the CSM takes over from the console API and answers.
    let legal = json!({"destination": "Ubot", "events": [text_event("EV-2", "弁護士に相談して訴えたいです", "rt-2")]}).to_string();
    assert_eq!(
        post_webhook(&server, legal.as_bytes(), &sign(legal.as_bytes())).await,
        200
    );
    wait_for(&seen, "the holding message", |(k, b)| {
        k == "reply" && b["replyToken"] == "rt-2"
    })
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let manager = format!("Bearer {}", token("manager", "csm-1"));
    let queue: Value = http
        .get(format!("{base}/api/escalations"))
        .header("authorization", &manager)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        queue.to_string().contains(&conversation),
        "the LINE conversation is in the CSM queue: {queue}"
    );
    let took = http
        .post(format!("{base}/api/conversations/{conversation}/takeover"))
        .header("authorization", &manager)
        .send()
        .await
        .unwrap();
    assert_eq!(took.status().as_u16(), 200);
    let csm_text = "担当の佐藤です。状況を詳しくお聞かせいただけますか。";
    let replied = http
        .post(format!("{base}/api/conversations/{conversation}/reply"))
        .header("authorization", &manager)
        .json(&json!({"text": csm_text}))
        .send()
        .await
        .unwrap();
    assert_eq!(replied.status().as_u16(), 200);
    let (kind, body) = wait_for(&seen, "the CSM's reply on LINE", |(_, b)| {
        b["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["text"] == csm_text))
    })
    .await;
    assert_eq!(
        kind, "push",
        "the reply token was used by the holding message"
    );
    assert_eq!(body["to"], USER);

    // Each user message was stored once, the redelivered one included.
    let frames = db.frames_after(&conversation, 0).await.unwrap();
    let acks = frames.iter().filter(|f| f.payload["type"] == "ack").count();
    assert_eq!(acks, 2, "two messages (EV-1 once, EV-2)");
    // Nothing was sent twice.
    let texts: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = texts.iter().collect();
    assert_eq!(unique.len(), texts.len());
}
