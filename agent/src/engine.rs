//! The agent loop: system prompt + history + retrieved context → LLM → tool calls → tool
//! results → LLM … until a final answer, bounded by a step limit and per-call timeouts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::identity::Identity;
use crate::llm::{ChatMessage, LanguageModel, LlmError, LlmRequest, ToolCall, Usage};
use crate::planner;
use crate::prompts::Prompts;
use crate::tool::{validate_arguments, ToolContext, ToolError, ToolOutput, ToolRegistry};
use crate::tool_parse::{parse_reply, DeltaGate};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Model calls per turn, tool rounds included.
    pub max_steps: usize,
    pub llm_timeout: Duration,
    pub tool_timeout: Duration,
    pub max_reply_tokens: u32,
    pub temperature: f32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_steps: 4,
            llm_timeout: Duration::from_secs(180),
            tool_timeout: Duration::from_secs(10),
            max_reply_tokens: 160,
            temperature: 0.0,
        }
    }
}

/// A retrieved knowledge chunk given to the model as context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextChunk {
    pub doc_id: String,
    pub title: String,
    pub text: String,
    pub score: f32,
}

/// A source cited by a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub doc_id: String,
    pub title: String,
    pub score: f32,
}

/// The reply to a customer or visitor who asks about someone else's account.
pub const OTHER_ACCOUNT_REFUSAL: &str = "申し訳ございませんが、ほかのお客様のアカウントや個人情報についてはお答えできません。ご本人のご契約・ご予約についてでしたら、お調べいたします。";

/// Replaces account ids other than the caller's own in a reply to a customer or visitor, so
/// no model output can leak another account's id.
fn redact_foreign_ids(identity: &crate::identity::Identity, reply: String) -> String {
    let foreign = planner::intents::foreign_ids(identity, &reply);
    if foreign.is_empty() {
        return reply;
    }
    let mut out = reply;
    for id in foreign {
        out = out.replace(&id, "（他のお客様）");
    }
    out
}

/// Everything one turn needs.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub conversation_id: String,
    pub identity: Identity,
    pub now: DateTime<FixedOffset>,
    /// Earlier user/assistant messages, oldest first.
    pub history: Vec<ChatMessage>,
    pub user_text: String,
    pub context: Vec<ContextChunk>,
}

/// Progress while a turn runs.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// Reply text to show now.
    Delta(String),
    ToolStarted {
        call_id: String,
        name: String,
    },
    ToolFinished {
        call_id: String,
        name: String,
        ok: bool,
    },
}

/// A tool call as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutedCall {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
    pub ok: bool,
    /// The tool's data, or `{"error": ..}`.
    pub result: serde_json::Value,
    #[serde(skip)]
    pub output: Option<ToolOutput>,
    pub duration_ms: u64,
    /// Planned by rules rather than asked for by the model.
    pub planned: bool,
}

/// Why a reply was (partly) composed without the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    ModelError,
    ModelTimeout,
    StepLimit,
    MalformedToolCall,
    EmptyReply,
    /// The model's reply left out a fact a tool said must be quoted; the tool's text was added.
    AddedToolFacts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TurnResult {
    pub reply: String,
    pub tool_calls: Vec<ExecutedCall>,
    pub sources: Vec<Source>,
    pub steps: usize,
    pub llm_time: Duration,
    pub usage: Usage,
    pub fallback: Option<Fallback>,
}

/// What one turn accumulates: the prompt so far and the tool calls made.
struct TurnState {
    native: bool,
    messages: Vec<ChatMessage>,
    executed: Vec<ExecutedCall>,
    /// `name:arguments` of calls already made, to refuse repeats.
    seen: HashSet<String>,
}

pub struct Agent {
    llm: Arc<dyn LanguageModel>,
    tools: ToolRegistry,
    prompts: Prompts,
    config: AgentConfig,
    /// Built once: constant, so backends can cache its KV state.
    system_message: String,
}

impl Agent {
    pub fn new(
        llm: Arc<dyn LanguageModel>,
        tools: ToolRegistry,
        prompts: Prompts,
        config: AgentConfig,
    ) -> Self {
        let system_message = prompts.system_message(&tools.specs(), llm.native_tool_calls());
        Self {
            llm,
            tools,
            prompts,
            config,
            system_message,
        }
    }

    pub fn llm(&self) -> &Arc<dyn LanguageModel> {
        &self.llm
    }

    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    /// The system message this agent sends; constant, so backends can cache its KV state.
    pub fn system_message(&self) -> &str {
        &self.system_message
    }

    /// Whether the rule planner would run tools for this message (then a FAQ answer is not
    /// enough: the tools' facts, e.g. prices for this customer's situation, come first).
    pub fn has_planned_tools(
        &self,
        identity: &crate::identity::Identity,
        now: DateTime<FixedOffset>,
        previous_user_messages: &[&str],
        text: &str,
    ) -> bool {
        let ctx = planner::PlanContext { identity, now };
        !planner::plan_for(&ctx, previous_user_messages, text, &|name| {
            self.tools.get(name).is_some()
        })
        .is_empty()
    }

    /// Runs one turn. Never fails: when the model cannot answer, the reply is composed from
    /// tool results or the fallback prompt, and `fallback` says why.
    pub async fn run_turn(
        &self,
        req: TurnRequest,
        events: mpsc::UnboundedSender<TurnEvent>,
    ) -> TurnResult {
        if !planner::intents::foreign_ids(&req.identity, &req.user_text).is_empty() {
            // Another customer's account: refused by rule, before any tool or model, and
            // without repeating the id asked about.
            return TurnResult {
                reply: OTHER_ACCOUNT_REFUSAL.to_string(),
                tool_calls: Vec::new(),
                sources: Vec::new(),
                steps: 0,
                llm_time: Duration::ZERO,
                usage: Usage::default(),
                fallback: None,
            };
        }
        let native = self.llm.native_tool_calls();
        let ctx = ToolContext {
            identity: req.identity.clone(),
            conversation_id: req.conversation_id.clone(),
            now: req.now,
        };
        let mut messages = vec![ChatMessage::system(self.system_message.clone())];
        messages.extend(req.history.iter().cloned());
        messages.push(ChatMessage::user(user_message_with_context(
            &req.user_text,
            &req.context,
        )));
        let mut turn = TurnState {
            native,
            messages,
            executed: Vec::new(),
            seen: HashSet::new(),
        };

        // Rules first: clear intents get their tools without waiting for the model.
        let previous: Vec<&str> = req
            .history
            .iter()
            .filter(|m| m.role == crate::llm::ChatRole::User)
            .map(|m| m.content.as_str())
            .collect();
        let plan_ctx = planner::PlanContext {
            identity: &req.identity,
            now: req.now,
        };
        let planned = planner::plan_for(&plan_ctx, &previous, &req.user_text, &|name| {
            self.tools.get(name).is_some()
        });
        if !planned.is_empty() {
            let calls: Vec<ToolCall> = planned
                .into_iter()
                .enumerate()
                .map(|(i, p)| ToolCall {
                    id: format!("plan-{i}"),
                    name: p.name.to_string(),
                    arguments: p.arguments,
                })
                .collect();
            self.run_calls(&ctx, &calls, true, &mut turn, &events).await;
        }

        let mut usage = Usage::default();
        let mut llm_time = Duration::ZERO;
        let mut retried_malformed = false;
        let mut fallback = None;
        let mut reply = String::new();
        let mut steps = 0;

        loop {
            if steps >= self.config.max_steps {
                fallback = Some(Fallback::StepLimit);
                break;
            }
            steps += 1;
            let started = Instant::now();
            let outcome = self
                .generate(&req.conversation_id, &turn.messages, native, &events)
                .await;
            llm_time += started.elapsed();
            let (output, shown) = match outcome {
                Ok(ok) => ok,
                Err(LlmError::Timeout(_)) => {
                    fallback = Some(Fallback::ModelTimeout);
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, model = self.llm.name(), "model call failed");
                    fallback = Some(Fallback::ModelError);
                    break;
                }
            };
            usage.prompt_tokens += output.usage.prompt_tokens;
            usage.cached_prompt_tokens += output.usage.cached_prompt_tokens;
            usage.completion_tokens += output.usage.completion_tokens;
            if usage.time_to_first_token.is_zero() {
                usage.time_to_first_token = output.usage.time_to_first_token;
            }
            usage.total_time += output.usage.total_time;

            let (text, calls, malformed) = if native {
                (
                    output.text.trim().to_string(),
                    output.tool_calls.clone(),
                    false,
                )
            } else {
                let parsed = parse_reply(&output.text);
                let calls = parsed
                    .calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| ToolCall {
                        id: format!("s{steps}-{i}"),
                        name: c.name,
                        arguments: c.arguments,
                    })
                    .collect::<Vec<_>>();
                (parsed.text, calls, parsed.malformed)
            };

            if malformed && calls.is_empty() {
                if retried_malformed {
                    fallback = Some(Fallback::MalformedToolCall);
                    reply = if shown.trim().is_empty() {
                        String::new()
                    } else {
                        shown
                    };
                    break;
                }
                retried_malformed = true;
                turn.messages
                    .push(ChatMessage::assistant(output.text.clone()));
                turn.messages
                    .push(ChatMessage::user(self.prompts.retry.clone()));
                continue;
            }
            if calls.is_empty() {
                let truncated = output.usage.completion_tokens >= self.config.max_reply_tokens;
                reply = if truncated {
                    cut_to_last_sentence(&text)
                } else {
                    text
                };
                break;
            }
            let mut assistant = ChatMessage::assistant(if native {
                output.text.clone()
            } else {
                String::new()
            });
            assistant.tool_calls = calls.clone();
            turn.messages.push(assistant);
            let fresh = self
                .run_calls(&ctx, &calls, false, &mut turn, &events)
                .await;
            if fresh == 0 {
                // The model keeps asking for what it already has: answer from the results.
                fallback = Some(Fallback::StepLimit);
                break;
            }
        }

        let earlier_replies: Vec<&str> = req
            .history
            .iter()
            .filter(|m| m.role == crate::llm::ChatRole::Assistant)
            .map(|m| m.content.as_str())
            .collect();
        let reply = drop_repeated_sentences(&reply, &earlier_replies);
        let reply = self.finish_reply(reply, &turn.executed, &mut fallback);
        let reply = redact_foreign_ids(&req.identity, reply);
        let sources = req
            .context
            .iter()
            .map(|c| Source {
                doc_id: c.doc_id.clone(),
                title: c.title.clone(),
                score: c.score,
            })
            .collect();
        TurnResult {
            reply,
            tool_calls: turn.executed,
            sources,
            steps,
            llm_time,
            usage,
            fallback,
        }
    }

    /// Makes sure the reply is non-empty and quotes what tools said must be quoted.
    fn finish_reply(
        &self,
        reply: String,
        executed: &[ExecutedCall],
        fallback: &mut Option<Fallback>,
    ) -> String {
        let displays: Vec<&ToolOutput> =
            executed.iter().filter_map(|c| c.output.as_ref()).collect();
        let mut reply = reply.trim().to_string();
        if looks_like_tool_call(&reply) {
            // A tool call the parser could not read must never reach the customer as text.
            reply.clear();
            if fallback.is_none() {
                *fallback = Some(Fallback::MalformedToolCall);
            }
        }
        if reply.is_empty() {
            if fallback.is_none() {
                *fallback = Some(Fallback::EmptyReply);
            }
            return if displays.is_empty() {
                self.prompts.fallback.clone()
            } else {
                displays
                    .iter()
                    .map(|o| o.display.as_str())
                    .collect::<Vec<_>>()
                    .join("\n\n")
            };
        }
        let normalized = normalize_for_match(&reply);
        for output in displays {
            let missing = output
                .must_quote
                .iter()
                .any(|q| !normalized.contains(&normalize_for_match(q)));
            if missing {
                reply.push_str("\n\n");
                reply.push_str(&output.display);
                if fallback.is_none() {
                    *fallback = Some(Fallback::AddedToolFacts);
                }
            }
        }
        reply
    }

    async fn generate(
        &self,
        conversation_id: &str,
        messages: &[ChatMessage],
        native: bool,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> Result<(crate::llm::LlmOutput, String), LlmError> {
        let request = LlmRequest {
            messages: messages.to_vec(),
            tools: if native {
                self.tools.specs()
            } else {
                Vec::new()
            },
            max_tokens: self.config.max_reply_tokens,
            temperature: self.config.temperature,
            cache_key: Some(conversation_id.to_string()),
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let events = events.clone();
        // Stream prose to the customer; hold back anything that may be a tool call.
        let forward = tokio::spawn(async move {
            let mut gate = DeltaGate::default();
            let mut shown = String::new();
            while let Some(delta) = rx.recv().await {
                let visible = if native {
                    Some(delta)
                } else {
                    gate.push(&delta)
                };
                if let Some(text) = visible {
                    shown.push_str(&text);
                    let _ = events.send(TurnEvent::Delta(text));
                }
            }
            shown
        });
        match tokio::time::timeout(self.config.llm_timeout, self.llm.generate(request, tx)).await {
            Ok(Ok(output)) => Ok((output, forward.await.unwrap_or_default())),
            Ok(Err(err)) => Err(err),
            Err(_) => {
                // Dropping the receiver tells a backend still generating (e.g. on a blocking
                // thread) that nobody listens any more, so it can stop.
                forward.abort();
                Err(LlmError::Timeout(self.config.llm_timeout))
            }
        }
    }

    /// Runs tool calls, appends their results to the prompt; returns how many were new.
    async fn run_calls(
        &self,
        ctx: &ToolContext,
        calls: &[ToolCall],
        planned: bool,
        turn: &mut TurnState,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> usize {
        let mut fresh = 0;
        if planned {
            // Show the model the calls as if it had made them, so the transcript is coherent.
            let mut assistant = ChatMessage::assistant(String::new());
            assistant.tool_calls = calls.to_vec();
            turn.messages.push(assistant);
        }
        for call in calls {
            let key = format!("{}:{}", call.name, call.arguments);
            let duplicate = !turn.seen.insert(key);
            let started = Instant::now();
            let _ = events.send(TurnEvent::ToolStarted {
                call_id: call.id.clone(),
                name: call.name.clone(),
            });
            let outcome = if duplicate {
                Err(ToolError::InvalidArguments(
                    "this call was already made in this turn; use its result".into(),
                ))
            } else {
                fresh += 1;
                self.call_tool(ctx, call).await
            };
            let ok = outcome.is_ok();
            let _ = events.send(TurnEvent::ToolFinished {
                call_id: call.id.clone(),
                name: call.name.clone(),
                ok,
            });
            let (result, content, output) = match outcome {
                Ok(output) => {
                    let content = if turn.native {
                        serde_json::json!({"result": output.data, "summary": output.display})
                            .to_string()
                    } else {
                        // Small text-only models copy and pad; tell them what to do with it.
                        format!("{}\n\n{}", output.display, self.prompts.tool_result_hint)
                    };
                    (output.data.clone(), content, Some(output))
                }
                Err(err) => {
                    let message = err.to_string();
                    (
                        serde_json::json!({"error": message}),
                        format!("エラー: {message}"),
                        None,
                    )
                }
            };
            turn.messages
                .push(ChatMessage::tool_result(call.id.clone(), content));
            if !duplicate {
                turn.executed.push(ExecutedCall {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                    ok,
                    result,
                    output,
                    duration_ms: started.elapsed().as_millis() as u64,
                    planned,
                });
            }
        }
        fresh
    }

    async fn call_tool(&self, ctx: &ToolContext, call: &ToolCall) -> Result<ToolOutput, ToolError> {
        let tool = self
            .tools
            .get(&call.name)
            .ok_or_else(|| ToolError::NotFound(format!("no tool named {:?}", call.name)))?;
        validate_arguments(&tool.parameters(), &call.arguments)?;
        match tokio::time::timeout(
            self.config.tool_timeout,
            tool.call(ctx, call.arguments.clone()),
        )
        .await
        {
            Ok(result) => {
                if let Err(err) = &result {
                    tracing::info!(tool = %call.name, error = %err, "tool call failed");
                }
                result
            }
            Err(_) => Err(ToolError::Failed(format!(
                "timed out after {:?}",
                self.config.tool_timeout
            ))),
        }
    }
}

/// The user's message with retrieved context in front of it. Context goes into the user turn,
/// not the system prompt, so the system prefix stays constant and cacheable.
/// Raw tool-call syntax (`{"name": …, "arguments": …}` or tags) in what would be a reply.
fn looks_like_tool_call(reply: &str) -> bool {
    let compact: String = reply.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("<tool_call>")
        || (compact.contains("\"name\":") && compact.contains("\"arguments\""))
}

/// Most characters of knowledge context put into the prompt: a small local model reads
/// every token (prefill dominates its latency) and has a 4k context.
const MAX_CONTEXT_CHARS: usize = 1200;

fn user_message_with_context(text: &str, context: &[ContextChunk]) -> String {
    if context.is_empty() {
        return text.to_string();
    }
    let mut out = String::from("参考情報:\n");
    let mut budget = MAX_CONTEXT_CHARS;
    for chunk in context {
        if budget == 0 {
            break;
        }
        let body: String = chunk.text.trim().chars().take(budget).collect();
        budget = budget.saturating_sub(body.chars().count());
        out.push_str(&format!("[{}] {}\n", chunk.doc_id, body));
    }
    out.push_str("\n質問: ");
    out.push_str(text);
    out
}

/// Small models loop on a sentence or copy their previous answer: keep each sentence once
/// and drop sentences the agent already said earlier in the conversation.
fn drop_repeated_sentences(reply: &str, earlier_replies: &[&str]) -> String {
    let mut seen: HashSet<String> = earlier_replies
        .iter()
        .flat_map(|r| sentences(r))
        .map(|s| s.trim().to_string())
        .filter(|s| s.chars().count() >= 8)
        .collect();
    let mut out = String::new();
    for sentence in sentences(reply) {
        let key = sentence.trim().to_string();
        if key.chars().count() >= 8 && !seen.insert(key) {
            continue;
        }
        out.push_str(sentence);
    }
    out.trim().to_string()
}

/// Splits after each sentence end, keeping the delimiters (so joining restores the text).
fn sentences(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '。' | '！' | '？' | '!' | '?' | '\n') {
            let end = i + c.len_utf8();
            parts.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        parts.push(&text[start..]);
    }
    parts
}

/// A reply cut off by the token limit ends mid-sentence: keep it up to the last sentence end
/// (the facts guard re-adds anything it loses). Text without any sentence end is kept.
fn cut_to_last_sentence(text: &str) -> String {
    let end = text
        .char_indices()
        .rev()
        .find(|(_, c)| matches!(c, '。' | '！' | '？' | '!' | '?' | '\n'))
        .map(|(i, c)| i + c.len_utf8());
    match end {
        Some(end) if end > 0 => text[..end].trim_end().to_string(),
        _ => text.to_string(),
    }
}

/// Width-insensitive, comma-insensitive matching of quoted facts ("12,800円" ≈ "１２８００円").
pub fn normalize_for_match(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            ',' | '，' | ' ' | '\u{3000}' => None,
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32),
            '￥' => Some('¥'),
            _ => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests;
