//! Slack incoming-webhook notices: the Block Kit message for an escalation and the sender
//! that posts it.
//!
//! Everything a customer (or the model summarising them) wrote is escaped for mrkdwn, so
//! text such as `<!channel>` or `<https://evil|x>` shows literally instead of pinging the
//! channel or hiding a link.

use std::fmt;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, FixedOffset};
use serde_json::{json, Value};

use crate::{
    EscalationNotice, NotificationSender, OutreachTaskNotice, SendError, KIND_ESCALATION,
    KIND_OUTREACH_TASK,
};

/// The outbox channel this sender serves.
pub const CHANNEL: &str = "slack";
/// Environment variable holding the webhook URL (a secret).
pub const WEBHOOK_URL_ENV: &str = "KIZUNA_SLACK_WEBHOOK_URL";

/// Messages quoted in a notice (the most recent ones).
const MAX_QUOTED_MESSAGES: usize = 5;
/// Characters kept of each quoted message; keeps a section well under Slack's 3,000 even
/// when escaping quintuples it.
const MAX_QUOTED_CHARS: usize = 300;
const MAX_DETAIL_CHARS: usize = 500;
const MAX_FIELD_CHARS: usize = 200;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A `Retry-After` beyond this is treated as this (a broken header must not park a notice).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Escapes text for Slack mrkdwn: `&`, `<` and `>` become entities, so no mention,
/// special command or link can be formed from it.
pub fn escape_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// The Japanese label of an escalation reason; unknown names are shown as they are.
pub fn reason_label(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "legal" => "法的相談",
        "negative_sentiment" => "強い不満・不安",
        "refund_or_cancel" => "返金・解約",
        "complaint" => "苦情",
        "unresolved" => "未解決",
        "customer_request" => "担当者希望",
        _ => return None,
    })
}

fn role_label(role: &str) -> String {
    match role {
        "customer" => "お客様".into(),
        "bot" => "AI".into(),
        "human" => "担当者".into(),
        other => escape_mrkdwn(other),
    }
}

/// Keeps the first `max` characters (not bytes), marking a cut with `…`.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Customer text, truncated then escaped (truncating first never splits an entity).
fn customer_text(text: &str, max: usize) -> String {
    escape_mrkdwn(&truncate_chars(text.trim(), max))
}

fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("+09:00 is a valid offset")
}

/// `2025/06/02 14:05（JST）`, or the raw value (escaped) when it is not RFC 3339.
fn jst_time_label(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => format!(
            "{}（JST）",
            t.with_timezone(&jst()).format("%Y/%m/%d %H:%M")
        ),
        Err(_) => escape_mrkdwn(rfc3339),
    }
}

fn is_button_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 3000
}

/// The Block Kit message for an escalation: header, customer fields, the summary, the last
/// messages quoted, and a button to take the conversation over. `text` is the fallback
/// shown in notifications.
pub fn escalation_blocks(notice: &EscalationNotice) -> Value {
    let reason = reason_label(&notice.reason)
        .map(str::to_string)
        .unwrap_or_else(|| escape_mrkdwn(&notice.reason));
    let header_reason = reason_label(&notice.reason)
        .map(str::to_string)
        .unwrap_or_else(|| truncate_chars(&notice.reason, 40));
    let customer_id = notice
        .customer_id
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| customer_text(s, MAX_FIELD_CHARS))
        .unwrap_or_else(|| "（未登録）".into());
    let customer_name = notice
        .customer_name
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| format!("{} 様", customer_text(s, MAX_FIELD_CHARS)));
    let time = jst_time_label(&notice.escalated_at);

    let who = customer_name
        .clone()
        .unwrap_or_else(|| format!("お客様ID {customer_id}"));
    let fallback = format!("担当者の対応が必要です（{reason}）：{who}");

    let mut blocks = vec![
        json!({
            "type": "header",
            // plain_text is never parsed as mrkdwn; 150 characters at most.
            "text": {"type": "plain_text", "text": format!("担当者の対応が必要です（{header_reason}）"), "emoji": true},
        }),
        json!({
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": format!("*お客様ID*\n{customer_id}")},
                {"type": "mrkdwn", "text": format!("*お名前*\n{}", customer_name.unwrap_or_else(|| "（不明）".into()))},
                {"type": "mrkdwn", "text": format!("*理由*\n{reason}")},
                {"type": "mrkdwn", "text": format!("*日時*\n{time}")},
            ],
        }),
    ];
    if !notice.detail.trim().is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("*概要*\n{}", customer_text(&notice.detail, MAX_DETAIL_CHARS))},
        }));
    }
    let skip = notice
        .last_messages
        .len()
        .saturating_sub(MAX_QUOTED_MESSAGES);
    let quoted: Vec<_> = notice.last_messages.iter().skip(skip).collect();
    if !quoted.is_empty() {
        blocks.push(json!({"type": "divider"}));
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*直近のやり取り*"},
        }));
        // One section per message: each stays under Slack's 3,000-character limit.
        for message in quoted {
            let body = customer_text(&message.text, MAX_QUOTED_CHARS);
            let quote = body
                .lines()
                .map(|line| format!(">{line}"))
                .collect::<Vec<_>>()
                .join("\n");
            blocks.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!("*{}*\n{quote}", role_label(&message.role))},
            }));
        }
    }
    if is_button_url(&notice.takeover_url) {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "action_id": "takeover",
                "style": "primary",
                "text": {"type": "plain_text", "text": "会話を引き継ぐ", "emoji": true},
                "url": notice.takeover_url,
            }],
        }));
    } else {
        // Slack rejects a button with a bad URL; the notice still goes out, with the link as text.
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("引き継ぎ用リンク：{}", escape_mrkdwn(&notice.takeover_url))}],
        }));
    }
    json!({"text": fallback, "blocks": blocks})
}

/// The Japanese label of an outreach trigger; unknown slugs are shown as they are.
fn trigger_label(trigger: &str) -> Option<&'static str> {
    Some(match trigger {
        "health_red" => "ヘルススコア赤",
        "usage_drop" => "利用率低下",
        "payment_overdue_7" => "支払い遅延7日",
        "payment_overdue_14" => "支払い遅延14日",
        "payment_overdue_21" => "支払い遅延21日",
        "low_nps" => "NPS低評価",
        "renewal_90d_at_risk" => "更新90日前（要注意）",
        "renewal_90d_healthy" => "更新90日前（良好）",
        "onboarding_video_unwatched" => "オンボーディング未視聴",
        "onboarding_first_measurement_pending" => "初回測定の後押し",
        _ => return None,
    })
}

/// The Block Kit message for an outreach task: what a person must do, for whom, the draft
/// quoted, and a link to the console.
pub fn outreach_task_blocks(notice: &OutreachTaskNotice) -> Value {
    let title = match notice.task.as_str() {
        "approval" => "重要顧客へのご案内：送信前に承認してください",
        "human_task" => "担当者の対応が必要です（自動送信の代わり）",
        "csm_alert" => "NPS低評価：CSMの確認が必要です（ご案内は送信済み）",
        _ => "プロアクティブ配信：担当者の確認が必要です",
    };
    let trigger = trigger_label(&notice.trigger)
        .map(str::to_string)
        .unwrap_or_else(|| escape_mrkdwn(&notice.trigger));
    let name = notice
        .customer_name
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| format!("{} 様", customer_text(s, MAX_FIELD_CHARS)))
        .unwrap_or_else(|| "（不明）".into());
    let customer_id = customer_text(&notice.customer_id, MAX_FIELD_CHARS);
    let quote = customer_text(&notice.draft, MAX_DETAIL_CHARS)
        .lines()
        .map(|line| format!(">{line}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": title, "emoji": true}}),
        json!({
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": format!("*お客様ID*\n{customer_id}")},
                {"type": "mrkdwn", "text": format!("*お名前*\n{name}")},
                {"type": "mrkdwn", "text": format!("*トリガー*\n{trigger}")},
                {"type": "mrkdwn", "text": format!("*日時*\n{}", jst_time_label(&notice.created_at))},
            ],
        }),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*文面*\n{quote}")}}),
        json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("送信ID：{}", escape_mrkdwn(&notice.send_id))}],
        }),
    ];
    if let Some(url) = notice.console_url.as_deref().filter(|u| is_button_url(u)) {
        blocks.push(json!({
            "type": "actions",
            "elements": [{
                "type": "button",
                "action_id": "open_console",
                "text": {"type": "plain_text", "text": "コンソールを開く", "emoji": true},
                "url": url,
            }],
        }));
    }
    let fallback = format!("{title}：{name}（{trigger}）");
    json!({"text": fallback, "blocks": blocks})
}

#[derive(Debug, thiserror::Error)]
pub enum SlackWebhookError {
    #[error("the Slack webhook URL must start with https:// (or http:// for a local receiver)")]
    InvalidUrl,
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// Posts notices to one Slack incoming webhook (channel `slack`).
pub struct SlackWebhook {
    /// A secret: whoever has it can post to the channel. Never logged.
    url: String,
    client: reqwest::Client,
}

impl fmt::Debug for SlackWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackWebhook")
            .field("url", &redact_webhook_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// Scheme, host and port of a webhook URL, for logs: its path and query are often its
/// secret, and a user or password in it certainly is.
pub fn redact_webhook_url(raw: &str) -> String {
    let Ok(url) = reqwest::Url::parse(raw.trim()) else {
        return "<unparsable URL>".into();
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{}{port}/***",
        url.scheme(),
        url.host_str().unwrap_or("")
    )
}

impl SlackWebhook {
    pub fn new(url: impl Into<String>) -> Result<Self, SlackWebhookError> {
        let url = url.into().trim().to_string();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(SlackWebhookError::InvalidUrl);
        }
        // No redirects: the webhook URL is the secret; a redirect would post notices (with
        // customers' words) wherever it points.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| SlackWebhookError::Client(error_chain(&e.without_url())))?;
        Ok(Self { url, client })
    }

    /// The webhook of [`WEBHOOK_URL_ENV`], or `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<Self>, SlackWebhookError> {
        match std::env::var(WEBHOOK_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Self::new(url).map(Some),
            _ => Ok(None),
        }
    }

    /// Posts one message (a JSON body with `text` and/or `blocks`).
    pub async fn post(&self, message: &Value) -> Result<(), SendError> {
        let response = self
            .client
            .post(&self.url)
            .json(message)
            .send()
            .await
            .map_err(|e| {
                SendError::retryable(format!(
                    "Slack webhook request failed: {}",
                    error_chain(&e.without_url())
                ))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Slack explains failures in a short plain-text body (`invalid_blocks`, `no_service`).
        let body = response.text().await.unwrap_or_default();
        let body = truncate_chars(body.trim(), 200);
        let message = format!("Slack webhook answered {status}: {body}");
        if status.as_u16() != 429 && status.is_client_error() {
            // A revoked or mistyped webhook: keep retrying so no escalation is lost, but loudly.
            tracing::error!(status = status.as_u16(), body = %body, "Slack webhook rejected a notice; check KIZUNA_SLACK_WEBHOOK_URL");
        }
        Err(SendError {
            retryable: true,
            retry_after,
            message,
        })
    }
}

#[async_trait::async_trait]
impl NotificationSender for SlackWebhook {
    async fn send(&self, _channel: &str, kind: &str, payload: &Value) -> Result<(), SendError> {
        let message = match kind {
            KIND_ESCALATION => {
                let notice: EscalationNotice =
                    serde_json::from_value(payload.clone()).map_err(|e| {
                        SendError::permanent(format!("unreadable escalation payload: {e}"))
                    })?;
                escalation_blocks(&notice)
            }
            crate::KIND_ESCALATION_DIGEST => {
                let digest: crate::EscalationDigest = serde_json::from_value(payload.clone())
                    .map_err(|e| SendError::permanent(format!("unreadable digest payload: {e}")))?;
                escalation_digest_blocks(&digest)
            }
            KIND_OUTREACH_TASK => {
                let notice: OutreachTaskNotice =
                    serde_json::from_value(payload.clone()).map_err(|e| {
                        SendError::permanent(format!("unreadable outreach task payload: {e}"))
                    })?;
                outreach_task_blocks(&notice)
            }
            _ => {
                return Err(SendError::permanent(format!(
                    "the Slack sender has no message for outbox kind {kind:?}"
                )))
            }
        };
        self.post(&message).await
    }
}

/// One message for many escalations at once (docs/security.md, "Escalation floods").
pub fn escalation_digest_blocks(digest: &crate::EscalationDigest) -> Value {
    let reasons: Vec<String> = digest
        .reasons
        .iter()
        .map(|(reason, n)| {
            let label = reason_label(reason)
                .map(str::to_string)
                .unwrap_or_else(|| escape_mrkdwn(reason));
            format!("{label} {n}件")
        })
        .collect();
    let links: Vec<String> = digest
        .takeover_urls
        .iter()
        .filter(|u| is_button_url(u))
        .map(|u| format!("• <{u}|対応する>"))
        .collect();
    let text = format!(
        ":rotating_light: エスカレーションが集中しています（{}件）。個別の通知はこの1通にまとめました。\n内訳: {}\n{}",
        digest.count,
        reasons.join("、"),
        links.join("\n")
    );
    serde_json::json!({
        "text": format!("エスカレーションが集中しています（{}件）", digest.count),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}

/// An error and its causes on one line (reqwest puts the useful part in the sources).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After`: delay seconds or an HTTP date, capped at an hour.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?;
            let at = SystemTime::UNIX_EPOCH
                + Duration::from_millis(u64::try_from(at.timestamp_millis()).ok()?);
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoticeMessage;

    fn notice() -> EscalationNotice {
        EscalationNotice {
            conversation_id: "conv-1".into(),
            customer_id: Some("C-0042".into()),
            customer_name: Some("山田 <!here> 太郎".into()),
            reason: "refund_or_cancel".into(),
            detail: "解約と返金を希望 <https://evil.example|公式サイト>".into(),
            last_messages: vec![
                NoticeMessage {
                    role: "customer".into(),
                    text: "一通目".into(),
                },
                NoticeMessage {
                    role: "bot".into(),
                    text: "二通目".into(),
                },
                NoticeMessage {
                    role: "customer".into(),
                    text: "<!channel> 至急 & <@U123>\n二行目 > 引用".into(),
                },
                NoticeMessage {
                    role: "bot".into(),
                    text: "四通目".into(),
                },
                NoticeMessage {
                    role: "human".into(),
                    text: "五通目".into(),
                },
                NoticeMessage {
                    role: "customer".into(),
                    text: "あ".repeat(400),
                },
            ],
            takeover_url: "https://cs.example.com/console#conv-1".into(),
            escalated_at: "2025-06-02T05:05:00+00:00".into(),
        }
    }

    /// Every string in a message, so assertions cover all blocks.
    fn all_text(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| all_text(v, out)),
            Value::Object(map) => map.values().for_each(|v| all_text(v, out)),
            _ => {}
        }
    }

    #[test]
    fn outreach_task_names_the_task_customer_and_quotes_the_draft() {
        let notice = OutreachTaskNotice {
            task: "approval".into(),
            send_id: "send-1".into(),
            customer_id: "B2B-0001".into(),
            customer_name: Some("<!channel> 管理".into()),
            trigger: "renewal_90d_at_risk".into(),
            draft: "更新のご案内です。\n二行目".into(),
            console_url: Some("https://cs.example.com/console".into()),
            created_at: "2026-11-21T01:00:00+00:00".into(),
        };
        let message = outreach_task_blocks(&notice);
        let mut text = Vec::new();
        all_text(&message, &mut text);
        let joined = text.join("\n");
        assert!(joined.contains("承認"), "{joined}");
        assert!(joined.contains("B2B-0001"));
        assert!(joined.contains("更新90日前（要注意）"));
        assert!(joined.contains(">更新のご案内です。\n>二行目"), "{joined}");
        assert!(joined.contains("2026/11/21 10:00（JST）"));
        assert!(
            !joined.contains("<!channel>"),
            "customer text must be escaped"
        );
        assert_eq!(
            message["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["url"],
            "https://cs.example.com/console"
        );
        // A task without a console link still renders, without the button.
        let bare = outreach_task_blocks(&OutreachTaskNotice {
            task: "human_task".into(),
            console_url: None,
            ..notice
        });
        assert!(!bare.to_string().contains("open_console"));
        assert!(bare["text"].as_str().unwrap().contains("担当者の対応"));
    }

    #[test]
    fn escaping_makes_mentions_and_links_inert() {
        assert_eq!(escape_mrkdwn("<!channel>"), "&lt;!channel&gt;");
        assert_eq!(
            escape_mrkdwn("<!here> <@U123>"),
            "&lt;!here&gt; &lt;@U123&gt;"
        );
        assert_eq!(escape_mrkdwn("<https://evil|x>"), "&lt;https://evil|x&gt;");
        // `&` first, so an entity typed by the customer is not decoded by Slack either.
        assert_eq!(
            escape_mrkdwn("&lt;!channel&gt;"),
            "&amp;lt;!channel&amp;gt;"
        );
        assert_eq!(escape_mrkdwn("普通の文章です。"), "普通の文章です。");
    }

    #[test]
    fn no_customer_text_reaches_slack_unescaped() {
        let message = escalation_blocks(&notice());
        let mut texts = Vec::new();
        all_text(&message, &mut texts);
        for text in &texts {
            for raw in ["<!channel>", "<!here>", "<@U123>", "<https://evil"] {
                assert!(!text.contains(raw), "{raw} left unescaped in {text:?}");
            }
        }
        let joined = texts.join("\n");
        assert!(joined.contains("&lt;!channel&gt; 至急 &amp; &lt;@U123&gt;"));
        assert!(joined.contains("山田 &lt;!here&gt; 太郎 様"));
        assert!(joined.contains("&lt;https://evil.example|公式サイト&gt;"));
        // Our own quote markers are the only raw `>`; the customer's is an entity.
        assert!(joined.contains(">二行目 &gt; 引用"));
    }

    #[test]
    fn blocks_follow_the_layout() {
        let message = escalation_blocks(&notice());
        assert!(message["text"].as_str().unwrap().contains("返金・解約"));
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(
            blocks[0]["text"]["text"],
            "担当者の対応が必要です（返金・解約）"
        );
        let fields = blocks[1]["fields"].as_array().unwrap();
        assert_eq!(fields[0]["text"], "*お客様ID*\nC-0042");
        assert_eq!(fields[2]["text"], "*理由*\n返金・解約");
        // 05:05 UTC is 14:05 in Japan.
        assert_eq!(fields[3]["text"], "*日時*\n2025/06/02 14:05（JST）");

        let quoted: Vec<&str> = blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .filter(|t| t.contains("\n>"))
            .collect();
        // Only the last five messages, oldest first, with their role labels.
        assert_eq!(quoted.len(), 5);
        assert!(quoted[0].starts_with("*AI*\n>二通目"));
        assert!(quoted[3].starts_with("*担当者*\n>五通目"));
        assert!(quoted[4].starts_with("*お客様*\n>"));
        let long = quoted[4].trim_start_matches("*お客様*\n>");
        assert_eq!(long.chars().count(), 301, "300 characters and the cut mark");
        assert!(long.ends_with('…'));

        let actions = blocks.last().unwrap();
        assert_eq!(actions["type"], "actions");
        assert_eq!(
            actions["elements"][0]["url"],
            "https://cs.example.com/console#conv-1"
        );
        for block in blocks {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(text.chars().count() <= 3000);
            }
        }
    }

    #[test]
    fn every_reason_has_a_japanese_label_and_unknown_ones_are_escaped() {
        for (reason, label) in [
            ("legal", "法的相談"),
            ("negative_sentiment", "強い不満・不安"),
            ("refund_or_cancel", "返金・解約"),
            ("complaint", "苦情"),
            ("unresolved", "未解決"),
            ("customer_request", "担当者希望"),
        ] {
            let mut n = notice();
            n.reason = reason.into();
            let message = escalation_blocks(&n);
            assert_eq!(
                message["blocks"][0]["text"]["text"],
                format!("担当者の対応が必要です（{label}）")
            );
        }
        let mut n = notice();
        n.reason = "<!channel>".into();
        let message = escalation_blocks(&n);
        assert_eq!(
            message["blocks"][1]["fields"][2]["text"],
            "*理由*\n&lt;!channel&gt;"
        );
    }

    #[test]
    fn missing_customer_fields_and_bad_link_still_make_a_message() {
        let mut n = notice();
        n.customer_id = None;
        n.customer_name = None;
        n.takeover_url = "javascript:alert(1)".into();
        n.escalated_at = "yesterday".into();
        let message = escalation_blocks(&n);
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks[1]["fields"][0]["text"], "*お客様ID*\n（未登録）");
        assert_eq!(blocks[1]["fields"][1]["text"], "*お名前*\n（不明）");
        assert_eq!(blocks[1]["fields"][3]["text"], "*日時*\nyesterday");
        assert!(blocks.iter().all(|b| b["type"] != "actions"));
        assert!(message["text"]
            .as_str()
            .unwrap()
            .contains("お客様ID （未登録）"));
    }

    #[test]
    fn debug_never_shows_the_webhook_secret() {
        let hook =
            SlackWebhook::new("https://hooks.slack.com/services/T000/B000/XXXXSECRET").unwrap();
        let shown = format!("{hook:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("T000"), "{shown}");
        assert!(shown.contains("hooks.slack.com"), "{shown}");
        assert!(matches!(
            SlackWebhook::new("hooks.slack.com/services/x"),
            Err(SlackWebhookError::InvalidUrl)
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37 GMT
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 30 ", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn unknown_kinds_and_unreadable_payloads_are_permanent() {
        // Nothing listens on port 9 of loopback; neither call gets as far as the network.
        let hook = SlackWebhook::new("http://127.0.0.1:9/hook").unwrap();
        let err = hook.send("slack", "digest", &json!({})).await.unwrap_err();
        assert!(!err.retryable);
        let err = hook
            .send("slack", KIND_ESCALATION, &json!({"reason": 3}))
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(err.message.contains("unreadable"));
        // A refused connection is retryable and its message carries no URL.
        let err = hook
            .send(
                "slack",
                KIND_ESCALATION,
                &serde_json::to_value(notice()).unwrap(),
            )
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert!(!err.message.contains("/hook"), "{}", err.message);
    }
}
