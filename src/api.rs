//! The staff HTTP API (JSON, `Authorization: Bearer <manager token>`): the CSM queue and
//! takeover flow used by the console. Thin: every decision is the hub's.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::TimeZone;
use kizuna_agent::clock::jst;
use kizuna_agent::hub::HubError;
use kizuna_agent::identity::{Identity, Role};
use kizuna_protocol::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::server::AppState;

pub mod line;
pub mod mcp;
mod outreach;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/escalations", get(escalations))
        .route("/api/conversations/{id}/frames", get(frames))
        .route("/api/conversations/{id}/takeover", post(takeover))
        .route("/api/conversations/{id}/reply", post(reply))
        .route("/api/conversations/{id}/handback", post(handback))
        .route("/api/conversations/{id}/close", post(close))
        .route("/api/accounts/at-risk", get(at_risk))
        .route("/api/insights", get(insights))
        .route("/api/customers/import", post(import_customers))
        .route(
            "/api/knowledge/documents",
            get(list_documents).post(upsert_document),
        )
        .route(
            "/api/knowledge/documents/{id}",
            axum::routing::delete(delete_document),
        )
        .route("/api/knowledge/reindex", post(reindex))
        .route(
            "/api/tokens/revocations",
            get(list_revocations).post(revoke),
        )
        .route(
            "/api/tokens/revocations/{kind}/{value}",
            axum::routing::delete(unrevoke),
        )
        .merge(outreach::routes())
        .merge(line::api_routes())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// A token to revoke (stored only as its id).
    token: Option<String>,
    /// Or the id of one (as `GET /api/tokens/revocations` and logs show it).
    token_id: Option<String>,
    /// Or every token of a customer or manager id.
    subject: Option<String>,
    reason: Option<String>,
    /// How long the revocation stands (default 90 days, past any token's lifetime).
    days: Option<u32>,
}

async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("send {{\"token\"|\"token_id\"|\"subject\": …, \"reason\"?, \"days\"?}}: {e}"),
        )
    })?;
    let (kind, value) = match (body.token, body.token_id, body.subject) {
        (Some(token), None, None) => ("token", crate::revocation::token_id(&token)),
        (None, Some(id), None) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            ("token", id.to_ascii_lowercase())
        }
        (None, None, Some(subject)) if !subject.trim().is_empty() && subject.len() <= 128 => {
            ("subject", subject.trim().to_string())
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of token, token_id (32 hex digits) or subject",
            ))
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let days = i64::from(body.days.unwrap_or(90).clamp(1, 3650));
    let revocation = kizuna_store::Revocation {
        kind: kind.into(),
        value: value.clone(),
        reason: body.reason.map(|r| r.chars().take(500).collect()),
        revoked_by: who.subject.clone(),
        revoked_at: now,
        expires_at: now + days * 86_400_000,
    };
    state.revocations.revoke(&revocation).await.map_err(|e| {
        tracing::error!(error = %e, "cannot store a revocation");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "try again later",
        )
    })?;
    tracing::info!(kind, value = %value, by = %who.subject, "token revoked");
    Ok(Json(
        json!({"kind": kind, "value": value, "expires_at": rfc3339_ms(revocation.expires_at)}),
    ))
}

async fn list_revocations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    let rows = state.revocations.list().await.map_err(|e| {
        tracing::error!(error = %e, "cannot read revocations");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "try again later",
        )
    })?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"kind": r.kind, "value": r.value, "reason": r.reason, "revoked_by": r.revoked_by,
                   "revoked_at": rfc3339_ms(r.revoked_at), "expires_at": rfc3339_ms(r.expires_at)})
        })
        .collect();
    Ok(Json(json!({ "revocations": items })))
}

async fn unrevoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((kind, value)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    if kind != "token" && kind != "subject" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "kind is token or subject",
        ));
    }
    let removed = state
        .revocations
        .unrevoke(&kind, &value)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot lift a revocation");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again later",
            )
        })?;
    if !removed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such revocation",
        ));
    }
    tracing::info!(kind, value = %value, by = %who.subject, "revocation lifted");
    Ok(Json(json!({"removed": true})))
}

/// An API failure as `{"error": {"code", "message"}}` with its HTTP status.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        if let HubError::Store(store) = &e {
            tracing::error!(error = %store, "store error in the staff API");
        }
        let code = e.code();
        Self::new(http_status(code), code.as_str(), e.client_message())
    }
}

/// The HTTP status of an error code (the codes are shared with the websocket,
/// `kizuna_protocol::ErrorCode`).
fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Capped | ErrorCode::Busy | ErrorCode::RateLimited => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ErrorCode::Overloaded | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::BadJson
        | ErrorCode::InvalidUtf8
        | ErrorCode::UnknownType
        | ErrorCode::BadRequest
        | ErrorCode::NotOpen => StatusCode::BAD_REQUEST,
    }
}

/// The verified caller of an API request.
pub fn caller(state: &AppState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <token>",
            )
        })?;
    let identity = state
        .verifier
        .verify(token.trim(), chrono::Utc::now().timestamp())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?;
    if state
        .revocations
        .is_revoked(token.trim(), &identity.subject)
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token was revoked",
        ));
    }
    Ok(identity)
}

/// The caller, who must be staff (role manager).
pub fn staff(state: &AppState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let identity = caller(state, headers)?;
    if identity.role != Role::Manager {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a manager token is required",
        ));
    }
    Ok(identity)
}

pub(crate) fn rfc3339_ms(ms: i64) -> String {
    jst()
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

async fn escalations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let rows = state.hub.escalations(&who, 200).await?;
    let conversations: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "conversation_id": r.conversation_id,
                "customer_id": r.customer_id,
                "status": r.conversation_status,
                "reason": r.reason,
                "detail": r.detail,
                "assigned_to": r.assigned_to,
                "escalated_at": rfc3339_ms(r.created_at),
                "last_message": r.last_message,
            })
        })
        .collect();
    Ok(Json(json!({"conversations": conversations})))
}

#[derive(Deserialize)]
struct InsightsQuery {
    days: Option<u32>,
}

/// The voice-of-the-customer report (docs/insights.md) for the last `days` days (default 30).
async fn insights(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<InsightsQuery>,
) -> Result<Json<kizuna_insights::InsightReport>, ApiError> {
    staff(&state, &headers)?;
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "days must be between 1 and 366",
        ));
    }
    let now = chrono::Utc::now();
    let mut options =
        kizuna_insights::ReportOptions::since(now - chrono::Duration::days(days.into()), now);
    if let Some(kb) = &state.knowledge {
        options.low_score = kb.config().threshold;
    }
    let embedder = state.knowledge.as_ref().map(|kb| kb.embedder().clone());
    let report = kizuna_insights::build_report_with(state.hub.store(), embedder, &options)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot build the insight report");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry later",
            )
        })?;
    Ok(Json(report))
}

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<i64>,
}

async fn frames(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<AfterQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let frames = state
        .hub
        .frames_for_staff(&id, &who, q.after.unwrap_or(0))
        .await?;
    let frames: Vec<Value> = frames
        .into_iter()
        .map(|f| {
            let mut v = f.payload;
            v["seq"] = json!(f.seq);
            v
        })
        .collect();
    Ok(Json(json!({"frames": frames})))
}

async fn takeover(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let seq = state.hub.takeover(&id, &who).await?;
    Ok(Json(json!({"status": "human", "seq": seq})))
}

#[derive(Deserialize)]
struct ReplyBody {
    text: String,
}

async fn reply(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ReplyBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let Json(body) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let seq = state.hub.human_reply(&id, &who, &body.text).await?;
    Ok(Json(json!({"seq": seq})))
}

async fn handback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let seq = state.hub.handback(&id, &who).await?;
    Ok(Json(json!({"status": "bot", "seq": seq})))
}

async fn close(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let seq = state.hub.close(&id, &who).await?;
    Ok(Json(json!({"status": "closed", "seq": seq})))
}

#[derive(Deserialize)]
struct AtRiskQuery {
    status: Option<String>,
    plan: Option<String>,
    renewal_within_days: Option<i64>,
    limit: Option<usize>,
}

async fn at_risk(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<AtRiskQuery>,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    use kizuna_tools::health::HealthStatus;
    let status = match q.status.as_deref().unwrap_or("") {
        "" | "any" => None,
        "red" => Some(HealthStatus::Red),
        "yellow" => Some(HealthStatus::Yellow),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("status must be red, yellow or any, not {other:?}"),
            ))
        }
    };
    let today = state.hub.clock().now().date_naive();
    let filter = kizuna_tools::AtRiskFilter {
        status,
        plan: q.plan.filter(|p| !p.is_empty()),
        renewal_within_days: q.renewal_within_days,
        limit: Some(q.limit.unwrap_or(100)),
    };
    let accounts = kizuna_tools::accounts::at_risk_accounts(state.hub.store(), today, &filter)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "at-risk query failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "retry later",
            )
        })?;
    let accounts: Vec<Value> = accounts
        .into_iter()
        .map(|a| {
            json!({
                "customer_id": a.customer.id,
                "name": a.customer.name,
                "plan": a.customer.plan,
                "total": a.report.total,
                "status": a.report.status,
                "breakdown": a.report.breakdown,
                "reasons": a.reasons,
                "action": a.recommended_action,
                "days_to_renewal": a.days_to_renewal,
            })
        })
        .collect();
    Ok(Json(
        json!({"as_of": today.to_string(), "accounts": accounts}),
    ))
}

/// The body is the file itself (CSV or JSON Lines; `Content-Type: text/csv` or
/// `application/x-ndjson`, else sniffed). All-or-nothing, like the CLI.
async fn import_customers(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    use kizuna_tools::crm::{import_customers, Format, ImportError};
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = if content_type.contains("csv") {
        Format::Csv
    } else if content_type.contains("ndjson") || content_type.contains("jsonl") {
        Format::JsonLines
    } else {
        Format::sniff(&body)
    };
    match import_customers(state.hub.store(), &body, format).await {
        Ok(report) => Ok(Json(
            json!({"inserted": report.inserted, "updated": report.updated}),
        )),
        Err(ImportError::Invalid(errors)) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_rows",
            message: serde_json::to_string(&errors).unwrap_or_default(),
        }),
        Err(e) => {
            tracing::error!(error = %e, "customer import failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the import failed; nothing was written",
            ))
        }
    }
}

fn knowledge_base(state: &AppState) -> Result<&Arc<kizuna_knowledge::KnowledgeBase>, ApiError> {
    state.knowledge.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "knowledge_disabled",
            "the knowledge base is disabled on this server",
        )
    })
}

fn knowledge_error(e: kizuna_knowledge::KnowledgeError) -> ApiError {
    tracing::error!(error = %e, "knowledge operation failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

async fn list_documents(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    let docs = knowledge_base(&state)?
        .list_documents()
        .await
        .map_err(knowledge_error)?;
    Ok(Json(json!({"documents": docs})))
}

async fn upsert_document(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<kizuna_knowledge::Document>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    let Json(document) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    document
        .validate()
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    let outcome = knowledge_base(&state)?
        .upsert_document(document)
        .await
        .map_err(knowledge_error)?;
    Ok(Json(json!({"outcome": outcome})))
}

async fn delete_document(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    let deleted = knowledge_base(&state)?
        .delete_document(&id)
        .await
        .map_err(knowledge_error)?;
    if !deleted {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no document {id:?}"),
        ));
    }
    Ok(Json(json!({"deleted": id})))
}

/// Re-reads the server's content directory: new and changed documents are embedded,
/// deleted ones removed.
async fn reindex(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    let report = knowledge_base(&state)?
        .ingest(&state.content_dir, kizuna_knowledge::NoProgress)
        .await
        .map_err(knowledge_error)?;
    Ok(Json(serde_json::to_value(&report).unwrap_or_default()))
}
