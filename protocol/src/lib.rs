//! The chat websocket protocol (docs/protocol.md) as types.
//!
//! The transport parses [`ClientFrame`]s and writes [`ServerFrame`]s; the hub, handover and
//! outreach build [`ServerFrame`]s; the store keeps durable frames as the JSON these types
//! serialise to. The widget's TypeScript types (`web-widget/src/shared/frames.ts`) describe the
//! same frames: `tests/widget_types.rs` type-checks every variant below against them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who is calling, from the verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Anonymous,
    Customer,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Anonymous => "anonymous",
            Role::Customer => "customer",
            Role::Manager => "manager",
        }
    }
}

/// Who handles a conversation (the `conversations.status` column holds the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationStatus {
    /// The bot answers.
    Bot,
    /// Handed to people, waiting for a CSM.
    Escalated,
    /// A CSM holds it.
    Human,
    /// Closed; a new message reopens it with the bot.
    Closed,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bot => "bot",
            Self::Escalated => "escalated",
            Self::Human => "human",
            Self::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bot" => Self::Bot,
            "escalated" => Self::Escalated,
            "human" => Self::Human,
            "closed" => Self::Closed,
            _ => return None,
        })
    }

    /// People hold the conversation: the bot stays silent.
    pub fn held_by_people(self) -> bool {
        matches!(self, Self::Escalated | Self::Human)
    }
}

/// Where a received message stands (a duplicate `ack` says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Waiting for (or in) its turn.
    Pending,
    /// Answered.
    Answered,
    /// Received while people held the conversation; the bot does not answer it.
    Held,
}

impl MessageStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "answered" => Self::Answered,
            "held" => Self::Held,
            _ => return None,
        })
    }
}

/// A tool call's progress, streamed while a reply is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolStatus {
    Started,
    Done,
    Failed,
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must come first: opens (or resumes) a conversation.
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seq: Option<i64>,
    },
    /// A user message; `id` is the client's idempotency key.
    Message {
        id: String,
        text: String,
    },
    Ping,
}

impl ClientFrame {
    /// The `type`s a client may send, for telling an unknown type from a malformed frame.
    pub const TYPES: [&'static str; 3] = ["hello", "message", "ping"];
}

/// A knowledge document a reply used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRef {
    pub doc_id: String,
    pub title: String,
    pub score: f32,
}

/// A tool call made for a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallFrame {
    pub id: String,
    pub name: String,
    pub arguments: Value,
    pub ok: bool,
    pub result: Value,
}

/// A button under a reply: `label` is shown, `text` is sent as the customer's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickReplyFrame {
    pub label: String,
    pub text: String,
}

/// A write proposed in a reply, waiting for the customer's consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalFrame {
    pub tool: String,
    pub summary: String,
}

/// Why a reply is the holding message of an escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationNote {
    pub reason: String,
}

/// The outcome of a 配信停止 / 配信再開 request, on its reply (docs/outreach.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceOutcome {
    /// Set on the answer to an opt-out request: whether it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out: Option<bool>,
    /// Set on the answer to an opt-in request: whether it was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in: Option<bool>,
    /// `false` when the caller is an anonymous visitor (nothing to stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_in: Option<bool>,
    /// `true` when storing it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<bool>,
}

impl PreferenceOutcome {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The final reply to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub reply_to: String,
    pub message_id: String,
    pub text: String,
    #[serde(default)]
    pub sources: Vec<SourceRef>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCallFrame>,
    /// Why (part of) the reply was composed without the model; always present, `null` if not.
    #[serde(default)]
    pub fallback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_answer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationNote>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quick_replies: Vec<QuickReplyFrame>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<ProposalFrame>,
    #[serde(flatten)]
    pub preference: PreferenceOutcome,
}

impl ReplyFrame {
    /// A reply with text only (no sources, tools or buttons).
    pub fn text(reply_to: &str, message_id: &str, text: &str) -> Self {
        Self {
            seq: None,
            reply_to: reply_to.to_string(),
            message_id: message_id.to_string(),
            text: text.to_string(),
            sources: Vec::new(),
            tool_calls: Vec::new(),
            fallback: None,
            direct_answer: None,
            escalation: None,
            quick_replies: Vec::new(),
            proposal: None,
            preference: PreferenceOutcome::default(),
        }
    }
}

/// Frames the server sends. Durable ones (`ack`, `reply`, `status`, `human`, `proactive`)
/// carry `seq` once stored; transient ones never do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        conversation_id: String,
        last_seq: i64,
        role: Role,
        resumed: bool,
    },
    /// A message is stored (durable), or a resent one was already received (transient,
    /// `duplicate: true` with its `status`).
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
        id: String,
        message_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duplicate: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<MessageStatus>,
    },
    /// A piece of a reply being made; `replace` carries the whole text so far.
    Delta {
        reply_to: String,
        index: u32,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replace: Option<bool>,
    },
    Tool {
        reply_to: String,
        name: String,
        status: ToolStatus,
    },
    /// Where the message waits for the embedded model (admission control; docs/protocol.md).
    Queue {
        reply_to: String,
        /// 1 = next.
        position: u32,
        /// A rough estimate from recent turn times.
        expected_wait_secs: u32,
    },
    Reply(ReplyFrame),
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
        status: ConversationStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_name: Option<String>,
    },
    Human {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
        message_id: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_name: Option<String>,
    },
    Proactive {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
        message_id: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        campaign_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        send_id: Option<String>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_secs: Option<u64>,
    },
    Pong,
}

/// Error codes (docs/protocol.md, "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    InvalidUtf8,
    TooLarge,
    UnknownType,
    BadRequest,
    NotOpen,
    Unauthorized,
    Forbidden,
    RateLimited,
    Unavailable,
    Busy,
    Overloaded,
    /// No such conversation (or other resource).
    NotFound,
    /// The request conflicts with the current state (e.g. it was already done).
    Conflict,
    /// An anonymous escalation over its hourly budget (the staff API; on the websocket the
    /// bot simply keeps answering).
    Capped,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 15] = [
        Self::BadJson,
        Self::InvalidUtf8,
        Self::TooLarge,
        Self::UnknownType,
        Self::BadRequest,
        Self::NotOpen,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimited,
        Self::Unavailable,
        Self::Busy,
        Self::Overloaded,
        Self::NotFound,
        Self::Conflict,
        Self::Capped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::TooLarge => "too_large",
            Self::UnknownType => "unknown_type",
            Self::BadRequest => "bad_request",
            Self::NotOpen => "not_open",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Busy => "busy",
            Self::Overloaded => "overloaded",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Capped => "capped",
        }
    }
}

impl ServerFrame {
    /// An error frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, id: Option<&str>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            id: id.map(str::to_string),
            retry_after_secs: None,
        }
    }

    /// The same frame with its durable sequence number set (durable kinds only).
    pub fn with_seq(mut self, new_seq: i64) -> Self {
        match &mut self {
            Self::Ack { seq, .. }
            | Self::Status { seq, .. }
            | Self::Human { seq, .. }
            | Self::Proactive { seq, .. } => *seq = Some(new_seq),
            Self::Reply(reply) => reply.seq = Some(new_seq),
            _ => {}
        }
        self
    }

    /// The frame as JSON, as the store keeps it and the wire carries it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("frames serialise to JSON")
    }

    /// The frame as wire text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("frames serialise to JSON")
    }

    /// One instance of every variant with every optional field set, then the smallest ones as
    /// they go over the wire (durable kinds with their `seq`):
    /// what the widget's types are checked against (`tests/widget_types.rs`).
    pub fn samples() -> Vec<ServerFrame> {
        let reply = ReplyFrame {
            seq: Some(7),
            reply_to: "c-1".into(),
            message_id: "m-2".into(),
            text: "スタンダードプランは月額15,000円です。".into(),
            sources: vec![SourceRef {
                doc_id: "faq-price".into(),
                title: "料金".into(),
                score: 0.91,
            }],
            tool_calls: vec![ToolCallFrame {
                id: "call-1".into(),
                name: "book_measurement".into(),
                arguments: serde_json::json!({"date": "2026-12-10"}),
                ok: true,
                result: serde_json::json!({"booking_id": "b-1"}),
            }],
            fallback: Some("added_tool_facts".into()),
            direct_answer: Some(true),
            escalation: Some(EscalationNote {
                reason: "legal".into(),
            }),
            quick_replies: vec![QuickReplyFrame {
                label: "はい".into(),
                text: "はい、お願いします".into(),
            }],
            proposal: Some(ProposalFrame {
                tool: "book_measurement".into(),
                summary: "12月10日 10:00 の測定".into(),
            }),
            preference: PreferenceOutcome {
                opt_out: Some(true),
                opt_in: Some(false),
                signed_in: Some(true),
                failed: Some(false),
            },
        };
        vec![
            Self::Welcome {
                conversation_id: "conv-1".into(),
                last_seq: 3,
                role: Role::Customer,
                resumed: true,
            },
            Self::Ack {
                seq: Some(4),
                id: "c-1".into(),
                message_id: "m-1".into(),
                text: Some("料金を教えて".into()),
                duplicate: Some(true),
                status: Some(MessageStatus::Answered),
            },
            Self::Ack {
                seq: None,
                id: "c-1".into(),
                message_id: "m-1".into(),
                text: None,
                duplicate: None,
                status: None,
            },
            Self::Delta {
                reply_to: "c-1".into(),
                index: 1,
                text: "スタンダード".into(),
                replace: Some(true),
            },
            Self::Tool {
                reply_to: "c-1".into(),
                name: "recommend_plan".into(),
                status: ToolStatus::Failed,
            },
            Self::Queue {
                reply_to: "c-1".into(),
                position: 2,
                expected_wait_secs: 12,
            },
            Self::Reply(reply),
            Self::Reply(ReplyFrame::text("c-1", "m-2", "承知しました。")).with_seq(10),
            Self::Status {
                seq: Some(8),
                status: ConversationStatus::Escalated,
                reason: Some("legal".into()),
                message: Some("担当者におつなぎします。".into()),
                agent_name: Some("佐藤".into()),
            },
            Self::Status {
                seq: Some(11),
                status: ConversationStatus::Bot,
                reason: None,
                message: None,
                agent_name: None,
            },
            Self::Human {
                seq: Some(9),
                message_id: "m-3".into(),
                text: "担当の佐藤です。".into(),
                agent_name: Some("佐藤".into()),
            },
            Self::Proactive {
                seq: Some(1),
                message_id: "m-0".into(),
                text: "ご利用状況のお知らせです。".into(),
                campaign_id: Some("usage_drop".into()),
                trigger: Some("usage_drop".into()),
                send_id: Some("s-1".into()),
            },
            Self::Error {
                code: ErrorCode::Overloaded,
                message: "resend later".into(),
                id: Some("c-1".into()),
                retry_after_secs: Some(5),
            },
            Self::error(ErrorCode::BadJson, "a frame must be a JSON object", None),
            Self::Pong,
        ]
        .into_iter()
        // One error frame per code: the widget's `ErrorCode` type must know them all.
        .chain(
            ErrorCode::ALL
                .into_iter()
                .map(|code| Self::error(code, code.as_str(), None)),
        )
        .collect()
    }
}

impl ClientFrame {
    /// Every variant, fully set and minimal (checked against the widget's types).
    pub fn samples() -> Vec<ClientFrame> {
        vec![
            Self::Hello {
                token: Some("v1.x.y".into()),
                conversation_id: Some("conv-1".into()),
                last_seq: Some(3),
            },
            Self::Hello {
                token: None,
                conversation_id: None,
                last_seq: None,
            },
            Self::Message {
                id: "c-1".into(),
                text: "料金を教えて".into(),
            },
            Self::Ping,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_round_trips() {
        for frame in ServerFrame::samples() {
            let text = frame.to_json();
            let back: ServerFrame = serde_json::from_str(&text).expect(&text);
            assert_eq!(back, frame, "{text}");
        }
        for frame in ClientFrame::samples() {
            let text = serde_json::to_string(&frame).unwrap();
            let back: ClientFrame = serde_json::from_str(&text).expect(&text);
            assert_eq!(back, frame, "{text}");
        }
    }

    #[test]
    fn wire_names_are_the_documented_ones() {
        let reply = ServerFrame::Reply(ReplyFrame::text("c", "m", "t")).to_value();
        assert_eq!(reply["type"], "reply");
        // `fallback` is always present (null when the model wrote the whole reply).
        assert!(reply.as_object().unwrap().contains_key("fallback"));
        assert!(!reply.as_object().unwrap().contains_key("quick_replies"));
        assert!(!reply.as_object().unwrap().contains_key("opt_out"));
        let status = ServerFrame::Status {
            seq: None,
            status: ConversationStatus::Human,
            reason: None,
            message: None,
            agent_name: None,
        }
        .with_seq(5)
        .to_value();
        assert_eq!(
            status,
            serde_json::json!({"type": "status", "seq": 5, "status": "human"})
        );
        let error = ServerFrame::error(ErrorCode::RateLimited, "later", Some("c")).to_value();
        assert_eq!(
            error,
            serde_json::json!({"type": "error", "code": "rate_limited", "message": "later", "id": "c"})
        );
        // Transient frames take no seq.
        assert_eq!(
            ServerFrame::Pong.with_seq(3).to_value(),
            serde_json::json!({"type": "pong"})
        );
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn client_frames_parse_as_documented() {
        let hello: ClientFrame = serde_json::from_str(r#"{"type":"hello"}"#).unwrap();
        assert_eq!(
            hello,
            ClientFrame::Hello {
                token: None,
                conversation_id: None,
                last_seq: None
            }
        );
        let message: ClientFrame =
            serde_json::from_str(r#"{"type":"message","id":"a","text":"こんにちは"}"#).unwrap();
        assert!(matches!(message, ClientFrame::Message { .. }));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"message","text":"x"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"shout"}"#).is_err());
    }
}
