//! OpenAI-compatible backend: any `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp
//! server, Ollama), streamed over server-sent events.
//!
//! The request is built as plain JSON and every stream chunk is read into the minimal,
//! lenient structs below (async-openai's "bring your own types" methods), so servers that
//! omit fields, send `null`s or add their own (llama.cpp's `timings`, OpenAI's `obfuscation`)
//! all work.
//!
//! Choices made here, on purpose:
//! - `stream_options: {"include_usage": true}` is only sent when
//!   [`OpenAiConfig::stream_usage`] is set (default off): a few OpenAI-compatible servers and
//!   proxies reject unknown request fields. Without it OpenAI reports no token counts for a
//!   streamed call (llama.cpp and vLLM often report them anyway; any `usage` that arrives is
//!   used), and [`Usage`] then holds zeros for the counts but still the timings.
//! - A tool call whose `arguments` are not valid JSON is returned, not rejected, as
//!   `{"_raw": "<the string>"}`: the agent's argument validation then fails for that call and
//!   the failure goes back to the model as a tool result, so the model can retry within the
//!   conversation. An empty argument string becomes `{}`.
//! - HTTP errors (any non-2xx, after async-openai's own retries of 429/5xx/connect errors, 3
//!   retries with 0.1–0.4 s back-off) become [`LlmError::Request`] carrying the status and the
//!   server's own message; a refused or failed connection becomes [`LlmError::Unavailable`];
//!   the whole call (connect, retries, stream) is bounded by
//!   [`OpenAiConfig::request_timeout`] and becomes [`LlmError::Timeout`]. The API key never
//!   appears in errors, logs or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::Client;
use async_trait::async_trait;
use futures::StreamExt;
use kizuna_agent::llm::{
    ChatMessage, ChatRole, LanguageModel, LlmError, LlmOutput, LlmRequest, ToolCall, ToolSpec,
    Usage,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

/// Default bound on one whole call (connect, generation, stream).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Connect timeout of the HTTP client (capped by the request timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of an OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// API base including the version path, e.g. `https://api.openai.com/v1`,
    /// `http://127.0.0.1:8080/v1` (llama.cpp), `http://127.0.0.1:11434/v1` (Ollama).
    /// `/chat/completions` is appended; a trailing `/` is ignored.
    pub base_url: String,
    /// Model name as the server knows it, e.g. `gpt-4o-mini` or `qwen2.5:7b`.
    pub model: String,
    /// Sent as `Authorization: Bearer <key>`. Secret: never logged or shown by `Debug`.
    /// `None` sends an empty bearer token (local servers without auth ignore it); the
    /// `OPENAI_API_KEY` environment variable is deliberately *not* read here.
    pub api_key: Option<String>,
    /// Bound on one whole call; exceeded → [`LlmError::Timeout`].
    pub request_timeout: Duration,
    /// Send `stream_options: {"include_usage": true}` so OpenAI reports token counts for a
    /// streamed call. Off by default; turn on for api.openai.com, vLLM and recent llama.cpp.
    pub stream_usage: bool,
    /// Send the limit as `max_completion_tokens` instead of `max_tokens` (OpenAI's o-series and
    /// newer models reject `max_tokens`). Off by default: llama.cpp, vLLM and Ollama read
    /// `max_tokens`.
    pub use_max_completion_tokens: bool,
}

impl OpenAiConfig {
    /// A config with no key, [`DEFAULT_REQUEST_TIMEOUT`] and both flags off.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stream_usage: false,
            use_max_completion_tokens: false,
        }
    }
}

/// The endpoint as logs may show it: no credentials in the authority, no query string
/// (some gateways take their key as `?api-key=…`), no fragment.
pub fn redact_endpoint(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &redact_endpoint(&self.base_url))
            .field("model", &self.model)
            .field(
                "api_key",
                &self
                    .api_key
                    .as_ref()
                    .map(|_| "<redacted>")
                    .unwrap_or("<none>"),
            )
            .field("request_timeout", &self.request_timeout)
            .field("stream_usage", &self.stream_usage)
            .field("use_max_completion_tokens", &self.use_max_completion_tokens)
            .finish()
    }
}

/// A language model behind an OpenAI-compatible chat-completions endpoint.
pub struct OpenAiModel {
    client: Client<OpenAIConfig>,
    cfg: OpenAiConfig,
    name: String,
}

impl fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("name", &self.name)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl OpenAiModel {
    /// Builds the HTTP client. Fails only on an empty base URL or model, or a client that
    /// cannot be built; nothing is contacted yet.
    pub fn new(cfg: OpenAiConfig) -> Result<Self, LlmError> {
        let base_url = cfg.base_url.trim().trim_end_matches('/').to_string();
        if base_url.is_empty() {
            return Err(LlmError::Unavailable(
                "openai backend: base_url is empty".into(),
            ));
        }
        if cfg.model.trim().is_empty() {
            return Err(LlmError::Unavailable(
                "openai backend: model is empty".into(),
            ));
        }
        // No redirects: a redirect would carry the API key's request to another host.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT.min(cfg.request_timeout))
            .build()
            .map_err(|e| {
                LlmError::Unavailable(format!(
                    "openai backend: cannot build the HTTP client: {}",
                    error_chain(&e.without_url())
                ))
            })?;
        // Set every field OpenAIConfig would otherwise take from the environment.
        let config = OpenAIConfig::new()
            .with_api_base(base_url.clone())
            .with_api_key(cfg.api_key.clone().unwrap_or_default())
            .with_org_id("")
            .with_project_id("");
        let client = Client::build(http, config);
        let name = format!("openai:{}", cfg.model);
        Ok(Self {
            client,
            cfg: OpenAiConfig { base_url, ..cfg },
            name,
        })
    }

    /// The config this model was built with (the key included; do not log it).
    pub fn config(&self) -> &OpenAiConfig {
        &self.cfg
    }

    async fn stream_call(
        &self,
        body: Value,
        deltas: &mpsc::UnboundedSender<String>,
        started: Instant,
    ) -> Result<LlmOutput, LlmError> {
        let mut stream = self
            .client
            .chat()
            .create_stream_byot::<_, Chunk>(&body)
            .await
            .map_err(|e| self.map_error(e))?;

        let mut state = StreamState::default();
        while let Some(item) = stream.next().await {
            let chunk = match item {
                Ok(chunk) => chunk,
                Err(OpenAIError::JSONDeserialize(err, _)) => {
                    return Err(LlmError::BadResponse(format!(
                        "unparseable stream chunk from {}: {err}",
                        redact_endpoint(&self.cfg.base_url)
                    )))
                }
                Err(e) => return Err(self.map_error(e)),
            };
            if let Some(delta) = state.apply(chunk, started)? {
                // A closed receiver is not an error: keep generating.
                let _ = deltas.send(delta);
            }
        }
        let output = state.finish(started);
        tracing::debug!(
            model = %self.name,
            prompt_tokens = output.usage.prompt_tokens,
            completion_tokens = output.usage.completion_tokens,
            tool_calls = output.tool_calls.len(),
            total_ms = output.usage.total_time.as_millis() as u64,
            "openai call finished"
        );
        Ok(output)
    }

    fn map_error(&self, err: OpenAIError) -> LlmError {
        match err {
            OpenAIError::ApiError(resp) => {
                let raw = &resp.api_error.message;
                // Server errors come back with the raw body as the message; dig out the
                // message if it is JSON.
                let message = serde_json::from_str::<Value>(raw)
                    .ok()
                    .and_then(|v| message_of(&v))
                    .unwrap_or_else(|| {
                        let mut m = resp.api_error.message.clone();
                        if let Some(code) = &resp.api_error.code {
                            m.push_str(&format!(" (code: {code})"));
                        }
                        m
                    });
                LlmError::Request(format!(
                    "HTTP {} from {}: {}",
                    resp.status_code,
                    redact_endpoint(&self.cfg.base_url),
                    truncate(message.trim(), 2000)
                ))
            }
            // An error body async-openai could not read as `{"error": {...}}` (e.g. llama.cpp's
            // integer `code`, or a plain-text body).
            OpenAIError::JSONDeserialize(_, content) => {
                let message = serde_json::from_str::<Value>(&content)
                    .ok()
                    .and_then(|v| message_of(&v))
                    .unwrap_or(content);
                LlmError::Request(format!(
                    "error from {}: {}",
                    redact_endpoint(&self.cfg.base_url),
                    truncate(message.trim(), 2000)
                ))
            }
            OpenAIError::Reqwest(e) => {
                if e.is_timeout() {
                    LlmError::Timeout(self.cfg.request_timeout)
                } else if e.is_connect() {
                    LlmError::Unavailable(format!(
                        "cannot connect to {}: {}",
                        redact_endpoint(&self.cfg.base_url),
                        error_chain(&e.without_url())
                    ))
                } else {
                    LlmError::Request(format!(
                        "request to {} failed: {}",
                        redact_endpoint(&self.cfg.base_url),
                        error_chain(&e.without_url())
                    ))
                }
            }
            OpenAIError::StreamError(e) => LlmError::Request(format!(
                "the response stream from {} broke: {e}",
                redact_endpoint(&self.cfg.base_url)
            )),
            other => LlmError::Request(other.to_string()),
        }
    }
}

#[async_trait]
impl LanguageModel for OpenAiModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn native_tool_calls(&self) -> bool {
        true
    }

    async fn generate(
        &self,
        request: LlmRequest,
        deltas: mpsc::UnboundedSender<String>,
    ) -> Result<LlmOutput, LlmError> {
        let started = Instant::now();
        let body = request_body(&self.cfg, &request);
        tracing::debug!(
            model = %self.name,
            messages = request.messages.len(),
            tools = request.tools.len(),
            "openai call"
        );
        match tokio::time::timeout(
            self.cfg.request_timeout,
            self.stream_call(body, &deltas, started),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(LlmError::Timeout(self.cfg.request_timeout)),
        }
    }
}

/// The JSON body of a streamed chat-completions request.
fn request_body(cfg: &OpenAiConfig, request: &LlmRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(cfg.model));
    body.insert(
        "messages".into(),
        Value::Array(request.messages.iter().map(message_json).collect()),
    );
    if !request.tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(request.tools.iter().map(tool_json).collect()),
        );
    }
    let limit_field = if cfg.use_max_completion_tokens {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    body.insert(limit_field.into(), json!(request.max_tokens));
    body.insert("temperature".into(), json!(request.temperature));
    body.insert("stream".into(), json!(true));
    if cfg.stream_usage {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(body)
}

fn message_json(m: &ChatMessage) -> Value {
    match m.role {
        ChatRole::System => json!({"role": "system", "content": m.content}),
        ChatRole::User => json!({"role": "user", "content": m.content}),
        ChatRole::Assistant => {
            // Content stays a (possibly empty) string even next to tool calls: every server
            // accepts that, some older ones reject `null`.
            let mut msg = json!({"role": "assistant", "content": m.content});
            if !m.tool_calls.is_empty() {
                msg["tool_calls"] = Value::Array(
                    m.tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "type": "function",
                                "function": {
                                    "name": c.name,
                                    "arguments": arguments_string(&c.arguments),
                                },
                            })
                        })
                        .collect(),
                );
            }
            msg
        }
        ChatRole::Tool => {
            let mut msg = json!({"role": "tool", "content": m.content});
            if let Some(id) = &m.tool_call_id {
                msg["tool_call_id"] = json!(id);
            }
            msg
        }
    }
}

/// Arguments go over the wire as a JSON string; a `{"_raw": s}` we produced goes back as `s`.
fn arguments_string(args: &Value) -> String {
    if let Some(obj) = args.as_object() {
        if obj.len() == 1 {
            if let Some(Value::String(raw)) = obj.get("_raw") {
                return raw.clone();
            }
        }
    }
    args.to_string()
}

fn tool_json(t: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
        },
    })
}

// ---- stream chunks: only what we read, everything optional ----

#[derive(Debug, Default, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<ChunkChoice>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    /// Some servers report a failure mid-stream as `data: {"error": ...}`.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Default, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    /// A string fragment (the standard); a few servers send a whole JSON object.
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// What the stream has delivered so far.
#[derive(Debug, Default)]
struct StreamState {
    text: String,
    /// Tool calls by their stream `index`, in index order.
    calls: BTreeMap<u64, PartialCall>,
    usage: Option<ChunkUsage>,
    first_token: Option<Duration>,
    finish_reason: Option<String>,
}

impl StreamState {
    /// Folds one chunk in; returns the text delta to forward, if any.
    fn apply(&mut self, chunk: Chunk, started: Instant) -> Result<Option<String>, LlmError> {
        if let Some(err) = chunk.error {
            let message = message_of(&json!({ "error": err })).unwrap_or_else(|| "?".into());
            return Err(LlmError::Request(format!(
                "the server reported an error mid-stream: {}",
                truncate(&message, 2000)
            )));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let mut text_delta = String::new();
        for choice in chunk.choices.unwrap_or_default() {
            // We ask for one choice; ignore any others.
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(content) = delta.content {
                if !content.is_empty() {
                    self.mark_first_token(started);
                    text_delta.push_str(&content);
                }
            }
            for tc in delta.tool_calls.unwrap_or_default() {
                self.mark_first_token(started);
                self.apply_tool_delta(tc);
            }
        }
        self.text.push_str(&text_delta);
        Ok((!text_delta.is_empty()).then_some(text_delta))
    }

    fn mark_first_token(&mut self, started: Instant) {
        if self.first_token.is_none() {
            self.first_token = Some(started.elapsed());
        }
    }

    fn apply_tool_delta(&mut self, tc: ToolCallDelta) {
        let index = match tc.index {
            Some(i) => i,
            // No index (some servers send each call whole): a new id, or a function name
            // after the last call already has its name and arguments, starts a new call;
            // anything else continues the last one.
            None => match self.calls.iter().next_back() {
                None => 0,
                Some((&i, last)) => {
                    let new_id = tc
                        .id
                        .as_deref()
                        .is_some_and(|id| !id.is_empty() && id != last.id);
                    let new_name = tc
                        .function
                        .as_ref()
                        .and_then(|f| f.name.as_deref())
                        .is_some_and(|n| {
                            !n.is_empty()
                                && !last.name.is_empty()
                                && (n != last.name || !last.arguments.is_empty())
                        });
                    if new_id || new_name {
                        i + 1
                    } else {
                        i
                    }
                }
            },
        };
        let call = self.calls.entry(index).or_default();
        if let Some(id) = tc.id {
            if !id.is_empty() {
                call.id = id;
            }
        }
        if let Some(function) = tc.function {
            if let Some(name) = function.name {
                // The name arrives whole in the first chunk; some servers repeat it.
                if call.name.is_empty() {
                    call.name = name;
                } else if name != call.name {
                    call.name.push_str(&name);
                }
            }
            match function.arguments {
                Some(Value::String(fragment)) => call.arguments.push_str(&fragment),
                Some(Value::Null) | None => {}
                Some(whole) => call.arguments = whole.to_string(),
            }
        }
    }

    fn finish(self, started: Instant) -> LlmOutput {
        let total_time = started.elapsed();
        let tool_calls = self
            .calls
            .into_values()
            .enumerate()
            .filter(|(_, c)| !c.name.is_empty())
            .map(|(i, c)| ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{i}")
                } else {
                    c.id
                },
                name: c.name,
                arguments: parse_arguments(&c.arguments),
            })
            .collect();
        let usage = self.usage.unwrap_or_default();
        let clamp = |n: Option<u64>| n.unwrap_or(0).min(u32::MAX as u64) as u32;
        if let Some(reason) = &self.finish_reason {
            tracing::trace!(finish_reason = %reason, "openai stream finished");
        }
        LlmOutput {
            text: self.text,
            tool_calls,
            usage: Usage {
                prompt_tokens: clamp(usage.prompt_tokens),
                cached_prompt_tokens: clamp(
                    usage.prompt_tokens_details.and_then(|d| d.cached_tokens),
                ),
                completion_tokens: clamp(usage.completion_tokens),
                time_to_first_token: self.first_token.unwrap_or(total_time),
                total_time,
            },
        }
    }
}

/// The arguments string of a tool call as JSON; see the module docs for the fallbacks.
fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => v,
        Err(_) => json!({ "_raw": raw }),
    }
}

/// The human-readable message of an error body: `{"error": {"message": ..}}`,
/// `{"error": ".."}`, `{"message": ..}` or `{"detail": ..}` (the shapes OpenAI, llama.cpp,
/// vLLM and Ollama use).
fn message_of(v: &Value) -> Option<String> {
    let pick = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Object(o) => {
                o.get("message")
                    .or_else(|| o.get("detail"))
                    .and_then(|m| match m {
                        Value::String(s) => Some(s.clone()),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
            }
            _ => None,
        }
    };
    v.get("error")
        .and_then(pick)
        .or_else(|| pick(v))
        .filter(|s| !s.is_empty())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_in_logs_lose_credentials_and_queries() {
        let shown = super::redact_endpoint("https://user:s3cret@gw.example.com/v1?api-key=k3y#x");
        assert_eq!(shown, "https://gw.example.com/v1");
        assert!(!format!(
            "{:?}",
            super::OpenAiConfig::new("https://u:p@h.example/v1", "m")
        )
        .contains("p@"));
    }

    use super::*;

    fn chunk(v: Value) -> Chunk {
        serde_json::from_value(v).expect("chunk parses")
    }

    #[test]
    fn interleaved_parallel_tool_calls_are_reassembled_by_index() {
        let t0 = Instant::now();
        let mut s = StreamState::default();
        let parts = [
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"lookup_order","arguments":""}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"recommend_plan","arguments":""}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"order_id\":"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"noise_type\":\"footsteps\"}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"A-12\"}"}}]}}]}),
            json!({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}),
        ];
        for p in parts {
            assert_eq!(s.apply(chunk(p), t0).unwrap(), None);
        }
        let out = s.finish(t0);
        assert_eq!(
            out.tool_calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "lookup_order".into(),
                    arguments: json!({"order_id": "A-12"}),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "recommend_plan".into(),
                    arguments: json!({"noise_type": "footsteps"}),
                },
            ]
        );
        assert_eq!(out.text, "");
    }

    #[test]
    fn calls_without_index_object_arguments_and_missing_ids_are_handled() {
        let t0 = Instant::now();
        let mut s = StreamState::default();
        // Ollama-style: each call whole in one chunk, no index, arguments as an object.
        s.apply(chunk(json!({"choices":[{"delta":{"tool_calls":[{"id":"x1","function":{"name":"a","arguments":{"k":1}}}]}}]})), t0).unwrap();
        s.apply(chunk(json!({"choices":[{"delta":{"tool_calls":[{"function":{"name":"b","arguments":"{}"}}]}}]})), t0).unwrap();
        s.apply(chunk(json!({"choices":[{"delta":{"tool_calls":[{"id":"x3","function":{"name":"c","arguments":null}}]}}]})), t0).unwrap();
        let out = s.finish(t0);
        let names: Vec<_> = out.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        let ids: Vec<_> = out.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["x1", "call_1", "x3"]);
        assert_eq!(out.tool_calls[0].arguments, json!({"k": 1}));
        assert_eq!(out.tool_calls[1].arguments, json!({}));
        assert_eq!(out.tool_calls[2].arguments, json!({}));
    }

    #[test]
    fn invalid_or_empty_arguments_fall_back() {
        assert_eq!(parse_arguments(""), json!({}));
        assert_eq!(
            parse_arguments("{\"noise_type\": \"foot"),
            json!({"_raw": "{\"noise_type\": \"foot"})
        );
        assert_eq!(parse_arguments("{\"a\":1}"), json!({"a": 1}));
        // and a raw fallback goes back to the server verbatim
        assert_eq!(arguments_string(&json!({"_raw": "{oops"})), "{oops");
        assert_eq!(arguments_string(&json!({"a": 1})), "{\"a\":1}");
    }

    #[test]
    fn missing_tool_call_id_gets_a_generated_one() {
        let t0 = Instant::now();
        let mut s = StreamState::default();
        s.apply(chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{}"}}]}}]})), t0).unwrap();
        let out = s.finish(t0);
        assert_eq!(out.tool_calls.len(), 1);
        assert_eq!(out.tool_calls[0].id, "call_0");
    }

    #[test]
    fn mid_stream_error_chunk_is_a_request_error() {
        let t0 = Instant::now();
        let mut s = StreamState::default();
        let err = s
            .apply(
                chunk(json!({"error":{"message":"context length exceeded","type":"invalid_request_error"}})),
                t0,
            )
            .unwrap_err();
        match err {
            LlmError::Request(m) => assert!(m.contains("context length exceeded"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn usage_and_nulls_are_read_leniently() {
        let t0 = Instant::now();
        let mut s = StreamState::default();
        let d = s
            .apply(chunk(json!({"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":null},"finish_reason":null,"logprobs":null}],"usage":null,"obfuscation":"x"})), t0)
            .unwrap();
        assert_eq!(d, None);
        let d = s
            .apply(
                chunk(json!({"choices":[{"index":0,"delta":{"content":"こんにちは"}}]})),
                t0,
            )
            .unwrap();
        assert_eq!(d.as_deref(), Some("こんにちは"));
        s.apply(chunk(json!({"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":8}}})), t0).unwrap();
        let out = s.finish(t0);
        assert_eq!(out.text, "こんにちは");
        assert_eq!(out.usage.prompt_tokens, 10);
        assert_eq!(out.usage.cached_prompt_tokens, 8);
        assert_eq!(out.usage.completion_tokens, 3);
        assert!(out.usage.time_to_first_token <= out.usage.total_time);
    }

    #[test]
    fn error_messages_are_found_in_common_shapes() {
        assert_eq!(
            message_of(&json!({"error":{"message":"bad key","type":"x"}})).as_deref(),
            Some("bad key")
        );
        assert_eq!(
            message_of(&json!({"error":{"code":401,"message":"Invalid API Key"}})).as_deref(),
            Some("Invalid API Key")
        );
        assert_eq!(
            message_of(&json!({"error":"model not found"})).as_deref(),
            Some("model not found")
        );
        assert_eq!(
            message_of(&json!({"detail":"Not Found"})).as_deref(),
            Some("Not Found")
        );
        assert_eq!(message_of(&json!({"foo": 1})), None);
    }
}
