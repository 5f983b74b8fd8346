//! Several `kizuna serve` processes on one PostgreSQL (docs/deployment.md), over real
//! websockets: fan-out across replicas, failover of a turn after SIGKILL with exactly one
//! answer, takeover by an operator on another replica, and singleton jobs.
//!
//! Needs `KIZUNA_TEST_POSTGRES_URL` (scripts/test starts a throwaway server); with
//! `KIZUNA_REQUIRE_POSTGRES` set (CI) a missing server fails instead of skipping.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A fresh database on the test server, so replicas of one test share only it.
async fn fresh_database() -> Option<String> {
    let Ok(base) = std::env::var("KIZUNA_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("KIZUNA_REQUIRE_POSTGRES").is_err(),
            "KIZUNA_REQUIRE_POSTGRES is set but no PostgreSQL (KIZUNA_TEST_POSTGRES_URL) was started"
        );
        eprintln!("skipped: set KIZUNA_TEST_POSTGRES_URL to run the multi-replica tests");
        return None;
    };
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to PostgreSQL");
    let name = format!("kizuna_replicas_{}", uuid::Uuid::new_v4().simple());
    // The name is ours (a UUID), not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create a database");
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("URL with a database name");
    Some(format!("{prefix}/{name}"))
}

/// Replicas sharing `database`, each with its own data dir (its token secret is given).
async fn replicas(
    database: &str,
    count: usize,
    env: &[(&'static str, String)],
) -> (Vec<Server>, Vec<tempfile::TempDir>) {
    let mut servers = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..count {
        let dir = tempfile::tempdir().unwrap();
        let mut all = env.to_vec();
        all.push(("DATABASE_URL", database.to_string()));
        servers.push(Server::start(dir.path(), &all).await);
        dirs.push(dir);
    }
    (servers, dirs)
}

/// Frames until the reply to `id`, failing on a second reply to it arriving in `quiet`.
async fn frames_until_reply(ws: &mut Ws, id: &str, secs: u64) -> Vec<Value> {
    recv_until(ws, "reply", Some(id), secs).await
}

/// Every frame that arrives within `quiet` (none is fine).
async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(quiet, ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            out.push(serde_json::from_str(&t).unwrap());
        }
    }
    out
}

// A question only the model answers (a length question is answered from the catalogue).
const MODEL_QUESTION: &str =
    "停電しても消えないでほしい相談です。足音の測定では、床のどのあたりに機械を置くんですか？";

#[tokio::test]
async fn a_reply_made_on_one_replica_streams_live_to_a_socket_on_another() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let model = ModelFixture::start(Duration::from_millis(300)).await;
    let (servers, _dirs) = replicas(&database, 2, &model.env()).await;
    let customer = token("customer", "C-31");

    let mut on_a = connect(&servers[0].url()).await;
    let conv = hello(&mut on_a, json!({"token": customer})).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The same customer on another device, through another replica.
    let mut on_b = connect(&servers[1].url()).await;
    hello(
        &mut on_b,
        json!({"token": customer, "conversation_id": conv}),
    )
    .await;

    send(&mut on_a, message_frame("m1", MODEL_QUESTION)).await;
    let seen_on_b = frames_until_reply(&mut on_b, "m1", 30).await;
    let kinds: Vec<&str> = seen_on_b
        .iter()
        .map(|f| f["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds.first(), Some(&"ack"), "{kinds:?}");
    assert_eq!(seen_on_b[0]["text"], MODEL_QUESTION);
    assert!(
        kinds.contains(&"delta"),
        "the reply in progress streams to the other replica too: {kinds:?}"
    );
    let reply = seen_on_b.last().unwrap();
    let on_a_frames = frames_until_reply(&mut on_a, "m1", 30).await;
    assert_eq!(on_a_frames.last().unwrap()["seq"], reply["seq"]);
    assert_eq!(on_a_frames.last().unwrap()["text"], reply["text"]);

    // And back: a message sent on B is answered once and seen on A in order.
    send(&mut on_b, message_frame("m2", "こんにちは")).await;
    let on_a_frames = frames_until_reply(&mut on_a, "m2", 30).await;
    let seqs: Vec<i64> = on_a_frames
        .iter()
        .filter_map(|f| f["seq"].as_i64())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "durable frames arrive in order without gaps: {seqs:?}"
    );
    frames_until_reply(&mut on_b, "m2", 30).await;
    let extra = drain(&mut on_a, Duration::from_secs(2)).await;
    assert!(
        !extra.iter().any(|f| f["type"] == "reply"),
        "one reply per message: {extra:?}"
    );
}

#[tokio::test]
async fn sigkill_of_the_answering_replica_mid_turn_leads_to_exactly_one_answer() {
    let Some(database) = fresh_database().await else {
        return;
    };
    // Replica A's model call hangs; B's answers. Short leases so the test is quick.
    let hanging = ModelFixture::start(Duration::from_secs(600)).await;
    let answering = ModelFixture::start(Duration::from_millis(200)).await;
    let lease = ("KIZUNA_TURN_LEASE_SECS", "3".to_string());
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut env_a = hanging.env();
    env_a.push(lease.clone());
    env_a.push(("DATABASE_URL", database.clone()));
    let mut env_b = answering.env();
    env_b.push(lease);
    env_b.push(("DATABASE_URL", database.clone()));
    let mut a = Server::start(dir_a.path(), &env_a).await;
    let b = Server::start(dir_b.path(), &env_b).await;
    let customer = token("customer", "C-32");

    let mut on_a = connect(&a.url()).await;
    let conv = hello(&mut on_a, json!({"token": customer})).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut on_b = connect(&b.url()).await;
    hello(
        &mut on_b,
        json!({"token": customer, "conversation_id": conv}),
    )
    .await;
    send(&mut on_a, message_frame("m1", MODEL_QUESTION)).await;
    assert_eq!(recv(&mut on_a, 10).await["type"], "ack");
    for _ in 0..200 {
        if hanging.request_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hanging.request_count(), 1, "A is mid-turn");
    a.kill9().await;

    // B notices the dead owner's lease has ended and finishes the turn; the customer's
    // socket on B sees the answer live.
    let frames = frames_until_reply(&mut on_b, "m1", 60).await;
    assert_eq!(frames.last().unwrap()["type"], "reply");
    assert!(answering.request_count() >= 1, "B's model answered");
    let extra = drain(&mut on_b, Duration::from_secs(4)).await;
    assert!(
        !extra.iter().any(|f| f["type"] == "reply"),
        "no second answer: {extra:?}"
    );
    // The durable log, read by a fresh socket: exactly one reply to m1.
    let mut again = connect(&b.url()).await;
    hello(
        &mut again,
        json!({"token": customer, "conversation_id": conv, "last_seq": 0}),
    )
    .await;
    let log = drain(&mut again, Duration::from_secs(2)).await;
    let replies = log
        .iter()
        .filter(|f| f["type"] == "reply" && f["reply_to"] == "m1")
        .count();
    assert_eq!(replies, 1, "{log:?}");
}

#[tokio::test]
async fn an_operator_on_one_replica_and_the_customer_on_another_see_each_other_live() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let model = ModelFixture::start(Duration::ZERO).await;
    let (servers, _dirs) = replicas(&database, 2, &model.env()).await;
    let customer = token("customer", "C-33");
    let mut on_b = connect(&servers[1].url()).await;
    let conv = hello(&mut on_b, json!({"token": customer})).await["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    send(&mut on_b, message_frame("m1", "こんにちは")).await;
    frames_until_reply(&mut on_b, "m1", 30).await;

    // The operator works on replica A.
    let http = reqwest::Client::new();
    let base_a = format!("http://{}", servers[0].addr);
    let manager = format!("Bearer {}", token("manager", "csm-1"));
    let took = http
        .post(format!("{base_a}/api/conversations/{conv}/takeover"))
        .header("authorization", &manager)
        .send()
        .await
        .unwrap();
    assert_eq!(took.status().as_u16(), 200);
    let status = recv_until(&mut on_b, "status", None, 10).await;
    assert_eq!(status.last().unwrap()["status"], "human");
    let csm_text = "担当の佐藤です。ご用件を伺います。";
    let replied = http
        .post(format!("{base_a}/api/conversations/{conv}/reply"))
        .header("authorization", &manager)
        .json(&json!({"text": csm_text}))
        .send()
        .await
        .unwrap();
    assert_eq!(replied.status().as_u16(), 200);
    let human = recv_until(&mut on_b, "human", None, 10).await;
    assert_eq!(human.last().unwrap()["text"], csm_text);

    // The customer answers on B: the operator's view on A has it, and the bot stays silent.
    send(&mut on_b, message_frame("m2", "測定の日程を変えたいです")).await;
    assert_eq!(recv(&mut on_b, 10).await["type"], "ack");
    let mut seen = Value::Null;
    for _ in 0..50 {
        seen = http
            .get(format!("{base_a}/api/conversations/{conv}/frames?after=0"))
            .header("authorization", &manager)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if seen.to_string().contains("測定の日程を変えたいです") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.to_string().contains("測定の日程を変えたいです"),
        "{seen}"
    );
    let extra = drain(&mut on_b, Duration::from_secs(3)).await;
    assert!(
        !extra.iter().any(|f| f["type"] == "reply"),
        "the bot never speaks while a person holds the conversation: {extra:?}"
    );
}

/// Waits until at least `margin` is left in the current wall-clock minute, so a test of a
/// per-minute window does not straddle two windows.
async fn away_from_minute_edge(margin: Duration) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let into_minute = Duration::from_millis((now.as_millis() % 60_000) as u64);
        if Duration::from_secs(60) - into_minute > margin {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sends a message and returns "ack" or the error code the server answered it with.
async fn outcome(ws: &mut Ws, id: &str, text: &str) -> String {
    send(ws, message_frame(id, text)).await;
    loop {
        let f = recv(ws, 20).await;
        if f["id"] == id && (f["type"] == "ack" || f["type"] == "error") {
            return if f["type"] == "ack" {
                "ack".into()
            } else {
                f["code"].as_str().unwrap_or("?").to_string()
            };
        }
    }
}

#[tokio::test]
async fn the_per_address_message_limit_holds_across_replicas() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let model = ModelFixture::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kizuna.toml");
    // 4 messages a minute per address in all; the per-socket and per-conversation limits
    // are out of the way.
    std::fs::write(
        &config,
        "[limits]\nmessages_per_minute_per_ip = 4\nmessages_per_minute_per_connection = 60\nmax_pending_per_conversation = 10\n",
    )
    .unwrap();
    let mut env = model.env();
    env.push(("KIZUNA_CONFIG", config.display().to_string()));
    let (servers, _dirs) = replicas(&database, 2, &env).await;
    away_from_minute_edge(Duration::from_secs(15)).await;

    // One visitor address, two sockets, each on its own replica (as a balancer without
    // sticky sessions spreads them).
    let mut on_a = connect(&servers[0].url()).await;
    hello(&mut on_a, json!({})).await;
    let mut on_b = connect(&servers[1].url()).await;
    hello(&mut on_b, json!({})).await;
    let mut outcomes = Vec::new();
    for n in 0..3 {
        outcomes.push(outcome(&mut on_a, &format!("a{n}"), "こんにちは").await);
        outcomes.push(outcome(&mut on_b, &format!("b{n}"), "こんにちは").await);
    }
    let accepted = outcomes.iter().filter(|o| *o == "ack").count();
    let limited = outcomes.iter().filter(|o| *o == "rate_limited").count();
    assert_eq!(
        (accepted, limited),
        (4, 2),
        "4 a minute for the address across both replicas: {outcomes:?}"
    );
}

/// What the SMS channel received.
async fn sms_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/sms",
        post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                axum::Json(json!({"id": "sms"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

#[tokio::test]
async fn outreach_is_sent_once_with_every_replica_running_and_after_one_dies() {
    let Some(database) = fresh_database().await else {
        return;
    };
    let model = ModelFixture::start(Duration::ZERO).await;
    let (receiver, received) = sms_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kizuna.toml");
    // A run every second, no quiet hours, SMS for everyone, and a short singleton lease so
    // a dead scheduler's job moves within the test.
    std::fs::write(
        &config,
        format!(
            r#"
[cluster]
singleton_lease_secs = 3
[outreach]
interval_secs = 1
[outreach.rules.quiet_hours]
start = "00:00:00"
end = "00:00:00"
[outreach.channels]
when = "always"
[outreach.channels.webhook]
url = "http://{receiver}/sms"
"#
        ),
    )
    .unwrap();
    let import = std::process::Command::new(env!("CARGO_BIN_EXE_kizuna"))
        .args(["import", "customers", "demo/customers.csv"])
        .current_dir(repo_root())
        .env("KIZUNA_DATA_DIR", dir.path())
        .env("DATABASE_URL", &database)
        .output()
        .expect("run kizuna import");
    assert!(import.status.success(), "{import:?}");
    let mut env = model.env();
    env.push(("KIZUNA_CONFIG", config.display().to_string()));
    let (mut servers, _dirs) = replicas(&database, 3, &env).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no outreach was sent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several scheduler runs with all three replicas up, then the job's holder (whichever
    // it is) and another replica die; the survivor takes the job over and runs it again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_kill = received.lock().unwrap().len();
    for server in servers.iter_mut().take(2) {
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(8)).await;

    let sent = received.lock().unwrap().clone();
    let mut seen = std::collections::HashMap::new();
    for sms in &sent {
        let key = (
            sms["customer_id"].as_str().unwrap_or("").to_string(),
            sms["trigger"].as_str().unwrap_or("").to_string(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(before_kill > 0);
    assert!(
        doubled.is_empty(),
        "each message is sent once ({} sent): doubled {doubled:?}",
        sent.len()
    );
    // The survivor holds the scheduler's lease now.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database).await.unwrap();
    let holders: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM leases WHERE name = 'job:outreach' AND expires_at > (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(holders, 1, "the surviving replica runs the scheduler");
}
