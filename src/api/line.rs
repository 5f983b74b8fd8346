//! `POST /channels/line/webhook`: LINE's webhook (docs/line.md). The raw body's
//! `X-Line-Signature` is checked against the channel secret before anything is read or stored
//! (a bad one is a 401); then each event is handled once (`webhookEventId`): a text message
//! joins the user's one conversation in the hub like a chat message, follow/unfollow update
//! whether the user follows the account, other events are acknowledged and counted. Replies go
//! back through the outbox (src/line.rs).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use kizuna_agent::hub::{HubError, Submitted};
use kizuna_agent::identity::Identity;
use kizuna_line::{parse_events, verify_signature, Event, EventKind};

use crate::server::AppState;

/// LINE's webhook bodies are far smaller; a larger one is refused (413) before any work.
pub const MAX_BODY_BYTES: usize = 2 << 20;

pub struct LineEndpoint {
    channel_secret: Vec<u8>,
}

impl LineEndpoint {
    pub fn new(channel_secret: &str) -> Self {
        Self {
            channel_secret: channel_secret.as_bytes().to_vec(),
        }
    }
}

pub fn routes(state: &AppState) -> Router<Arc<AppState>> {
    if state.line.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/channels/line/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The identity of a LINE user: a visitor of their own (`line:<userId>`), never a customer
/// or staff, whatever they write.
pub fn line_identity(user_id: &str) -> Identity {
    Identity::anonymous(format!("line:{user_id}"))
}

async fn webhook(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(line) = state.line.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let signature = headers
        .get("x-line-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !verify_signature(&line.channel_secret, &body, signature) {
        metrics::counter!("kizuna_line_webhooks_total", "outcome" => "bad_signature").increment(1);
        tracing::warn!(
            bytes = body.len(),
            "LINE webhook with a bad signature refused"
        );
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let events = match parse_events(&body) {
        Ok(events) => events,
        Err(e) => {
            metrics::counter!("kizuna_line_webhooks_total", "outcome" => "malformed").increment(1);
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    for event in &events {
        if let Err(e) = handle(&state, event).await {
            // LINE redelivers a webhook that failed; what was handled is not repeated.
            tracing::error!(error = %e, event_id = %event.id, "LINE event not handled; asking LINE to redeliver");
            metrics::counter!("kizuna_line_webhooks_total", "outcome" => "error").increment(1);
            return (StatusCode::SERVICE_UNAVAILABLE, "retry later").into_response();
        }
    }
    metrics::counter!("kizuna_line_webhooks_total", "outcome" => "ok").increment(1);
    StatusCode::OK.into_response()
}

async fn handle(state: &AppState, event: &Event) -> anyhow::Result<()> {
    let store = state.hub.store();
    if store.line_event_seen(&event.id).await? {
        metrics::counter!("kizuna_line_events_total", "kind" => "replayed").increment(1);
        tracing::info!(event_id = %event.id, "LINE event seen before; skipped");
        return Ok(());
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let Some(user_id) = event.user_id() else {
        tracing::info!(event_id = %event.id, "LINE event not from a one-to-one chat; ignored");
        store.first_line_event(&event.id, now_ms).await?;
        return Ok(());
    };
    let label = match &event.kind {
        EventKind::Text { text, .. } => {
            submit_text(state, event, user_id, text, now_ms).await?;
            "text"
        }
        EventKind::Follow => {
            store
                .upsert_line_user(user_id, &uuid::Uuid::new_v4().to_string(), true, now_ms)
                .await?;
            "follow"
        }
        EventKind::Unfollow => {
            store
                .upsert_line_user(user_id, &uuid::Uuid::new_v4().to_string(), false, now_ms)
                .await?;
            "unfollow"
        }
        EventKind::OtherMessage { message_type } => {
            tracing::info!(message_type, "LINE message that is not text; ignored");
            "other_message"
        }
        EventKind::Other { event_type } => {
            tracing::info!(event_type, "LINE event type not handled; acknowledged");
            "other"
        }
    };
    store.first_line_event(&event.id, now_ms).await?;
    metrics::counter!("kizuna_line_events_total", "kind" => label).increment(1);
    Ok(())
}

/// A text message into the user's conversation: the hub answers it like a chat message
/// (planner, tools, escalation, human takeover). The event id is the client message id, so a
/// message is stored once however often it arrives. Text beyond the hub's limit is sent in
/// parts rather than dropped.
async fn submit_text(
    state: &AppState,
    event: &Event,
    user_id: &str,
    text: &str,
    now_ms: i64,
) -> anyhow::Result<()> {
    let store = state.hub.store();
    let user = match store.line_user(user_id).await? {
        Some(user) => user,
        None => {
            store
                .upsert_line_user(user_id, &uuid::Uuid::new_v4().to_string(), true, now_ms)
                .await?
        }
    };
    if let Some(token) = &event.reply_token {
        let at = if event.timestamp > 0 {
            event.timestamp
        } else {
            now_ms
        };
        store.set_line_reply_token(user_id, token, at).await?;
    }
    let identity = line_identity(user_id);
    let conversation = user.conversation_id.as_str();
    let opened = state
        .hub
        .open(&identity, Some(conversation), i64::MAX)
        .await;
    let result = async {
        opened?;
        let limit = state.hub.config().max_message_chars;
        let parts = kizuna_line::split_text(text, limit);
        for (i, part) in parts.iter().enumerate() {
            let id = if i == 0 {
                event.id.clone()
            } else {
                format!("{}-{i}", event.id)
            };
            match state.hub.submit(&identity, conversation, &id, part).await {
                Ok(Submitted::Accepted { .. }) | Ok(Submitted::Duplicate(_)) => {}
                Err(HubError::BadRequest(m)) => {
                    tracing::info!(reason = %m, "LINE message not accepted")
                }
                Err(e) => return Err(anyhow::Error::from(e)),
            }
        }
        Ok(())
    }
    .await;
    state.hub.release(conversation);
    result
}
