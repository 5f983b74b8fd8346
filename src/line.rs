//! Forwards what a LINE user's conversation says back to LINE (docs/line.md): the agent's
//! replies (with their quick-reply buttons), a CSM's console replies and proactive messages.
//! It reads the conversation's durable frame log from where it last stopped and queues the
//! messages in the outbox together with the new position, in one transaction, so each frame
//! reaches LINE once, across restarts; the outbox dispatcher delivers them (reply token while
//! fresh, else push).

use std::sync::Arc;
use std::time::Duration;

use kizuna_agent::hub::ConversationHub;
use kizuna_line::client::Delivery;
use kizuna_line::{text_messages, QuickReply, CHANNEL, KIND_MESSAGES};
use kizuna_store::{LineUser, OutboxInsert};
use serde_json::Value;
use tokio::sync::watch;

/// LINE accepts a reply token for about a minute; past this age it is not tried.
const REPLY_TOKEN_FRESH_MS: i64 = 50_000;

/// Runs the forwarder on one replica at a time (docs/deployment.md): two forwarders reading
/// the same position would queue a frame twice.
pub fn spawn_forwarder(
    hub: Arc<ConversationHub>,
    interval: Duration,
    lease: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut singleton = crate::cluster::Singleton::new("line-forwarder", lease);
    tokio::spawn(async move {
        loop {
            if singleton.lead(hub.store()).await {
                if let Err(e) = forward_once(&hub).await {
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
pub async fn forward_once(hub: &ConversationHub) -> anyhow::Result<usize> {
    let store = hub.store();
    let mut queued = 0;
    for (user, last_seq) in store.line_users_behind(100).await? {
        let frames = store
            .frames_after(&user.conversation_id, user.forwarded_seq)
            .await?;
        let up_to = frames.iter().map(|f| f.seq).max().unwrap_or(last_seq);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (deliveries, used_token) =
            deliveries(&user, frames.iter().map(|f| (f.seq, &f.payload)), now_ms);
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

        let (stale, used) = deliveries(&user(0, true), frames.iter().map(|f| (1, f)), 60_000);
        assert!(!used && stale.iter().all(|d| d.payload.get("reply_token").is_none()));
        let (none, _) = deliveries(&user(0, false), frames.iter().map(|f| (1, f)), 1);
        assert!(none.is_empty());
    }
}
