//! The one interface every language-model backend implements.
//!
//! The agent loop speaks in [`ChatMessage`]s and [`ToolSpec`]s; a backend turns them into
//! whatever its model needs (an OpenAI request, a ChatML prompt for an in-process GGUF model)
//! and streams text back through a channel while it generates.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Who said a message, in chat-completion terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
    /// Tool calls an assistant message asked for (native tool calling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Tool` messages: the id of the call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(ChatRole::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(ChatRole::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::plain(ChatRole::Assistant, content)
    }
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: ChatRole::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }
    fn plain(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A request from the model to run a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
}

/// What the model is told about a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
    pub temperature: f32,
    /// A stable key (the conversation id) under which a backend may keep state between
    /// calls, e.g. the KV cache of the prompt so far. Never required for correctness.
    pub cache_key: Option<String>,
}

/// Token accounting of one call, as far as the backend knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV state was reused instead of recomputed.
    pub cached_prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Time from the call to the first generated token.
    #[serde(with = "duration_ms")]
    pub time_to_first_token: Duration,
    #[serde(with = "duration_ms")]
    pub total_time: Duration,
}

impl Usage {
    /// Adds another call's figures (the first token time is the first call's).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.cached_prompt_tokens += other.cached_prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        if self.time_to_first_token.is_zero() {
            self.time_to_first_token = other.time_to_first_token;
        }
        self.total_time += other.total_time;
    }
}

/// What a call produced. `text` is the complete text (also streamed as deltas);
/// `tool_calls` are native tool calls (OpenAI-style). Backends without native tool calling
/// return them inside `text`; the agent parses those (see [`crate::tool_parse`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmOutput {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model backend is not available: {0}")]
    Unavailable(String),
    #[error("the model request failed: {0}")]
    Request(String),
    #[error("the model returned something unusable: {0}")]
    BadResponse(String),
    #[error("the model call timed out after {0:?}")]
    Timeout(Duration),
    #[error("the prompt is too long for the model ({tokens} tokens, limit {limit})")]
    PromptTooLong { tokens: usize, limit: usize },
}

/// Every LLM backend implements this.
#[async_trait]
pub trait LanguageModel: Send + Sync {
    /// A short name for logs and metrics, e.g. `local:qwen2.5-coder-1.5b` or `openai:gpt-4o`.
    fn name(&self) -> &str;

    /// Whether the backend passes tool specs to the model natively and returns structured
    /// tool calls. When false the agent describes tools in the prompt and parses the text.
    fn native_tool_calls(&self) -> bool;

    /// Generates a reply. Text is sent on `deltas` as it is produced. A closed receiver means
    /// the caller gave up (timeout, shutdown): backends should stop generating soon.
    async fn generate(
        &self,
        request: LlmRequest,
        deltas: mpsc::UnboundedSender<String>,
    ) -> Result<LlmOutput, LlmError>;
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
