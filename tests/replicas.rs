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

const MODEL_QUESTION: &str = "停電しても消えないでほしい相談です。測定は何時間かかりますか？";

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

    send(
        &mut on_a,
        json!({"type": "message", "id": "m1", "text": MODEL_QUESTION}),
    )
    .await;
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
    send(
        &mut on_b,
        json!({"type": "message", "id": "m2", "text": "こんにちは"}),
    )
    .await;
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
    send(
        &mut on_a,
        json!({"type": "message", "id": "m1", "text": MODEL_QUESTION}),
    )
    .await;
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
    send(
        &mut on_b,
        json!({"type": "message", "id": "m1", "text": "こんにちは"}),
    )
    .await;
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
    send(
        &mut on_b,
        json!({"type": "message", "id": "m2", "text": "測定の日程を変えたいです"}),
    )
    .await;
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
