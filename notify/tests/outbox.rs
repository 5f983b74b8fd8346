//! The outbox end to end: a real HTTP receiver on loopback stands in for Slack, the store is
//! a SQLite file (and PostgreSQL when `KIZUNA_TEST_POSTGRES_URL` is set).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use kizuna_notify::{Dispatcher, DispatcherConfig, NotificationSender, SlackWebhook};
use kizuna_store::{OutboxInsert, OutboxState, Store};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// What the receiver answers, in order; after the script it answers 200.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    TooManyRequests { retry_after_secs: u64 },
}

#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    status: u16,
    body: Value,
}

#[derive(Default)]
struct ReceiverState {
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

type Shared = Arc<Mutex<ReceiverState>>;

struct Receiver {
    url: String,
    state: Shared,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start(script: &[Reply]) -> Self {
        let state: Shared = Arc::new(Mutex::new(ReceiverState {
            script: script.iter().copied().collect(),
            received: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/services/T0/B0/SECRET", axum::routing::post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/services/T0/B0/SECRET",
            listener.local_addr().unwrap()
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(State(state): State<Shared>, body: String) -> Response {
    let mut state = state.lock().unwrap();
    let reply = state.script.pop_front().unwrap_or(Reply::Status(200));
    let body = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (status, response) = match reply {
        Reply::Status(200) => (200, "ok".into_response()),
        Reply::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap();
            (code, (status, "rollup_error").into_response())
        }
        Reply::TooManyRequests { retry_after_secs } => (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                "rate_limited",
            )
                .into_response(),
        ),
    };
    state.received.push(Received {
        at: Instant::now(),
        status,
        body,
    });
    response
}

/// A loopback URL where nothing listens: every request is refused.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/services/T0/B0/SECRET")
}

struct Running {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    wakeup: Arc<Notify>,
}

impl Running {
    fn start(store: &Store, channel: &str, webhook_url: &str, config: DispatcherConfig) -> Self {
        let sender: Arc<dyn NotificationSender> = Arc::new(SlackWebhook::new(webhook_url).unwrap());
        let senders = HashMap::from([(channel.to_string(), sender)]);
        let wakeup = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(Dispatcher::run(
            store.clone(),
            senders,
            config,
            wakeup.clone(),
            stop_rx,
        ));
        Self { task, stop, wakeup }
    }

    /// Asks the dispatcher to stop and checks that it does so promptly.
    async fn shut_down(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("dispatcher stops within 2 s of shutdown")
            .unwrap();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A unique channel per test, so tests sharing a PostgreSQL database do not see each
/// other's rows.
fn test_channel() -> String {
    format!("slack-test-{}", uuid::Uuid::new_v4())
}

fn escalation_payload(conversation_id: &str) -> Value {
    json!({
        "conversation_id": conversation_id,
        "customer_id": "C-0042",
        "customer_name": "山田 太郎",
        "reason": "complaint",
        "detail": "測定結果に納得できないとのこと",
        "last_messages": [
            {"role": "customer", "text": "<!channel> 測定結果がおかしいです & <@U123>"},
            {"role": "bot", "text": "ご不便をおかけして申し訳ございません。"},
        ],
        "takeover_url": format!("https://cs.example.com/console#{conversation_id}"),
        "escalated_at": "2025-06-02T14:05:00+09:00",
    })
}

async fn enqueue(store: &Store, channel: &str, conversation_id: &str, at_ms: i64) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    store
        .enqueue_outbox(
            &OutboxInsert {
                id: id.clone(),
                channel: channel.to_string(),
                kind: "escalation".into(),
                payload: escalation_payload(conversation_id),
            },
            at_ms,
        )
        .await
        .unwrap();
    id
}

async fn outbox_row(store: &Store, id: &str) -> OutboxState {
    store
        .outbox_state(id)
        .await
        .unwrap()
        .expect("the outbox row")
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("outbox.db").display()
    )
}

/// Text of every block of a message, for escaping checks.
fn message_text(message: &Value) -> String {
    fn walk(value: &Value, out: &mut String) {
        match value {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(message, &mut out);
    out
}

async fn exercise_recovery(store: &Store) {
    let channel = test_channel();
    let receiver = Receiver::start(&[
        Reply::Status(500),
        Reply::TooManyRequests {
            retry_after_secs: 1,
        },
    ])
    .await;
    let running = Running::start(store, &channel, &receiver.url, DispatcherConfig::default());
    let conversation_id = format!("conv-{}", uuid::Uuid::new_v4());
    let id = enqueue(store, &channel, &conversation_id, now_ms()).await;
    running.wakeup.notify_one();

    wait_until("the webhook accepts the notice", || async {
        !receiver.delivered().is_empty()
    })
    .await;
    // Time for a wrong second delivery to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.shut_down().await;

    let requests = receiver.received();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [500, 429, 200],
        "one failure each, then exactly one delivery"
    );
    let after_429 = requests[2].at - requests[1].at;
    assert!(
        after_429 >= Duration::from_secs(1),
        "Retry-After: 1 honoured, waited {after_429:?}"
    );

    let row = outbox_row(store, &id).await;
    assert_eq!(row.status, "sent");
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_error, None);
    assert!(row.sent_at.is_some());

    let message = &requests[2].body;
    assert!(message["text"].as_str().unwrap().contains("苦情"));
    let blocks = message["blocks"].as_array().expect("Block Kit blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "担当者の対応が必要です（苦情）");
    let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
    assert_eq!(
        actions["elements"][0]["url"],
        format!("https://cs.example.com/console#{conversation_id}")
    );
    let text = message_text(message);
    assert!(text.contains("&lt;!channel&gt; 測定結果がおかしいです &amp; &lt;@U123&gt;"));
    assert!(!text.contains("<!channel>") && !text.contains("<@U123>"));
    assert!(text.contains("*お客様*") && text.contains("*AI*"));
}

#[tokio::test]
async fn delivers_exactly_once_after_the_webhook_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(&dir)).await.unwrap();
    exercise_recovery(&store).await;
}

async fn exercise_restart(url: &str) {
    let channel = test_channel();
    let conversation_id = format!("conv-{}", uuid::Uuid::new_v4());
    let id;
    let attempts_before_restart;
    {
        // First life: Slack is down, the server stops with the notice undelivered.
        let store = Store::connect(url).await.unwrap();
        id = enqueue(&store, &channel, &conversation_id, now_ms()).await;
        let running = Running::start(
            &store,
            &channel,
            &dead_url().await,
            DispatcherConfig::default(),
        );
        running.wakeup.notify_one();
        wait_until("a delivery attempt failed", || async {
            outbox_row(&store, &id).await.attempts >= 1
        })
        .await;
        running.shut_down().await;
        let row = outbox_row(&store, &id).await;
        assert_eq!(row.status, "pending");
        let error = row.last_error.expect("the failure is recorded");
        assert!(!error.is_empty());
        assert!(!error.contains("SECRET"), "webhook URL leaked: {error}");
        attempts_before_restart = row.attempts;
        store.close().await;
    }

    // Second life: a new process (new pool) over the same database, Slack is back.
    let store = Store::connect(url).await.unwrap();
    let receiver = Receiver::start(&[]).await;
    let running = Running::start(&store, &channel, &receiver.url, DispatcherConfig::default());
    wait_until("the notice is delivered after the restart", || async {
        outbox_row(&store, &id).await.status == "sent"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.shut_down().await;
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "delivered exactly once");
    let header = &delivered[0].body["blocks"][0]["text"]["text"];
    assert_eq!(header, "担当者の対応が必要です（苦情）");
    assert!(message_text(&delivered[0].body).contains(&format!("console#{conversation_id}")));
    assert_eq!(
        outbox_row(&store, &id).await.attempts,
        attempts_before_restart + 1
    );
}

#[tokio::test]
async fn outbox_survives_a_restart_and_delivers_after_the_webhook_recovers() {
    let dir = tempfile::tempdir().unwrap();
    exercise_restart(&sqlite_url(&dir)).await;
}

#[tokio::test]
async fn sends_at_most_one_message_per_second_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(&dir)).await.unwrap();
    let channel = test_channel();
    let receiver = Receiver::start(&[]).await;
    let start = now_ms();
    let mut conversations = Vec::new();
    for n in 0..3 {
        let conversation_id = format!("conv-{n}");
        enqueue(&store, &channel, &conversation_id, start + n).await;
        conversations.push(conversation_id);
    }
    // A long poll interval: the spacing must come from the rate limit, not from polling.
    let config = DispatcherConfig {
        poll_interval: Duration::from_secs(30),
        ..DispatcherConfig::default()
    };
    let running = Running::start(&store, &channel, &receiver.url, config);
    running.wakeup.notify_one();
    wait_until("all three notices arrive", || async {
        receiver.delivered().len() == 3
    })
    .await;
    running.shut_down().await;

    let delivered = receiver.delivered();
    let first_to_last = delivered[2].at - delivered[0].at;
    assert!(
        first_to_last >= Duration::from_secs(2),
        "three messages took only {first_to_last:?}"
    );
    assert!(
        first_to_last < Duration::from_secs(4),
        "queued notices go out as fast as allowed, took {first_to_last:?}"
    );
    for pair in delivered.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_secs(1));
    }
    // Oldest first.
    let order: Vec<String> = delivered
        .iter()
        .map(|r| message_text(&r.body))
        .map(|text| {
            conversations
                .iter()
                .find(|c| text.contains(&format!("console#{c}\n")))
                .cloned()
                .unwrap()
        })
        .collect();
    assert_eq!(order, conversations);
}

#[tokio::test]
async fn two_replicas_deliver_each_notice_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let store_a = Store::connect(&url).await.unwrap();
    let store_b = Store::connect(&url).await.unwrap();
    let channel = test_channel();
    let receiver = Receiver::start(&[]).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(enqueue(&store_a, &channel, &format!("conv-{n}"), now_ms()).await);
    }
    let a = Running::start(
        &store_a,
        &channel,
        &receiver.url,
        // Each notice on its own here (6 due at once would otherwise be one digest).
        DispatcherConfig {
            digest_above: None,
            ..DispatcherConfig::default()
        },
    );
    let b = Running::start(
        &store_b,
        &channel,
        &receiver.url,
        // Each notice on its own here (6 due at once would otherwise be one digest).
        DispatcherConfig {
            digest_above: None,
            ..DispatcherConfig::default()
        },
    );
    a.wakeup.notify_one();
    b.wakeup.notify_one();
    wait_until("every notice is sent", || async {
        for id in &ids {
            if outbox_row(&store_a, id).await.status != "sent" {
                return false;
            }
        }
        true
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.shut_down().await;
    b.shut_down().await;

    let mut urls: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|r| {
            r.body["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["url"].to_string()
        })
        .collect();
    assert_eq!(urls.len(), ids.len(), "no notice sent twice");
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), ids.len(), "each notice sent once");
    for id in &ids {
        assert_eq!(outbox_row(&store_a, id).await.attempts, 1);
    }
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_keeps_the_row_dead() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(&dir)).await.unwrap();
    let channel = test_channel();
    let receiver = Receiver::start(&[Reply::Status(503); 10]).await;
    let config = DispatcherConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        min_send_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(100),
        ..DispatcherConfig::default()
    };
    let id = enqueue(&store, &channel, "conv-dead", now_ms()).await;
    let running = Running::start(&store, &channel, &receiver.url, config);
    wait_until("the row is marked dead", || async {
        outbox_row(&store, &id).await.status == "dead"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shut_down().await;
    assert_eq!(
        receiver.received().len(),
        3,
        "no attempt after the last one"
    );
    let row = outbox_row(&store, &id).await;
    assert_eq!(row.attempts, 3);
    assert!(row.last_error.unwrap().contains("503"));
    assert_eq!(row.sent_at, None);
}

#[tokio::test]
async fn rows_of_a_channel_without_sender_stay_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(&dir)).await.unwrap();
    let receiver = Receiver::start(&[]).await;
    let orphan = enqueue(&store, "email", "conv-mail", now_ms()).await;
    let channel = test_channel();
    let served = enqueue(&store, &channel, "conv-slack", now_ms()).await;
    let running = Running::start(&store, &channel, &receiver.url, DispatcherConfig::default());
    wait_until("the configured channel is served", || async {
        outbox_row(&store, &served).await.status == "sent"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    running.shut_down().await;
    let row = outbox_row(&store, &orphan).await;
    assert_eq!(row.status, "pending");
    assert_eq!(row.attempts, 0);
    assert_eq!(receiver.delivered().len(), 1);
}

#[tokio::test]
async fn postgres_outbox_recovery_and_restart() {
    let Ok(url) = std::env::var("KIZUNA_TEST_POSTGRES_URL") else {
        // CI sets KIZUNA_REQUIRE_POSTGRES (.ci/run): there a missing server fails, never skips.
        assert!(
            std::env::var_os("KIZUNA_REQUIRE_POSTGRES").is_none(),
            "KIZUNA_REQUIRE_POSTGRES is set but no PostgreSQL (KIZUNA_TEST_POSTGRES_URL) was started"
        );
        eprintln!("skipped: set KIZUNA_TEST_POSTGRES_URL to run the PostgreSQL path");
        return;
    };
    let store = Store::connect(&url)
        .await
        .expect("connect to KIZUNA_TEST_POSTGRES_URL");
    exercise_recovery(&store).await;
    exercise_restart(&url).await;
}

/// A webhook answering with a redirect: the notice is not re-posted where it points (the
/// webhook URL is the secret; a redirect would carry customers' words elsewhere).
#[tokio::test]
async fn slack_redirects_are_not_followed() {
    let hits = Arc::new(Mutex::new(0usize));
    let elsewhere_hits = hits.clone();
    let app = axum::Router::new()
        .route(
            "/services/T0/B0/SECRET",
            axum::routing::post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, "/elsewhere")],
                )
                    .into_response()
            }),
        )
        .route(
            "/elsewhere",
            axum::routing::post(move || {
                let hits = elsewhere_hits.clone();
                async move {
                    *hits.lock().unwrap() += 1;
                    StatusCode::OK
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let hook = SlackWebhook::new(format!("http://{addr}/services/T0/B0/SECRET")).unwrap();
    let result = hook.post(&json!({"text": "顧客の発言"})).await;
    assert!(result.is_err(), "a redirect is not a delivery");
    assert_eq!(
        *hits.lock().unwrap(),
        0,
        "the redirect target was never posted to"
    );
}

/// A flood of escalation notices goes out as one digest, and every row is marked sent.
#[tokio::test]
async fn an_escalation_flood_is_one_digest_not_hundreds_of_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(&dir)).await.unwrap();
    let channel = test_channel();
    let receiver = Receiver::start(&[]).await;
    let mut ids = Vec::new();
    for n in 0..120 {
        ids.push(enqueue(&store, &channel, &format!("flood-{n}"), now_ms()).await);
    }
    let running = Running::start(&store, &channel, &receiver.url, DispatcherConfig::default());
    running.wakeup.notify_one();
    wait_until("every flooded notice is sent", || async {
        for id in &ids {
            if outbox_row(&store, id).await.status != "sent" {
                return false;
            }
        }
        true
    })
    .await;
    running.shut_down().await;
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "one digest for 120 notices");
    let text = message_text(&delivered[0].body);
    assert!(text.contains("120件"), "{text}");
    assert!(
        text.contains("console#flood-0"),
        "links to the first conversations: {text}"
    );
    // A few at a time still go out one by one.
    let few: Vec<String> = {
        let mut v = Vec::new();
        for n in 0..2 {
            v.push(enqueue(&store, &channel, &format!("calm-{n}"), now_ms()).await);
        }
        v
    };
    let running = Running::start(&store, &channel, &receiver.url, DispatcherConfig::default());
    running.wakeup.notify_one();
    wait_until("both calm notices are sent", || async {
        receiver.delivered().len() == 3
    })
    .await;
    running.shut_down().await;
    for id in &few {
        assert_eq!(outbox_row(&store, id).await.status, "sent");
    }
}
