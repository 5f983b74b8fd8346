//! `GET /api/insights` against the real `kizuna serve` (e5 and the sentiment head from the
//! repository, the model a recorded-response fixture): managers only, and the report says
//! what the customers' chats said.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const PLAN: &str = "上の階の足音が1ヶ月前から深夜にうるさいです。どのプランがおすすめですか？";
const PARKING_1: &str = "測定の日に車を停める駐車場はありますか？";
const PARKING_2: &str = "測定の日、車を停める駐車場はありますか";
const LEGAL: &str = "弁護士に相談して訴えたいです";

/// One customer's chat: each message sent and answered (or held by an escalation) in turn.
async fn chat(server: &Server, customer: &str, texts: &[&str]) {
    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({"token": token("customer", customer)})).await;
    for (i, text) in texts.iter().enumerate() {
        let id = format!("{customer}-{i}");
        send(&mut ws, json!({"type": "message", "id": id, "text": text})).await;
        recv_until(&mut ws, "reply", Some(&id), 60).await;
    }
}

async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http.get(url);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn insights_are_for_managers_and_describe_the_customers_chats() {
    let fixture = ModelFixture::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &fixture.env()).await;

    chat(&server, "C-1001", &[PLAN, PARKING_1]).await;
    chat(&server, "C-1003", &[PARKING_2]).await;
    chat(&server, "C-1004", &[LEGAL]).await;

    let http = reqwest::Client::new();
    let url = format!("http://{}/api/insights?days=7", server.addr);
    assert_eq!(get(&http, &url, None).await.0, 401);
    let (status, body) = get(&http, &url, Some(&token("customer", "C-1001"))).await;
    assert_eq!(status, 403, "{body}");
    let manager = token("manager", "csm-1");
    let bad = format!("http://{}/api/insights?days=0", server.addr);
    assert_eq!(get(&http, &bad, Some(&manager)).await.0, 400);

    let (status, report) = get(&http, &url, Some(&manager)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["customer_messages"], 4, "{report}");

    // Topics: every message clustered once; representatives are customers' own words.
    let topics = &report["topics"];
    assert!(topics["model"].as_str().is_some(), "{topics}");
    assert_eq!(topics["clustered"], 4);
    assert_eq!(topics["embedded_now"], 4);
    let list = topics["topics"].as_array().unwrap();
    assert!(!list.is_empty());
    let total: u64 = list.iter().map(|t| t["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 4, "{topics}");
    for t in list {
        let r = t["representative"].as_str().unwrap();
        assert!([PLAN, PARKING_1, PARKING_2, LEGAL].contains(&r), "{r}");
    }
    // The two parking questions are one topic.
    let parking = list
        .iter()
        .find(|t| t["representative"].as_str().unwrap().contains("駐車場"))
        .unwrap_or_else(|| panic!("no parking topic: {topics}"));
    assert_eq!(parking["count"], 2, "{topics}");

    // The legal question escalated today.
    let esc = &report["escalations"];
    assert_eq!(esc["total"], 1, "{esc}");
    assert_eq!(esc["by_reason"], json!([{"reason": "legal", "count": 1}]));
    let days = esc["by_day"].as_array().unwrap();
    assert_eq!(
        days.len(),
        8,
        "7 days back to today, both ends included: {esc}"
    );
    assert_eq!(days.last().unwrap()["reasons"]["legal"], 1);

    // Every message carries the sentiment model's reading; today has a trend point.
    let sentiment = report["sentiment"].as_array().unwrap();
    let read: u64 = sentiment
        .iter()
        .map(|d| d["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(read, 4, "{sentiment:?}");
    assert!(sentiment.last().unwrap()["mean"].is_number());

    // Unanswered: the parking question (the bot had nothing on it), asked twice in two
    // wordings, comes first; the plan question was answered from the tools.
    let unanswered = report["unanswered"].as_array().unwrap();
    let first = &unanswered[0];
    assert!(
        first["representative"].as_str().unwrap().contains("駐車場"),
        "{unanswered:?}"
    );
    assert_eq!(first["count"], 2, "{unanswered:?}");
    assert!(
        !unanswered
            .iter()
            .any(|q| q["representative"].as_str() == Some(PLAN)),
        "{unanswered:?}"
    );

    // A second read embeds nothing new.
    let (_, again) = get(&http, &url, Some(&manager)).await;
    assert_eq!(again["topics"]["embedded_now"], 0, "{again}");
    assert_eq!(again["topics"]["topics"], report["topics"]["topics"]);
}
