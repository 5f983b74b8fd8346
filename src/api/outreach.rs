//! Staff API for proactive outreach: the approval queue for important accounts, campaign
//! figures, and events that happen outside Kizuna (a click in an email, a payment the
//! billing system saw).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset};
use kizuna_outreach::{EventKind, OutreachError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{rfc3339_ms, staff, ApiError};
use crate::server::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/outreach/approvals", get(approvals))
        .route("/api/outreach/approvals/{id}/approve", post(approve))
        .route("/api/outreach/approvals/{id}/reject", post(reject))
        .route("/api/outreach/report", get(report))
        .route("/api/outreach/sends/{id}/events", post(record))
}

fn outreach_error(e: OutreachError) -> ApiError {
    match e {
        OutreachError::UnknownSend(id) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no outreach send {id}"),
        ),
        OutreachError::Delivery(message) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "delivery_failed", message)
        }
        other => {
            tracing::error!(error = %other, "outreach store error in the staff API");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry later",
            )
        }
    }
}

async fn approvals(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    let pending = kizuna_outreach::pending_approvals(state.hub.store())
        .await
        .map_err(outreach_error)?;
    let items: Vec<Value> = pending
        .into_iter()
        .map(|p| {
            json!({
                "send_id": p.send_id,
                "customer_id": p.customer_id,
                "trigger": p.trigger,
                "variant": p.variant,
                "message": p.message,
                "created_at": rfc3339_ms(p.created_at_ms),
            })
        })
        .collect();
    Ok(Json(json!({"approvals": items})))
}

async fn approve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let now = state.hub.clock().now();
    let delivered = kizuna_outreach::approve_and_deliver(
        state.hub.store(),
        &id,
        state.outreach.as_ref(),
        &state.outreach.channels,
        now,
    )
    .await
    .map_err(outreach_error)?;
    match delivered {
        Some(outcome) => {
            tracing::info!(send_id = %id, approver = %who.subject, live = outcome.live, "outreach approved and delivered");
            Ok(Json(json!({"status": "delivered", "live": outcome.live})))
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this send is not awaiting approval (already approved, rejected or unknown)",
        )),
    }
}

async fn reject(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = staff(&state, &headers)?;
    let rejected = kizuna_outreach::reject_approval(state.hub.store(), &id)
        .await
        .map_err(outreach_error)?;
    if !rejected {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this send is not awaiting approval (already approved, rejected or unknown)",
        ));
    }
    tracing::info!(send_id = %id, reviewer = %who.subject, "outreach rejected");
    Ok(Json(json!({"status": "rejected"})))
}

#[derive(Deserialize)]
struct ReportQuery {
    from: Option<DateTime<FixedOffset>>,
    to: Option<DateTime<FixedOffset>>,
}

async fn report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("from/to must be RFC 3339 times: {e}"),
        )
    })?;
    let report = kizuna_outreach::campaign_report(state.hub.store(), q.from, q.to)
        .await
        .map_err(outreach_error)?;
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|((campaign, variant), s)| {
            json!({
                "campaign_id": campaign,
                "variant": variant,
                "delivered": s.delivered,
                "opened": s.opened,
                "replied": s.replied,
                "converted": s.converted,
                "open_rate": s.open_rate(),
                "reply_rate": s.reply_rate(),
                "conversion_rate": s.conversion_rate(),
            })
        })
        .collect();
    Ok(Json(json!({"campaigns": rows})))
}

#[derive(Deserialize)]
struct EventBody {
    kind: String,
}

async fn record(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<EventBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    staff(&state, &headers)?;
    let Json(body) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("send {{\"kind\": \"opened\"|\"replied\"|\"converted\"}}: {e}"),
        )
    })?;
    let kind = match EventKind::parse(body.kind.trim()) {
        // Delivery is recorded by Kizuna itself.
        Some(EventKind::Delivered) | None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "kind must be opened, replied or converted, not {:?}",
                    body.kind
                ),
            ))
        }
        Some(kind) => kind,
    };
    let now = state.hub.clock().now();
    let recorded = kizuna_outreach::record_event(state.hub.store(), &id, kind, now)
        .await
        .map_err(outreach_error)?;
    Ok(Json(
        json!({"send_id": id, "kind": kind.as_str(), "recorded": recorded}),
    ))
}
