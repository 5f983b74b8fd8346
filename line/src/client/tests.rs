//! The client against a loopback stand-in for the Messaging API that checks every request
//! against LINE's reference (path, bearer token, JSON body shape, message limits, retry key).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};

use super::*;
use crate::message::{text_messages, QuickReply, MAX_TEXT_CHARS};

const TOKEN: &str = "test-channel-access-token";

#[derive(Clone, Default)]
struct StandIn {
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    retry_keys: Arc<Mutex<HashSet<String>>>,
    used_reply_tokens: Arc<Mutex<HashSet<String>>>,
}

fn check_messages(body: &Value) -> Result<(), String> {
    let messages = body["messages"]
        .as_array()
        .ok_or("messages must be an array")?;
    if messages.is_empty() || messages.len() > 5 {
        return Err(format!("1 to 5 messages, got {}", messages.len()));
    }
    for m in messages {
        if m["type"] != "text" {
            return Err("only text messages expected".into());
        }
        let n = m["text"]
            .as_str()
            .ok_or("text must be a string")?
            .chars()
            .count();
        if n == 0 || n > 5000 {
            return Err(format!("text of {n} characters"));
        }
        if let Some(items) = m.get("quickReply").map(|q| &q["items"]) {
            let items = items
                .as_array()
                .ok_or("quickReply.items must be an array")?;
            if items.is_empty() || items.len() > 13 {
                return Err("1 to 13 quick reply items".into());
            }
            for item in items {
                let label = item["action"]["label"].as_str().unwrap_or("");
                if item["type"] != "action"
                    || item["action"]["type"] != "message"
                    || label.is_empty()
                    || label.chars().count() > 20
                {
                    return Err(format!("bad quick reply item {item}"));
                }
            }
        }
    }
    Ok(())
}

fn check_auth(headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Authentication failed"})),
        ));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "content type"})),
        ));
    }
    Ok(())
}

async fn reply(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = check_auth(&headers) {
        return e;
    }
    if let Err(e) = check_messages(&body) {
        return (StatusCode::BAD_REQUEST, Json(json!({"message": e})));
    }
    let Some(token) = body["replyToken"].as_str() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "replyToken"})),
        );
    };
    if token == "expired"
        || !s
            .used_reply_tokens
            .lock()
            .unwrap()
            .insert(token.to_string())
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "Invalid reply token"})),
        );
    }
    s.requests.lock().unwrap().push(("reply".into(), body));
    (StatusCode::OK, Json(json!({})))
}

async fn push(
    State(s): State<StandIn>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if let Err(e) = check_auth(&headers) {
        return e;
    }
    if let Err(e) = check_messages(&body) {
        return (StatusCode::BAD_REQUEST, Json(json!({"message": e})));
    }
    if !body["to"].as_str().is_some_and(|to| to.starts_with('U')) {
        return (StatusCode::BAD_REQUEST, Json(json!({"message": "to"})));
    }
    let key = headers
        .get("x-line-retry-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if uuid::Uuid::parse_str(key).is_err() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "The retry key must be a UUID"})),
        );
    }
    if !s.retry_keys.lock().unwrap().insert(key.to_string()) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"message": "The retry key is already accepted"})),
        );
    }
    s.requests.lock().unwrap().push(("push".into(), body));
    (StatusCode::OK, Json(json!({"sentMessages": []})))
}

async fn stand_in() -> (LineClient, StandIn) {
    let state = StandIn::default();
    let app = Router::new()
        .route("/v2/bot/message/reply", post(reply))
        .route("/v2/bot/message/push", post(push))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = LineClient::new(LineConfig {
        api_base_url: format!("http://{addr}/"),
        channel_access_token: TOKEN.into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    (client, state)
}

fn kinds(s: &StandIn) -> Vec<String> {
    s.requests
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect()
}

#[tokio::test]
async fn a_fresh_reply_token_answers_with_quick_replies() {
    let (client, s) = stand_in().await;
    let choices = [QuickReply {
        label: "スタンダード".into(),
        text: "スタンダードプランにします".into(),
    }];
    let d = Delivery::new(
        "U1234",
        text_messages("どのプランにしますか？", &choices),
        Some(("rt-1".into(), i64::MAX)),
    );
    client
        .send(CHANNEL, KIND_MESSAGES, &serde_json::to_value(&d).unwrap())
        .await
        .unwrap();
    let requests = s.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (kind, body) = &requests[0];
    assert_eq!(kind, "reply");
    assert_eq!(body["replyToken"], "rt-1");
    assert_eq!(
        body["messages"][0]["quickReply"]["items"][0]["action"]["text"],
        "スタンダードプランにします"
    );
}

#[tokio::test]
async fn a_stale_or_refused_reply_token_falls_back_to_push() {
    let (client, s) = stand_in().await;
    let stale = Delivery::new(
        "U1",
        text_messages("こんにちは", &[]),
        Some(("rt".into(), 0)),
    );
    client.deliver(&stale, 1_000).await.unwrap();
    let refused = Delivery::new(
        "U1",
        text_messages("こんにちは", &[]),
        Some(("expired".into(), i64::MAX)),
    );
    client.deliver(&refused, 1_000).await.unwrap();
    assert_eq!(kinds(&s), ["push", "push"]);
}

#[tokio::test]
async fn long_replies_are_pushed_in_batches_and_retries_deliver_once() {
    let (client, s) = stand_in().await;
    let text = "あ".repeat(MAX_TEXT_CHARS * 6 + 10);
    let d = Delivery::new(
        "U1",
        text_messages(&text, &[]),
        Some(("rt".into(), i64::MAX)),
    );
    client.deliver(&d, 0).await.unwrap();
    // The outbox retries a row after a crash: the retry keys make it a no-op.
    client.deliver(&d, 0).await.unwrap();
    let requests = s.requests.lock().unwrap().clone();
    assert_eq!(
        kinds(&s),
        ["push", "push"],
        "two batches (5 + 2 messages), each once"
    );
    let total: usize = requests
        .iter()
        .flat_map(|(_, b)| b["messages"].as_array().unwrap().clone())
        .map(|m| m["text"].as_str().unwrap().chars().count())
        .sum();
    assert_eq!(total, text.chars().count(), "nothing is lost");
}

#[tokio::test]
async fn a_wrong_token_is_retried_and_bad_payloads_are_permanent() {
    let (mut client, _) = stand_in().await;
    client.config.channel_access_token = "wrong".into();
    let d = Delivery::new("U1", text_messages("x", &[]), None);
    let err = client.deliver(&d, 0).await.unwrap_err();
    assert!(err.retryable);
    assert!(
        !err.message.contains("wrong"),
        "the token never reaches messages"
    );
    let err = client
        .send(CHANNEL, KIND_MESSAGES, &json!({"to": 1}))
        .await
        .unwrap_err();
    assert!(!err.retryable);
}
