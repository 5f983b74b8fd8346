//! Kizuna's notifications: escalation notices for people (Slack), delivered from the durable
//! `outbox` table so that a notice survives a receiver outage and a server restart.
//!
//! The hub commits an outbox row in the same transaction as the escalation; the
//! [`Dispatcher`] claims due rows, hands them to the [`NotificationSender`] of their channel,
//! and retries with backoff until the receiver accepts them. Delivery is at least once: a
//! crash between the receiver's acceptance and the `sent` mark repeats that one notice.

mod dispatcher;
pub mod slack;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use slack::{
    error_chain, outreach_task_blocks, parse_retry_after, redact_webhook_url, truncate_chars,
    SlackWebhook, SlackWebhookError,
};

/// Outbox kind of an escalation notice (payload: [`EscalationNotice`]).
pub const KIND_ESCALATION: &str = "escalation";

/// The payload of an `escalation` outbox row, as the hub writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationNotice {
    pub conversation_id: String,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub customer_name: Option<String>,
    /// An escalation reason name (`legal`, `refund_or_cancel`, …).
    pub reason: String,
    #[serde(default)]
    pub detail: String,
    /// The conversation's last messages, oldest first.
    #[serde(default)]
    pub last_messages: Vec<NoticeMessage>,
    /// The console link where a person takes the conversation over.
    pub takeover_url: String,
    /// RFC 3339 time of the escalation.
    pub escalated_at: String,
}

/// Kind of the one message that stands for many escalation notices due at once (a flood):
/// the dispatcher builds it from the rows it coalesces; it is never stored.
pub const KIND_ESCALATION_DIGEST: &str = "escalation_digest";

/// The payload of an escalation digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationDigest {
    /// How many escalations it stands for.
    pub count: usize,
    /// Count per reason name, largest first.
    pub reasons: Vec<(String, usize)>,
    /// The first few console links.
    pub takeover_urls: Vec<String>,
}

/// Outbox kind of an outreach staff task (payload: [`OutreachTaskNotice`]).
pub const KIND_OUTREACH_TASK: &str = "outreach_task";

/// The payload of an `outreach_task` outbox row: proactive outreach needs a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutreachTaskNotice {
    /// `approval` (an important account: approve the draft first), `human_task` (a person
    /// acts instead of a message) or `csm_alert` (NPS detractor: the message went out too).
    pub task: String,
    pub send_id: String,
    pub customer_id: String,
    #[serde(default)]
    pub customer_name: Option<String>,
    /// The trigger's slug (`payment_overdue_21`, `low_nps`, …).
    pub trigger: String,
    /// The composed message: the draft for approvals and human tasks.
    pub draft: String,
    /// Where a person handles it (the console), when configured.
    #[serde(default)]
    pub console_url: Option<String>,
    /// RFC 3339 time the task was raised.
    pub created_at: String,
}

/// One message quoted in a notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeMessage {
    /// `customer`, `bot` or `human`.
    pub role: String,
    pub text: String,
}

/// Why a notification was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Whether a later attempt may succeed; a permanent failure marks the row `dead` at once.
    pub retryable: bool,
    /// The receiver asked to wait this long (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    /// What went wrong, for logs and the row's `last_error`; never contains secrets.
    pub message: String,
}

impl SendError {
    /// A failure worth retrying later.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            retry_after: None,
            message: message.into(),
        }
    }

    /// A failure no retry can fix (e.g. a payload this sender cannot read).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            retry_after: None,
            message: message.into(),
        }
    }
}

/// Delivers outbox rows of one or more channels.
#[async_trait::async_trait]
pub trait NotificationSender: Send + Sync {
    async fn send(
        &self,
        channel: &str,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<(), SendError>;
}
