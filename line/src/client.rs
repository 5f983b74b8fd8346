//! The Messaging API client and the outbox sender for the `line` channel.
//!
//! Reply: `POST {base}/v2/bot/message/reply` with `{"replyToken", "messages"}`; push:
//! `POST {base}/v2/bot/message/push` with `{"to", "messages"}` and an `X-Line-Retry-Key`
//! (a UUID per batch, kept in the outbox row) so a retried push is delivered once: LINE
//! answers a repeated key with 409, which counts as delivered. Both carry
//! `Authorization: Bearer <channel access token>`. A reply token is single-use and short-lived:
//! the sender uses it for a one-request delivery while it is fresh and falls back to a push
//! when LINE refuses it.

use std::time::Duration;

use kizuna_notify::{
    error_chain, parse_retry_after, truncate_chars, NotificationSender, SendError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The outbox channel LINE deliveries go through.
pub const CHANNEL: &str = "line";
/// Outbox kind: messages for one LINE user ([`Delivery`]).
pub const KIND_MESSAGES: &str = "line_messages";

#[derive(Clone)]
pub struct LineConfig {
    /// `https://api.line.me` unless a proxy or a test stand-in is used.
    pub api_base_url: String,
    /// Long-lived channel access token (a secret; never logged).
    pub channel_access_token: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for LineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineConfig")
            .field("api_base_url", &self.api_base_url)
            .field("channel_access_token", &"<redacted>")
            .finish()
    }
}

/// One outbox row of kind [`KIND_MESSAGES`]: what to send to one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The LINE user id.
    pub to: String,
    /// A reply token still fresh when the row was written, with its deadline (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_token: Option<String>,
    #[serde(default)]
    pub reply_token_deadline_ms: i64,
    /// Batches of at most 5 message objects ([`crate::text_messages`]).
    pub batches: Vec<Vec<Value>>,
    /// One `X-Line-Retry-Key` per batch.
    pub retry_keys: Vec<String>,
}

impl Delivery {
    pub fn new(
        to: impl Into<String>,
        batches: Vec<Vec<Value>>,
        reply: Option<(String, i64)>,
    ) -> Self {
        let retry_keys = batches
            .iter()
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let (reply_token, reply_token_deadline_ms) = match reply {
            Some((token, deadline)) => (Some(token), deadline),
            None => (None, 0),
        };
        Self {
            to: to.into(),
            reply_token,
            reply_token_deadline_ms,
            batches,
            retry_keys,
        }
    }
}

pub struct LineClient {
    config: LineConfig,
    http: reqwest::Client,
}

enum Outcome {
    Sent,
    /// LINE refused the reply token (used or expired).
    ReplyTokenRefused,
}

impl LineClient {
    pub fn new(config: LineConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self { config, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base_url.trim_end_matches('/'))
    }

    async fn post(
        &self,
        path: &str,
        body: &Value,
        retry_key: Option<&str>,
    ) -> Result<Outcome, SendError> {
        let mut request = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.config.channel_access_token)
            .json(body);
        if let Some(key) = retry_key {
            request = request.header("X-Line-Retry-Key", key);
        }
        let response = request.send().await.map_err(|e| {
            SendError::retryable(format!(
                "LINE request failed: {}",
                error_chain(&e.without_url())
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(Outcome::Sent);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let body = response.text().await.unwrap_or_default();
        let body = truncate_chars(body.trim(), 300);
        // A push whose retry key LINE already accepted: delivered before.
        if status.as_u16() == 409 && retry_key.is_some() {
            return Ok(Outcome::Sent);
        }
        if status.as_u16() == 400 && path.ends_with("/reply") && body.contains("reply token") {
            return Ok(Outcome::ReplyTokenRefused);
        }
        let message = format!("LINE answered {status} on {path}: {body}");
        match status.as_u16() {
            429 | 500..=599 => Err(SendError {
                retryable: true,
                retry_after,
                message,
            }),
            401 | 403 => {
                // A revoked or mistyped token: keep the messages and retry, loudly.
                tracing::error!(
                    status = status.as_u16(),
                    "LINE refused the channel access token; check line.channel_access_token"
                );
                Err(SendError::retryable(message))
            }
            _ => Err(SendError::permanent(message)),
        }
    }

    pub async fn reply(&self, reply_token: &str, messages: &[Value]) -> Result<bool, SendError> {
        let body = json!({"replyToken": reply_token, "messages": messages});
        Ok(matches!(
            self.post("/v2/bot/message/reply", &body, None).await?,
            Outcome::Sent
        ))
    }

    pub async fn push(
        &self,
        to: &str,
        messages: &[Value],
        retry_key: &str,
    ) -> Result<(), SendError> {
        let body = json!({"to": to, "messages": messages});
        self.post("/v2/bot/message/push", &body, Some(retry_key))
            .await
            .map(|_| ())
    }

    /// Delivers one outbox row: a fresh reply token answers a one-batch delivery; otherwise
    /// (or when LINE refuses the token) every batch is pushed with its retry key.
    pub async fn deliver(&self, delivery: &Delivery, now_ms: i64) -> Result<(), SendError> {
        if delivery.batches.len() != delivery.retry_keys.len() {
            return Err(SendError::permanent("a retry key per batch is required"));
        }
        if let (Some(token), [only]) = (&delivery.reply_token, delivery.batches.as_slice()) {
            if now_ms < delivery.reply_token_deadline_ms && self.reply(token, only).await? {
                return Ok(());
            }
        }
        for (batch, key) in delivery.batches.iter().zip(&delivery.retry_keys) {
            self.push(&delivery.to, batch, key).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl NotificationSender for LineClient {
    async fn send(&self, _channel: &str, kind: &str, payload: &Value) -> Result<(), SendError> {
        if kind != KIND_MESSAGES {
            return Err(SendError::permanent(format!(
                "the LINE channel does not send {kind:?}"
            )));
        }
        let delivery: Delivery = serde_json::from_value(payload.clone())
            .map_err(|e| SendError::permanent(format!("unreadable LINE delivery: {e}")))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.deliver(&delivery, now_ms).await
    }
}

#[cfg(test)]
mod tests;
