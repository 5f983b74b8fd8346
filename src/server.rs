//! The transport: axum HTTP endpoints and the chat websocket. Everything it knows about
//! conversations it asks [`ConversationHub`]; this layer only speaks JSON frames
//! (see docs/protocol.md), authenticates and applies limits.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use kizuna_agent::hub::{ConversationHub, HubError, OutFrame, Submitted};
use kizuna_agent::identity::{Identity, TokenVerifier};
use kizuna_protocol::{ClientFrame, ErrorCode, ServerFrame};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::client_addr::TrustedProxies;
use crate::config::{Limits, SecuritySettings};
use crate::listener::ConnectionPermit;
use crate::ratelimit::{IpLimiter, TokenBucket};
use crate::revocation::Revocations;

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
    /// Origins, proxies, the metrics token.
    pub security: SecuritySettings,
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Tokens and subjects staff revoked; checked at hello and on every message.
    pub revocations: Arc<Revocations>,
}

impl AppState {
    /// The visitor's address: the TCP peer, or the forwarded one from a trusted proxy.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted_proxies.client_ip(peer, headers)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let api = crate::api::routes().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        guard_staff_api,
    ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws_upgrade))
        .merge(api)
        .merge(crate::api::mcp::routes(&state))
        .merge(crate::api::line::routes(&state))
        .merge(web_routes(&state.web_dir))
        .with_state(state)
        .layer(axum::middleware::from_fn(security_headers))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unsafe_request_id))
}

/// A client's `X-Request-Id` is kept only when it is short and plain (letters, digits,
/// `-_.:`); anything else (newlines, megabytes, markup) is replaced by a fresh id before
/// it reaches a log line or a response header.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let safe = request.headers().get("x-request-id").map(|v| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 64
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if safe == Some(false) {
        metrics::counter!("kizuna_rejected_request_ids_total").increment(1);
        request.headers_mut().remove("x-request-id");
    }
    request
}

/// Headers every response carries; pages (the console, the demo) get a strict CSP: scripts
/// and connections only from this server, no framing (clickjacking), no referrer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let is_html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; \
                 img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; \
                 base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
    }
    response
}

/// Whether a browser page from `Origin` may use this server: this server's own pages, the
/// configured origins, or a client that is not a browser (no `Origin` header at all).
pub fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| !host.is_empty() && authority.eq_ignore_ascii_case(host))
}

/// The staff API answers pages of this server and configured origins only, and checks the
/// caller's token before any handler reads a body (a 2 MiB import is not read for nobody).
async fn guard_staff_api(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !origin_allowed(&state.security.allowed_origins, request.headers()) {
        metrics::counter!("kizuna_rejected_origins_total").increment(1);
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    if let Err(e) = crate::api::staff(&state, request.headers()) {
        return e.into_response();
    }
    next.run(request).await
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

/// `/metrics` needs the configured bearer token, or, without one, a loopback client.
async fn metrics(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let allowed = match &state.security.metrics_token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())),
        None => state.client_ip(peer, &headers).is_loopback(),
    };
    if !allowed {
        return (
            StatusCode::FORBIDDEN,
            "metrics are not public; see docs/security.md",
        )
            .into_response();
    }
    metrics::gauge!("kizuna_websocket_connections")
        .set(state.connections.load(Ordering::Relaxed) as f64);
    metrics::gauge!("kizuna_live_conversations").set(state.hub.live_conversations() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A websocket's place in the per-address count, taken before the upgrade and given back on
/// drop: whether the socket closes, the upgrade fails or the client never completes it.
struct WsSlot {
    state: Arc<AppState>,
    ip: IpAddr,
}

impl WsSlot {
    fn take(state: &Arc<AppState>, ip: IpAddr) -> Option<Self> {
        state.ip_limiter.connect(ip).then(|| Self {
            state: state.clone(),
            ip,
        })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.state.ip_limiter.disconnect(self.ip);
    }
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

async fn ws_upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    permit: Option<Extension<Arc<ConnectionPermit>>>,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = state.client_ip(peer, &headers);
    if *state.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if !origin_allowed(&state.security.allowed_origins, &headers) {
        metrics::counter!("kizuna_rejected_origins_total").increment(1);
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let Some(slot) = WsSlot::take(&state, ip) else {
        metrics::counter!("kizuna_rejected_connections_total", "reason" => "per_ip").increment(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        )
            .into_response();
    };
    // Small buffers: thousands of idle sockets must stay cheap (~6 KB each instead of ~130 KB).
    // The hard frame cap is generous; the application limit answers with an error frame.
    ws.read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_message_size(1 << 20)
        .max_frame_size(1 << 20)
        .on_failed_upgrade(|error| {
            metrics::counter!("kizuna_failed_upgrades_total").increment(1);
            tracing::debug!(%error, "websocket upgrade failed");
        })
        .on_upgrade(move |socket| async move {
            // Both are released when this task ends; if the upgrade fails, axum drops this
            // closure unrun and they are released all the same.
            let _slot = slot;
            let _permit = permit;
            state.connections.fetch_add(1, Ordering::Relaxed);
            // Boxed: the task of an idle socket then holds only a pointer to this state.
            let conversation =
                Box::pin(Connection::new(state.clone(), ip, query.token).run(socket)).await;
            if let Some(id) = conversation {
                state.hub.release(&id);
            }
            state.connections.fetch_sub(1, Ordering::Relaxed);
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
    /// Error frames this socket may still provoke (docs/security.md).
    errors: TokenBucket,
    /// The token the identity came from: re-checked (expiry, revocation) on every message.
    token: Option<String>,
    last_heard: tokio::time::Instant,
}

enum Flow {
    Continue,
    Close,
}

fn error_frame(code: ErrorCode, message: impl Into<String>, id: Option<&str>) -> String {
    ServerFrame::error(code, message, id).to_json()
}

impl Connection {
    fn new(state: Arc<AppState>, ip: IpAddr, query_token: Option<String>) -> Self {
        let per_minute = state.limits.messages_per_minute_per_connection;
        let errors_per_minute = state.limits.error_frames_per_minute.max(1);
        Self {
            bucket: TokenBucket::new(per_minute, per_minute.div_ceil(6).max(1)),
            errors: TokenBucket::new(errors_per_minute, errors_per_minute.div_ceil(3).max(1)),
            token: None,
            last_heard: tokio::time::Instant::now(),
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
        let limits = &self.state.limits;
        let hello_deadline =
            tokio::time::Instant::now() + Duration::from_secs(limits.hello_timeout_secs);
        let idle_timeout = Duration::from_secs(limits.idle_timeout_secs);
        let ping_every = Duration::from_secs(limits.ping_interval_secs);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flow = tokio::select! {
                _ = shutdown.changed() => {
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1012, reason: "server restarting".into() }))).await;
                    Flow::Close
                }
                // A socket that never says hello holds a slot for nothing.
                _ = tokio::time::sleep_until(hello_deadline), if self.identity.is_none() => {
                    metrics::counter!("kizuna_closed_sockets_total", "reason" => "no_hello").increment(1);
                    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1008, reason: "hello expected".into() }))).await;
                    Flow::Close
                }
                // Pings keep proxies from cutting a quiet chat; a peer that answers nothing,
                // not even a pong, is gone (or hostile) and its socket is closed.
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > idle_timeout {
                        metrics::counter!("kizuna_closed_sockets_total", "reason" => "idle").increment(1);
                        let _ = socket.send(Message::Close(Some(CloseFrame { code: 1001, reason: "idle".into() }))).await;
                        Flow::Close
                    } else {
                        match socket.send(Message::Ping(Default::default())).await {
                            Ok(()) => Flow::Continue,
                            Err(_) => Flow::Close,
                        }
                    }
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(message)) => {
                        self.last_heard = tokio::time::Instant::now();
                        Box::pin(self.on_message(&mut socket, message)).await
                    }
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
            // Too slow for the live stream: re-read the durable log from where we are.
            Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up(socket, None).await,
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
            if seq > self.delivered_seq + 1 {
                // A frame is missing before this one (committed by another replica or
                // racing another commit here): the log has it, in order.
                return self.catch_up(socket, Some(seq)).await;
            }
            self.delivered_seq = seq;
        }
        self.send(socket, frame.json.to_string()).await
    }

    /// Sends the durable frames after the last one delivered, from the log, up to `upto`
    /// (everything when None). A frame the log does not have yet is skipped here and
    /// arrives live.
    async fn catch_up(&mut self, socket: &mut WebSocket, upto: Option<i64>) -> Flow {
        let Some(conv) = self.conversation_id.clone() else {
            return Flow::Continue;
        };
        let frames = match self
            .state
            .hub
            .store()
            .frames_after(&conv, self.delivered_seq)
            .await
        {
            Ok(frames) => frames,
            Err(_) => return Flow::Close,
        };
        for f in frames {
            if upto.is_some_and(|upto| f.seq > upto) {
                break;
            }
            if f.seq <= self.delivered_seq {
                continue;
            }
            self.delivered_seq = f.seq;
            let frame = OutFrame::stored(f.seq, f.payload);
            if let Flow::Close = self.send(socket, frame.json.to_string()).await {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    async fn on_message(&mut self, socket: &mut WebSocket, message: Message) -> Flow {
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(bytes) => match String::from_utf8(bytes.to_vec()) {
                Ok(t) => t,
                Err(_) => {
                    return self
                        .reject(
                            socket,
                            ErrorCode::InvalidUtf8,
                            "frames must be UTF-8 JSON",
                            None,
                        )
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
                    ErrorCode::TooLarge,
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
                    .reject(
                        socket,
                        ErrorCode::BadJson,
                        "a frame must be a JSON object",
                        None,
                    )
                    .await
            }
        };
        let id = value.get("id").and_then(Value::as_str).map(str::to_string);
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string);
        match kind.as_deref() {
            Some(kind) if ClientFrame::TYPES.contains(&kind) => {
                match serde_json::from_value::<ClientFrame>(value) {
                    Ok(ClientFrame::Hello {
                        token,
                        conversation_id,
                        last_seq,
                    }) => {
                        self.on_hello(socket, token, conversation_id, last_seq)
                            .await
                    }
                    Ok(ClientFrame::Message { id, text }) => {
                        self.on_user_message(socket, &id, &text).await
                    }
                    Ok(ClientFrame::Ping) => self.send(socket, ServerFrame::Pong.to_json()).await,
                    // A known type with a missing or mistyped field ("missing field `id`").
                    Err(e) => {
                        self.reject(
                            socket,
                            ErrorCode::BadRequest,
                            format!("bad {kind} frame: {e}"),
                            id.as_deref(),
                        )
                        .await
                    }
                }
            }
            Some(other) => {
                let other = other.chars().take(40).collect::<String>();
                self.reject(
                    socket,
                    ErrorCode::UnknownType,
                    format!("unknown frame type {other:?}"),
                    id.as_deref(),
                )
                .await
            }
            None => {
                self.reject(
                    socket,
                    ErrorCode::BadRequest,
                    "a frame needs a \"type\"",
                    id.as_deref(),
                )
                .await
            }
        }
    }

    /// Answers a bad frame with an error frame; a socket that keeps sending bad frames is
    /// closed (1008) instead of being answered thousands of times.
    async fn reject(
        &mut self,
        socket: &mut WebSocket,
        code: ErrorCode,
        message: impl Into<String>,
        id: Option<&str>,
    ) -> Flow {
        metrics::counter!("kizuna_frame_errors_total", "code" => code.as_str()).increment(1);
        if !self.errors.try_take() {
            metrics::counter!("kizuna_closed_sockets_total", "reason" => "errors").increment(1);
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1008,
                    reason: "too many bad frames".into(),
                })))
                .await;
            return Flow::Close;
        }
        self.send(socket, error_frame(code, message, id)).await
    }

    /// The identity of a token: signature, expiry and the revocation list.
    fn verify_token(&self, token: &str) -> Result<Identity, String> {
        let identity = self
            .state
            .verifier
            .verify(token, chrono::Utc::now().timestamp())
            .map_err(|e| e.to_string())?;
        if self.state.revocations.is_revoked(token, &identity.subject) {
            return Err("the token was revoked".into());
        }
        Ok(identity)
    }

    fn authenticate(&mut self, hello_token: Option<&str>) -> Result<Identity, String> {
        match hello_token
            .or(self.query_token.as_deref())
            .map(str::to_string)
        {
            None => Ok(Identity::anonymous(uuid::Uuid::new_v4().to_string())),
            Some(token) => {
                let identity = self.verify_token(&token)?;
                self.token = Some(token);
                Ok(identity)
            }
        }
    }

    async fn on_hello(
        &mut self,
        socket: &mut WebSocket,
        token: Option<String>,
        conversation_id: Option<String>,
        last_seq: Option<i64>,
    ) -> Flow {
        let identity = match &self.identity {
            Some(identity) => identity.clone(),
            None => match self.authenticate(token.as_deref()) {
                Ok(mut identity) => {
                    identity.address = Some(self.ip);
                    identity
                }
                Err(reason) => {
                    self.reject(socket, ErrorCode::Unauthorized, reason, None)
                        .await;
                    return Flow::Close;
                }
            },
        };
        let conversation_id = conversation_id.as_deref();
        let last_seq = last_seq.unwrap_or(0);
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

    async fn on_user_message(&mut self, socket: &mut WebSocket, id: &str, text: &str) -> Flow {
        let (Some(identity), Some(conv)) = (self.identity.clone(), self.conversation_id.clone())
        else {
            return self
                .reject(
                    socket,
                    ErrorCode::NotOpen,
                    "send a hello frame first",
                    Some(id),
                )
                .await;
        };
        // A token is good for as long as it is valid, not for as long as the socket lives.
        if let Some(token) = self.token.clone() {
            if let Err(reason) = self.verify_token(&token) {
                metrics::counter!("kizuna_closed_sockets_total", "reason" => "token").increment(1);
                let _ = self
                    .send(
                        socket,
                        error_frame(ErrorCode::Unauthorized, reason, Some(id)),
                    )
                    .await;
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1008,
                        reason: "token no longer valid".into(),
                    })))
                    .await;
                return Flow::Close;
            }
        }
        if !self.bucket.try_take() || !self.address_may_send().await {
            return self
                .reject(
                    socket,
                    ErrorCode::RateLimited,
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

    /// The per-address message limit. With replicas on PostgreSQL it is counted in the
    /// database, so it holds for the cluster however a balancer spreads the sockets
    /// (docs/deployment.md); on SQLite (one process) in memory. If the count cannot be
    /// read, this replica's own limit applies.
    async fn address_may_send(&self) -> bool {
        let store = self.state.hub.store();
        if store.engine() == kizuna_store::Engine::Postgres {
            let key = format!("msg:{}", self.ip);
            match store
                .hit_rate_window(
                    &key,
                    Duration::from_secs(60),
                    self.state.limits.messages_per_minute_per_ip,
                )
                .await
            {
                Ok(allowed) => return allowed,
                Err(e) => {
                    tracing::warn!(error = %e, "shared rate limit unavailable; using this replica's")
                }
            }
        }
        self.state.ip_limiter.message(self.ip)
    }

    async fn hub_error(
        &mut self,
        socket: &mut WebSocket,
        error: HubError,
        id: Option<&str>,
    ) -> Flow {
        match error {
            // Over the anonymous escalation budget the bot keeps answering: not an error.
            HubError::EscalationCapped => Flow::Continue,
            HubError::Overloaded { retry_after_secs } => {
                let frame = ServerFrame::Error {
                    code: error.code(),
                    message: error.to_string(),
                    id: id.map(str::to_string),
                    retry_after_secs: Some(retry_after_secs),
                };
                metrics::counter!("kizuna_frame_errors_total", "code" => "overloaded").increment(1);
                self.send(socket, frame.to_json()).await
            }
            error => {
                if let HubError::Store(e) = &error {
                    tracing::error!(error = %e, "store error");
                }
                self.reject(socket, error.code(), error.client_message(), id)
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
