//! The channels against real protocols on 127.0.0.1: a minimal SMTP server, an axum webhook
//! receiver, a temporary SQLite store and the notify crate's dispatcher.

use sqlx::Row;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use kizuna_notify::{Dispatcher, DispatcherConfig};
use kizuna_tools::crm::CustomerKind;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

use super::*;
use crate::trigger::Trigger;

const TEXT: &str =
    "山田様、今月の測定回数が減っています。\nご不明点があればお気軽にご相談ください。";

fn message(send_id: &str) -> ChannelMessage {
    ChannelMessage {
        send_id: send_id.into(),
        customer_id: "C-0001".into(),
        to: "yamada@example.jp".into(),
        subject: Some("【ZENBU】測定のご案内".into()),
        text: email_body(TEXT),
        campaign_id: "usage_drop".into(),
        variant: "A".into(),
        trigger: "usage_drop".into(),
    }
}

fn outbound(send_id: &str) -> OutboundMessage {
    OutboundMessage {
        send_id: send_id.into(),
        customer_id: "C-0001".into(),
        text: TEXT.into(),
        campaign_id: "usage_drop".into(),
        trigger: Trigger::UsageDrop,
        variant: "B".into(),
    }
}

fn customer(email: Option<&str>, phone: Option<&str>) -> Customer {
    let mut customer = Customer::new("C-0001", CustomerKind::B2c, "山田 太郎");
    customer.email = email.map(str::to_string);
    customer.phone = phone.map(str::to_string);
    customer
}

fn now() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2025-06-02T10:00:00+09:00").expect("valid time")
}

async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("kizuna.db").display()
    );
    let store = Store::connect(&url).await.expect("connect");
    (dir, store)
}

/// The `outreach_sends` row that attempts refer to (foreign key).
async fn insert_send(store: &Store, send_id: &str) {
    sqlx::query(
        "INSERT INTO outreach_sends (id, customer_id, trigger_slug, cause_key, campaign_id, variant, status, created_at)
         VALUES ($1, 'C-0001', 'usage_drop', '2025-06', 'usage_drop', 'B', 'sent', $2)",
    )
    .bind(send_id)
    .bind(now().timestamp_millis())
    .execute(store.pool())
    .await
    .expect("insert send");
}

#[derive(Debug)]
struct OutboxRow {
    id: String,
    channel: String,
    kind: String,
    payload: ChannelMessage,
    status: String,
}

async fn outbox_rows(store: &Store) -> Vec<OutboxRow> {
    sqlx::query("SELECT id, channel, kind, payload, status FROM outbox ORDER BY channel")
        .fetch_all(store.pool())
        .await
        .expect("read outbox")
        .iter()
        .map(|r| OutboxRow {
            id: r.get("id"),
            channel: r.get("channel"),
            kind: r.get("kind"),
            payload: serde_json::from_str(&r.get::<String, _>("payload")).expect("payload"),
            status: r.get("status"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// A minimal SMTP server.

#[derive(Debug, Default, Clone)]
struct ReceivedMail {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// Answers every command positively except RCPT, which gets `rcpt_reply`; each accepted
/// message is sent to the returned receiver.
async fn smtp_server(rcpt_reply: &'static str) -> (String, mpsc::UnboundedReceiver<ReceivedMail>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("smtp://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_smtp(stream, rcpt_reply, tx.clone()));
        }
    });
    (url, rx)
}

async fn serve_smtp(
    stream: TcpStream,
    rcpt_reply: &'static str,
    received: mpsc::UnboundedSender<ReceivedMail>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 test.local ESMTP\r\n").await?;
    let mut mail = ReceivedMail::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" | "HELO" => "250 test.local",
            "MAIL" => {
                mail = ReceivedMail {
                    mail_from: command.clone(),
                    ..ReceivedMail::default()
                };
                "250 2.1.0 Ok"
            }
            "RCPT" => {
                mail.rcpt_to.push(command.clone());
                rcpt_reply
            }
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    mail.data.push_str(&line);
                }
                let _ = received.send(std::mem::take(&mut mail));
                "250 2.0.0 Ok: queued as TEST123"
            }
            "RSET" | "NOOP" => "250 2.0.0 Ok",
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized",
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// The unfolded value of a header.
fn header(data: &str, name: &str) -> Option<String> {
    let head = data.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// Decodes RFC 2047 B-encoded words (the whitespace between them is not part of the text).
fn decode_encoded_words(value: &str) -> String {
    let mut bytes = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("=?") {
        bytes.extend_from_slice(rest[..start].trim().as_bytes());
        let word = &rest[start + 2..];
        let end = word.find("?=").expect("encoded word end");
        let mut parts = word[..end].splitn(3, '?');
        let (_charset, encoding, text) = (
            parts.next().expect("charset"),
            parts.next().expect("encoding"),
            parts.next().expect("text"),
        );
        assert!(
            encoding.eq_ignore_ascii_case("b"),
            "B encoding expected: {value}"
        );
        bytes.extend(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("base64 word"),
        );
        rest = &word[end + 2..];
    }
    bytes.extend_from_slice(rest.trim().as_bytes());
    String::from_utf8(bytes).expect("utf-8 subject")
}

fn decoded_body(data: &str) -> String {
    assert_eq!(
        header(data, "Content-Transfer-Encoding").as_deref(),
        Some("base64")
    );
    let (_, body) = data.split_once("\r\n\r\n").expect("body");
    let joined: String = body.split_whitespace().collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(joined)
        .expect("base64 body");
    String::from_utf8(bytes).expect("utf-8 body")
}

#[tokio::test]
async fn email_sender_delivers_a_plain_text_mail_with_the_opt_out_footer() {
    let (url, mut received) = smtp_server("250 2.1.5 Ok").await;
    let sender =
        EmailSender::new(&EmailConfig::new(url, "ZENBU <support@zenbu.example>")).expect("sender");

    let provider = sender
        .send_message(&message("send-1"))
        .await
        .expect("accepted");
    assert_eq!(provider.as_deref(), Some("250 2.0.0 Ok: queued as TEST123"));

    let mail = received.recv().await.expect("a mail");
    assert_eq!(mail.mail_from, "MAIL FROM:<support@zenbu.example>");
    assert_eq!(mail.rcpt_to, ["RCPT TO:<yamada@example.jp>"]);
    let from = header(&mail.data, "From").expect("From");
    assert!(from.contains("<support@zenbu.example>"), "{from}");
    assert_eq!(
        header(&mail.data, "To").as_deref(),
        Some("yamada@example.jp")
    );
    let subject = header(&mail.data, "Subject").expect("Subject");
    assert_eq!(decode_encoded_words(&subject), "【ZENBU】測定のご案内");
    assert_eq!(
        header(&mail.data, "Message-ID").as_deref(),
        Some("<outreach.send-1@zenbu.example>")
    );
    assert!(header(&mail.data, "Content-Type")
        .expect("Content-Type")
        .starts_with("text/plain"));
    let body = decoded_body(&mail.data).replace("\r\n", "\n");
    assert!(body.starts_with(TEXT), "{body}");
    assert!(body.contains("「配信停止」とご返信"), "{body}");
    assert!(body.ends_with(EMAIL_OPT_OUT_FOOTER), "{body}");
}

#[tokio::test]
async fn email_sender_uses_the_configured_subject_when_the_message_has_none() {
    let (url, mut received) = smtp_server("250 2.1.5 Ok").await;
    let sender = EmailSender::new(&EmailConfig::new(url, "support@zenbu.example")).expect("sender");
    let mut plain = message("send-2");
    plain.subject = None;
    sender.send_message(&plain).await.expect("accepted");
    let mail = received.recv().await.expect("a mail");
    let subject = header(&mail.data, "Subject").expect("Subject");
    assert_eq!(decode_encoded_words(&subject), "【ZENBU】ご案内");
}

#[tokio::test]
async fn a_rejected_recipient_is_permanent_and_a_busy_server_is_retried() {
    let (url, _received) =
        smtp_server("550 5.1.1 <yamada@example.jp>: Recipient address rejected").await;
    let sender = EmailSender::new(&EmailConfig::new(url, "support@zenbu.example")).expect("sender");
    let error = sender
        .send_message(&message("send-3"))
        .await
        .expect_err("rejected");
    assert!(!error.retryable, "{error:?}");
    assert!(error.message.contains("550"), "{error:?}");

    let (url, _received) = smtp_server("451 4.3.0 Try again later").await;
    let sender = EmailSender::new(&EmailConfig::new(url, "support@zenbu.example")).expect("sender");
    let error = sender
        .send_message(&message("send-3"))
        .await
        .expect_err("deferred");
    assert!(error.retryable, "{error:?}");
    assert!(error.message.contains("451"), "{error:?}");
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_retried_and_a_bad_address_is_not() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let sender = EmailSender::new(&EmailConfig::new(
        format!("smtp://{addr}"),
        "support@zenbu.example",
    ))
    .expect("sender");
    let error = sender
        .send_message(&message("send-4"))
        .await
        .expect_err("refused");
    assert!(error.retryable, "{error:?}");

    let mut bad = message("send-4");
    bad.to = "not an address".into();
    let error = sender.send_message(&bad).await.expect_err("bad address");
    assert!(!error.retryable, "{error:?}");
    assert!(error.message.contains("recipient"), "{error:?}");
}

#[test]
fn email_settings_are_checked_and_credentials_are_redacted() {
    let config = EmailConfig::new(
        "smtps://mailer:s3cret-pass@smtp.example.com:465",
        "ZENBU <support@zenbu.example>",
    );
    config.validate().expect("valid");
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("s3cret-pass") && !shown.contains("mailer"),
        "{shown}"
    );
    assert!(
        shown.contains("smtps://***@smtp.example.com:465"),
        "{shown}"
    );
    let sender = EmailSender::new(&config).expect("sender");
    let shown = format!("{sender:?}");
    assert!(!shown.contains("s3cret-pass"), "{shown}");

    EmailConfig::new(
        "smtp://smtp.example.com:587?tls=required",
        "support@zenbu.example",
    )
    .validate()
    .expect("STARTTLS URL");

    let bad_url = EmailConfig::new("http://smtp.example.com", "support@zenbu.example");
    assert!(matches!(
        bad_url.validate(),
        Err(ChannelConfigError::SmtpUrl(_))
    ));
    let bad_tls = EmailConfig::new("smtp://smtp.example.com?tls=maybe", "support@zenbu.example");
    assert!(matches!(
        bad_tls.validate(),
        Err(ChannelConfigError::SmtpUrl(_))
    ));
    let bad_from = EmailConfig::new("smtp://smtp.example.com", "ZENBU support");
    assert!(matches!(
        bad_from.validate(),
        Err(ChannelConfigError::From(_))
    ));
    let error = EmailSender::new(&bad_from).expect_err("bad from");
    assert!(error.to_string().contains("email.from"), "{error}");
    let mut no_subject = EmailConfig::new("smtp://smtp.example.com", "support@zenbu.example");
    no_subject.subject = " ".into();
    assert_eq!(no_subject.validate(), Err(ChannelConfigError::EmptySubject));
}

// ---------------------------------------------------------------------------------------
// An axum webhook receiver.

type Reply = (u16, Vec<(&'static str, &'static str)>, &'static str);

#[derive(Default)]
struct Hook {
    /// Answers in order; afterwards 200 `{"id": "sms-default"}`.
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<(HeaderMap, Value)>>,
}

impl Hook {
    fn requests(&self) -> Vec<(HeaderMap, Value)> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn receive(
    State(hook): State<Arc<Hook>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    hook.requests.lock().expect("lock").push((headers, body));
    let reply = hook.replies.lock().expect("lock").pop_front();
    let (status, headers, body) = reply.unwrap_or((200, vec![], r#"{"id":"sms-default"}"#));
    let mut response = (StatusCode::from_u16(status).expect("status"), body).into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

async fn hook_server(replies: Vec<Reply>) -> (String, Arc<Hook>) {
    let hook = Arc::new(Hook {
        replies: Mutex::new(replies.into()),
        ..Hook::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/sms/secret-path", post(receive))
        .with_state(hook.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (format!("http://{addr}/sms/secret-path"), hook)
}

fn webhook_config(url: &str) -> WebhookConfig {
    WebhookConfig {
        bearer_token: Some("tok-123".into()),
        ..WebhookConfig::new(url)
    }
}

fn sms(send_id: &str) -> ChannelMessage {
    ChannelMessage {
        to: "090-1234-5678".into(),
        subject: None,
        text: TEXT.into(),
        ..message(send_id)
    }
}

#[tokio::test]
async fn webhook_posts_the_message_with_the_token_and_returns_the_provider_id() {
    let (url, hook) =
        hook_server(vec![(201, vec![], r#"{"id":"sms-777","status":"queued"}"#)]).await;
    let sender = WebhookSender::new(&webhook_config(&url)).expect("sender");

    let provider = sender
        .send_message(&sms("send-10"))
        .await
        .expect("accepted");
    assert_eq!(provider.as_deref(), Some("sms-777"));

    let requests = hook.requests();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Bearer tok-123")
    );
    assert_eq!(
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()),
        Some("send-10")
    );
    assert_eq!(
        body,
        &json!({
            "send_id": "send-10",
            "customer_id": "C-0001",
            "to": "090-1234-5678",
            "text": TEXT,
            "campaign_id": "usage_drop",
            "variant": "A",
            "trigger": "usage_drop",
        })
    );

    // A 2xx without a JSON id is delivered too, without a provider id.
    let (url, _hook) = hook_server(vec![(204, vec![], "")]).await;
    let sender = WebhookSender::new(&WebhookConfig::new(url)).expect("sender");
    assert_eq!(sender.send_message(&sms("send-11")).await, Ok(None));
}

#[tokio::test]
async fn webhook_failures_are_classified() {
    let (url, hook) = hook_server(vec![
        (500, vec![], "upstream down"),
        (400, vec![], r#"{"error":"invalid number"}"#),
        (429, vec![("retry-after", "7")], "slow down"),
        (401, vec![], "unauthorized"),
    ])
    .await;
    let sender = WebhookSender::new(&webhook_config(&url)).expect("sender");

    let error = sender.send_message(&sms("send-12")).await.expect_err("500");
    assert!(error.retryable && error.retry_after.is_none(), "{error:?}");
    assert!(
        error.message.contains("500") && error.message.contains("upstream down"),
        "{error:?}"
    );

    let error = sender.send_message(&sms("send-12")).await.expect_err("400");
    assert!(!error.retryable, "{error:?}");
    assert!(error.message.contains("invalid number"), "{error:?}");

    let error = sender.send_message(&sms("send-12")).await.expect_err("429");
    assert!(error.retryable, "{error:?}");
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));

    let error = sender.send_message(&sms("send-12")).await.expect_err("401");
    assert!(!error.retryable, "{error:?}");
    assert_eq!(hook.requests().len(), 4);
    // The URL's secret path and the token never reach the error text.
    for request in hook.requests() {
        assert_eq!(request.1["send_id"], "send-12");
    }
    assert!(!error.message.contains("secret-path") && !error.message.contains("tok-123"));
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let sender = WebhookSender::new(&webhook_config(&format!("http://{addr}/sms/secret-path")))
        .expect("sender");
    let error = sender
        .send_message(&sms("send-13"))
        .await
        .expect_err("refused");
    assert!(error.retryable, "{error:?}");
    assert!(!error.message.contains("secret-path"), "{error:?}");
}

#[test]
fn webhook_settings_are_checked_and_secrets_are_redacted() {
    let config = webhook_config("https://sms.example.com/hooks/abc-secret?key=k-secret");
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("tok-123") && !shown.contains("abc-secret") && !shown.contains("k-secret"),
        "{shown}"
    );
    assert!(shown.contains("https://sms.example.com/***"), "{shown}");
    let sender = WebhookSender::new(&config).expect("sender");
    let shown = format!("{sender:?}");
    assert!(
        !shown.contains("tok-123") && !shown.contains("abc-secret"),
        "{shown}"
    );

    assert_eq!(
        WebhookConfig::new("ftp://sms.example.com").validate(),
        Err(ChannelConfigError::WebhookUrl)
    );
    assert_eq!(
        WebhookConfig::new("not a url").validate(),
        Err(ChannelConfigError::WebhookUrl)
    );
    let mut slow = WebhookConfig::new("https://sms.example.com");
    slow.timeout_secs = 0;
    assert_eq!(slow.validate(), Err(ChannelConfigError::WebhookTimeout));
}

#[test]
fn channels_config_reads_from_toml_with_defaults() {
    let config: ChannelsConfig = toml::from_str(
        r#"
        when = "always"
        [email]
        smtp_url = "smtp://127.0.0.1:2525"
        from = "ZENBU <support@zenbu.example>"
        [webhook]
        url = "https://sms.example.com/send"
        bearer_token = "t"
        "#,
    )
    .expect("parse");
    assert_eq!(config.when, ChannelPolicy::Always);
    let email = config.email.as_ref().expect("email");
    assert_eq!(email.subject, "【ZENBU】ご案内");
    assert_eq!(config.webhook.as_ref().expect("webhook").timeout_secs, 10);
    config.validate().expect("valid");

    let none: ChannelsConfig = toml::from_str("").expect("empty");
    assert_eq!(none, ChannelsConfig::default());
    assert_eq!(none.when, ChannelPolicy::Offline);
    assert!(toml::from_str::<ChannelsConfig>("sms = true").is_err());
    assert!(
        toml::from_str::<ChannelsConfig>("[webhook]\nurl = \"https://x\"\ntoken = \"t\"").is_err()
    );
}

// ---------------------------------------------------------------------------------------
// Queueing and recording.

#[tokio::test]
async fn messages_are_queued_per_policy_and_address() {
    let (_dir, store) = temp_store().await;
    let config = ChannelsConfig {
        email: Some(EmailConfig::new(
            "smtp://127.0.0.1:2525",
            "support@zenbu.example",
        )),
        webhook: Some(WebhookConfig::new("https://sms.example.com/send")),
        line: None,
        when: ChannelPolicy::Offline,
    };
    let both = customer(Some("yamada@example.jp"), Some("090-1234-5678"));

    // Offline policy: a live chat delivery is enough.
    let queued = enqueue_channel_messages(&store, &config, &both, &outbound("s-live"), true, now())
        .await
        .expect("enqueue");
    assert!(queued.is_empty());
    assert!(outbox_rows(&store).await.is_empty());

    let queued = enqueue_channel_messages(&store, &config, &both, &outbound("s-1"), false, now())
        .await
        .expect("enqueue");
    assert_eq!(queued, [CHANNEL_EMAIL, CHANNEL_WEBHOOK]);
    let rows = outbox_rows(&store).await;
    assert_eq!(rows.len(), 2);
    let email = &rows[0];
    assert_eq!(
        (email.channel.as_str(), email.kind.as_str()),
        ("email", "outreach_message")
    );
    assert_eq!(email.status, "pending");
    assert_eq!(email.id, "outreach:s-1:email");
    assert_eq!(
        email.payload,
        ChannelMessage {
            send_id: "s-1".into(),
            customer_id: "C-0001".into(),
            to: "yamada@example.jp".into(),
            subject: Some("【ZENBU】ご案内".into()),
            text: format!("{TEXT}{EMAIL_OPT_OUT_FOOTER}"),
            campaign_id: "usage_drop".into(),
            variant: "B".into(),
            trigger: "usage_drop".into(),
        }
    );
    let webhook = &rows[1];
    assert_eq!(
        (webhook.channel.as_str(), webhook.kind.as_str()),
        ("webhook", "outreach_message")
    );
    assert_eq!(webhook.payload.to, "090-1234-5678");
    assert_eq!(webhook.payload.subject, None);
    assert_eq!(webhook.payload.text, TEXT);

    // The same send again queues nothing more.
    let again = enqueue_channel_messages(&store, &config, &both, &outbound("s-1"), false, now())
        .await
        .expect("enqueue");
    assert!(again.is_empty());
    assert_eq!(outbox_rows(&store).await.len(), 2);

    // Always policy: queued after a live delivery too, but only where there is an address.
    let always = ChannelsConfig {
        when: ChannelPolicy::Always,
        ..config.clone()
    };
    let phone_only = customer(None, Some("080-0000-1111"));
    let queued =
        enqueue_channel_messages(&store, &always, &phone_only, &outbound("s-2"), true, now())
            .await
            .expect("enqueue");
    assert_eq!(queued, [CHANNEL_WEBHOOK]);
    let blank_email = customer(Some("  "), None);
    let queued =
        enqueue_channel_messages(&store, &always, &blank_email, &outbound("s-3"), true, now())
            .await
            .expect("enqueue");
    assert!(queued.is_empty());

    // An opted-out customer gets nothing; no channels configured, nothing either.
    let mut opted_out = both.clone();
    opted_out.opted_out = true;
    let queued =
        enqueue_channel_messages(&store, &always, &opted_out, &outbound("s-4"), false, now())
            .await
            .expect("enqueue");
    assert!(queued.is_empty());
    let queued = enqueue_channel_messages(
        &store,
        &ChannelsConfig::default(),
        &both,
        &outbound("s-5"),
        false,
        now(),
    )
    .await
    .expect("enqueue");
    assert!(queued.is_empty());
    assert_eq!(outbox_rows(&store).await.len(), 3);
}

#[tokio::test]
async fn recording_sender_numbers_every_attempt_and_passes_other_kinds_through() {
    let (_dir, store) = temp_store().await;
    insert_send(&store, "send-20").await;
    let (url, _hook) = hook_server(vec![
        (503, vec![], "maintenance"),
        (400, vec![], "bad number"),
        (200, vec![], r#"{"id":42}"#),
    ])
    .await;
    let recording = RecordingSender::new(
        store.clone(),
        Arc::new(WebhookSender::new(&WebhookConfig::new(url)).expect("sender")),
    );
    let payload = serde_json::to_value(sms("send-20")).expect("payload");

    let first = recording
        .send("webhook", KIND_OUTREACH_MESSAGE, &payload)
        .await;
    assert!(first.expect_err("503").retryable);
    let second = recording
        .send("webhook", KIND_OUTREACH_MESSAGE, &payload)
        .await;
    assert!(!second.expect_err("400").retryable);
    recording
        .send("webhook", KIND_OUTREACH_MESSAGE, &payload)
        .await
        .expect("200");

    let attempts = attempts_for(&store, "send-20").await.expect("attempts");
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.channel.as_str(), a.attempt, a.ok))
        .collect();
    assert_eq!(
        summary,
        [
            ("webhook", 1, false),
            ("webhook", 2, false),
            ("webhook", 3, true)
        ]
    );
    assert!(attempts[0]
        .detail
        .as_deref()
        .unwrap_or_default()
        .contains("maintenance"));
    assert!(attempts[1]
        .detail
        .as_deref()
        .unwrap_or_default()
        .contains("bad number"));
    assert_eq!(attempts[2].detail.as_deref(), Some("42"));

    // Another kind goes to the inner sender (which has no message for it), unrecorded.
    let other = recording
        .send("webhook", "escalation", &json!({"send_id": "send-20"}))
        .await
        .expect_err("not an outreach message");
    assert!(!other.retryable);
    // An unreadable outreach payload is a permanent failure, recorded when it names a send.
    let unreadable = recording
        .send(
            "webhook",
            KIND_OUTREACH_MESSAGE,
            &json!({"send_id": "send-20"}),
        )
        .await
        .expect_err("unreadable");
    assert!(!unreadable.retryable);
    let attempts = attempts_for(&store, "send-20").await.expect("attempts");
    assert_eq!(attempts.len(), 4);
    assert_eq!((attempts[3].attempt, attempts[3].ok), (4, false));
    assert!(attempts_for(&store, "no-such-send")
        .await
        .expect("attempts")
        .is_empty());
}

#[tokio::test]
async fn a_customer_who_opted_out_after_queueing_is_not_sent_to() {
    let (_dir, store) = temp_store().await;
    insert_send(&store, "send-30").await;
    sqlx::query(
        "INSERT INTO customers (id, kind, name, opted_out, created_at, updated_at)
         VALUES ('C-0001', 'b2c', '山田', 1, 1, 1)",
    )
    .execute(store.pool())
    .await
    .expect("customer");
    let (url, hook) = hook_server(vec![]).await;
    let recording = RecordingSender::new(
        store.clone(),
        Arc::new(WebhookSender::new(&WebhookConfig::new(url)).expect("sender")),
    );
    let payload = serde_json::to_value(sms("send-30")).expect("payload");
    let refused = recording
        .send("webhook", KIND_OUTREACH_MESSAGE, &payload)
        .await
        .expect_err("opted out");
    assert!(!refused.retryable, "a permanent refusal: no retries");
    assert!(hook.requests().is_empty(), "nothing reached the provider");
    let attempts = attempts_for(&store, "send-30").await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert!(!attempts[0].ok);
    assert!(attempts[0]
        .detail
        .as_deref()
        .unwrap_or_default()
        .contains("opted out"));
}

#[tokio::test]
async fn the_dispatcher_retries_a_webhook_message_and_every_attempt_is_recorded() {
    let (_dir, store) = temp_store().await;
    insert_send(&store, "send-30").await;
    let (url, hook) = hook_server(vec![(500, vec![], "temporarily broken")]).await;
    let config = ChannelsConfig {
        webhook: Some(WebhookConfig {
            bearer_token: Some("tok-123".into()),
            ..WebhookConfig::new(url)
        }),
        ..ChannelsConfig::default()
    };
    let queued = enqueue_channel_messages(
        &store,
        &config,
        &customer(Some("yamada@example.jp"), Some("090-1234-5678")),
        &outbound("send-30"),
        false,
        now(),
    )
    .await
    .expect("enqueue");
    assert_eq!(queued, [CHANNEL_WEBHOOK]);

    let senders = config.senders(&store).expect("senders");
    assert_eq!(senders.keys().collect::<Vec<_>>(), ["webhook"]);
    let dispatcher_config = DispatcherConfig {
        poll_interval: Duration::from_millis(10),
        claim_lease: Duration::from_secs(30),
        max_attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        min_send_interval: Duration::ZERO,
        ..DispatcherConfig::default()
    };
    let (stop, stopped) = watch::channel(false);
    let dispatcher = tokio::spawn(Dispatcher::run(
        store.clone(),
        senders,
        dispatcher_config,
        Arc::new(Notify::new()),
        stopped,
    ));

    // Polls the outbox until the row is sent; the bound only guards against a hang.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = outbox_rows(&store).await;
        if rows[0].status == "sent" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not sent: {rows:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).expect("stop");
    dispatcher.await.expect("dispatcher stopped");

    let attempts = attempts_for(&store, "send-30").await.expect("attempts");
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.channel.as_str(), a.attempt, a.ok))
        .collect();
    assert_eq!(summary, [("webhook", 1, false), ("webhook", 2, true)]);
    assert!(attempts[0]
        .detail
        .as_deref()
        .unwrap_or_default()
        .contains("500"));
    assert_eq!(attempts[1].detail.as_deref(), Some("sms-default"));
    let requests = hook.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].1["to"], "090-1234-5678");
    assert_eq!(requests[1].1["variant"], "B");

    let row = store
        .outbox_state("outreach:send-30:webhook")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.attempts, 2);
    assert_eq!(row.last_error, None);
}
