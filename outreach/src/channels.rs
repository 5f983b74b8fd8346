//! Extra delivery channels for proactive outreach: email over SMTP and a generic webhook (an
//! SMS provider's gateway), next to the chat delivery of [`crate::Delivery`].
//!
//! A message for such a channel is an `outbox` row (kind [`KIND_OUTREACH_MESSAGE`], channel
//! [`CHANNEL_EMAIL`] or [`CHANNEL_WEBHOOK`]), so it survives a provider outage and a restart;
//! the notify crate's `Dispatcher` delivers it through [`EmailSender`] or [`WebhookSender`]
//! and retries with backoff. Wrapped in a [`RecordingSender`], every attempt, successful or
//! not, lands in `outreach_attempts` (see [`attempts_for`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use kizuna_notify::{
    error_chain, parse_retry_after, redact_webhook_url, truncate_chars, NotificationSender,
    SendError,
};
use kizuna_store::{OutboxInsert, Store, StoreError};
use kizuna_tools::crm::Customer;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::engine::OutboundMessage;
use crate::OutreachError;

/// Outbox kind of a message to a customer on an extra channel (payload: [`ChannelMessage`]).
pub const KIND_OUTREACH_MESSAGE: &str = "outreach_message";
/// Outbox channel delivered by [`EmailSender`].
pub const CHANNEL_EMAIL: &str = "email";
/// Outbox channel delivered by [`WebhookSender`].
pub const CHANNEL_WEBHOOK: &str = "webhook";

/// Appended to every outreach email: the Act on Regulation of Transmission of Specified
/// Electronic Mail requires marketing email to tell how to refuse further messages.
pub const EMAIL_OPT_OUT_FOOTER: &str = "\n\n――\n今後のご案内が不要な場合は、このメールに「配信停止」とご返信いただくか、チャットで「配信停止」とお送りください。";

const DEFAULT_SUBJECT: &str = "【ZENBU】ご案内";
/// Per SMTP command; well under the dispatcher's default claim lease (60 s).
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_WEBHOOK_TIMEOUT_SECS: u64 = 10;
/// Kept under the dispatcher's default claim lease, so a send never outlives its claim.
const MAX_WEBHOOK_TIMEOUT_SECS: u64 = 50;
const MAX_DETAIL_CHARS: usize = 1000;
const MAX_BODY_EXCERPT_CHARS: usize = 200;

/// Which extra channels carry outreach messages (`[outreach.channels]` in the server's TOML).
/// The default configures none: messages reach customers only in the chat.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    pub email: Option<EmailConfig>,
    pub webhook: Option<WebhookConfig>,
    /// Push to the customer's linked LINE user ([`crate::line`]); needs the server's LINE
    /// channel (`[line]`), whose client delivers it.
    pub line: Option<crate::line::LineChannelConfig>,
    pub when: ChannelPolicy,
}

/// When a message also goes out on the extra channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelPolicy {
    /// Only when the chat delivery was not live (the customer's widget was not connected).
    #[default]
    Offline,
    /// Always, in addition to the chat.
    Always,
}

impl ChannelPolicy {
    /// Whether a message whose chat delivery was (`live`) or was not live goes out too.
    pub fn allows(self, live: bool) -> bool {
        match self {
            ChannelPolicy::Offline => !live,
            ChannelPolicy::Always => true,
        }
    }
}

/// SMTP submission settings. `smtp_url` may hold a password: it is never logged and its
/// `Debug` form hides the credentials.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// lettre's URL form: `smtp://host:25` (plain), `smtps://user:pass@host:465` (TLS) or
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS). Percent-encode special
    /// characters of the user and password.
    pub smtp_url: String,
    /// The sender mailbox, e.g. `ZENBU <support@zenbu.example>`.
    pub from: String,
    #[serde(default = "default_subject")]
    pub subject: String,
}

fn default_subject() -> String {
    DEFAULT_SUBJECT.to_string()
}

impl EmailConfig {
    /// Settings with the default subject.
    pub fn new(smtp_url: impl Into<String>, from: impl Into<String>) -> Self {
        Self {
            smtp_url: smtp_url.into(),
            from: from.into(),
            subject: default_subject(),
        }
    }

    /// Checks the URL, the sender mailbox and the subject.
    pub fn validate(&self) -> Result<(), ChannelConfigError> {
        self.parts().map(|_| ())
    }

    fn parts(&self) -> Result<(AsyncSmtpTransport<Tokio1Executor>, Mailbox), ChannelConfigError> {
        let from: Mailbox = self
            .from
            .trim()
            .parse()
            .map_err(|e| ChannelConfigError::From(format!("{e}")))?;
        if self.subject.trim().is_empty() {
            return Err(ChannelConfigError::EmptySubject);
        }
        let url = self.smtp_url.trim();
        // lettre's errors name the problem, never the URL, so they are safe to show.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| ChannelConfigError::SmtpUrl(e.to_string()))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        if let Ok(parsed) = reqwest::Url::parse(url) {
            let has_tls =
                parsed.scheme() == "smtps" || parsed.query_pairs().any(|(k, _)| k == "tls");
            if parsed.password().is_some() && !has_tls {
                tracing::warn!(
                    server = %redact_smtp_url(url),
                    "email.smtp_url sends the SMTP password unencrypted; use smtps:// or ?tls=required"
                );
            }
        }
        Ok((transport, from))
    }
}

impl fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailConfig")
            .field("smtp_url", &redact_smtp_url(&self.smtp_url))
            .field("from", &self.from)
            .field("subject", &self.subject)
            .finish()
    }
}

/// A generic HTTP receiver (e.g. an SMS provider's gateway). The token, and the URL's path
/// and query (often a secret too), never appear in logs or `Debug`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default = "default_webhook_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_webhook_timeout_secs() -> u64 {
    DEFAULT_WEBHOOK_TIMEOUT_SECS
}

impl WebhookConfig {
    /// Settings without a token and with the default timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            bearer_token: None,
            timeout_secs: DEFAULT_WEBHOOK_TIMEOUT_SECS,
        }
    }

    /// Checks the URL and the timeout.
    pub fn validate(&self) -> Result<(), ChannelConfigError> {
        let url =
            reqwest::Url::parse(self.url.trim()).map_err(|_| ChannelConfigError::WebhookUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ChannelConfigError::WebhookUrl);
        }
        if !(1..=MAX_WEBHOOK_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(ChannelConfigError::WebhookTimeout);
        }
        Ok(())
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_webhook_url(&self.url))
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// A channel setting that cannot work; names the setting and never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelConfigError {
    #[error("email.smtp_url is not a usable SMTP URL ({0}); use smtp://host:25, smtps://user:pass@host:465 or smtp://user:pass@host:587?tls=required")]
    SmtpUrl(String),
    #[error("email.from is not a mailbox ({0}); use e.g. \"ZENBU <support@zenbu.example>\"")]
    From(String),
    #[error("email.subject must not be empty")]
    EmptySubject,
    #[error("webhook.url must be an http:// or https:// URL with a host")]
    WebhookUrl,
    #[error("webhook.timeout_secs must be between 1 and {MAX_WEBHOOK_TIMEOUT_SECS}")]
    WebhookTimeout,
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
}

impl ChannelsConfig {
    /// Checks every configured channel.
    pub fn validate(&self) -> Result<(), ChannelConfigError> {
        if let Some(email) = &self.email {
            email.validate()?;
        }
        if let Some(webhook) = &self.webhook {
            webhook.validate()?;
        }
        Ok(())
    }

    /// The senders of the configured channels, each recording its attempts, keyed by outbox
    /// channel: add them to the dispatcher's senders.
    pub fn senders(
        &self,
        store: &Store,
    ) -> Result<HashMap<String, Arc<dyn NotificationSender>>, ChannelConfigError> {
        let mut senders: HashMap<String, Arc<dyn NotificationSender>> = HashMap::new();
        if let Some(email) = &self.email {
            let sender = Arc::new(EmailSender::new(email)?);
            senders.insert(
                CHANNEL_EMAIL.to_string(),
                Arc::new(RecordingSender::new(store.clone(), sender)),
            );
        }
        if let Some(webhook) = &self.webhook {
            let sender = Arc::new(WebhookSender::new(webhook)?);
            senders.insert(
                CHANNEL_WEBHOOK.to_string(),
                Arc::new(RecordingSender::new(store.clone(), sender)),
            );
        }
        Ok(senders)
    }
}

/// The payload of an `outreach_message` outbox row: one message for one channel, complete as
/// it will be sent (the email text includes the opt-out footer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMessage {
    /// The `outreach_sends` row this message belongs to.
    pub send_id: String,
    pub customer_id: String,
    /// The email address, the phone number or the LINE user id.
    pub to: String,
    /// Email only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub text: String,
    pub campaign_id: String,
    pub variant: String,
    /// The trigger's slug.
    pub trigger: String,
}

/// One delivery attempt on an extra channel.
pub type ChannelAttempt = kizuna_store::OutreachAttempt;

/// The email body: the message and the opt-out notice.
pub fn email_body(text: &str) -> String {
    format!("{}{EMAIL_OPT_OUT_FOOTER}", text.trim_end())
}

/// Queues `message` on every configured channel that `config.when` allows after a chat
/// delivery that was (`live`) or was not live, and for which the customer has an address
/// (email for email, phone for the webhook). Returns the channels queued now; a channel
/// already queued for this send (a repeated call) is not queued again.
pub async fn enqueue_channel_messages(
    store: &Store,
    config: &ChannelsConfig,
    customer: &Customer,
    message: &OutboundMessage,
    live: bool,
    now: DateTime<FixedOffset>,
) -> Result<Vec<&'static str>, OutreachError> {
    let mut queued = Vec::new();
    // The engine checks opt-out before delivering; checked again because these channels
    // reach the customer outside the product (and the law requires honouring refusals).
    if !config.when.allows(live) || customer.opted_out {
        return Ok(queued);
    }
    let now_ms = now.timestamp_millis();
    let channel_message = |to: &str, subject: Option<String>, text: String| ChannelMessage {
        send_id: message.send_id.clone(),
        customer_id: message.customer_id.clone(),
        to: to.to_string(),
        subject,
        text,
        campaign_id: message.campaign_id.clone(),
        variant: message.variant.clone(),
        trigger: message.trigger.as_str().to_string(),
    };
    if let (Some(email), Some(address)) = (&config.email, present(customer.email.as_deref())) {
        let payload = channel_message(
            address,
            Some(email.subject.clone()),
            email_body(&message.text),
        );
        if enqueue(store, CHANNEL_EMAIL, &payload, now_ms).await? {
            queued.push(CHANNEL_EMAIL);
        }
    }
    if let (Some(_), Some(phone)) = (&config.webhook, present(customer.phone.as_deref())) {
        let payload = channel_message(phone, None, message.text.clone());
        if enqueue(store, CHANNEL_WEBHOOK, &payload, now_ms).await? {
            queued.push(CHANNEL_WEBHOOK);
        }
    }
    if let Some(line) = &config.line {
        // Only a LINE user linked to this customer who still follows the account.
        let target = store.line_push_target(&message.customer_id).await?;
        if let Some(user_id) = target {
            let payload = channel_message(&user_id, None, line.body(&message.text));
            if enqueue(store, crate::line::CHANNEL_LINE, &payload, now_ms).await? {
                queued.push(crate::line::CHANNEL_LINE);
            }
        }
    }
    if !queued.is_empty() {
        tracing::info!(send_id = %message.send_id, channels = ?queued, "outreach message queued on extra channels");
    }
    Ok(queued)
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// One row per send and channel: the id is derived from both, so a repeated call finds it.
fn outbox_id(send_id: &str, channel: &str) -> String {
    format!("outreach:{send_id}:{channel}")
}

/// Queues one message; false when it was queued before.
async fn enqueue(
    store: &Store,
    channel: &'static str,
    message: &ChannelMessage,
    now_ms: i64,
) -> Result<bool, OutreachError> {
    let id = outbox_id(&message.send_id, channel);
    if outbox_row_exists(store, &id).await? {
        return Ok(false);
    }
    let payload = serde_json::to_value(message).map_err(|e| {
        OutreachError::Delivery(format!("could not encode the {channel} message: {e}"))
    })?;
    let row = OutboxInsert {
        id,
        channel: channel.to_string(),
        kind: KIND_OUTREACH_MESSAGE.to_string(),
        payload,
    };
    let Err(error) = store.enqueue_outbox(&row, now_ms).await else {
        return Ok(true);
    };
    // Another replica queued it between the check and the insert.
    if outbox_row_exists(store, &row.id).await? {
        return Ok(false);
    }
    Err(OutreachError::Database(error))
}

async fn outbox_row_exists(store: &Store, id: &str) -> Result<bool, StoreError> {
    Ok(store.outbox_state(id).await?.is_some())
}

/// The attempts on extra channels for one send, oldest first.
pub async fn attempts_for(
    store: &Store,
    send_id: &str,
) -> Result<Vec<ChannelAttempt>, OutreachError> {
    Ok(store.outreach_attempts(send_id).await?)
}

/// Numbers the attempt after the earlier ones of this send on this channel (a row is sent
/// by one replica at a time, under the dispatcher's claim).
async fn record_attempt(
    store: &Store,
    send_id: &str,
    channel: &str,
    ok: bool,
    detail: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    store
        .record_outreach_attempt(
            send_id,
            channel,
            ok,
            detail
                .map(|d| truncate_chars(d, MAX_DETAIL_CHARS))
                .as_deref(),
            now_ms,
        )
        .await
}

/// A sender of outreach messages that can also tell the provider's message id.
#[async_trait]
pub trait ChannelSender: NotificationSender {
    /// Delivers one message; `Ok` carries the provider's id for it when there is one.
    async fn send_message(&self, message: &ChannelMessage) -> Result<Option<String>, SendError>;
}

/// The [`NotificationSender`] side of a [`ChannelSender`]: reads the payload and sends it.
async fn send_outreach_row(
    sender: &(impl ChannelSender + ?Sized),
    name: &str,
    kind: &str,
    payload: &Value,
) -> Result<(), SendError> {
    let message = read_payload(name, kind, payload)?;
    sender.send_message(&message).await.map(|_| ())
}

fn read_payload(name: &str, kind: &str, payload: &Value) -> Result<ChannelMessage, SendError> {
    if kind != KIND_OUTREACH_MESSAGE {
        return Err(SendError::permanent(format!(
            "the {name} sender has no message for outbox kind {kind:?}"
        )));
    }
    serde_json::from_value(payload.clone())
        .map_err(|e| SendError::permanent(format!("unreadable outreach message payload: {e}")))
}

/// Records every attempt at an `outreach_message` row in `outreach_attempts`, then hands the
/// outcome back unchanged; rows of other kinds pass through unrecorded.
pub struct RecordingSender {
    store: Store,
    inner: Arc<dyn ChannelSender>,
}

impl RecordingSender {
    pub fn new(store: Store, inner: Arc<dyn ChannelSender>) -> Self {
        Self { store, inner }
    }

    async fn record(&self, send_id: &str, channel: &str, result: Result<Option<&str>, &SendError>) {
        let (ok, detail) = match result {
            Ok(provider_id) => (true, provider_id),
            Err(error) => (false, Some(error.message.as_str())),
        };
        let now_ms = Utc::now().timestamp_millis();
        if let Err(e) = record_attempt(&self.store, send_id, channel, ok, detail, now_ms).await {
            // The outcome still goes back to the dispatcher: failing a delivered message
            // here would send it again.
            tracing::error!(send_id, channel, ok, error = %e, "could not record an outreach delivery attempt");
        }
    }
}

#[async_trait]
impl NotificationSender for RecordingSender {
    async fn send(&self, channel: &str, kind: &str, payload: &Value) -> Result<(), SendError> {
        if kind != KIND_OUTREACH_MESSAGE {
            return self.inner.send(channel, kind, payload).await;
        }
        let message = match read_payload(channel, kind, payload) {
            Ok(message) => message,
            Err(error) => {
                if let Some(send_id) = payload.get("send_id").and_then(Value::as_str) {
                    self.record(send_id, channel, Err(&error)).await;
                }
                return Err(error);
            }
        };
        // A customer who opted out after the message was queued (or while it waited for a
        // retry) must not get it: checked at each attempt, not only when queueing.
        match kizuna_tools::crm::get_customer(&self.store, &message.customer_id).await {
            Ok(Some(customer)) if customer.opted_out => {
                let error = SendError::permanent("the customer opted out; not sent");
                self.record(&message.send_id, channel, Err(&error)).await;
                return Err(error);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(SendError::retryable(format!(
                    "could not check the customer's opt-out: {e}"
                )))
            }
        }
        let result = self.inner.send_message(&message).await;
        self.record(
            &message.send_id,
            channel,
            result.as_ref().map(Option::as_deref),
        )
        .await;
        result.map(|_| ())
    }
}

/// Sends outreach messages as plain-text email through one SMTP server (channel `email`).
pub struct EmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    subject: String,
    /// The server without credentials, for logs.
    server: String,
}

impl fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSender")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl EmailSender {
    /// Checks the settings (see [`EmailConfig::validate`]); connects only when sending.
    pub fn new(config: &EmailConfig) -> Result<Self, ChannelConfigError> {
        let (transport, from) = config.parts()?;
        Ok(Self {
            transport,
            from,
            subject: config.subject.clone(),
            server: redact_smtp_url(&config.smtp_url),
        })
    }

    fn build(&self, message: &ChannelMessage) -> Result<Message, SendError> {
        let to: Mailbox = message
            .to
            .trim()
            .parse()
            .map_err(|e| SendError::permanent(format!("bad recipient email address: {e}")))?;
        let subject = message
            .subject
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or(&self.subject);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        // The same id on every retry lets receiving systems drop a duplicate.
        if let Some(id) = message_id(&message.send_id, &self.from) {
            builder = builder.message_id(Some(id));
        }
        // Base64 reaches every server, 8BITMIME or not, and keeps Japanese text intact.
        let body = Body::new_with_encoding(message.text.clone(), ContentTransferEncoding::Base64)
            .map_err(|_| SendError::permanent("the email body could not be encoded"))?;
        builder
            .body(body)
            .map_err(|e| SendError::permanent(format!("could not build the email: {e}")))
    }
}

fn message_id(send_id: &str, from: &Mailbox) -> Option<String> {
    let safe = !send_id.is_empty()
        && send_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    safe.then(|| format!("<outreach.{send_id}@{}>", from.email.domain()))
}

/// Transient replies (4xx) and connection trouble are retried; permanent replies (5xx, a
/// rejected recipient) are final, except authentication failures: a wrong password is fixed
/// in the settings, and the queued messages should still go out then.
fn smtp_send_error(error: &lettre::transport::smtp::Error) -> SendError {
    let message = format!("SMTP: {error}");
    let code = error.status().map(u16::from);
    if matches!(code, Some(530 | 534 | 535 | 538)) {
        tracing::error!(
            code,
            "the SMTP server refused authentication; check email.smtp_url"
        );
        return SendError::retryable(message);
    }
    if error.is_permanent() || error.is_client() {
        SendError::permanent(message)
    } else {
        SendError::retryable(message)
    }
}

#[async_trait]
impl ChannelSender for EmailSender {
    async fn send_message(&self, message: &ChannelMessage) -> Result<Option<String>, SendError> {
        let email = self.build(message)?;
        match self.transport.send(email).await {
            Ok(response) => {
                let text = response.message().collect::<Vec<_>>().join(" ");
                tracing::info!(send_id = %message.send_id, server = %self.server, "outreach email accepted");
                Ok(Some(format!("{} {}", response.code(), text.trim())))
            }
            Err(e) => Err(smtp_send_error(&e)),
        }
    }
}

#[async_trait]
impl NotificationSender for EmailSender {
    async fn send(&self, _channel: &str, kind: &str, payload: &Value) -> Result<(), SendError> {
        send_outreach_row(self, "email", kind, payload).await
    }
}

/// Posts outreach messages as JSON to one URL (channel `webhook`), e.g. an SMS gateway.
///
/// Body: `{send_id, customer_id, to, text, campaign_id, variant, trigger}`, with
/// `Idempotency-Key: <send_id>`. 2xx is delivered (the provider's id from the JSON body's
/// `id`, when present); 408, 429, 5xx and network failures are retried (honouring
/// `Retry-After`); other answers are final.
pub struct WebhookSender {
    url: String,
    /// A secret; never logged.
    bearer_token: Option<String>,
    client: reqwest::Client,
}

impl fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("url", &redact_webhook_url(&self.url))
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    pub fn new(config: &WebhookConfig) -> Result<Self, ChannelConfigError> {
        config.validate()?;
        let timeout = Duration::from_secs(config.timeout_secs);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A receiver that moved is a settings problem; following it could post the
            // customer's number somewhere unintended.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ChannelConfigError::HttpClient(error_chain(&e.without_url())))?;
        Ok(Self {
            url: config.url.trim().to_string(),
            bearer_token: config
                .bearer_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            client,
        })
    }
}

#[async_trait]
impl ChannelSender for WebhookSender {
    async fn send_message(&self, message: &ChannelMessage) -> Result<Option<String>, SendError> {
        let body = json!({
            "send_id": message.send_id,
            "customer_id": message.customer_id,
            "to": message.to,
            "text": message.text,
            "campaign_id": message.campaign_id,
            "variant": message.variant,
            "trigger": message.trigger,
        });
        let mut request = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &message.send_id)
            .json(&body);
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            SendError::retryable(format!(
                "webhook request {what}: {}",
                error_chain(&e.without_url())
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            let text = response.text().await.unwrap_or_default();
            tracing::info!(send_id = %message.send_id, status = status.as_u16(), "outreach webhook accepted");
            return Ok(provider_id(&text));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = response.text().await.unwrap_or_default();
        let error = format!(
            "webhook answered {status}: {}",
            truncate_chars(text.trim(), MAX_BODY_EXCERPT_CHARS)
        );
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            return Err(SendError {
                retryable: true,
                retry_after,
                message: error,
            });
        }
        if matches!(code, 401 | 403) {
            tracing::error!(
                status = code,
                "the outreach webhook refused the request; check webhook.bearer_token"
            );
        }
        Err(SendError::permanent(error))
    }
}

#[async_trait]
impl NotificationSender for WebhookSender {
    async fn send(&self, _channel: &str, kind: &str, payload: &Value) -> Result<(), SendError> {
        send_outreach_row(self, "webhook", kind, payload).await
    }
}

/// The `id` of a JSON response body (a string or a number), if any.
fn provider_id(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    match value.get("id")? {
        Value::String(id) if !id.trim().is_empty() => Some(id.trim().to_string()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// Scheme, host, port and the `tls` setting; the user and password become `***`.
fn redact_smtp_url(raw: &str) -> String {
    let Ok(url) = reqwest::Url::parse(raw.trim()) else {
        return "<unparsable SMTP URL>".into();
    };
    let credentials = if !url.username().is_empty() || url.password().is_some() {
        "***@"
    } else {
        ""
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| format!("?tls={v}"))
        .unwrap_or_default();
    format!(
        "{}://{credentials}{}{port}{tls}",
        url.scheme(),
        url.host_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests;
