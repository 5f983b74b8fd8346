//! One turn, in stages (docs/architecture.md, "A turn"): who holds the conversation →
//! preferences → understanding (sentiment, intent, what the message names) → escalation →
//! retrieval → one plan → the reply (composed, from the FAQ, or written by the model and
//! validated) → stored and shown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kizuna_nlu::accounts::{mentioned_ids, AccountDirectory};
use kizuna_protocol::{
    ConversationStatus, ProposalFrame, QuickReplyFrame, ReplyFrame, ServerFrame, SourceRef,
    ToolCallFrame, ToolStatus,
};
use kizuna_store::StoreError;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::outreach::{self, Preference};
use super::{
    ConversationHub, DirectAnswer, EscalationInput, Job, Live, OutFrame, Progress, Retrieval,
};
use crate::engine::{
    ExecutedCall, Fallback, Source, TurnEvent, TurnRequest, TurnResult, OTHER_ACCOUNT_REFUSAL,
};
use crate::escalation::{says_unresolved, EscalationReason};
use crate::identity::Role;
use crate::intent::{Intent, IntentReading};
use crate::llm::ChatMessage;
use crate::planner::{self, FaqSignal, PlanInput, Proposal, TurnPlan};
use crate::sentiment::SentimentReading;

/// How long the account directory (ids and names, for naming accounts in chat) is reused.
const DIRECTORY_TTL: Duration = Duration::from_secs(60);

/// What the hub understood of a message before planning.
struct Understanding {
    sentiment: Option<SentimentReading>,
    /// The best intent this caller may have, and its probability among those.
    intent: Option<(Intent, f32)>,
    /// Account ids the message names, by id or by name.
    accounts: Vec<String>,
    /// How probable consent is (`affirm` and `book` together): 「ではその内容で確定して
    /// ください」 reads as half of each.
    consent: Option<f32>,
}

/// Where the conversation stands before this message.
struct Before {
    history: Vec<ChatMessage>,
    previous_user: Vec<String>,
    recent_sentiments: Vec<SentimentReading>,
    unresolved_streak: u32,
    pending: Option<Proposal>,
    /// The intent read from the caller's previous message.
    previous_intent: Option<(Intent, f32)>,
}

impl ConversationHub {
    pub(super) async fn answer(&self, conversation_id: &str, live: &Live, job: Job) {
        let started = Instant::now();
        // 配信停止 / 配信再開 is a request about messages, not an answer to one.
        let preference = Preference::of(&job.text);
        if !self
            .bot_may_answer(conversation_id, live, &job, preference)
            .await
        {
            return;
        }
        if let Some(preference) = preference {
            // Before sentiment, escalation and the model: answered by rule, never escalated.
            self.answer_preference(conversation_id, live, &job, preference, started)
                .await;
            return;
        }
        self.record_outreach_replied(conversation_id).await;

        let before = self.before(conversation_id, &job).await;
        let understood = self.understand(&job).await;
        let _ = self
            .store
            .merge_message_metadata(
                &job.message_id,
                &json!({
                    "sentiment": understood.sentiment,
                    "intent": understood.intent.map(|(i, p)| json!({"label": i, "p": p})),
                }),
            )
            .await;
        if let Some(preference) = intent_preference(&understood) {
            self.answer_preference(conversation_id, live, &job, preference, started)
                .await;
            return;
        }

        // Another customer's account, by id or by name: refused by rule, before any tool or
        // model, and without repeating what was asked about.
        if job.identity.role != Role::Manager
            && !self.foreign_accounts(&job, &understood).is_empty()
        {
            let result = TurnResult {
                reply: OTHER_ACCOUNT_REFUSAL.to_string(),
                composed: true,
                ..TurnResult::default()
            };
            self.deliver(conversation_id, live, &job, result, &understood, started)
                .await;
            return;
        }

        if let Some((reason, detail)) = self.escalation_for(&job, &understood, &before) {
            match self
                .escalate(conversation_id, live, &job, reason, &detail)
                .await
            {
                Ok(()) => return,
                Err(super::HubError::EscalationCapped) => {}
                Err(super::HubError::Store(
                    e @ (StoreError::AlreadyAnswered(_) | StoreError::HeldByPeople(_)),
                )) => {
                    self.fenced(conversation_id, &job.message_id, &e).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(conversation_id, error = %e, "escalation failed; the bot answers instead")
                }
            }
        }

        let retrieval = match &self.retriever {
            Some(r) => r.retrieve(&job.text, &job.identity).await,
            None => Retrieval::default(),
        };
        if let Some(best) = retrieval.best_score {
            // Read by the insight report's "unanswered questions" (docs/insights.md).
            let _ = self
                .store
                .merge_message_metadata(
                    &job.message_id,
                    &json!({"retrieval": {"best_score": best}}),
                )
                .await;
        }
        let faq_entry = retrieval
            .direct_answer
            .clone()
            .or_else(|| retrieval.faq_answer.clone());
        let previous_user: Vec<&str> = before.previous_user.iter().map(String::as_str).collect();
        let agent = self.agent.clone();
        let available = |name: &str| agent.tools().get(name).is_some();
        let faq =
            (retrieval.direct_answer.is_some() || retrieval.faq_answer.is_some()).then(|| {
                FaqSignal {
                    confident: retrieval.direct_answer.is_some(),
                    answers_faq_intent: retrieval.faq_answer.is_some(),
                }
            });
        let earlier_accounts =
            if job.identity.role == Role::Manager && understood.accounts.is_empty() {
                self.earlier_accounts(&previous_user).await
            } else {
                Vec::new()
            };
        let plan = planner::plan_turn(&PlanInput {
            identity: &job.identity,
            now: self.clock.now(),
            text: &job.text,
            previous_user: &previous_user,
            intent: understood.intent,
            pending: before.pending.as_ref(),
            accounts: &understood.accounts,
            previous_intent: before.previous_intent,
            consent_probability: understood.consent,
            earlier_accounts: &earlier_accounts,
            faq,
            has_context: !retrieval.chunks.is_empty(),
            available: &available,
            config: &self.planner,
        });
        tracing::debug!(conversation_id, ?plan, intent = ?understood.intent, "turn planned");
        // A side question leaves a proposal awaiting consent (docs/architecture.md, "Writes
        // need consent"): its answer says so and keeps the buttons.
        let still_pending = before
            .pending
            .clone()
            .filter(|_| planner::keeps_pending(&plan) && !matches!(plan, TurnPlan::Restate(_)));

        match &plan {
            TurnPlan::Faq => {
                let answer = retrieval
                    .direct_answer
                    .as_ref()
                    .or(retrieval.faq_answer.as_ref())
                    .cloned();
                if let (Some(answer), Some(pending)) = (&answer, &still_pending) {
                    let result = TurnResult {
                        reply: format!("{}\n\n{}", answer.text, crate::engine::STILL_PENDING),
                        sources: vec![Source {
                            doc_id: answer.doc_id.clone(),
                            title: answer.title.clone(),
                            score: answer.score,
                        }],
                        proposal: Some(pending.clone()),
                        quick_replies: planner::consent_buttons(),
                        composed: true,
                        ..TurnResult::default()
                    };
                    self.deliver(conversation_id, live, &job, result, &understood, started)
                        .await;
                    return;
                }
                if let Some(answer) = answer {
                    self.send_direct_answer(conversation_id, live, &job, &answer, started)
                        .await;
                    return;
                }
            }
            TurnPlan::Escalate { reason, detail } => {
                match self
                    .escalate(conversation_id, live, &job, *reason, detail)
                    .await
                {
                    Ok(()) => return,
                    Err(super::HubError::EscalationCapped) => {}
                    Err(super::HubError::Store(
                        e @ (StoreError::AlreadyAnswered(_) | StoreError::HeldByPeople(_)),
                    )) => {
                        self.fenced(conversation_id, &job.message_id, &e).await;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(conversation_id, error = %e, "escalation failed; the bot answers instead")
                    }
                }
            }
            _ => {}
        }

        let request = TurnRequest {
            conversation_id: conversation_id.to_string(),
            identity: job.identity.clone(),
            now: self.clock.now(),
            history: before.history,
            user_text: job.text.clone(),
            context: retrieval.chunks,
        };
        let composed_from_tools = matches!(
            plan,
            TurnPlan::Tools { .. } | TurnPlan::FindSlot { .. } | TurnPlan::Propose { .. }
        );
        let rescheduling =
            matches!(&plan, TurnPlan::Tools { lead: Some(l), .. } if l == planner::RESCHEDULE);
        let mut result = self.run_agent(live, &job, request, plan).await;
        if let Some(pending) = still_pending.filter(|_| result.proposal.is_none()) {
            result.reply = format!("{}\n\n{}", result.reply, crate::engine::STILL_PENDING);
            result.proposal = Some(pending);
            result.quick_replies = planner::consent_buttons();
        }
        if let Some(faq) = faq_entry.filter(|_| composed_from_tools && result.sources.is_empty()) {
            // A fact composed from the price table or the calendar is the one the business's
            // FAQ states: cite the entry that answers the question, and for a date change
            // lead with its rules (deadline, fees) before the new slots.
            if rescheduling {
                result.reply = format!("{}\n\n{}", faq.text, result.reply);
            }
            result.sources.push(Source {
                doc_id: faq.doc_id,
                title: faq.title,
                score: faq.score,
            });
        }
        if outreach::booked_measurement(&result.tool_calls) {
            self.record_outreach_converted(conversation_id).await;
        }
        if let Some((reason, detail)) = result.tool_calls.iter().find_map(tool_escalation) {
            // The model asked for a person: the policy may name a weightier reason.
            let decision = self.check_escalation(&EscalationInput {
                text: &job.text,
                sentiment: understood.sentiment.as_ref(),
                recent_sentiments: &before.recent_sentiments,
                unresolved_streak: before.unresolved_streak,
                tool_request: Some((reason, detail.clone())),
                intent: understood.intent,
                previous_texts: &before.previous_user,
                awaiting_consent: before.pending.is_some(),
            });
            let (reason, detail) = decision.unwrap_or((reason, detail));
            *live.progress.lock().expect("progress lock") = None;
            match self
                .escalate(conversation_id, live, &job, reason, &detail)
                .await
            {
                Ok(()) => return,
                Err(super::HubError::EscalationCapped) => {}
                Err(super::HubError::Store(
                    e @ (StoreError::AlreadyAnswered(_) | StoreError::HeldByPeople(_)),
                )) => {
                    self.fenced(conversation_id, &job.message_id, &e).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(conversation_id, error = %e, "escalation failed; sending the reply")
                }
            }
        }
        self.deliver(conversation_id, live, &job, result, &understood, started)
            .await;
    }

    /// Whether the bot may answer: not while people hold the conversation (the message is
    /// stored as held; a stop request is still honoured), and a closed conversation reopens.
    async fn bot_may_answer(
        &self,
        conversation_id: &str,
        live: &Live,
        job: &Job,
        preference: Option<Preference>,
    ) -> bool {
        match self.store.conversation(conversation_id).await {
            Ok(Some(conv)) if conv.status == "escalated" || conv.status == "human" => {
                if let Err(e) = self.store.hold_message(&job.message_id).await {
                    tracing::error!(conversation_id, error = %e, "cannot mark a message held");
                }
                match preference {
                    Some(preference) => {
                        self.apply_preference_while_held(conversation_id, job, preference)
                            .await
                    }
                    None => self.record_outreach_replied(conversation_id).await,
                }
                false
            }
            Ok(Some(conv)) if conv.status == "closed" => {
                let frame = ServerFrame::Status {
                    seq: None,
                    status: ConversationStatus::Bot,
                    reason: None,
                    message: None,
                    agent_name: None,
                };
                match self
                    .store
                    .change_handler(
                        conversation_id,
                        "bot",
                        None,
                        &frame.to_value(),
                        self.now_ms(),
                    )
                    .await
                {
                    Ok(seq) => {
                        live.publish(OutFrame::durable(seq, frame));
                    }
                    Err(e) => {
                        tracing::error!(conversation_id, error = %e, "cannot reopen a conversation")
                    }
                }
                true
            }
            Ok(_) => true,
            Err(e) => {
                // Who holds it is unknown: a person may, so the bot stays silent and the
                // message stays pending for the next attempt.
                tracing::error!(conversation_id, error = %e, "cannot read the conversation's status; not answering");
                false
            }
        }
    }

    /// A reply the store refused to record: another replica answered the message first, or
    /// people took the conversation over during the turn (then the message waits for them).
    async fn fenced(&self, conversation_id: &str, message_id: &str, why: &StoreError) {
        metrics::counter!("kizuna_fenced_replies_total").increment(1);
        tracing::info!(conversation_id, reason = %why, "reply not stored");
        if let StoreError::HeldByPeople(_) = why {
            if let Err(e) = self.store.hold_message(message_id).await {
                tracing::error!(conversation_id, error = %e, "cannot mark a message held");
            }
        }
    }

    /// History, earlier signals and a proposal awaiting consent.
    async fn before(&self, conversation_id: &str, job: &Job) -> Before {
        let earlier = self
            .store
            .recent_messages(conversation_id, self.config.history_messages + 1)
            .await
            .unwrap_or_default();
        let history = history_messages(&earlier, &job.message_id);
        let previous_user = history
            .iter()
            .filter(|m| m.role == crate::llm::ChatRole::User)
            .map(|m| m.content.clone())
            .collect();
        let (recent_sentiments, unresolved_streak) =
            conversation_signals(&earlier, &job.message_id, Some(&job.text));
        Before {
            history,
            previous_user,
            recent_sentiments,
            unresolved_streak,
            pending: pending_proposal(&earlier, &job.message_id),
            previous_intent: previous_intent(&earlier, &job.message_id),
        }
    }

    /// Sentiment, intent and the accounts the message names.
    async fn understand(&self, job: &Job) -> Understanding {
        let (sentiment, reading) =
            tokio::join!(self.classify(&job.text), self.read_intent(&job.text));
        let role = job.identity.role;
        let intent = reading
            .as_ref()
            .and_then(|r| r.best(|i| role == Role::Manager || !i.is_manager_only()));
        let mut accounts = mentioned_ids(&job.text);
        if let Some(directory) = self.account_directory().await {
            for id in directory.resolve(&job.text) {
                if !accounts.contains(&id) {
                    accounts.push(id);
                }
            }
        }
        let consent = reading
            .as_ref()
            .map(|r| r.probability(Intent::Affirm) + r.probability(Intent::Book));
        Understanding {
            sentiment,
            intent,
            accounts,
            consent,
        }
    }

    /// The accounts named by the latest of `previous_user` that names any.
    async fn earlier_accounts(&self, previous_user: &[&str]) -> Vec<String> {
        let directory = self.account_directory().await;
        for text in previous_user.iter().rev() {
            let mut accounts = mentioned_ids(text);
            if let Some(directory) = &directory {
                for id in directory.resolve(text) {
                    if !accounts.contains(&id) {
                        accounts.push(id);
                    }
                }
            }
            if !accounts.is_empty() {
                return accounts;
            }
        }
        Vec::new()
    }

    async fn read_intent(&self, text: &str) -> Option<IntentReading> {
        let model = self.intent.clone()?;
        let text = text.to_string();
        match tokio::task::spawn_blocking(move || model.classify(&text)).await {
            Ok(Ok(reading)) => Some(reading),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "intent model failed; planning without it");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "intent task failed");
                None
            }
        }
    }

    /// Every account's id and name, reused for [`DIRECTORY_TTL`].
    async fn account_directory(&self) -> Option<Arc<AccountDirectory>> {
        if let Some((at, directory)) = self.directory.lock().expect("directory lock").as_ref() {
            if at.elapsed() < DIRECTORY_TTL {
                return Some(directory.clone());
            }
        }
        match self.store.account_names().await {
            Ok(names) => {
                let directory = Arc::new(AccountDirectory::new(names));
                *self.directory.lock().expect("directory lock") =
                    Some((Instant::now(), directory.clone()));
                Some(directory)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read account names; accounts are matched by id only");
                None
            }
        }
    }

    /// Accounts a customer or visitor named that are not their own.
    fn foreign_accounts(&self, job: &Job, understood: &Understanding) -> Vec<String> {
        let own = job.identity.customer_id.as_deref().map(str::to_uppercase);
        understood
            .accounts
            .iter()
            .filter(|id| Some(id.to_uppercase()) != own)
            .cloned()
            .collect()
    }

    /// The escalation policy's decision. Staff are never escalated: they are the people a
    /// conversation would be handed to.
    fn escalation_for(
        &self,
        job: &Job,
        understood: &Understanding,
        before: &Before,
    ) -> Option<(EscalationReason, String)> {
        if job.identity.role == Role::Manager {
            return None;
        }
        self.check_escalation(&EscalationInput {
            text: &job.text,
            sentiment: understood.sentiment.as_ref(),
            recent_sentiments: &before.recent_sentiments,
            unresolved_streak: before.unresolved_streak,
            tool_request: None,
            intent: understood.intent,
            previous_texts: &before.previous_user,
            awaiting_consent: before.pending.is_some(),
        })
    }

    /// Runs the planned turn on the agent, streaming its events to the sockets.
    async fn run_agent(
        &self,
        live: &Live,
        job: &Job,
        request: TurnRequest,
        plan: TurnPlan,
    ) -> TurnResult {
        *live.progress.lock().expect("progress lock") = Some(Progress {
            reply_to: job.client_msg_id.clone(),
            text: String::new(),
        });
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let turn = self.agent.run(request, plan, events_tx);
        tokio::pin!(turn);
        let mut index = 0u32;
        let result = loop {
            tokio::select! {
                result = &mut turn => break result,
                Some(event) = events_rx.recv() => self.forward_event(live, &job.client_msg_id, &mut index, event),
            }
        };
        while let Ok(event) = events_rx.try_recv() {
            self.forward_event(live, &job.client_msg_id, &mut index, event);
        }
        result
    }

    /// Stores the reply (with its tool calls and any proposal) and shows it.
    async fn deliver(
        &self,
        conversation_id: &str,
        live: &Live,
        job: &Job,
        result: TurnResult,
        understood: &Understanding,
        started: Instant,
    ) {
        // A fixed reply that answers nothing (a clarifying question, "out of scope", "nothing
        // to confirm") does not resolve anything either: it counts toward the unresolved streak.
        let non_answer = [
            planner::CLARIFY,
            planner::OUT_OF_SCOPE,
            planner::NOTHING_PENDING,
        ]
        .iter()
        .any(|fixed| result.reply.starts_with(fixed));
        let unhelpful = non_answer
            || result
                .fallback
                .is_some_and(|f| f != Fallback::AddedToolFacts)
            || (!result.composed
                && result.sources.is_empty()
                && !result.tool_calls.iter().any(|c| c.ok));
        let reply_id = uuid::Uuid::new_v4().to_string();
        let mut reply = ReplyFrame::text(&job.client_msg_id, &reply_id, &result.reply);
        reply.sources = result.sources.iter().map(source_ref).collect();
        reply.tool_calls = result
            .tool_calls
            .iter()
            .map(|c| ToolCallFrame {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
                ok: c.ok,
                result: c.result.clone(),
            })
            .collect();
        reply.fallback = result
            .fallback
            .and_then(|f| serde_json::to_value(f).ok())
            .and_then(|v| v.as_str().map(str::to_string));
        reply.quick_replies = result
            .quick_replies
            .iter()
            .map(|q| QuickReplyFrame {
                label: q.label.clone(),
                text: q.text.clone(),
            })
            .collect();
        reply.proposal = result.proposal.as_ref().map(|p| ProposalFrame {
            tool: p.tool.clone(),
            summary: p.summary.clone(),
        });
        let payload = ServerFrame::Reply(reply);
        let metadata = json!({
            "sources": result.sources,
            "fallback": result.fallback,
            "steps": result.steps,
            "llm_ms": result.llm_time.as_millis() as u64,
            "usage": result.usage,
            "model": if result.composed { "composed" } else { self.agent.llm().name() },
            "unhelpful": unhelpful,
            "proposal": result.proposal,
            "rejected": result.rejected,
            "intent": understood.intent.map(|(i, _)| i),
        });
        let records: Vec<kizuna_store::ToolCallRecord> = result
            .tool_calls
            .iter()
            .map(|c| kizuna_store::ToolCallRecord {
                id: format!("{}-{}", job.message_id, c.id),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
                result: c.result.clone(),
                ok: c.ok,
                duration_ms: c.duration_ms as i64,
            })
            .collect();
        // Other replicas' sockets get the streamed text before the reply.
        self.flush_transients().await;
        // The reply must not be lost to a transient database error.
        let mut attempt = 0;
        let seq = loop {
            match self
                .store
                .record_reply(
                    conversation_id,
                    &job.message_id,
                    &reply_id,
                    "assistant",
                    &result.reply,
                    &metadata,
                    &records,
                    &payload.to_value(),
                    self.now_ms(),
                )
                .await
            {
                Ok(seq) => break Some(seq),
                Err(e @ (StoreError::AlreadyAnswered(_) | StoreError::HeldByPeople(_))) => {
                    self.fenced(conversation_id, &job.message_id, &e).await;
                    break None;
                }
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(conversation_id, error = %e, attempt, "storing the reply failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(conversation_id, error = %e, "could not store the reply; the message stays pending");
                    break None;
                }
            }
        };
        *live.progress.lock().expect("progress lock") = None;
        if let Some(seq) = seq {
            live.publish(OutFrame::durable(seq, payload));
        }
        let total = started.elapsed();
        metrics::counter!("kizuna_turns_total").increment(1);
        metrics::histogram!("kizuna_turn_seconds").record(total.as_secs_f64());
        metrics::histogram!("kizuna_turn_overhead_seconds")
            .record(total.saturating_sub(result.llm_time).as_secs_f64());
        for call in &result.tool_calls {
            // The label takes registered names only: a model can emit any name, and every
            // distinct label value is a new time series (docs/security.md).
            let known = call.name == "escalate_to_human"
                || self.agent.tools().names().any(|n| n == call.name);
            let tool = if known {
                call.name.clone()
            } else {
                "unknown".to_string()
            };
            metrics::counter!("kizuna_tool_calls_total", "tool" => tool, "ok" => call.ok.to_string()).increment(1);
        }
        if let Some(fallback) = result.fallback {
            metrics::counter!("kizuna_fallback_replies_total", "reason" => format!("{fallback:?}"))
                .increment(1);
        }
        tracing::info!(
            conversation_id,
            intent = ?understood.intent.map(|(i, _)| i),
            composed = result.composed,
            steps = result.steps,
            tools = result.tool_calls.len(),
            llm_ms = result.llm_time.as_millis() as u64,
            total_ms = total.as_millis() as u64,
            fallback = ?result.fallback,
            "turn answered"
        );
    }

    pub(super) fn forward_event(
        &self,
        live: &Live,
        reply_to: &str,
        index: &mut u32,
        event: TurnEvent,
    ) {
        let frame = match event {
            TurnEvent::Delta(text) => {
                if let Some(p) = live.progress.lock().expect("progress lock").as_mut() {
                    p.text.push_str(&text);
                }
                *index += 1;
                ServerFrame::Delta {
                    reply_to: reply_to.to_string(),
                    index: *index,
                    text,
                    replace: None,
                }
            }
            TurnEvent::Queued(place) => ServerFrame::Queue {
                reply_to: reply_to.to_string(),
                position: place.position,
                expected_wait_secs: place.expected_wait_secs,
            },
            TurnEvent::ToolStarted { name, .. } => ServerFrame::Tool {
                reply_to: reply_to.to_string(),
                name,
                status: ToolStatus::Started,
            },
            TurnEvent::ToolFinished { name, ok, .. } => ServerFrame::Tool {
                reply_to: reply_to.to_string(),
                name,
                status: if ok {
                    ToolStatus::Done
                } else {
                    ToolStatus::Failed
                },
            },
        };
        self.announce_transient(live, &frame);
        let _ = live.frames.send(OutFrame::transient(&frame));
    }

    pub(super) async fn classify(&self, text: &str) -> Option<SentimentReading> {
        let model = self.sentiment.clone()?;
        let text = text.to_string();
        match tokio::task::spawn_blocking(move || model.classify(&text)).await {
            Ok(Ok(reading)) => Some(reading),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "sentiment model failed; deciding without it");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "sentiment task failed");
                None
            }
        }
    }

    pub(super) fn check_escalation(
        &self,
        input: &EscalationInput<'_>,
    ) -> Option<(EscalationReason, String)> {
        match &self.escalation {
            Some(policy) => policy.check(input),
            None => input.tool_request.clone(),
        }
    }

    /// Stores a reply that needed no model (an FAQ answer, a preference confirmation) and
    /// shows it on the conversation's sockets. On a store error nothing is shown and the
    /// customer's message stays pending.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn post_fixed_reply(
        &self,
        conversation_id: &str,
        live: &Live,
        job: &Job,
        reply_id: &str,
        text: &str,
        metadata: &Value,
        payload: ServerFrame,
    ) -> Result<(), kizuna_store::StoreError> {
        let seq = match self
            .store
            .record_reply(
                conversation_id,
                &job.message_id,
                reply_id,
                "assistant",
                text,
                metadata,
                &[],
                &payload.to_value(),
                self.now_ms(),
            )
            .await
        {
            Ok(seq) => seq,
            Err(e @ (StoreError::AlreadyAnswered(_) | StoreError::HeldByPeople(_))) => {
                self.fenced(conversation_id, &job.message_id, &e).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        live.publish(OutFrame::durable(seq, payload));
        Ok(())
    }

    /// Answers from the FAQ entry that answers the question, without the model.
    async fn send_direct_answer(
        &self,
        conversation_id: &str,
        live: &Live,
        job: &Job,
        direct: &DirectAnswer,
        started: Instant,
    ) {
        let reply_id = uuid::Uuid::new_v4().to_string();
        let source = SourceRef {
            doc_id: direct.doc_id.clone(),
            title: direct.title.clone(),
            score: direct.score,
        };
        let sources = json!([source]);
        let mut reply = ReplyFrame::text(&job.client_msg_id, &reply_id, &direct.text);
        reply.sources = vec![source];
        reply.direct_answer = Some(true);
        let payload = ServerFrame::Reply(reply);
        let metadata =
            json!({"sources": sources, "direct_answer": direct.doc_id, "unhelpful": false});
        match self
            .post_fixed_reply(
                conversation_id,
                live,
                job,
                &reply_id,
                &direct.text,
                &metadata,
                payload,
            )
            .await
        {
            Ok(()) => {
                metrics::counter!("kizuna_direct_answers_total").increment(1);
                tracing::info!(conversation_id, doc_id = %direct.doc_id, score = direct.score, total_ms = started.elapsed().as_millis() as u64, "answered from the FAQ");
            }
            Err(e) => {
                tracing::error!(conversation_id, error = %e, "could not store the FAQ answer; the message stays pending")
            }
        }
    }
}

/// A stop or resume request the rules missed but the intent model is sure of. Resuming is
/// consent, so it needs the same certainty.
fn intent_preference(understood: &Understanding) -> Option<Preference> {
    const SURE: f32 = 0.9;
    match understood.intent {
        Some((Intent::OptOut, p)) if p >= SURE => Some(Preference::OptOut),
        Some((Intent::OptIn, p)) if p >= SURE => Some(Preference::OptIn),
        _ => None,
    }
}

/// The conversation before `current_message_id`, as prompt messages.
fn history_messages(
    messages: &[kizuna_store::StoredMessage],
    current_message_id: &str,
) -> Vec<ChatMessage> {
    messages
        .iter()
        .take_while(|m| m.id != current_message_id)
        .filter(|m| {
            m.role == "assistant"
                || m.role == "human_agent"
                || (m.role == "user" && m.status == "answered")
        })
        .map(|m| {
            if m.role == "user" {
                ChatMessage::user(m.content.clone())
            } else {
                ChatMessage::assistant(m.content.clone())
            }
        })
        .collect()
}

/// The write proposed by the bot's last reply before `current_message_id`, if that reply
/// is the latest thing said (a person's reply or a newer bot reply withdraws it).
fn pending_proposal(
    messages: &[kizuna_store::StoredMessage],
    current_message_id: &str,
) -> Option<Proposal> {
    let last_said = messages
        .iter()
        .take_while(|m| m.id != current_message_id)
        .filter(|m| m.role == "assistant" || m.role == "human_agent")
        .last()?;
    if last_said.role != "assistant" {
        return None;
    }
    serde_json::from_value(last_said.metadata.get("proposal")?.clone()).ok()
}

/// The intent stored with the caller's last message before `current_message_id`.
fn previous_intent(
    messages: &[kizuna_store::StoredMessage],
    current_message_id: &str,
) -> Option<(Intent, f32)> {
    let intent = messages
        .iter()
        .take_while(|m| m.id != current_message_id)
        .filter(|m| m.role == "user")
        .last()?
        .metadata
        .get("intent")?
        .clone();
    let label: Intent = intent.get("label")?.as_str()?.parse().ok()?;
    Some((label, intent.get("p")?.as_f64()? as f32))
}

/// Sentiment readings of the customer's earlier messages (oldest first), and how many bot
/// replies in a row, most recent first, did not help. Messages read as a description of the
/// noise (`noise_report`) carry distress about the neighbour, not about us: they are left out
/// of the trend.
pub(super) fn conversation_signals(
    messages: &[kizuna_store::StoredMessage],
    current_message_id: &str,
    current_text: Option<&str>,
) -> (Vec<SentimentReading>, u32) {
    let earlier: Vec<_> = messages
        .iter()
        .take_while(|m| m.id != current_message_id)
        .collect();
    let readings = earlier
        .iter()
        .filter(|m| m.role == "user")
        .filter(|m| {
            m.metadata
                .get("intent")
                .and_then(|i| i.get("label"))
                .and_then(Value::as_str)
                != Some(Intent::NoiseReport.as_str())
        })
        .filter_map(|m| serde_json::from_value(m.metadata.get("sentiment")?.clone()).ok())
        .collect();
    let mut streak = 0;
    for m in earlier.iter().rev() {
        match m.role.as_str() {
            "assistant" if m.metadata.get("unhelpful") == Some(&Value::Bool(true)) => streak += 1,
            "assistant" | "human_agent" => break,
            _ => {}
        }
    }
    // The customer saying so counts too: consecutive messages, this one included, each
    // answering a bot reply with "that did not help / I still do not understand".
    let mut turns: Vec<(&str, bool)> = Vec::new();
    let mut answered = false;
    for m in &earlier {
        match m.role.as_str() {
            "assistant" => answered = true,
            "user" => {
                turns.push((m.content.as_str(), answered));
                answered = false;
            }
            _ => {}
        }
    }
    if let Some(text) = current_text {
        turns.push((text, answered));
    }
    let said = turns
        .iter()
        .rev()
        .take_while(|(text, answered)| *answered && says_unresolved(text))
        .count();
    (readings, streak.max(said as u32))
}

/// An `escalate_to_human` call of the turn: its reason and summary.
fn tool_escalation(call: &ExecutedCall) -> Option<(EscalationReason, String)> {
    if call.name != "escalate_to_human" || !call.ok {
        return None;
    }
    let reason = serde_json::from_value(call.arguments.get("reason")?.clone())
        .unwrap_or(EscalationReason::CustomerRequest);
    let summary = call
        .arguments
        .get("summary")
        .and_then(Value::as_str)
        .unwrap_or("the agent asked for a person")
        .to_string();
    Some((reason, summary))
}

/// A knowledge source as the reply frame names it.
fn source_ref(source: &crate::engine::Source) -> SourceRef {
    SourceRef {
        doc_id: source.doc_id.clone(),
        title: source.title.clone(),
        score: source.score,
    }
}
