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
use kizuna_line::client::Delivery;
use kizuna_line::{parse_events, text_messages, verify_signature, Event, EventKind, LinkError};
use kizuna_store::{LineUser, LinkOutcome, OutboxInsert};

use crate::server::AppState;

/// LINE's webhook bodies are far smaller; a larger one is refused (413) before any work.
pub const MAX_BODY_BYTES: usize = 2 << 20;

pub struct LineEndpoint {
    channel_secret: Vec<u8>,
    /// Issues and checks account-link tokens (docs/line.md).
    pub links: crate::line::LinkIssuer,
}

impl LineEndpoint {
    pub fn new(channel_secret: &str, links: crate::line::LinkIssuer) -> Self {
        Self {
            channel_secret: channel_secret.as_bytes().to_vec(),
            links,
        }
    }
}

/// `POST /api/line/link-tokens` (staff): a link token for one customer (docs/line.md).
pub fn api_routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/line/link-tokens", post(issue_link_token))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkTokenRequest {
    customer_id: String,
    /// Lifetime in seconds; `line.link_token_ttl_secs` when absent.
    #[serde(default)]
    ttl_secs: Option<i64>,
}

async fn issue_link_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::Json(request): axum::Json<LinkTokenRequest>,
) -> Result<axum::Json<crate::line::IssuedLink>, super::ApiError> {
    let who = super::staff(&state, &headers)?;
    let Some(line) = state.line.as_ref() else {
        return Err(super::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the LINE channel is off (set line.channel_secret and line.channel_access_token)",
        ));
    };
    let customer_id = request.customer_id.trim();
    let known = kizuna_tools::crm::get_customer(state.hub.store(), customer_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not look up a customer for a LINE link token");
            super::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry later",
            )
        })?
        .is_some();
    if !known {
        return Err(super::ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no customer {customer_id}"),
        ));
    }
    let issued = line
        .links
        .issue(
            customer_id,
            request.ttl_secs,
            chrono::Utc::now().timestamp(),
        )
        .map_err(|m| super::ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    tracing::info!(customer_id, by = %who.subject, "LINE link token issued");
    Ok(axum::Json(issued))
}

pub fn routes(state: &AppState) -> Router<Arc<AppState>> {
    if state.line.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/channels/line/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The identity of a LINE user: the CRM customer they linked with a link token; otherwise a
/// visitor of their own (`line:<userId>`), never a customer or staff, whatever they write.
pub fn line_identity(user: &LineUser) -> Identity {
    match &user.customer_id {
        Some(customer_id) => Identity::customer(customer_id.clone()),
        None => Identity::anonymous(format!("line:{}", user.user_id)),
    }
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
        // A link token is a credential: it links the account and never reaches the agent.
        EventKind::Text { text, .. } if kizuna_line::find_token(text).is_some() => {
            let token = kizuna_line::find_token(text).expect("checked");
            link_account(state, event, user_id, token, now_ms).await?;
            "link"
        }
        EventKind::Text { text, .. } => {
            submit_text(state, event, user_id, text, now_ms).await?;
            "text"
        }
        EventKind::Follow | EventKind::Unfollow => {
            let following = event.kind == EventKind::Follow;
            let (user, changed) = store
                .line_follow(
                    user_id,
                    &uuid::Uuid::new_v4().to_string(),
                    following,
                    now_ms,
                )
                .await?;
            if let (Some(customer_id), Some(opted_out)) = (&user.customer_id, changed) {
                tracing::info!(
                    customer_id,
                    opted_out,
                    "a LINE block / follow changed the linked customer's outreach opt-out"
                );
            }
            if following {
                "follow"
            } else {
                "unfollow"
            }
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
    let identity = line_identity(&user);
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

/// What the user is told after sending a link token.
fn link_answer(outcome: Result<LinkOutcome, LinkError>) -> &'static str {
    match outcome {
        Ok(LinkOutcome::Linked) | Ok(LinkOutcome::AlreadyLinked) => {
            "LINEアカウントとお客様アカウントの連携が完了しました。ご契約内容やご予約についても、このトークでお問い合わせいただけます。"
        }
        Ok(LinkOutcome::Reused) => {
            "この連携用コードはすでに使用されています。お手数ですが、マイページから新しい連携用リンクを発行してください。"
        }
        Ok(LinkOutcome::LinkedElsewhere) => {
            "このLINEアカウントはすでに別のお客様アカウントと連携されています。変更をご希望の場合はサポートまでご連絡ください。"
        }
        Err(LinkError::Expired) => {
            "この連携用コードは有効期限が切れています。お手数ですが、マイページから新しい連携用リンクを発行してください。"
        }
        Ok(LinkOutcome::UnknownCustomer) | Err(LinkError::Malformed | LinkError::BadSignature) => {
            "連携用コードを確認できませんでした。マイページで発行したリンクから、もう一度お試しください。"
        }
    }
}

/// Redeems a link token a user sent and answers them (reply token while fresh, else push)
/// through the outbox. An invalid, expired or reused token changes nothing.
async fn link_account(
    state: &AppState,
    event: &Event,
    user_id: &str,
    token: &str,
    now_ms: i64,
) -> anyhow::Result<()> {
    let Some(line) = state.line.as_ref() else {
        return Ok(());
    };
    let store = state.hub.store();
    if store.line_user(user_id).await?.is_none() {
        store
            .upsert_line_user(user_id, &uuid::Uuid::new_v4().to_string(), true, now_ms)
            .await?;
    }
    let outcome = match line.links.verify(token, now_ms / 1000) {
        Ok(claims) => Ok(store
            .link_line_user(user_id, &claims.customer_id, &claims.nonce, now_ms)
            .await?),
        Err(e) => Err(e),
    };
    let label = match &outcome {
        Ok(LinkOutcome::Linked) => "linked",
        Ok(LinkOutcome::AlreadyLinked) => "already_linked",
        Ok(LinkOutcome::Reused) => "reused",
        Ok(LinkOutcome::LinkedElsewhere) => "linked_elsewhere",
        Ok(LinkOutcome::UnknownCustomer) => "unknown_customer",
        Err(LinkError::Expired) => "expired",
        Err(_) => "invalid",
    };
    metrics::counter!("kizuna_line_links_total", "outcome" => label).increment(1);
    tracing::info!(outcome = label, "LINE account-link token redeemed");
    let at = if event.timestamp > 0 {
        event.timestamp
    } else {
        now_ms
    };
    let reply = event
        .reply_token
        .clone()
        .filter(|_| now_ms - at < crate::line::REPLY_TOKEN_FRESH_MS)
        .map(|t| (t, at + crate::line::REPLY_TOKEN_FRESH_MS));
    let delivery = Delivery::new(user_id, text_messages(link_answer(outcome), &[]), reply);
    let row = OutboxInsert {
        id: format!("line-link-{}", event.id),
        channel: kizuna_line::CHANNEL.into(),
        kind: kizuna_line::KIND_MESSAGES.into(),
        payload: serde_json::to_value(&delivery)?,
    };
    // The link itself is stored; a lost answer is not worth a redelivery (which would
    // find the token used and answer again).
    match store.enqueue_outbox(&row, now_ms).await {
        Ok(()) => state.hub.outbox_wakeup().notify_one(),
        Err(e) => tracing::error!(error = %e, "could not queue the account-link answer for LINE"),
    }
    Ok(())
}
