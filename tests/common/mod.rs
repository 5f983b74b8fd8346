//! Shared helpers for tests that run the real `kizuna` binary.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running `kizuna serve` child process with its own data dir.
pub struct Server {
    pub child: tokio::process::Child,
    pub addr: String,
    pub data_dir: PathBuf,
}

impl Server {
    pub async fn start(data_dir: &Path, extra_env: &[(&str, String)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        // KIZUNA_TEST_BIN runs the same test against another build (e.g. the previous
        // release, to see a regression test fail before its fix).
        let bin = std::env::var("KIZUNA_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kizuna").to_string());
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("serve")
            .current_dir(repo_root())
            .env("KIZUNA_LISTEN", &addr)
            .env("KIZUNA_DATA_DIR", data_dir)
            .env("KIZUNA_TOKEN_SECRET", SECRET)
            .env(
                "KIZUNA_LOG",
                std::env::var("KIZUNA_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn kizuna");
        let server = Server {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        };
        server.wait_ready("/healthz", Duration::from_secs(60)).await;
        server
    }

    pub async fn wait_ready(&self, path: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok((status, _)) = http_get(&self.addr, path).await {
                if status == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server not ready at {path}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn kill9(&mut self) {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        self.child.wait().await.unwrap();
    }
}

/// Minimal HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: x\r\nX-Request-Id: test-req-1\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

pub async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connect")
        .0
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON frame, or panic after `secs`.
pub async fn recv(ws: &mut Ws, secs: u64) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(secs), ws.next())
            .await
            .expect("frame in time")
            .expect("stream open")
            .expect("no websocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Frames until one of type `kind` (for `reply_to`, if given); returns all of them.
pub async fn recv_until(ws: &mut Ws, kind: &str, reply_to: Option<&str>, secs: u64) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = recv(ws, secs).await;
        let done =
            f["type"] == kind && reply_to.is_none_or(|id| f["reply_to"] == id || f["id"] == id);
        frames.push(f);
        if done {
            return frames;
        }
    }
}

/// A `message` frame, built from the protocol's own type (protocol/src/lib.rs).
pub fn message_frame(id: impl Into<String>, text: impl Into<String>) -> Value {
    serde_json::to_value(kizuna_protocol::ClientFrame::Message {
        id: id.into(),
        text: text.into(),
    })
    .unwrap()
}

/// Says hello with `extra`'s `token`, `conversation_id` and `last_seq` (all optional).
pub async fn hello(ws: &mut Ws, extra: Value) -> Value {
    let hello = kizuna_protocol::ClientFrame::Hello {
        token: extra["token"].as_str().map(str::to_string),
        conversation_id: extra["conversation_id"].as_str().map(str::to_string),
        last_seq: extra["last_seq"].as_i64(),
    };
    send(ws, serde_json::to_value(hello).unwrap()).await;
    let w = recv(ws, 10).await;
    assert_eq!(w["type"], "welcome", "{w}");
    w
}

pub fn token(role: &str, subject: &str) -> String {
    use kizuna_agent::identity::{Claims, Role, TokenVerifier};
    let v = TokenVerifier::new(SECRET.as_bytes().to_vec()).unwrap();
    let role = if role == "manager" {
        Role::Manager
    } else {
        Role::Customer
    };
    v.sign(&Claims {
        role,
        sub: subject.into(),
        name: None,
        exp: chrono::Utc::now().timestamp() + 3600,
    })
}

/// A recorded-response OpenAI-compatible endpoint on loopback. It replays fixed SSE
/// streams: a `recommend_plan` tool call when the user asks for a plan, then, once the tool
/// result is in the prompt, a Japanese reply quoting the price from that result.
/// `delay` holds every answer back (to kill the server mid-turn).
pub struct ModelFixture {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

#[derive(Clone)]
struct FixtureState {
    requests: Arc<Mutex<Vec<Value>>>,
    delay: Duration,
}

fn sse_text(content: &[&str]) -> String {
    let mut body = String::new();
    for piece in content {
        body.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "f", "object": "chat.completion.chunk", "created": 0, "model": "fixture",
                   "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
        ));
    }
    body.push_str(&format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id": "f", "object": "chat.completion.chunk", "created": 0, "model": "fixture",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    body
}

fn sse_tool_call(name: &str, args: &str) -> String {
    let (a, b) = args.split_at(args.len() / 2);
    let chunk = |delta: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "f", "object": "chat.completion.chunk", "created": 0, "model": "fixture", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
        )
    };
    format!(
        "{}{}{}data: [DONE]\n\n",
        chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": a}}]})
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]})),
        chunk(json!({})),
    )
}

async fn completions(
    State(state): State<FixtureState>,
    body: axum::Json<Value>,
) -> impl IntoResponse {
    state.requests.lock().unwrap().push(body.0.clone());
    tokio::time::sleep(state.delay).await;
    let messages = body.0["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or_default();
    let stream = if last["role"] == "tool" {
        let content = last["content"].as_str().unwrap_or("");
        let price = ["8,800円", "12,800円", "24,800円"]
            .into_iter()
            .find(|p| content.contains(p))
            .unwrap_or("料金不明");
        sse_text(&[
            "状況から",
            "スタンダードプラン",
            format!("（{price}）").as_str(),
            "をおすすめします。",
        ])
    } else if ["プラン", "足音"]
        .iter()
        .any(|w| last["content"].as_str().unwrap_or("").contains(w))
        && body.0.get("tools").is_some()
    {
        sse_tool_call(
            "recommend_plan",
            r#"{"noise_type":"footsteps","time_of_day":"late_night","duration_months":1}"#,
        )
    } else {
        sse_text(&["ご相談", "ありがとう", "ございます。"])
    };
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        stream,
    )
}

impl ModelFixture {
    pub async fn start(delay: Duration) -> ModelFixture {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(completions))
            .with_state(FixtureState {
                requests: requests.clone(),
                delay,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        ModelFixture { addr, requests }
    }

    /// Environment that points `kizuna serve` at this fixture.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KIZUNA_LLM", "openai".into()),
            ("KIZUNA_OPENAI_BASE_URL", format!("http://{}/v1", self.addr)),
            ("KIZUNA_OPENAI_MODEL", "fixture".into()),
            ("OPENAI_API_KEY", "sk-test-not-secret".into()),
        ]
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Names of the tools a `reply` frame says were called.
pub fn tool_names(reply: &Value) -> Vec<String> {
    reply["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}
