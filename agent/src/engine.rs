//! The agent loop: system prompt + history + retrieved context → LLM → tool calls → tool
//! results → LLM … until a final answer, bounded by a step limit and per-call timeouts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use unicode_normalization::UnicodeNormalization;

use crate::admission::ModelQueue;
use crate::identity::Identity;
use crate::llm::{ChatMessage, LanguageModel, LlmError, LlmRequest, ToolCall, Usage};
use crate::planner::{self, consent_buttons, PlannedCall, Proposal, QuickReply, TurnPlan};
use crate::prompts::Prompts;
use crate::tool::{
    validate_arguments, RiskClass, ToolContext, ToolError, ToolOutput, ToolRegistry,
};
use crate::tool_parse::{parse_reply, DeltaGate};
use crate::validate::{check_reply, ReplyContext, ViolationKind};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Model calls per turn, tool rounds included.
    pub max_steps: usize,
    pub llm_timeout: Duration,
    pub tool_timeout: Duration,
    pub max_reply_tokens: u32,
    pub temperature: f32,
    /// Model calls served at once (the embedded model: 1); more wait in the model queue and
    /// their customers get `queue` frames (agent/src/admission.rs).
    pub model_concurrency: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_steps: 4,
            llm_timeout: Duration::from_secs(180),
            tool_timeout: Duration::from_secs(10),
            max_reply_tokens: 160,
            temperature: 0.0,
            model_concurrency: 1,
        }
    }
}

/// A retrieved knowledge chunk given to the model as context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextChunk {
    pub doc_id: String,
    pub title: String,
    /// The passage (an FAQ's question and answer, or a chunk of another document).
    pub text: String,
    pub score: f32,
    /// An FAQ's answer alone: what a composed reply quotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
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
    /// The turn waits for the model behind other conversations' turns.
    Queued(crate::admission::QueuePlace),
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
    /// The output validator rejected the model's reply; a composed answer replaced it.
    RejectedReply,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TurnResult {
    pub reply: String,
    pub tool_calls: Vec<ExecutedCall>,
    pub sources: Vec<Source>,
    pub steps: usize,
    pub llm_time: Duration,
    pub usage: Usage,
    pub fallback: Option<Fallback>,
    /// A write proposed in this reply, waiting for the customer's consent.
    pub proposal: Option<Proposal>,
    /// Buttons under the reply.
    pub quick_replies: Vec<QuickReply>,
    /// The model's reply was rejected by the output validator (and replaced).
    pub rejected: Option<ViolationKind>,
    /// The reply was composed without the model.
    pub composed: bool,
}

pub struct Agent {
    llm: Arc<dyn LanguageModel>,
    tools: ToolRegistry,
    prompts: Prompts,
    config: AgentConfig,
    /// Built once: constant, so backends can cache its KV state.
    system_message: String,
    /// Yen amounts any reply may quote (the price table), for the output validator.
    known_prices: Vec<u64>,
    /// Model calls wait here for their turn (admission control).
    queue: Arc<ModelQueue>,
}

/// Before a pending proposal shown again.
const PENDING_LEAD: &str = "ご提案中の内容は次のとおりです（まだ確定していません）。";
/// After a side question's answer while a proposal awaits consent.
pub const STILL_PENDING: &str = "先ほどご提案した内容はまだ確定していません。この内容でよろしければ「はい」、取りやめる場合は「いいえ」とお送りください。";

/// The question that follows a proposal.
const CONSENT_QUESTION: &str =
    "この内容でよろしければ「はい」、取りやめる場合は「いいえ」とお送りください。";
/// What the customer reads when a write they consented to could not be done.
const WRITE_FAILED: &str = "申し訳ございません。お手続きを完了できませんでした。";

impl Agent {
    pub fn new(
        llm: Arc<dyn LanguageModel>,
        tools: ToolRegistry,
        prompts: Prompts,
        config: AgentConfig,
    ) -> Self {
        // The model only writes (the planner runs tools); a model with native tool calls may
        // still call read tools, which the request carries, so the system prompt is the same
        // short text for every backend.
        let system_message = prompts.system.clone();
        // Until calls are measured, a wait is estimated at a typical embedded turn.
        let queue = ModelQueue::new(config.model_concurrency, Duration::from_secs(10));
        Self {
            llm,
            tools,
            prompts,
            config,
            system_message,
            known_prices: Vec::new(),
            queue,
        }
    }

    /// Prices (yen) every reply may quote: the business's price table.
    pub fn with_known_prices(mut self, prices: Vec<u64>) -> Self {
        self.known_prices = prices;
        self
    }

    pub fn llm(&self) -> &Arc<dyn LanguageModel> {
        &self.llm
    }

    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    pub fn prompts(&self) -> &Prompts {
        &self.prompts
    }

    /// The system message this agent sends; constant, so backends can cache its KV state.
    pub fn system_message(&self) -> &str {
        &self.system_message
    }

    fn tool_context(&self, req: &TurnRequest) -> ToolContext {
        ToolContext {
            identity: req.identity.clone(),
            conversation_id: req.conversation_id.clone(),
            now: req.now,
        }
    }

    /// Runs one turn as planned. Never fails: when the model cannot answer or writes
    /// something a customer must not read, the reply is composed from tool texts, the FAQ or
    /// the fallback prompt, and `fallback` says why.
    pub async fn run(
        &self,
        req: TurnRequest,
        plan: TurnPlan,
        events: mpsc::UnboundedSender<TurnEvent>,
    ) -> TurnResult {
        let mut result = match plan {
            TurnPlan::Say {
                text,
                quick_replies,
            } => TurnResult {
                reply: text,
                quick_replies,
                composed: true,
                ..TurnResult::default()
            },
            TurnPlan::Tools { calls, lead } => self.run_tools(&req, &calls, lead, &events).await,
            TurnPlan::Propose { call, otherwise } => {
                self.propose(&req, &call, otherwise.as_ref(), &events).await
            }
            TurnPlan::FindSlot {
                availability,
                booking,
                lead,
            } => {
                self.find_slot(&req, &availability, &booking, lead, &events)
                    .await
            }
            TurnPlan::Execute(proposal) => self.execute(&req, &proposal, &events).await,
            TurnPlan::Restate(proposal) => TurnResult {
                reply: format!("{PENDING_LEAD}\n{}\n{CONSENT_QUESTION}", proposal.summary),
                proposal: Some(proposal),
                quick_replies: consent_buttons(),
                composed: true,
                ..TurnResult::default()
            },
            TurnPlan::Model { calls } => self.run_model(&req, &calls, &events).await,
            // The hub answers these itself; an engine asked to is given the safe reply.
            TurnPlan::Faq | TurnPlan::Escalate { .. } => TurnResult {
                reply: self.prompts.fallback.clone(),
                composed: true,
                ..TurnResult::default()
            },
        };
        result.reply = redact_foreign_ids(&req.identity, std::mem::take(&mut result.reply));
        if result.sources.is_empty() && !result.composed {
            result.sources = sources_of(&req.context);
        }
        result
    }

    /// Read tools, and a reply composed from their texts.
    async fn run_tools(
        &self,
        req: &TurnRequest,
        calls: &[PlannedCall],
        lead: Option<String>,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> TurnResult {
        let ctx = self.tool_context(req);
        let mut turn = TurnState::new(false, Vec::new());
        self.run_calls(&ctx, &planned_calls(calls), true, &mut turn, events)
            .await;
        let mut parts: Vec<String> = lead.into_iter().collect();
        let mut fallback = None;
        for call in &turn.executed {
            match (
                &call.output,
                call.result.get("error").and_then(Value::as_str),
            ) {
                (Some(output), _) => parts.push(output.display.clone()),
                (None, Some(error)) => {
                    fallback.get_or_insert(Fallback::ModelError);
                    parts.push(customer_facing_error(error, &self.prompts.fallback));
                }
                (None, None) => {}
            }
        }
        let reply = if parts.is_empty() {
            self.prompts.fallback.clone()
        } else {
            parts.join("\n\n")
        };
        let proposal = turn.proposal.take();
        let quick_replies = if proposal.is_some() {
            consent_buttons()
        } else {
            Vec::new()
        };
        TurnResult {
            reply,
            tool_calls: turn.executed,
            fallback,
            proposal,
            quick_replies,
            composed: true,
            ..TurnResult::default()
        }
    }

    /// Free slots; exactly one that fits is proposed for booking (the customer confirms it
    /// or not), several are listed.
    async fn find_slot(
        &self,
        req: &TurnRequest,
        availability: &PlannedCall,
        booking: &Value,
        lead: Option<String>,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> TurnResult {
        let listed = self
            .run_tools(req, std::slice::from_ref(availability), lead, events)
            .await;
        let only_slot = listed
            .tool_calls
            .first()
            .and_then(|c| c.output.as_ref())
            .filter(|o| o.data.get("matched_request") != Some(&Value::Bool(false)))
            .and_then(|o| o.data.get("candidates"))
            .and_then(Value::as_array)
            .and_then(|c| match c.as_slice() {
                [one] => one.get("start").and_then(Value::as_str).map(str::to_string),
                _ => None,
            });
        let Some(start) = only_slot else {
            return listed;
        };
        let mut arguments = booking.clone();
        arguments["slot_start"] = Value::String(start);
        let call = PlannedCall {
            name: "book_measurement",
            arguments,
        };
        let mut proposed = self.propose(req, &call, None, events).await;
        if proposed.proposal.is_none() {
            return listed;
        }
        proposed.reply = format!("{SINGLE_SLOT_LEAD}\n{}", proposed.reply);
        let mut calls = listed.tool_calls;
        calls.append(&mut proposed.tool_calls);
        proposed.tool_calls = calls;
        proposed
    }

    /// A write's preview and the consent question; when the write cannot be done (the slot
    /// is full or not offered), `otherwise` (e.g. other free slots) runs instead.
    async fn propose(
        &self,
        req: &TurnRequest,
        call: &PlannedCall,
        otherwise: Option<&PlannedCall>,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> TurnResult {
        let ctx = self.tool_context(req);
        let preview = self.preview_tool(&ctx, call.name, &call.arguments).await;
        match preview {
            Ok(output) if output.data.get("possible") != Some(&Value::Bool(false)) => {
                let proposal = Proposal {
                    tool: call.name.to_string(),
                    arguments: call.arguments.clone(),
                    summary: output.display.clone(),
                    created_at_ms: req.now.timestamp_millis(),
                };
                TurnResult {
                    reply: format!("{}\n{CONSENT_QUESTION}", output.display),
                    proposal: Some(proposal),
                    quick_replies: consent_buttons(),
                    composed: true,
                    ..TurnResult::default()
                }
            }
            outcome => {
                let why = match outcome {
                    Ok(output) => output.display,
                    Err(e) => customer_facing_error(&e.to_string(), &self.prompts.fallback),
                };
                match otherwise {
                    Some(alternative) => {
                        let mut result = self
                            .run_tools(req, std::slice::from_ref(alternative), Some(why), events)
                            .await;
                        result.fallback = None;
                        result
                    }
                    None => TurnResult {
                        reply: why,
                        composed: true,
                        ..TurnResult::default()
                    },
                }
            }
        }
    }

    /// The write the customer consented to, exactly as proposed.
    async fn execute(
        &self,
        req: &TurnRequest,
        proposal: &Proposal,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> TurnResult {
        let ctx = self.tool_context(req);
        let call = ToolCall {
            id: "consented-0".into(),
            name: proposal.tool.clone(),
            arguments: proposal.arguments.clone(),
        };
        let mut turn = TurnState::new(false, Vec::new());
        turn.consented = true;
        self.run_calls(&ctx, &[call], true, &mut turn, events).await;
        let reply = match turn.executed.first() {
            Some(ExecutedCall {
                output: Some(output),
                ..
            }) => output.display.clone(),
            Some(call) => format!(
                "{WRITE_FAILED}{}",
                call.result
                    .get("error")
                    .and_then(Value::as_str)
                    .map(|e| customer_facing_error(e, ""))
                    .unwrap_or_default()
            ),
            None => WRITE_FAILED.to_string(),
        };
        TurnResult {
            reply,
            tool_calls: turn.executed,
            composed: true,
            ..TurnResult::default()
        }
    }

    /// The model writes: the system prompt, the last exchanges, the read tools' texts and the
    /// retrieved passages trimmed to the sentences that answer. Its reply streams sentence by
    /// sentence through the output validator; a rejected reply is replaced by a composed one.
    async fn run_model(
        &self,
        req: &TurnRequest,
        calls: &[PlannedCall],
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> TurnResult {
        let native = self.llm.native_tool_calls();
        let ctx = self.tool_context(req);
        let passages = answering_passages(&req.user_text, &req.context);
        let mut messages = model_messages(
            &self.system_message,
            &req.history,
            &req.user_text,
            &passages,
        );
        // The read tools' results go before the customer's message.
        let user_message = messages.pop();
        let mut turn = TurnState::new(native, messages);
        if !calls.is_empty() {
            self.run_calls(&ctx, &planned_calls(calls), true, &mut turn, events)
                .await;
        }
        turn.messages.extend(user_message);

        let mut usage = Usage::default();
        let mut llm_time = Duration::ZERO;
        let mut fallback = None;
        let mut reply = String::new();
        let mut steps = 0;
        let facts: Vec<String> = passages
            .iter()
            .cloned()
            .chain(
                turn.executed
                    .iter()
                    .filter_map(|c| c.output.as_ref().map(|o| o.display.clone())),
            )
            .chain([req.user_text.clone()])
            .collect();
        let prompt_texts = [
            self.prompts.system.as_str(),
            self.prompts.tool_result_hint.as_str(),
            self.prompts.retry.as_str(),
        ];
        let reply_context = ReplyContext {
            facts: facts.iter().map(String::as_str).collect(),
            prompts: prompt_texts.to_vec(),
            known_prices: self.known_prices.clone(),
            user_text: &req.user_text,
            model_written: true,
        };
        let mut rejected = None;

        loop {
            if steps >= self.config.max_steps {
                fallback = Some(Fallback::StepLimit);
                break;
            }
            steps += 1;
            let started = Instant::now();
            let outcome = self
                .generate(
                    &req.conversation_id,
                    &turn.messages,
                    native,
                    &reply_context,
                    events,
                )
                .await;
            llm_time += started.elapsed();
            let (output, gate) = match outcome {
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
            usage.add(&output.usage);
            let (text, calls) = if native {
                (output.text.trim().to_string(), output.tool_calls.clone())
            } else {
                // A text-only model is offered no tools: anything call-shaped is dropped.
                (parse_reply(&output.text).text, Vec::new())
            };
            if calls.is_empty() {
                if let Some(kind) = gate.rejected {
                    rejected = Some(kind);
                    break;
                }
                let truncated = output.usage.completion_tokens >= self.config.max_reply_tokens;
                reply = if truncated {
                    cut_to_last_sentence(&text)
                } else {
                    text
                };
                break;
            }
            let mut assistant = ChatMessage::assistant(output.text.clone());
            assistant.tool_calls = calls.clone();
            turn.messages.push(assistant);
            let fresh = self.run_calls(&ctx, &calls, false, &mut turn, events).await;
            if fresh == 0 || turn.proposal.is_some() {
                // Nothing new to read, or a write to propose: answer from what we have.
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
        let mut reply = self.finish_reply(reply, &turn.executed, &mut fallback);
        if rejected.is_none() && fallback.is_none() {
            if let Err(violation) = check_reply(&reply, &reply_context) {
                rejected = Some(violation.kind);
            }
        }
        if let Some(kind) = rejected {
            tracing::info!(
                kind = kind.as_str(),
                "the model's reply was rejected; composing one"
            );
            metrics::counter!("kizuna_rejected_replies_total", "kind" => kind.as_str())
                .increment(1);
            fallback = Some(Fallback::RejectedReply);
            reply = self.composed_answer(&req.context, &turn.executed);
        } else if fallback.is_some_and(|f| f != Fallback::AddedToolFacts)
            && turn.executed.iter().all(|c| c.output.is_none())
        {
            // The model failed and no tool said anything: the FAQ passage beats the apology.
            reply = self.composed_answer(&req.context, &turn.executed);
        }
        let proposal = turn.proposal.take();
        if let Some(p) = &proposal {
            // The model asked for a write: the reply is its preview and the consent question.
            reply = format!("{}\n{CONSENT_QUESTION}", p.summary);
            fallback = None;
            rejected = None;
        }
        TurnResult {
            reply,
            quick_replies: if proposal.is_some() {
                consent_buttons()
            } else {
                Vec::new()
            },
            proposal,
            tool_calls: turn.executed,
            sources: sources_of(&req.context),
            steps,
            llm_time,
            usage,
            fallback,
            rejected,
            composed: false,
        }
    }

    /// A reply without the model: the tools' texts, else the best FAQ answer, else the
    /// fallback prompt.
    fn composed_answer(&self, context: &[ContextChunk], executed: &[ExecutedCall]) -> String {
        let displays: Vec<&str> = executed
            .iter()
            .filter_map(|c| c.output.as_ref().map(|o| o.display.as_str()))
            .collect();
        if !displays.is_empty() {
            return displays.join("\n\n");
        }
        context
            .iter()
            .find_map(|c| c.answer.clone())
            .unwrap_or_else(|| self.prompts.fallback.clone())
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
        reply_context: &ReplyContext<'_>,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> Result<(crate::llm::LlmOutput, GateOutcome), LlmError> {
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
        let queue_events = events.clone();
        let events = events.clone();
        let owned_context = OwnedReplyContext::from(reply_context);
        // Stream prose to the customer a sentence at a time, each checked by the validator;
        // hold back anything that may be a tool call.
        let forward = tokio::spawn(async move {
            let mut calls = DeltaGate::default();
            let mut sentences = SentenceGate::default();
            while let Some(delta) = rx.recv().await {
                let visible = if native {
                    Some(delta)
                } else {
                    calls.push(&delta)
                };
                if let Some(text) = visible {
                    if let Some(ready) = sentences.push(&text, &owned_context.borrow()) {
                        let _ = events.send(TurnEvent::Delta(ready));
                    }
                }
                if sentences.rejected.is_some() {
                    // Nothing more will be shown: dropping the receiver stops a backend that
                    // checks for listeners (the embedded model), so the composed answer that
                    // replaces the reply comes without waiting for the rest.
                    break;
                }
            }
            sentences.finish(&owned_context.borrow())
        });
        // Wait for the model behind other conversations (they hear their place); the timeout
        // counts from admission, so a long queue does not turn into model timeouts.
        let slot = self
            .queue
            .enter(|place| {
                let _ = queue_events.send(TurnEvent::Queued(place));
            })
            .await;
        let generated =
            tokio::time::timeout(self.config.llm_timeout, self.llm.generate(request, tx)).await;
        drop(slot);
        match generated {
            Ok(Ok(output)) => {
                let gate = forward.await.unwrap_or_default();
                Ok((output, gate))
            }
            Ok(Err(err)) => Err(err),
            Err(_) => {
                // Dropping the receiver tells a backend still generating (e.g. on a blocking
                // thread) that nobody listens any more, so it can stop.
                forward.abort();
                Err(LlmError::Timeout(self.config.llm_timeout))
            }
        }
    }

    async fn preview_tool(
        &self,
        ctx: &ToolContext,
        name: &str,
        arguments: &Value,
    ) -> Result<ToolOutput, ToolError> {
        let tool = self
            .tools
            .get(name)
            .ok_or_else(|| ToolError::NotFound(format!("no tool named {name:?}")))?;
        validate_arguments(&tool.parameters(), arguments)?;
        match tokio::time::timeout(
            self.config.tool_timeout,
            tool.preview(ctx, arguments.clone()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ToolError::Failed(format!(
                "timed out after {:?}",
                self.config.tool_timeout
            ))),
        }
    }

    /// Runs tool calls, appends their results to the prompt; returns how many were new. A
    /// write tool is only previewed (and becomes the turn's proposal) unless the customer
    /// consented to exactly this call (`turn.consented`).
    async fn run_calls(
        &self,
        ctx: &ToolContext,
        calls: &[ToolCall],
        planned: bool,
        turn: &mut TurnState,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> usize {
        let mut fresh = 0;
        if planned && !turn.messages.is_empty() {
            // Show the model the calls as if it had made them, so the transcript is coherent.
            let mut assistant = ChatMessage::assistant(String::new());
            assistant.tool_calls = calls.to_vec();
            turn.messages.push(assistant);
        }
        for call in calls {
            let is_write = self
                .tools
                .get(&call.name)
                .is_some_and(|t| t.risk() == RiskClass::Write);
            if is_write && !turn.consented {
                if turn.proposal.is_none() {
                    if let Ok(output) = self.preview_tool(ctx, &call.name, &call.arguments).await {
                        if output.data.get("possible") != Some(&Value::Bool(false)) {
                            turn.proposal = Some(Proposal {
                                tool: call.name.clone(),
                                arguments: call.arguments.clone(),
                                summary: output.display,
                                created_at_ms: ctx.now.timestamp_millis(),
                            });
                        }
                    }
                }
                if !turn.messages.is_empty() {
                    turn.messages.push(ChatMessage::tool_result(
                        call.id.clone(),
                        "この操作はお客様の確認後に行います。",
                    ));
                }
                continue;
            }
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
                        output.display.clone()
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
            if !turn.messages.is_empty() {
                turn.messages
                    .push(ChatMessage::tool_result(call.id.clone(), content));
            }
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

/// What one turn accumulates: the prompt so far, the tool calls made, a write proposed.
struct TurnState {
    native: bool,
    messages: Vec<ChatMessage>,
    executed: Vec<ExecutedCall>,
    /// `name:arguments` of calls already made, to refuse repeats.
    seen: HashSet<String>,
    /// A write the turn proposed (previewed, not run).
    proposal: Option<Proposal>,
    /// The customer consented: write tools run for real.
    consented: bool,
}

impl TurnState {
    fn new(native: bool, messages: Vec<ChatMessage>) -> Self {
        Self {
            native,
            messages,
            executed: Vec::new(),
            seen: HashSet::new(),
            proposal: None,
            consented: false,
        }
    }
}

fn planned_calls(calls: &[PlannedCall]) -> Vec<ToolCall> {
    calls
        .iter()
        .enumerate()
        .map(|(i, p)| ToolCall {
            id: format!("plan-{i}"),
            name: p.name.to_string(),
            arguments: p.arguments.clone(),
        })
        .collect()
}

fn sources_of(context: &[ContextChunk]) -> Vec<Source> {
    context
        .iter()
        .map(|c| Source {
            doc_id: c.doc_id.clone(),
            title: c.title.clone(),
            score: c.score,
        })
        .collect()
}

/// Before the proposal of the one free slot that fits the customer's request.
const SINGLE_SLOT_LEAD: &str = "ご希望の条件で空いているのは、次の日時です。";

/// A tool's error as a customer may read it: the Japanese text tools give for refusals,
/// else `otherwise` (internal messages are not for customers).
fn customer_facing_error(error: &str, otherwise: &str) -> String {
    let detail = error
        .split_once(": ")
        .map(|(_, rest)| rest)
        .unwrap_or(error);
    let japanese = detail
        .chars()
        .any(|c| ('\u{3040}'..='\u{30ff}').contains(&c));
    if japanese {
        detail.to_string()
    } else {
        otherwise.to_string()
    }
}

/// The last two messages before this one, each cut short: enough for "それはいくら？" to be
/// understood, little enough to keep prefill small.
fn recent_history(history: &[ChatMessage]) -> Vec<ChatMessage> {
    const KEEP: usize = 2;
    const CHARS: usize = 160;
    history
        .iter()
        .skip(history.len().saturating_sub(KEEP))
        .map(|m| {
            let mut m = m.clone();
            if m.content.chars().count() > CHARS {
                m.content = m.content.chars().take(CHARS).collect::<String>() + "…";
            }
            m.tool_calls.clear();
            m
        })
        .collect()
}

/// The validator's context, owned, for the streaming task.
struct OwnedReplyContext {
    facts: Vec<String>,
    prompts: Vec<String>,
    known_prices: Vec<u64>,
    user_text: String,
    model_written: bool,
}

impl OwnedReplyContext {
    fn from(ctx: &ReplyContext<'_>) -> Self {
        Self {
            facts: ctx.facts.iter().map(|s| s.to_string()).collect(),
            prompts: ctx.prompts.iter().map(|s| s.to_string()).collect(),
            known_prices: ctx.known_prices.clone(),
            user_text: ctx.user_text.to_string(),
            model_written: ctx.model_written,
        }
    }

    fn borrow(&self) -> ReplyContext<'_> {
        ReplyContext {
            facts: self.facts.iter().map(String::as_str).collect(),
            prompts: self.prompts.iter().map(String::as_str).collect(),
            known_prices: self.known_prices.clone(),
            user_text: &self.user_text,
            model_written: self.model_written,
        }
    }
}

/// What the sentence gate saw.
#[derive(Debug, Default)]
struct GateOutcome {
    /// The first check the streamed text failed; nothing after it was shown.
    rejected: Option<ViolationKind>,
}

/// Streams text a whole sentence at a time, each only after the text so far passes the
/// output validator; after a failure nothing more is shown.
#[derive(Debug, Default)]
struct SentenceGate {
    pending: String,
    shown: String,
    rejected: Option<ViolationKind>,
}

impl SentenceGate {
    fn push(&mut self, delta: &str, ctx: &ReplyContext<'_>) -> Option<String> {
        if self.rejected.is_some() {
            return None;
        }
        self.pending.push_str(delta);
        let end = self
            .pending
            .char_indices()
            .rev()
            .find(|(_, c)| matches!(c, '。' | '！' | '？' | '!' | '?' | '\n'))
            .map(|(i, c)| i + c.len_utf8())?;
        let ready: String = self.pending[..end].to_string();
        let candidate = format!("{}{}", self.shown, ready);
        if let Err(v) = check_reply(&candidate, ctx) {
            self.rejected = Some(v.kind);
            return None;
        }
        self.pending.drain(..end);
        self.shown = candidate;
        Some(ready)
    }

    fn finish(mut self, ctx: &ReplyContext<'_>) -> GateOutcome {
        if self.rejected.is_none() && !self.pending.trim().is_empty() {
            let candidate = format!("{}{}", self.shown, self.pending);
            if let Err(v) = check_reply(&candidate, ctx) {
                self.rejected = Some(v.kind);
            }
        }
        GateOutcome {
            rejected: self.rejected,
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

/// Most characters of one passage: a small local model reads every token (prefill dominates
/// its latency), so only a piece of each retrieved chunk goes in (issue 13's prompt budget).
const PASSAGE_CHARS: usize = 200;
/// Retrieved chunks a passage is taken from.
const PASSAGE_CHUNKS: usize = 2;

/// The passages the model reads: from each of the first retrieved chunks, the piece that
/// shares the most with the question. The pieces of a chunk are fixed (its sentences packed
/// in order into pieces of at most [`PASSAGE_CHARS`]), so the same passage text, and so the
/// same prompt tokens, recur across customers and turns and the embedded model keeps them
/// prefilled. An FAQ contributes its answer only (its question is what the customer just
/// asked); a later chunk that shares next to nothing with the question is left out.
pub fn answering_passages(question: &str, context: &[ContextChunk]) -> Vec<String> {
    answering_passages_within(question, context, PASSAGE_CHARS)
}

fn answering_passages_within(
    question: &str,
    context: &[ContextChunk],
    limit: usize,
) -> Vec<String> {
    // Shared character bigrams: needs no tokenizer and works for Japanese.
    let grams = |text: &str| -> HashSet<(char, char)> {
        let chars: Vec<char> = text
            .nfkc()
            .filter(|c| !c.is_whitespace() && !matches!(c, '。' | '、' | '？' | '?' | '！' | '!'))
            .collect();
        chars.windows(2).map(|w| (w[0], w[1])).collect()
    };
    let wanted = grams(question);
    let mut out: Vec<String> = Vec::new();
    for (index, chunk) in context.iter().take(PASSAGE_CHUNKS).enumerate() {
        let body = chunk.answer.as_deref().unwrap_or(&chunk.text);
        let best = passage_pieces(body, limit)
            .into_iter()
            .map(|piece| (grams(&piece).intersection(&wanted).count(), piece))
            // The first of equally good pieces.
            .reduce(|best, next| if next.0 > best.0 { next } else { best });
        if let Some((shared, piece)) = best {
            if (index == 0 || shared >= 2) && !out.contains(&piece) {
                out.push(piece);
            }
        }
    }
    out
}

/// A chunk's sentences packed in order into pieces of at most `limit` characters (a longer
/// sentence is cut at `limit`). Deterministic: the same chunk always gives the same pieces.
fn passage_pieces(body: &str, limit: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for sentence in sentences(body) {
        let sentence = sentence.trim();
        if sentence.is_empty() {
            continue;
        }
        let sentence: String = sentence.chars().take(limit).collect();
        if !current.is_empty() && current.chars().count() + sentence.chars().count() > limit {
            pieces.push(std::mem::take(&mut current));
        }
        current.push_str(&sentence);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// What the model reads for a turn, in this order: the system prompt, the passages
/// ([`answering_passages`]), the last exchange of the conversation, the customer's message.
/// The system turn with its passages is a prefix other customers' turns share, so the
/// embedded model keeps it prefilled (docs/benchmarks.md, "Knowledge that is already
/// prefilled"); `kizuna bench engine` builds its prompts with this too.
pub fn model_messages(
    system_message: &str,
    history: &[ChatMessage],
    user_text: &str,
    passages: &[String],
) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage::system(system_with_passages(
        system_message,
        passages,
    ))];
    messages.extend(recent_history(history));
    messages.push(ChatMessage::user(user_text));
    messages
}

/// The system prompt with the passages after it. No document ids or Q/A labels for a small
/// model to copy.
fn system_with_passages(system: &str, passages: &[String]) -> String {
    if passages.is_empty() {
        return system.to_string();
    }
    let mut out = system.trim_end().to_string();
    out.push_str("\n\n以下の情報だけを使って答えてください。\n");
    for passage in passages {
        out.push('・');
        out.push_str(passage);
        out.push('\n');
    }
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
