//! The LINE Messaging API as a chat channel (docs/line.md): webhook signatures and events
//! ([`webhook`]), the messages Kizuna sends and LINE's limits on them ([`message`]), and the
//! reply/push client that delivers them from the durable outbox ([`client`]).
//!
//! Reference: LINE Developers, "Messaging API reference" (webhook event objects, signature
//! validation, reply and push message endpoints, quick reply) — the formats here follow it.

pub mod client;
pub mod link;
pub mod message;
pub mod webhook;

pub use client::{LineClient, LineConfig, CHANNEL, KIND_MESSAGES};
pub use link::{find_token, LinkClaims, LinkError, LinkSigner};
pub use message::{
    split_text, text_messages, QuickReply, MAX_MESSAGES_PER_REQUEST, MAX_TEXT_CHARS,
};
pub use webhook::{parse_events, verify_signature, Event, EventKind, Source, WebhookError};
