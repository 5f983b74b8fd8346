//! Forwards what a LINE user's conversation says back to LINE (docs/line.md): the agent's
//! replies (with their quick-reply buttons), a CSM's console replies and proactive messages.
//! It reads the conversation's durable frame log from where it last stopped and queues the
//! messages in the outbox together with the new position, in one transaction, so each frame
//! reaches LINE once, across restarts; the outbox dispatcher delivers them (reply token while
//! fresh, else push).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use kizuna_line::{LinkClaims, LinkError, LinkSigner};
use serde::Serialize;

use kizuna_agent::hub::ConversationHub;
use kizuna_line::client::Delivery;
use kizuna_line::{text_messages, QuickReply, CHANNEL, KIND_MESSAGES};
use kizuna_store::{LineUser, OutboxInsert};
use serde_json::Value;
use tokio::sync::watch;

use crate::config::ServeArgs;

/// Issues account-link tokens (docs/line.md): signed with the server's token secret, valid
/// for `line.link_token_ttl_secs`, with LINE's `oaMessage` link when `line.basic_id` is set.
#[derive(Clone, Debug)]
pub struct LinkIssuer {
    signer: LinkSigner,
    ttl_secs: i64,
    basic_id: Option<String>,
}

/// A link token as `kizuna line link-token` and `POST /api/line/link-tokens` give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedLink {
    pub customer_id: String,
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Opens a chat with the account with the token typed in (needs `line.basic_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Longest lifetime a link token may be given: a token is a credential for the account.
pub const MAX_LINK_TTL_SECS: i64 = 30 * 86_400;

impl LinkIssuer {
    pub fn new(secret: Vec<u8>, ttl_secs: i64, basic_id: Option<String>) -> Self {
        Self {
            signer: LinkSigner::new(secret),
            ttl_secs,
            basic_id: basic_id.filter(|b| !b.trim().is_empty()),
        }
    }

    pub fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        Ok(Self::new(
            settings.token_secret()?.into_bytes(),
            settings.line.link_token_ttl_secs,
            settings.line.basic_id.clone(),
        ))
    }

    /// A token for `customer_id`; `ttl_secs` overrides the configured lifetime.
    pub fn issue(
        &self,
        customer_id: &str,
        ttl_secs: Option<i64>,
        now_unix: i64,
    ) -> Result<IssuedLink, String> {
        let customer_id = customer_id.trim();
        if customer_id.is_empty() || customer_id.len() > 128 {
            return Err("customer_id must be 1–128 characters".into());
        }
        let ttl = ttl_secs.unwrap_or(self.ttl_secs);
        if !(1..=MAX_LINK_TTL_SECS).contains(&ttl) {
            return Err(format!(
                "ttl_secs must be between 1 and {MAX_LINK_TTL_SECS}"
            ));
        }
        let (token, claims) = self.signer.issue(customer_id, now_unix + ttl);
        let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        Ok(IssuedLink {
            customer_id: customer_id.to_string(),
            url: self
                .basic_id
                .as_deref()
                .map(|id| kizuna_line::link::chat_url(id, &token)),
            token,
            expires_at,
        })
    }

    pub fn verify(&self, token: &str, now_unix: i64) -> Result<LinkClaims, LinkError> {
        self.signer.verify(token, now_unix)
    }
}

#[derive(Debug, Subcommand)]
pub enum LineCommand {
    /// Print an account-link token for a CRM customer: the customer sends it to the LINE
    /// Official Account (or opens the printed link), which links their LINE user to the
    /// customer (docs/line.md). Single use; valid for line.link_token_ttl_secs.
    LinkToken {
        /// The CRM customer id.
        #[arg(long, env = "KIZUNA_LINE_LINK_CUSTOMER")]
        customer: String,
        /// Lifetime in seconds (default line.link_token_ttl_secs, 86400).
        #[arg(long, env = "KIZUNA_LINE_LINK_TTL_SECS")]
        ttl_secs: Option<i64>,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

pub async fn run(config: Option<PathBuf>, command: LineCommand) -> anyhow::Result<()> {
    match command {
        LineCommand::LinkToken {
            customer,
            ttl_secs,
            serve,
        } => {
            let settings = crate::settings(config, &serve)?;
            let store = crate::data::open_store(&settings).await?;
            if kizuna_tools::crm::get_customer(&store, customer.trim())
                .await?
                .is_none()
            {
                anyhow::bail!(
                    "no customer {customer} (import customers first: kizuna import customers)"
                );
            }
            let issued = LinkIssuer::from_settings(&settings)?
                .issue(&customer, ttl_secs, chrono::Utc::now().timestamp())
                .map_err(anyhow::Error::msg)?;
            // The token alone on stdout, for scripts; the rest on stderr.
            println!("{}", issued.token);
            eprintln!("expires at {}", issued.expires_at);
            if let Some(url) = &issued.url {
                eprintln!("link: {url}");
            }
            Ok(())
        }
    }
}

/// LINE accepts a reply token for about a minute; past this age it is not tried.
pub(crate) const REPLY_TOKEN_FRESH_MS: i64 = 50_000;

/// Runs the forwarder on one replica at a time (docs/deployment.md): two forwarders reading
/// the same position would queue a frame twice.
///
/// With `outreach_on_line` (`[outreach.channels.line]`), outreach messages posted into a
/// linked customer's LINE conversation are left to that channel, which pushes them once
/// with its own opt-out check and attempt log; without it they are forwarded like any
/// proactive message.
pub fn spawn_forwarder(
    hub: Arc<ConversationHub>,
    outreach_on_line: bool,
    interval: Duration,
    lease: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut singleton = crate::cluster::Singleton::new("line-forwarder", lease);
    tokio::spawn(async move {
        loop {
            if singleton.lead(hub.store()).await {
                if let Err(e) = forward_once(&hub, outreach_on_line).await {
                    tracing::warn!(error = %e, "forwarding to LINE failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {
                    singleton.step_down(hub.store()).await;
                    break;
                }
            }
        }
    });
}

/// Queues every unforwarded frame of every LINE conversation; returns how many deliveries.
pub async fn forward_once(hub: &ConversationHub, outreach_on_line: bool) -> anyhow::Result<usize> {
    let store = hub.store();
    let mut queued = 0;
    for (user, last_seq) in store.line_users_behind(100).await? {
        let frames = store
            .frames_after(&user.conversation_id, user.forwarded_seq)
            .await?;
        let up_to = frames.iter().map(|f| f.seq).max().unwrap_or(last_seq);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (deliveries, used_token) = deliveries(
            &user,
            frames.iter().map(|f| (f.seq, &f.payload)),
            now_ms,
            outreach_on_line,
        );
        queued += deliveries.len();
        store
            .forward_to_line(&user.user_id, up_to, &deliveries, used_token, now_ms)
            .await?;
    }
    if queued > 0 {
        hub.outbox_wakeup().notify_one();
    }
    Ok(queued)
}

/// What to send for frames of `user`'s conversation; whether the reply token was used.
fn deliveries<'a>(
    user: &LineUser,
    frames: impl Iterator<Item = (i64, &'a Value)>,
    now_ms: i64,
    outreach_on_line: bool,
) -> (Vec<OutboxInsert>, bool) {
    let mut out = Vec::new();
    let mut token = user
        .reply_token
        .clone()
        .filter(|_| now_ms - user.reply_token_at < REPLY_TOKEN_FRESH_MS)
        .map(|t| (t, user.reply_token_at + REPLY_TOKEN_FRESH_MS));
    let mut used = false;
    if !user.following {
        // A user who blocked the account cannot be sent anything; LINE would refuse it.
        return (out, false);
    }
    for (seq, frame) in frames {
        let kind = frame.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "reply" | "human" | "proactive") {
            continue;
        }
        if outreach_on_line && kind == "proactive" && frame.get("send_id").is_some() {
            continue;
        }
        let text = frame.get("text").and_then(Value::as_str).unwrap_or("");
        let quick: Vec<QuickReply> = frame
            .get("quick_replies")
            .and_then(|q| serde_json::from_value(q.clone()).ok())
            .unwrap_or_default();
        let batches = text_messages(text, &quick);
        if batches.is_empty() {
            continue;
        }
        let reply = token.take();
        used |= reply.is_some();
        let delivery = Delivery::new(user.user_id.clone(), batches, reply);
        out.push(OutboxInsert {
            id: format!("line-{}-{seq}", user.conversation_id),
            channel: CHANNEL.into(),
            kind: KIND_MESSAGES.into(),
            payload: serde_json::to_value(&delivery).expect("delivery serialises"),
        });
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(token_at: i64, following: bool) -> LineUser {
        LineUser {
            user_id: "U1".into(),
            conversation_id: "c".into(),
            following,
            reply_token: Some("rt".into()),
            reply_token_at: token_at,
            forwarded_seq: 0,
            customer_id: None,
            unfollow_opted_out: false,
        }
    }

    #[test]
    fn replies_and_csm_messages_are_forwarded_with_the_reply_token_once() {
        let frames = [
            json!({"type": "ack", "id": "m1"}),
            json!({"type": "reply", "text": "どのプランにしますか？", "quick_replies": [{"label": "ライト", "text": "ライトプラン"}]}),
            json!({"type": "status", "status": "human"}),
            json!({"type": "human", "text": "担当の佐藤です。", "agent_name": "佐藤"}),
        ];
        let (out, used) = deliveries(
            &user(1_000, true),
            frames.iter().enumerate().map(|(i, f)| (i as i64 + 1, f)),
            2_000,
            false,
        );
        assert!(used);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, "line-c-2");
        let first: Delivery = serde_json::from_value(out[0].payload.clone()).unwrap();
        assert_eq!(first.reply_token.as_deref(), Some("rt"));
        assert_eq!(
            first.batches[0][0]["quickReply"]["items"][0]["action"]["text"],
            "ライトプラン"
        );
        let second: Delivery = serde_json::from_value(out[1].payload.clone()).unwrap();
        assert_eq!(second.reply_token, None, "a reply token answers once");
        assert_eq!(second.batches[0][0]["text"], "担当の佐藤です。");

        let (stale, used) =
            deliveries(&user(0, true), frames.iter().map(|f| (1, f)), 60_000, false);
        assert!(!used && stale.iter().all(|d| d.payload.get("reply_token").is_none()));
        let (none, _) = deliveries(&user(0, false), frames.iter().map(|f| (1, f)), 1, false);
        assert!(none.is_empty());
    }

    #[test]
    fn outreach_frames_are_left_to_the_line_outreach_channel_when_it_is_on() {
        let frames = [
            json!({"type": "proactive", "text": "ご利用状況のご案内です。", "send_id": "s-1"}),
            json!({"type": "proactive", "text": "ご予約は明日です。"}),
        ];
        let at = |on| {
            deliveries(
                &user(0, true),
                frames.iter().enumerate().map(|(i, f)| (i as i64 + 1, f)),
                60_000,
                on,
            )
            .0
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
        };
        assert_eq!(at(false), ["line-c-1", "line-c-2"]);
        assert_eq!(at(true), ["line-c-2"]);
    }

    #[test]
    fn link_tokens_are_issued_with_the_configured_lifetime_and_url() {
        let issuer = LinkIssuer::new(
            b"0123456789abcdef0123456789abcdef".to_vec(),
            600,
            Some("@zenbu".into()),
        );
        let issued = issuer.issue("B-2001", None, 1_000).unwrap();
        let claims = issuer.verify(&issued.token, 1_001).unwrap();
        assert_eq!((claims.customer_id.as_str(), claims.exp), ("B-2001", 1_600));
        assert_eq!(issued.expires_at, "1970-01-01T00:26:40Z");
        assert!(issued.url.as_deref().unwrap().ends_with(&issued.token));
        assert!(issuer
            .issue("B-2001", Some(60), 1_000)
            .unwrap()
            .url
            .is_some());
        assert!(issuer.issue("B-2001", Some(0), 1_000).is_err());
        assert!(issuer.issue("", None, 1_000).is_err());
        let plain = LinkIssuer::new(b"0123456789abcdef0123456789abcdef".to_vec(), 600, None);
        assert_eq!(plain.issue("B-2001", None, 1_000).unwrap().url, None);
    }
}
