//! The `openai` backend against a recorded-response HTTP fixture: a tiny axum server on
//! 127.0.0.1 that answers `POST /v1/chat/completions` with a recorded SSE stream (or an
//! error) and records what it was sent.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use kizuna_agent::llm::{
    ChatMessage, ChatRole, LanguageModel, LlmError, LlmRequest, ToolCall, ToolSpec,
};
use kizuna_llm::openai::{OpenAiConfig, OpenAiModel};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const TEXT_STREAM: &str = include_str!("fixtures/openai_text_stream.sse");
const TOOL_STREAM: &str = include_str!("fixtures/llamacpp_tool_call_stream.sse");
const KEY: &str = "sk-test-7f3a9c1e5b";

#[derive(Clone)]
enum Reply {
    /// A recorded SSE body, sent in small pieces (cutting through multi-byte characters).
    Sse(&'static str),
    Error(StatusCode, &'static str),
    /// Answers only after this long.
    Stall(Duration),
}

#[derive(Debug, Clone)]
struct Seen {
    authorization: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct Fixture {
    reply: Reply,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn chat_completions(State(f): State<Fixture>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).expect("request body is JSON");
    f.seen.lock().unwrap().push(Seen {
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        body,
    });
    match f.reply {
        Reply::Sse(text) => {
            let pieces: Vec<Result<Bytes, Infallible>> = text
                .as_bytes()
                .chunks(7)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(futures::stream::iter(pieces)))
                .unwrap()
        }
        Reply::Error(status, body) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap(),
        Reply::Stall(d) => {
            tokio::time::sleep(d).await;
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from("data: [DONE]\n\n"))
                .unwrap()
        }
    }
}

/// Starts the fixture server; returns its `/v1` base URL and the requests it records.
async fn serve(reply: Reply) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(Fixture {
            reply,
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), seen)
}

fn model(base_url: &str) -> OpenAiModel {
    let mut cfg = OpenAiConfig::new(base_url, "gpt-4o-mini");
    cfg.api_key = Some(KEY.to_string());
    cfg.request_timeout = Duration::from_secs(20);
    OpenAiModel::new(cfg).expect("model builds")
}

fn recommend_plan_spec() -> ToolSpec {
    ToolSpec {
        name: "recommend_plan".into(),
        description: "騒音の種類と時間帯から最適な防音プランを推薦する".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "noise_type": {"type": "string", "enum": ["footsteps", "voices", "music"]},
                "time_of_day": {"type": "string", "enum": ["daytime", "evening", "late_night"]}
            },
            "required": ["noise_type", "time_of_day"]
        }),
    }
}

fn simple_request(text: &str) -> LlmRequest {
    LlmRequest {
        messages: vec![
            ChatMessage::system("あなたはカスタマーサクセス担当です。"),
            ChatMessage::user(text),
        ],
        tools: vec![],
        max_tokens: 256,
        temperature: 0.2,
        cache_key: None,
    }
}

/// Runs `generate` and returns the result plus every delta sent on the channel.
async fn generate(
    m: &OpenAiModel,
    req: LlmRequest,
) -> (Result<kizuna_agent::llm::LlmOutput, LlmError>, Vec<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let result = m.generate(req, tx).await;
    let mut deltas = Vec::new();
    while let Ok(d) = rx.try_recv() {
        deltas.push(d);
    }
    (result, deltas)
}

#[tokio::test]
async fn openai_streamed_japanese_text_arrives_as_deltas() {
    let (url, seen) = serve(Reply::Sse(TEXT_STREAM)).await;
    let m = model(&url);
    assert_eq!(m.name(), "openai:gpt-4o-mini");
    assert!(m.native_tool_calls());

    let (out, deltas) = generate(&m, simple_request("夜中の足音がうるさいです")).await;
    let out = out.expect("generation succeeds");

    let expected = "お問い合わせありがとうございます。夜間の足音の件、確認いたします。";
    assert_eq!(out.text, expected);
    assert_eq!(
        deltas,
        vec![
            "お問い合わせ",
            "ありがとう",
            "ございます。",
            "夜間の",
            "足音の件、",
            "確認いたします。"
        ]
    );
    assert_eq!(deltas.concat(), out.text);
    assert!(out.tool_calls.is_empty());
    assert_eq!(out.usage.prompt_tokens, 42);
    assert_eq!(out.usage.completion_tokens, 17);
    assert!(out.usage.time_to_first_token <= out.usage.total_time);
    assert!(out.usage.total_time > Duration::ZERO);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn openai_closed_delta_receiver_is_not_an_error() {
    let (url, _seen) = serve(Reply::Sse(TEXT_STREAM)).await;
    let m = model(&url);
    let (tx, rx) = mpsc::unbounded_channel();
    drop(rx);
    let out = m
        .generate(simple_request("こんにちは"), tx)
        .await
        .expect("generation succeeds without a listener");
    assert!(out.text.starts_with("お問い合わせ"));
}

#[tokio::test]
async fn openai_streamed_tool_call_is_reassembled() {
    let (url, _seen) = serve(Reply::Sse(TOOL_STREAM)).await;
    let m = model(&url);
    let mut req = simple_request("深夜の上の階の足音が気になります");
    req.tools = vec![recommend_plan_spec()];

    let (out, deltas) = generate(&m, req).await;
    let out = out.expect("generation succeeds");

    assert_eq!(
        out.tool_calls,
        vec![ToolCall {
            id: "jG8tPz2QeLr5WcXb7VnK3sYd0HmA4uFi".into(),
            name: "recommend_plan".into(),
            arguments: json!({"noise_type": "footsteps", "time_of_day": "late_night"}),
        }]
    );
    assert_eq!(out.text, "");
    assert!(deltas.is_empty(), "no text deltas expected, got {deltas:?}");
    // llama.cpp reports usage in its last chunk even without stream_options.
    assert_eq!(out.usage.prompt_tokens, 312);
    assert_eq!(out.usage.completion_tokens, 28);
}

#[tokio::test]
async fn openai_request_body_and_auth_header_are_right() {
    let (url, seen) = serve(Reply::Sse(TOOL_STREAM)).await;
    let m = model(&url);
    let earlier_call = ToolCall {
        id: "call_prev_1".into(),
        name: "recommend_plan".into(),
        arguments: json!({"noise_type": "voices", "time_of_day": "evening"}),
    };
    let req = LlmRequest {
        messages: vec![
            ChatMessage::system("あなたはカスタマーサクセス担当です。"),
            ChatMessage::user("夕方の話し声が気になります"),
            ChatMessage {
                role: ChatRole::Assistant,
                content: String::new(),
                tool_calls: vec![earlier_call],
                tool_call_id: None,
            },
            ChatMessage::tool_result("call_prev_1", r#"{"plan":"防音カーテン"}"#),
            ChatMessage::assistant("防音カーテンをおすすめします。"),
            ChatMessage::user("深夜の足音はどうですか"),
        ],
        tools: vec![recommend_plan_spec()],
        max_tokens: 512,
        temperature: 0.5,
        cache_key: Some("conv-1".into()),
    };
    let (out, _) = generate(&m, req).await;
    out.expect("generation succeeds");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.authorization.as_deref(), Some(&*format!("Bearer {KEY}")));
    let body = &s.body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["temperature"], 0.5);
    assert!(body.get("stream_options").is_none(), "off by default");
    assert!(body.get("max_completion_tokens").is_none());
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "あなたはカスタマーサクセス担当です。"},
            {"role": "user", "content": "夕方の話し声が気になります"},
            {"role": "assistant", "content": "", "tool_calls": [{
                "id": "call_prev_1",
                "type": "function",
                "function": {
                    "name": "recommend_plan",
                    "arguments": "{\"noise_type\":\"voices\",\"time_of_day\":\"evening\"}"
                }
            }]},
            {"role": "tool", "tool_call_id": "call_prev_1", "content": "{\"plan\":\"防音カーテン\"}"},
            {"role": "assistant", "content": "防音カーテンをおすすめします。"},
            {"role": "user", "content": "深夜の足音はどうですか"}
        ])
    );
    // The arguments string must itself be JSON of the original arguments.
    let args: Value = serde_json::from_str(
        body["messages"][2]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        args,
        json!({"noise_type": "voices", "time_of_day": "evening"})
    );
    assert_eq!(
        body["tools"],
        json!([{
            "type": "function",
            "function": {
                "name": "recommend_plan",
                "description": "騒音の種類と時間帯から最適な防音プランを推薦する",
                "parameters": recommend_plan_spec().parameters
            }
        }])
    );
}

#[tokio::test]
async fn openai_request_omits_empty_tools_and_honours_flags() {
    let (url, seen) = serve(Reply::Sse(TEXT_STREAM)).await;
    let mut cfg = OpenAiConfig::new(format!("{url}/"), "o4-mini");
    cfg.stream_usage = true;
    cfg.use_max_completion_tokens = true;
    let m = OpenAiModel::new(cfg).unwrap();
    let (out, _) = generate(&m, simple_request("こんにちは")).await;
    out.expect("generation succeeds (trailing slash in base_url is fine)");

    let seen = seen.lock().unwrap();
    let body = &seen[0].body;
    assert!(body.get("tools").is_none(), "no tools → no tools field");
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["max_completion_tokens"], 256);
    assert!(body.get("max_tokens").is_none());
    // No key configured: an empty bearer token, never the environment's key.
    assert_eq!(
        seen[0].authorization.as_deref().map(str::trim),
        Some("Bearer")
    );
}

fn expect_request_error(r: Result<kizuna_agent::llm::LlmOutput, LlmError>) -> String {
    match r {
        Err(LlmError::Request(msg)) => msg,
        other => panic!("expected LlmError::Request, got {other:?}"),
    }
}

#[tokio::test]
async fn openai_http_401_is_a_request_error_with_the_server_message() {
    let (url, seen) = serve(Reply::Error(
        StatusCode::UNAUTHORIZED,
        r#"{"error":{"message":"Incorrect API key provided: sk-test-***9c1e. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
    ))
    .await;
    let m = model(&url);
    let (r, deltas) = generate(&m, simple_request("こんにちは")).await;
    let msg = expect_request_error(r);
    assert!(msg.contains("401"), "{msg}");
    assert!(msg.contains("Incorrect API key provided"), "{msg}");
    assert!(!msg.contains(KEY), "the key must not leak: {msg}");
    assert!(deltas.is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn openai_llamacpp_style_401_with_integer_code_keeps_the_message() {
    let (url, _) = serve(Reply::Error(
        StatusCode::UNAUTHORIZED,
        r#"{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}"#,
    ))
    .await;
    let m = model(&url);
    let (r, _) = generate(&m, simple_request("こんにちは")).await;
    let msg = expect_request_error(r);
    assert!(msg.contains("Invalid API Key"), "{msg}");
}

#[tokio::test]
async fn openai_http_500_is_a_request_error_with_the_server_message() {
    let (url, seen) = serve(Reply::Error(
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
    ))
    .await;
    let m = model(&url);
    let (r, _) = generate(&m, simple_request("こんにちは")).await;
    let msg = expect_request_error(r);
    assert!(msg.contains("500"), "{msg}");
    assert!(
        msg.contains("The server had an error while processing your request"),
        "{msg}"
    );
    assert!(
        !msg.contains("\"type\""),
        "message is extracted, not raw JSON: {msg}"
    );
    // async-openai retries 5xx itself (3 retries) before giving up.
    assert!(!seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn openai_connection_refused_is_unavailable() {
    // A port that was just free: bind, note it, close it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let m = model(&format!("http://127.0.0.1:{port}/v1"));
    let (r, _) = generate(&m, simple_request("こんにちは")).await;
    match r {
        Err(LlmError::Unavailable(msg)) => {
            assert!(msg.contains(&port.to_string()), "{msg}");
            assert!(!msg.contains(KEY), "{msg}");
        }
        other => panic!("expected LlmError::Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn openai_slow_server_times_out() {
    let (url, _) = serve(Reply::Stall(Duration::from_secs(10))).await;
    let mut cfg = OpenAiConfig::new(url, "gpt-4o-mini");
    cfg.request_timeout = Duration::from_millis(300);
    let m = OpenAiModel::new(cfg).unwrap();
    let started = std::time::Instant::now();
    let (r, _) = generate(&m, simple_request("こんにちは")).await;
    match r {
        Err(LlmError::Timeout(d)) => assert_eq!(d, Duration::from_millis(300)),
        other => panic!("expected LlmError::Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn openai_config_debug_redacts_the_key() {
    let mut cfg = OpenAiConfig::new("https://api.openai.com/v1", "gpt-4o");
    cfg.api_key = Some(KEY.into());
    let shown = format!("{cfg:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    let m = OpenAiModel::new(cfg).unwrap();
    let shown = format!("{m:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert_eq!(m.name(), "openai:gpt-4o");
}

#[test]
fn openai_empty_base_url_is_rejected() {
    assert!(matches!(
        OpenAiModel::new(OpenAiConfig::new("  ", "gpt-4o")),
        Err(LlmError::Unavailable(_))
    ));
}
