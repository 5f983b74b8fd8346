//! Outreach pushed on LINE (`[outreach.channels.line]`, docs/line.md): for a customer with a
//! linked LINE user who follows the account, the message is an `outreach_message` outbox row
//! on the `line` channel, next to the chat replies the LINE forwarder queues there. One
//! sender serves the channel ([`line_sender`]): the forwarder's rows go straight to the
//! Messaging API client; outreach rows go through [`RecordingSender`] (opt-out checked at
//! each attempt, every attempt logged) to [`LineOutreachSender`]. Both share the client and
//! the outbox's retries, so LINE's 429s and 5xx are retried (honouring `Retry-After`) and a
//! retried push carries the same `X-Line-Retry-Key`.

use std::sync::Arc;

use async_trait::async_trait;
use kizuna_line::{text_messages, LineClient, KIND_MESSAGES};
use kizuna_notify::{NotificationSender, SendError};
use kizuna_store::Store;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::channels::{ChannelMessage, ChannelSender, RecordingSender, KIND_OUTREACH_MESSAGE};

/// Outbox channel of LINE deliveries (the same as the chat forwarder's).
pub const CHANNEL_LINE: &str = kizuna_line::CHANNEL;

/// Appended to each outreach push: how to stop them (blocking the account stops them too).
pub const DEFAULT_LINE_FOOTER: &str =
    "\n\n今後のご案内が不要な場合は「配信停止」とお送りください。";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineChannelConfig {
    /// Text after each message; empty for none.
    pub footer: String,
}

impl Default for LineChannelConfig {
    fn default() -> Self {
        Self {
            footer: DEFAULT_LINE_FOOTER.to_string(),
        }
    }
}

impl LineChannelConfig {
    /// The pushed text: the message and the footer.
    pub fn body(&self, text: &str) -> String {
        format!("{}{}", text.trim_end(), self.footer)
    }
}

/// Pushes outreach messages to a LINE user (`to`) with the Messaging API client.
pub struct LineOutreachSender {
    client: Arc<LineClient>,
}

impl LineOutreachSender {
    pub fn new(client: Arc<LineClient>) -> Self {
        Self { client }
    }
}

/// The `X-Line-Retry-Key` of batch `index` of a send: a UUID derived from both, the same on
/// every attempt, so LINE delivers a retried push once (it answers a known key with 409).
pub fn retry_key(send_id: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("kizuna-outreach:{send_id}:{index}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[async_trait]
impl ChannelSender for LineOutreachSender {
    async fn send_message(&self, message: &ChannelMessage) -> Result<Option<String>, SendError> {
        let to = message.to.trim();
        if to.is_empty() {
            return Err(SendError::permanent("no LINE user to push to"));
        }
        let batches = text_messages(&message.text, &[]);
        for (index, batch) in batches.iter().enumerate() {
            self.client
                .push(to, batch, &retry_key(&message.send_id, index))
                .await?;
        }
        tracing::info!(send_id = %message.send_id, batches = batches.len(), "outreach pushed on LINE");
        Ok(Some(format!("pushed {} request(s)", batches.len())))
    }
}

#[async_trait]
impl NotificationSender for LineOutreachSender {
    async fn send(&self, _channel: &str, kind: &str, payload: &Value) -> Result<(), SendError> {
        if kind != KIND_OUTREACH_MESSAGE {
            return Err(SendError::permanent(format!(
                "the LINE outreach sender has no message for outbox kind {kind:?}"
            )));
        }
        let message: ChannelMessage = serde_json::from_value(payload.clone())
            .map_err(|e| SendError::permanent(format!("unreadable outreach message: {e}")))?;
        self.send_message(&message).await.map(|_| ())
    }
}

/// The `line` channel's sender: the forwarder's `line_messages` rows to the client, outreach
/// rows recorded and pushed.
struct LineChannelSender {
    client: Arc<LineClient>,
    outreach: RecordingSender,
}

#[async_trait]
impl NotificationSender for LineChannelSender {
    async fn send(&self, channel: &str, kind: &str, payload: &Value) -> Result<(), SendError> {
        match kind {
            KIND_MESSAGES => self.client.send(channel, kind, payload).await,
            _ => self.outreach.send(channel, kind, payload).await,
        }
    }
}

/// The sender to register for the `line` outbox channel when the LINE channel is on.
pub fn line_sender(store: &Store, client: Arc<LineClient>) -> Arc<dyn NotificationSender> {
    let outreach = RecordingSender::new(
        store.clone(),
        Arc::new(LineOutreachSender::new(client.clone())),
    );
    Arc::new(LineChannelSender { client, outreach })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_keys_are_uuids_fixed_per_send_and_batch() {
        let a = retry_key("send-1", 0);
        assert_eq!(a, retry_key("send-1", 0));
        assert_ne!(a, retry_key("send-1", 1));
        assert_ne!(a, retry_key("send-2", 0));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn the_config_reads_from_toml_with_a_default_footer() {
        let c: LineChannelConfig = toml::from_str("").unwrap();
        assert_eq!(
            c.body("ご案内です。\n"),
            format!("ご案内です。{DEFAULT_LINE_FOOTER}")
        );
        let c: LineChannelConfig = toml::from_str("footer = \"\"").unwrap();
        assert_eq!(c.body("ご案内です。"), "ご案内です。");
        assert!(toml::from_str::<LineChannelConfig>("to = \"x\"").is_err());
    }

    use std::sync::Mutex;
    use std::time::Duration;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use kizuna_notify::{Dispatcher, DispatcherConfig};
    use kizuna_tools::crm::{Customer, CustomerKind};
    use tokio::sync::{watch, Notify};

    use crate::channels::{attempts_for, enqueue_channel_messages, ChannelsConfig};
    use crate::engine::OutboundMessage;
    use crate::trigger::Trigger;

    type Pushes = Arc<Mutex<Vec<(String, Value)>>>;

    /// The push endpoint: refuses the first request with 429, then accepts.
    async fn push(
        State(pushes): State<Pushes>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, HeaderMap, Json<Value>) {
        let key = headers
            .get("x-line-retry-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert_eq!(
            headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer line-token")
        );
        let mut seen = pushes.lock().unwrap();
        seen.push((key, body));
        let mut out = HeaderMap::new();
        if seen.len() == 1 {
            out.insert("retry-after", "0".parse().unwrap());
            return (
                StatusCode::TOO_MANY_REQUESTS,
                out,
                Json(serde_json::json!({"message": "rate limited"})),
            );
        }
        (
            StatusCode::OK,
            out,
            Json(serde_json::json!({"sentMessages": []})),
        )
    }

    fn outbound(send_id: &str, customer_id: &str) -> OutboundMessage {
        OutboundMessage {
            send_id: send_id.into(),
            customer_id: customer_id.into(),
            text: "今月の測定回数が減っています。".into(),
            campaign_id: "usage_drop".into(),
            trigger: Trigger::UsageDrop,
            variant: "A".into(),
        }
    }

    #[tokio::test]
    async fn linked_followers_get_the_push_through_the_outbox_with_one_retry_key() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let store = Store::connect(&url).await.unwrap();
        for id in ["C-1", "C-2"] {
            sqlx::query(
                "INSERT INTO customers (id, kind, name, opted_out, created_at, updated_at)
                 VALUES ($1, 'b2c', '山田', 0, 1, 1)",
            )
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
        }
        for (user, customer) in [("U1", "C-1"), ("U2", "C-2")] {
            store
                .upsert_line_user(user, &format!("conv-{user}"), true, 1)
                .await
                .unwrap();
            store
                .link_line_user(user, customer, &format!("n-{user}"), 2)
                .await
                .unwrap();
        }
        store.line_follow("U2", "x", false, 3).await.unwrap(); // C-2 blocked the account
        for send in ["s-1", "s-2", "s-3"] {
            sqlx::query(
                "INSERT INTO outreach_sends (id, customer_id, trigger_slug, cause_key, campaign_id, variant, status, created_at)
                 VALUES ($1, 'C-1', 'usage_drop', $1, 'usage_drop', 'A', 'sent', 1)",
            )
            .bind(send)
            .execute(store.pool())
            .await
            .unwrap();
        }
        let config = ChannelsConfig {
            line: Some(LineChannelConfig::default()),
            ..ChannelsConfig::default()
        };
        let now = chrono::DateTime::parse_from_rfc3339("2025-06-02T10:00:00+09:00").unwrap();
        let c1 = Customer::new("C-1", CustomerKind::B2c, "山田");
        let mut c2 = Customer::new("C-2", CustomerKind::B2c, "佐藤");
        let queued =
            enqueue_channel_messages(&store, &config, &c1, &outbound("s-1", "C-1"), false, now)
                .await
                .unwrap();
        assert_eq!(queued, [CHANNEL_LINE]);
        // Blocked (and so opted out), or unlinked: nothing.
        c2.opted_out = false;
        assert!(enqueue_channel_messages(
            &store,
            &config,
            &c2,
            &outbound("s-2", "C-2"),
            false,
            now
        )
        .await
        .unwrap()
        .is_empty());
        let unlinked = Customer::new("C-3", CustomerKind::B2c, "鈴木");
        assert!(enqueue_channel_messages(
            &store,
            &config,
            &unlinked,
            &outbound("s-3", "C-3"),
            false,
            now
        )
        .await
        .unwrap()
        .is_empty());

        let pushes: Pushes = Arc::default();
        let app = Router::new()
            .route("/v2/bot/message/push", post(push))
            .with_state(pushes.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = LineClient::new(kizuna_line::LineConfig {
            api_base_url: format!("http://{addr}"),
            channel_access_token: "line-token".into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let senders = std::collections::HashMap::from([(
            CHANNEL_LINE.to_string(),
            line_sender(&store, Arc::new(client)),
        )]);
        let (stop, stopped) = watch::channel(false);
        let dispatcher = tokio::spawn(Dispatcher::run(
            store.clone(),
            senders,
            DispatcherConfig {
                poll_interval: Duration::from_millis(10),
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(10),
                min_send_interval: Duration::ZERO,
                ..DispatcherConfig::default()
            },
            Arc::new(Notify::new()),
            stopped,
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = store
                .outbox_state("outreach:s-1:line")
                .await
                .unwrap()
                .expect("the LINE row");
            if row.status == "sent" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not sent");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).unwrap();
        dispatcher.await.unwrap();

        let pushes = pushes.lock().unwrap().clone();
        assert_eq!(pushes.len(), 2, "refused once (429), then delivered");
        assert_eq!(
            pushes[0].0, pushes[1].0,
            "the retry carries the same retry key"
        );
        assert_eq!(pushes[0].0, retry_key("s-1", 0));
        assert_eq!(pushes[1].1["to"], "U1");
        let text = pushes[1].1["messages"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("今月の測定回数") && text.ends_with("とお送りください。"));
        let attempts = attempts_for(&store, "s-1").await.unwrap();
        assert_eq!(
            attempts
                .iter()
                .map(|a| (a.channel.as_str(), a.ok))
                .collect::<Vec<_>>(),
            [("line", false), ("line", true)]
        );
    }
}
