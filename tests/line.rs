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

fn follow_event(id: &str, user: &str, follow: bool) -> Value {
    let mut event = json!({
        "type": if follow { "follow" } else { "unfollow" }, "mode": "active",
        "timestamp": chrono::Utc::now().timestamp_millis(), "webhookEventId": id,
        "deliveryContext": {"isRedelivery": false}, "source": {"type": "user", "userId": user},
    });
    if follow {
        event["replyToken"] = json!(format!("rt-{id}"));
        event["follow"] = json!({"isUnblocked": true});
    }
    event
}

fn text_event_from(user: &str, id: &str, text: &str) -> Value {
    let mut event = text_event(id, text, &format!("rt-{id}"));
    event["source"]["userId"] = json!(user);
    event
}

async fn send_events(server: &Server, events: Vec<Value>) {
    let body = json!({"destination": "Ubot", "events": events}).to_string();
    assert_eq!(
        post_webhook(server, body.as_bytes(), &sign(body.as_bytes())).await,
        200
    );
}

/// The answer to the message with this reply token (the link answers use it).
async fn answer_to(seen: &Seen, event_id: &str) -> String {
    let token = format!("rt-{event_id}");
    let (_, body) = wait_for(seen, &format!("the answer to {event_id}"), |(k, b)| {
        k == "reply" && b["replyToken"] == token.as_str()
    })
    .await;
    body["messages"][0]["text"].as_str().unwrap().to_string()
}

async fn opted_out(db: &kizuna_store::Store, customer: &str) -> bool {
    db.customer(customer)
        .await
        .unwrap()
        .expect("the customer")
        .opted_out
}

#[tokio::test]
async fn line_users_link_to_customers_opt_out_by_blocking_and_get_outreach_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (api, seen) = stand_in().await;
    let import = std::process::Command::new(env!("CARGO_BIN_EXE_kizuna"))
        .args(["import", "customers", "demo/customers.csv"])
        .current_dir(common::repo_root())
        .env("KIZUNA_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .expect("run kizuna import");
    assert!(import.status.success(), "{import:?}");
    // The scheduler is off for the first server: B-2001 is linked before any outreach runs.
    let config = dir.path().join("kizuna.toml");
    let write_config = |interval: u64| {
        std::fs::write(
            &config,
            format!(
                r#"
[line]
basic_id = "@zenbu"
link_token_ttl_secs = 3600
[outreach]
interval_secs = {interval}
[outreach.rules.quiet_hours]
start = "00:00:00"
end = "00:00:00"
[outreach.channels.line]
"#
            ),
        )
        .unwrap()
    };
    write_config(0);
    let mut env = fixture.env();
    env.extend([
        ("KIZUNA_LINE_CHANNEL_SECRET", CHANNEL_SECRET.to_string()),
        ("KIZUNA_LINE_CHANNEL_ACCESS_TOKEN", ACCESS_TOKEN.to_string()),
        ("KIZUNA_LINE_API_BASE_URL", api),
        ("KIZUNA_CONFIG", config.display().to_string()),
    ]);
    let mut server = Server::start(dir.path(), &env).await;
    let db = store(&server).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);

    // The business issues a link token for B-2001 (staff only, known customers only).
    let issue = |auth: String, customer: &str| {
        http.post(format!("{base}/api/line/link-tokens"))
            .header("authorization", auth)
            .json(&json!({"customer_id": customer}))
            .send()
    };
    let manager = format!("Bearer {}", token("manager", "csm-1"));
    let customer_auth = format!("Bearer {}", token("customer", "B-2001"));
    assert_eq!(issue(customer_auth, "B-2001").await.unwrap().status(), 403);
    assert_eq!(issue(manager.clone(), "B-404").await.unwrap().status(), 404);
    let issued: Value = issue(manager.clone(), "B-2001")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let link_token = issued["token"].as_str().unwrap().to_string();
    assert!(link_token.starts_with("KZL1."), "{issued}");
    assert_eq!(
        issued["url"],
        format!("https://line.me/R/oaMessage/%40zenbu/?{link_token}")
    );

    // The user chats first, anonymously.
    send_events(&server, vec![text_event("L-1", "こんにちは", "rt-L-1")]).await;
    answer_to(&seen, "L-1").await;
    let conversation = db.line_user(USER).await.unwrap().unwrap().conversation_id;

    // Forged (another secret) and expired tokens are refused and change nothing.
    let now = chrono::Utc::now().timestamp();
    let claims = |exp| kizuna_line::LinkClaims {
        customer_id: "B-2001".into(),
        exp,
        nonce: format!("n-{exp}"),
    };
    let forged = kizuna_line::LinkSigner::new(b"not-the-server-secret-0123456789".to_vec())
        .sign(&claims(now + 600));
    let expired =
        kizuna_line::LinkSigner::new(common::SECRET.as_bytes().to_vec()).sign(&claims(now - 10));
    send_events(&server, vec![text_event("L-2", &forged, "rt-L-2")]).await;
    assert!(answer_to(&seen, "L-2")
        .await
        .contains("確認できませんでした"));
    send_events(
        &server,
        vec![text_event(
            "L-3",
            &format!("連携します {expired}"),
            "rt-L-3",
        )],
    )
    .await;
    assert!(answer_to(&seen, "L-3").await.contains("有効期限"));
    assert_eq!(db.line_user(USER).await.unwrap().unwrap().customer_id, None);

    // The valid token links the user; the conversation so far becomes B-2001's.
    send_events(&server, vec![text_event("L-4", &link_token, "rt-L-4")]).await;
    assert!(answer_to(&seen, "L-4").await.contains("連携が完了"));
    let user = db.line_user(USER).await.unwrap().unwrap();
    assert_eq!(user.customer_id.as_deref(), Some("B-2001"));
    let conv = db.conversation(&conversation).await.unwrap().unwrap();
    assert_eq!(
        (conv.owner_role.as_str(), conv.customer_id.as_deref()),
        ("customer", Some("B-2001"))
    );
    // The token never reached the agent as a message.
    let frames = db.frames_after(&conversation, 0).await.unwrap();
    assert!(!frames
        .iter()
        .any(|f| f.payload.to_string().contains("KZL1.")));
    // The linked user goes on chatting, now as the customer.
    send_events(
        &server,
        vec![text_event("L-5", "契約内容を教えてください", "rt-L-5")],
    )
    .await;
    answer_to(&seen, "L-5").await;

    // The same token from another LINE user: used up; that user stays unlinked.
    const OTHER: &str = "U0ther0000000000000000000000000000";
    send_events(&server, vec![text_event_from(OTHER, "L-6", &link_token)]).await;
    assert!(answer_to(&seen, "L-6").await.contains("すでに使用"));
    assert_eq!(
        db.line_user(OTHER).await.unwrap().unwrap().customer_id,
        None
    );

    // `kizuna line link-token` issues one too; the user, linked to B-2001, cannot take B-2002.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_kizuna"))
        .args(["line", "link-token", "--customer", "B-2002"])
        .current_dir(common::repo_root())
        .env("KIZUNA_DATA_DIR", dir.path())
        .env("KIZUNA_TOKEN_SECRET", common::SECRET)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run kizuna line link-token");
    assert!(cli.status.success(), "{cli:?}");
    let cli_token = String::from_utf8(cli.stdout).unwrap().trim().to_string();
    assert!(cli_token.starts_with("KZL1."), "{cli_token}");
    send_events(&server, vec![text_event("L-7", &cli_token, "rt-L-7")]).await;
    assert!(answer_to(&seen, "L-7").await.contains("別のお客様"));
    assert_eq!(
        db.line_user(USER)
            .await
            .unwrap()
            .unwrap()
            .customer_id
            .as_deref(),
        Some("B-2001")
    );

    // Blocking the account opts B-2001 out of outreach; following again opts back in.
    assert!(!opted_out(&db, "B-2001").await);
    send_events(&server, vec![follow_event("L-8", USER, false)]).await;
    assert!(opted_out(&db, "B-2001").await);
    send_events(&server, vec![follow_event("L-9", USER, true)]).await;
    assert!(!opted_out(&db, "B-2001").await);

    // With the scheduler on, B-2001's usage-drop message is pushed to the linked LINE user.
    server.kill9().await;
    write_config(1);
    let _server = Server::start(dir.path(), &env).await;
    let (_, push) = wait_for(&seen, "the outreach push", |(k, b)| {
        k == "push"
            && b["to"] == USER
            && b["messages"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains("配信停止"))
    })
    .await;
    assert!(!push["messages"][0]["text"].as_str().unwrap().is_empty());
    // The attempt is logged against the send, on the line channel.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let attempts = loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT a.channel, a.ok FROM outreach_attempts a JOIN outreach_sends s ON s.id = a.send_id
             WHERE s.customer_id = 'B-2001' ORDER BY a.created_at",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        if !rows.is_empty() || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(attempts, [("line".to_string(), 1)]);
}
