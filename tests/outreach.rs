//! Proactive outreach through the real `kizuna serve`: the scheduler over the demo CRM, the
//! SMS webhook and Slack receiving what they should, the approval API, and a customer who
//! opens the message and answers 配信停止.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};

/// What the SMS webhook and Slack received.
#[derive(Default)]
struct Received {
    sms: Mutex<Vec<(Option<String>, Value)>>,
    slack: Mutex<Vec<Value>>,
}

async fn receivers() -> (String, Arc<Received>) {
    let received = Arc::new(Received::default());
    let app =
        Router::new()
            .route(
                "/sms",
                post(
                    |State(r): State<Arc<Received>>,
                     headers: HeaderMap,
                     Json(body): Json<Value>| async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        r.sms.lock().unwrap().push((auth, body));
                        Json(json!({"id": "sms-1"}))
                    },
                ),
            )
            .route(
                "/slack",
                post(
                    |State(r): State<Arc<Received>>, Json(body): Json<Value>| async move {
                        r.slack.lock().unwrap().push(body);
                        "ok"
                    },
                ),
            )
            .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_scheduler_reaches_customers_staff_and_honours_opt_out() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let (receiver, received) = receivers().await;
    let dir = tempfile::tempdir().unwrap();
    // No quiet hours, so the test does not depend on the time of day; SMS even when the
    // customer is online.
    let config = dir.path().join("kizuna.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[outreach]
interval_secs = 1
[outreach.rules.quiet_hours]
start = "00:00:00"
end = "00:00:00"
[outreach.channels]
when = "always"
[outreach.channels.webhook]
url = "http://{receiver}/sms"
bearer_token = "sms-secret"
"#
        ),
    )
    .unwrap();
    let import = std::process::Command::new(env!("CARGO_BIN_EXE_kizuna"))
        .args(["import", "customers", "demo/customers.csv"])
        .current_dir(repo_root())
        .env("KIZUNA_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .expect("run kizuna import");
    assert!(import.status.success(), "{import:?}");

    let mut env = fixture.env();
    env.push(("KIZUNA_CONFIG", config.display().to_string()));
    env.push((
        "KIZUNA_SLACK_WEBHOOK_URL",
        format!("http://{receiver}/slack"),
    ));
    let server = Server::start(dir.path(), &env).await;

    // B-2001 (usage 6 of 20, 80,000 yen) gets the usage-drop message by SMS too.
    let (auth, sms) = eventually("an SMS for B-2001", || {
        received
            .sms
            .lock()
            .unwrap()
            .iter()
            .find(|(_, b)| b["customer_id"] == "B-2001")
            .cloned()
    })
    .await;
    assert_eq!(auth.as_deref(), Some("Bearer sms-secret"));
    assert_eq!(sms["to"], "000-0000-2001");
    assert_eq!(sms["trigger"], "usage_drop");
    let send_id = sms["send_id"].as_str().unwrap().to_string();
    assert!(!sms["text"].as_str().unwrap().is_empty());

    // B-2002 (35 days overdue, NPS 3, 120,000 yen): Slack hears of the human task and the
    // approvals; nothing reached the customer.
    eventually("Slack notices for B-2002", || {
        let slack = received.slack.lock().unwrap();
        let tasks = slack
            .iter()
            .filter(|m| m.to_string().contains("B-2002"))
            .count();
        (tasks >= 2).then_some(())
    })
    .await;
    assert!(!received
        .sms
        .lock()
        .unwrap()
        .iter()
        .any(|(_, b)| b["customer_id"] == "B-2002"));

    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let manager = format!("Bearer {}", token("manager", "csm-1"));
    let approvals: Value = http
        .get(format!("{base}/api/outreach/approvals"))
        .header("authorization", &manager)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let low_nps = approvals["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["customer_id"] == "B-2002" && a["trigger"] == "low_nps")
        .unwrap_or_else(|| panic!("B-2002's NPS message awaits approval: {approvals}"));
    let approve_url = format!(
        "{base}/api/outreach/approvals/{}/approve",
        low_nps["send_id"].as_str().unwrap()
    );
    let customer_token = format!("Bearer {}", token("customer", "B-2002"));
    let forbidden = http
        .post(&approve_url)
        .header("authorization", &customer_token)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let approved = http
        .post(&approve_url)
        .header("authorization", &manager)
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let again = http
        .post(&approve_url)
        .header("authorization", &manager)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "an approval sends once");

    // B-2001 visits: the conversation the agent started opens, and they ask to stop.
    let mut ws = connect(&server.url()).await;
    let welcome = hello(&mut ws, json!({"token": token("customer", "B-2001")})).await;
    let frames = recv_until(&mut ws, "proactive", None, 10).await;
    let proactive = frames.last().unwrap();
    assert_eq!(
        proactive["send_id"],
        send_id.as_str(),
        "{welcome} {proactive}"
    );
    send(&mut ws, message_frame("m1", "配信停止")).await;
    let frames = recv_until(&mut ws, "reply", Some("m1"), 30).await;
    let reply = frames.last().unwrap();
    assert!(
        reply["text"]
            .as_str()
            .unwrap()
            .contains("配信停止を承りました"),
        "{reply}"
    );

    let report: Value = http
        .get(format!("{base}/api/outreach/report"))
        .header("authorization", &manager)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let usage: Vec<&Value> = report["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["campaign_id"] == "usage_drop")
        .collect();
    let total = |key: &str| usage.iter().map(|r| r[key].as_i64().unwrap()).sum::<i64>();
    assert!(total("delivered") >= 1, "{report}");
    assert!(
        total("opened") >= 1,
        "opened when the customer saw it: {report}"
    );
    // A stop request is not engagement: it must not make the campaign look successful.
    assert_eq!(total("replied"), 0, "{report}");

    // An event from outside (a billing system saw the payment) through the API.
    let recorded = http
        .post(format!("{base}/api/outreach/sends/{send_id}/events"))
        .header("authorization", &manager)
        .json(&json!({"kind": "converted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(recorded.status(), 200);
    let bad = http
        .post(format!("{base}/api/outreach/sends/{send_id}/events"))
        .header("authorization", &manager)
        .json(&json!({"kind": "delivered"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    drop(server);
}
