//! `/mcp`: the MCP server over Streamable HTTP (kizuna-mcp on rmcp). This layer only
//! authenticates: `Authorization: Bearer <token>` becomes the verified [`Identity`] the MCP
//! session scopes every request by; no header means an anonymous caller; a bad token is a
//! 401 before the request reaches the protocol (docs/mcp.md).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use kizuna_agent::identity::Identity;
use kizuna_mcp::{ClientAddr, HttpOptions, HttpService, McpServices};
use serde_json::json;
use tower::ServiceExt as _;

use crate::config::Settings;
use crate::server::AppState;

/// The mounted MCP service.
#[derive(Clone)]
pub struct McpEndpoint {
    service: HttpService,
}

impl McpEndpoint {
    pub fn new(
        services: Arc<McpServices>,
        settings: &Settings,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Self {
        let options = HttpOptions {
            allowed_hosts: settings.mcp.allowed_hosts.clone(),
            cancel,
        };
        Self {
            service: kizuna_mcp::http_service(services, options),
        }
    }
}

pub fn routes(state: &AppState) -> Router<Arc<AppState>> {
    if state.mcp.is_none() {
        return Router::new();
    }
    Router::new().route("/mcp", any(mcp))
}

fn unauthorized(message: String) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": {"code": "unauthorized", "message": message}})),
    )
        .into_response()
}

/// The caller a request proves: `Ok(None)` without an Authorization header.
fn bearer_identity(state: &AppState, request: &Request) -> Result<Option<Identity>, String> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| "send Authorization: Bearer <token>".to_string())?;
    state
        .verifier
        .verify(token, chrono::Utc::now().timestamp())
        .map(Some)
        .map_err(|e| e.to_string())
}

async fn mcp(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let Some(endpoint) = state.mcp.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match bearer_identity(&state, &request) {
        Ok(Some(identity)) => {
            request.extensions_mut().insert(identity);
        }
        Ok(None) => {}
        Err(reason) => {
            metrics::counter!("kizuna_mcp_rejected_total", "reason" => "bad_token").increment(1);
            return unauthorized(reason);
        }
    }
    request.extensions_mut().insert(ClientAddr(addr.ip()));
    match endpoint.service.oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}
