//! The transport: axum HTTP endpoints and the chat websocket. Everything it knows about
//! conversations it asks [`ConversationHub`]; this layer only speaks JSON frames
//! (see docs/protocol.md), authenticates and applies limits.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kizuna_agent::hub::{ConversationHub, HubError, OutFrame, Submitted};
use kizuna_agent::identity::{Identity, TokenVerifier};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Limits;
use crate::ratelimit::{IpLimiter, TokenBucket};

pub struct AppState {
    pub hub: Arc<ConversationHub>,
    pub verifier: TokenVerifier,
    pub limits: Limits,
    pub ip_limiter: IpLimiter,
    pub metrics: PrometheusHandle,
    /// Set once the model is loaded and warm.
    pub model_ready: Arc<AtomicBool>,
    pub connections: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
    /// Built web assets (widget, console, demo page).
    pub web_dir: std::path::PathBuf,
    /// The knowledge base, for the managers' document API.
    pub knowledge: Option<Arc<kizuna_knowledge::KnowledgeBase>>,
    /// What a re-index reads.
    pub content_dir: std::path::PathBuf,
    /// Delivers outreach a person approved (chat, extra channels, staff notices).
    pub outreach: Arc<crate::outreach::ServerDelivery>,
    /// `/mcp` (docs/mcp.md); none when `mcp.enabled` is off.
    pub mcp: Option<crate::api::mcp::McpEndpoint>,
    /// `/channels/line/webhook` (docs/line.md); none unless the LINE channel is configured.
    pub line: Option<Arc<crate::api::line::LineEndpoint>>,
}

pub fn router(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws_upgrade))
        .merge(crate::api::routes())
        .merge(crate::api::mcp::routes(&state))
        .merge(crate::api::line::routes(&state))
        .merge(web_routes(&state.web_dir))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// The widget (`/widget.js`), the operator console (`/console`) and the demo page (`/`),
/// served from the built `web-widget/dist`. Without a build, `/` says how to make one.
fn web_routes(dir: &std::path::Path) -> Router<Arc<AppState>> {
    use tower_http::services::{ServeDir, ServeFile};
    if !dir.join("index.html").is_file() {
        tracing::warn!(dir = %dir.display(), "no built web widget; run scripts/setup (or npm run build in web-widget/)");
        return Router::new().route(
            "/",
            get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    "The web widget is not built: run scripts/setup (or `npm ci && npm run build` in web-widget/).",
                )
            }),
        );
    }
    Router::new()
        .route_service("/", ServeFile::new(dir.join("index.html")))
        .route_service("/console", ServeFile::new(dir.join("console.html")))
        .fallback_service(ServeDir::new(dir))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let db = state.hub.store().ping().await.is_ok();
    let model = state.model_ready.load(Ordering::Relaxed);
    let body = Json(json!({"database": db, "model": model}));
    if db && model {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    metrics::gauge!("kizuna_websocket_connections")
        .set(state.connections.load(Ordering::Relaxed) as f64);
    metrics::gauge!("kizuna_live_conversations").set(state.hub.live_conversations() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

async fn ws_upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = addr.ip();
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if !state.ip_limiter.connect(ip) {
        metrics::counter!("kizuna_rejected_connections_total", "reason" => "per_ip").increment(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        )
            .into_response();
    }
    // Small buffers: thousands of idle sockets must stay cheap (~6 KB each instead of ~130 KB).
    // The hard frame cap is generous; the application limit answers with an error frame.
    ws.read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_message_size(1 << 20)
        .max_frame_size(1 << 20)
        .on_upgrade(move |socket| async move {
            state.connections.fetch_add(1, Ordering::Relaxed);
            // Boxed: the task of an idle socket then holds only a pointer to this state.
            let conversation =
                Box::pin(Connection::new(state.clone(), ip, query.token).run(socket)).await;
            if let Some(id) = conversation {
                state.hub.release(&id);
            }
            state.connections.fetch_sub(1, Ordering::Relaxed);
            state.ip_limiter.disconnect(ip);
        })
}

/// One websocket's state.
struct Connection {
    state: Arc<AppState>,
    ip: IpAddr,
    query_token: Option<String>,
    identity: Option<Identity>,
    conversation_id: Option<String>,
    live: Option<broadcast::Receiver<OutFrame>>,
    /// Highest durable sequence number sent to this socket.
    delivered_seq: i64,
    bucket: TokenBucket,
}

enum Flow {
    Continue,
    Close,
}

fn error_frame(code: &str, message: impl Into<String>, id: Option<&str>) -> String {
    let mut v = json!({"type": "error", "code": code, "message": message.into()});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v.to_string()
}

impl Connection {
    fn new(state: Arc<AppState>, ip: IpAddr, query_token: Option<String>) -> Self {
        let per_minute = state.limits.messages_per_minute_per_connection;
        Self {
            bucket: TokenBucket::new(per_minute, per_minute.div_ceil(6).max(1)),
            state,
            ip,
            query_token,
            identity: None,
            conversation_id: None,
            live: None,
            delivered_seq: 0,
        }
    }

    /// Serves the socket until it closes; returns the conversation it had open.
    async fn run(mut self, mut socket: WebSocket) -> Option<String> {
        let mut shutdown = self.state.shutdown.clone();
        loop {
            let flow = tokio::select! {
                _ = shutdown.changed() => {
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1012, reason: "server restarting".into() }))).await;
                    Flow::Close
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(message)) => Box::pin(self.on_message(&mut socket, message)).await,
                    other => {
                        tracing::debug!(?other, "socket ended");
                        Flow::Close
                    }
                },
                frame = next_live(&mut self.live) => Box::pin(self.on_live(&mut socket, frame)).await,
            };
            if matches!(flow, Flow::Close) {
                break;
            }
        }
        self.live = None;
        self.conversation_id.take()
    }

    async fn send(&self, socket: &mut WebSocket, text: String) -> Flow {
        match socket.send(Message::Text(text.into())).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    async fn on_live(
        &mut self,
        socket: &mut WebSocket,
        frame: Result<OutFrame, broadcast::error::RecvError>,
    ) -> Flow {
        match frame {
            Ok(frame) => self.deliver(socket, frame).await,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow for the live stream: re-read the durable log from where we are.
                let Some(conv) = self.conversation_id.clone() else {
                    return Flow::Continue;
                };
                match self
                    .state
                    .hub
                    .store()
                    .frames_after(&conv, self.delivered_seq)
                    .await
                {
                    Ok(frames) => {
                        for f in frames {
                            let mut payload = f.payload;
                            payload["seq"] = json!(f.seq);
                            if let Flow::Close = self
                                .deliver(
                                    socket,
                                    OutFrame {
                                        seq: Some(f.seq),
                                        json: payload.to_string().into(),
                                    },
                                )
                                .await
                            {
                                return Flow::Close;
                            }
                        }
                        Flow::Continue
                    }
                    Err(_) => Flow::Close,
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.live = None;
                Flow::Continue
            }
        }
    }

    async fn deliver(&mut self, socket: &mut WebSocket, frame: OutFrame) -> Flow {
        if let Some(seq) = frame.seq {
            if seq <= self.delivered_seq {
                return Flow::Continue;
            }
            self.delivered_seq = seq;
        }
        self.send(socket, frame.json.to_string()).await
    }

    async fn on_message(&mut self, socket: &mut WebSocket, message: Message) -> Flow {
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(bytes) => match String::from_utf8(bytes.to_vec()) {
                Ok(t) => t,
                Err(_) => {
                    return self
                        .reject(socket, "invalid_utf8", "frames must be UTF-8 JSON", None)
                        .await
                }
            },
            Message::Close(_) => return Flow::Close,
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
        };
        if text.len() > self.state.limits.max_frame_bytes {
            return self
                .reject(
                    socket,
                    "too_large",
                    format!(
                        "frames are limited to {} bytes",
                        self.state.limits.max_frame_bytes
                    ),
                    None,
                )
                .await;
        }
        let value: Value = match serde_json::from_str(&text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return self
                    .reject(socket, "bad_json", "a frame must be a JSON object", None)
                    .await
            }
        };
        let id = value.get("id").and_then(Value::as_str).map(str::to_string);
        match value.get("type").and_then(Value::as_str) {
            Some("hello") => self.on_hello(socket, &value).await,
            Some("message") => self.on_user_message(socket, &value, id.as_deref()).await,
            Some("ping") => self.send(socket, json!({"type": "pong"}).to_string()).await,
            Some(other) => {
                let other = other.chars().take(40).collect::<String>();
                self.reject(
                    socket,
                    "unknown_type",
                    format!("unknown frame type {other:?}"),
                    id.as_deref(),
                )
                .await
            }
            None => {
                self.reject(
                    socket,
                    "bad_request",
                    "a frame needs a \"type\"",
                    id.as_deref(),
                )
                .await
            }
        }
    }

    async fn reject(
        &self,
        socket: &mut WebSocket,
        code: &str,
        message: impl Into<String>,
        id: Option<&str>,
    ) -> Flow {
        metrics::counter!("kizuna_frame_errors_total", "code" => code.to_string()).increment(1);
        self.send(socket, error_frame(code, message, id)).await
    }

    fn authenticate(&self, hello_token: Option<&str>) -> Result<Identity, String> {
        match hello_token.or(self.query_token.as_deref()) {
            None => Ok(Identity::anonymous(uuid::Uuid::new_v4().to_string())),
            Some(token) => self
                .state
                .verifier
                .verify(token, chrono::Utc::now().timestamp())
                .map_err(|e| e.to_string()),
        }
    }

    async fn on_hello(&mut self, socket: &mut WebSocket, hello: &Value) -> Flow {
        let identity = match &self.identity {
            Some(identity) => identity.clone(),
            None => match self.authenticate(hello.get("token").and_then(Value::as_str)) {
                Ok(identity) => identity,
                Err(reason) => {
                    self.reject(socket, "unauthorized", reason, None).await;
                    return Flow::Close;
                }
            },
        };
        let conversation_id = hello.get("conversation_id").and_then(Value::as_str);
        let last_seq = hello.get("last_seq").and_then(Value::as_i64).unwrap_or(0);
        let opened = match self
            .state
            .hub
            .open(&identity, conversation_id, last_seq)
            .await
        {
            Ok(o) => o,
            Err(e) => return self.hub_error(socket, e, None).await,
        };
        let welcome = json!({
            "type": "welcome",
            "conversation_id": opened.conversation_id,
            "last_seq": opened.last_seq,
            "role": identity.role,
            "resumed": conversation_id.is_some(),
        });
        self.identity = Some(identity);
        // A second hello moves the socket to another conversation: let go of the first.
        self.live = Some(opened.live);
        if let Some(previous) = self.conversation_id.replace(opened.conversation_id) {
            self.state.hub.release(&previous);
        }
        self.delivered_seq = last_seq.max(0);
        if let Flow::Close = self.send(socket, welcome.to_string()).await {
            return Flow::Close;
        }
        for frame in opened.replay {
            if let Flow::Close = self.deliver(socket, frame).await {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    async fn on_user_message(
        &mut self,
        socket: &mut WebSocket,
        frame: &Value,
        id: Option<&str>,
    ) -> Flow {
        let (Some(identity), Some(conv)) = (self.identity.clone(), self.conversation_id.clone())
        else {
            return self
                .reject(socket, "not_open", "send a hello frame first", id)
                .await;
        };
        let Some(id) = id else {
            return self
                .reject(
                    socket,
                    "bad_request",
                    "a message needs a client-generated \"id\"",
                    None,
                )
                .await;
        };
        let Some(text) = frame.get("text").and_then(Value::as_str) else {
            return self
                .reject(socket, "bad_request", "a message needs \"text\"", Some(id))
                .await;
        };
        if !self.bucket.try_take() || !self.state.ip_limiter.message(self.ip) {
            return self
                .reject(
                    socket,
                    "rate_limited",
                    "too many messages; wait a moment and resend",
                    Some(id),
                )
                .await;
        }
        match self.state.hub.submit(&identity, &conv, id, text).await {
            // The ack arrives through the live stream, like every durable frame.
            Ok(Submitted::Accepted { .. }) => Flow::Continue,
            Ok(Submitted::Duplicate(frame)) => self.send(socket, frame.json.to_string()).await,
            Err(e) => self.hub_error(socket, e, Some(id)).await,
        }
    }

    async fn hub_error(&self, socket: &mut WebSocket, error: HubError, id: Option<&str>) -> Flow {
        match error {
            HubError::Forbidden => {
                self.reject(socket, "forbidden", error.to_string(), id)
                    .await
            }
            HubError::BadRequest(m) | HubError::Conflict(m) => {
                self.reject(socket, "bad_request", m, id).await
            }
            HubError::NotFound => {
                self.reject(socket, "bad_request", error.to_string(), id)
                    .await
            }
            HubError::Store(e) => {
                tracing::error!(error = %e, "store error");
                self.reject(
                    socket,
                    "unavailable",
                    "temporarily unavailable; resend later",
                    id,
                )
                .await
            }
        }
    }
}

async fn next_live(
    live: &mut Option<broadcast::Receiver<OutFrame>>,
) -> Result<OutFrame, broadcast::error::RecvError> {
    match live {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Waits until every socket has closed or `limit` passes.
pub async fn drain(state: &AppState, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while state.connections.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
