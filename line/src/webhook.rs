//! Webhooks from the LINE Platform: the `X-Line-Signature` check and the event objects.
//!
//! The signature is base64(HMAC-SHA256(channel secret, raw request body)); it is checked on
//! the raw bytes before anything is parsed, in constant time. Events are parsed one by one, so
//! an event type Kizuna does not handle (or a malformed one) is reported as
//! [`EventKind::Other`] instead of failing the delivery of its neighbours.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the body is not a LINE webhook object: {0}")]
    Malformed(String),
}

/// Whether `signature` (the `X-Line-Signature` header) signs `body` with `channel_secret`.
pub fn verify_signature(channel_secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(expected) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(channel_secret).expect("HMAC takes any key");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

/// The signature LINE would send for `body` (for tests and the stand-in).
pub fn sign(channel_secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(channel_secret).expect("HMAC takes any key");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Who an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Source {
    User {
        #[serde(rename = "userId")]
        user_id: String,
    },
    Group {
        #[serde(rename = "groupId")]
        group_id: String,
        #[serde(rename = "userId")]
        user_id: Option<String>,
    },
    Room {
        #[serde(rename = "roomId")]
        room_id: String,
        #[serde(rename = "userId")]
        user_id: Option<String>,
    },
}

/// One webhook event, as far as Kizuna uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `webhookEventId`: unique per event, the same on a redelivery.
    pub id: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// `deliveryContext.isRedelivery`.
    pub redelivery: bool,
    pub source: Option<Source>,
    pub reply_token: Option<String>,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A text message (`message.type == "text"`).
    Text { message_id: String, text: String },
    /// Any other message type (sticker, image, …), by type.
    OtherMessage { message_type: String },
    /// The user added the account as a friend (or unblocked it).
    Follow,
    /// The user blocked the account.
    Unfollow,
    /// An event type Kizuna does not handle, by type.
    Other { event_type: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBody {
    #[serde(default)]
    events: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    #[serde(rename = "type")]
    event_type: String,
    webhook_event_id: String,
    #[serde(default)]
    timestamp: i64,
    #[serde(default)]
    delivery_context: Option<RawDelivery>,
    #[serde(default)]
    source: Option<Value>,
    #[serde(default)]
    reply_token: Option<String>,
    #[serde(default)]
    message: Option<RawMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDelivery {
    #[serde(default)]
    is_redelivery: bool,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(rename = "type")]
    message_type: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    text: Option<String>,
}

/// The events of a webhook body (already signature-checked). An event without a
/// `webhookEventId` cannot be deduplicated and is skipped with a warning; other unreadable
/// events become [`EventKind::Other`].
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, WebhookError> {
    let raw: RawBody =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let mut events = Vec::with_capacity(raw.events.len());
    for value in raw.events {
        let event_type = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let raw: RawEvent = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(event_type, error = %e, "skipping an unreadable LINE event");
                continue;
            }
        };
        let kind = match (raw.event_type.as_str(), raw.message) {
            ("message", Some(m)) if m.message_type == "text" => EventKind::Text {
                message_id: m.id,
                text: m.text.unwrap_or_default(),
            },
            ("message", Some(m)) => EventKind::OtherMessage {
                message_type: m.message_type,
            },
            ("follow", _) => EventKind::Follow,
            ("unfollow", _) => EventKind::Unfollow,
            (other, _) => EventKind::Other {
                event_type: other.to_string(),
            },
        };
        events.push(Event {
            id: raw.webhook_event_id,
            timestamp: raw.timestamp,
            redelivery: raw.delivery_context.is_some_and(|d| d.is_redelivery),
            source: raw.source.and_then(|s| serde_json::from_value(s).ok()),
            reply_token: raw.reply_token,
            kind,
        });
    }
    Ok(events)
}

impl Event {
    /// The LINE user behind the event, when it came from a one-to-one chat.
    pub fn user_id(&self) -> Option<&str> {
        match &self.source {
            Some(Source::User { user_id }) => Some(user_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"channel-secret-for-tests";

    #[test]
    fn signatures_are_checked_on_the_raw_body() {
        let body = br#"{"destination":"U0","events":[]}"#;
        let sig = sign(SECRET, body);
        assert!(verify_signature(SECRET, body, &sig));
        assert!(!verify_signature(b"other-secret", body, &sig));
        assert!(!verify_signature(
            SECRET,
            br#"{"destination":"U1","events":[]}"#,
            &sig
        ));
        assert!(!verify_signature(SECRET, body, "not base64!"));
        assert!(!verify_signature(SECRET, body, ""));
    }

    #[test]
    fn events_are_parsed_as_line_documents_them() {
        let body = json!({
            "destination": "Uxxxxxxxx",
            "events": [
                {"type": "message", "message": {"type": "text", "id": "468789577898262530", "quoteToken": "q", "text": "料金はいくら？"},
                 "webhookEventId": "01H810YECXQQZ37VAXPF6H9E6T", "deliveryContext": {"isRedelivery": false},
                 "timestamp": 1692251666727_i64, "source": {"type": "user", "userId": "U4af4980629"},
                 "replyToken": "38ef843bde154d9b91c21320ffd17a0f", "mode": "active"},
                {"type": "follow", "webhookEventId": "01H810YECXQQZ37VAXPF6H9E6U", "deliveryContext": {"isRedelivery": true},
                 "timestamp": 1, "source": {"type": "user", "userId": "U4af4980629"}, "replyToken": "r2", "mode": "active",
                 "follow": {"isUnblocked": false}},
                {"type": "unfollow", "webhookEventId": "E3", "timestamp": 2, "source": {"type": "user", "userId": "U1"}, "mode": "active"},
                {"type": "message", "message": {"type": "sticker", "id": "1", "packageId": "1", "stickerId": "1"},
                 "webhookEventId": "E4", "timestamp": 3, "source": {"type": "user", "userId": "U1"}, "replyToken": "r", "mode": "active"},
                {"type": "beacon", "webhookEventId": "E5", "timestamp": 4, "source": {"type": "user", "userId": "U1"}, "beacon": {"hwid": "d41d8cd98f", "type": "enter"}},
                {"type": "message", "timestamp": 5}
            ]
        });
        let events = parse_events(body.to_string().as_bytes()).unwrap();
        assert_eq!(events.len(), 5, "the event without an id is skipped");
        assert_eq!(
            events[0].kind,
            EventKind::Text {
                message_id: "468789577898262530".into(),
                text: "料金はいくら？".into()
            }
        );
        assert_eq!(events[0].user_id(), Some("U4af4980629"));
        assert_eq!(
            events[0].reply_token.as_deref(),
            Some("38ef843bde154d9b91c21320ffd17a0f")
        );
        assert!(!events[0].redelivery);
        assert_eq!(events[1].kind, EventKind::Follow);
        assert!(events[1].redelivery);
        assert_eq!(events[2].kind, EventKind::Unfollow);
        assert_eq!(
            events[3].kind,
            EventKind::OtherMessage {
                message_type: "sticker".into()
            }
        );
        assert_eq!(
            events[4].kind,
            EventKind::Other {
                event_type: "beacon".into()
            }
        );
        assert!(parse_events(b"[1,2]").is_err());
        assert!(parse_events(b"{}").unwrap().is_empty());
    }
}
