//! Conversations as a durable service: the transport calls [`ConversationHub::open`] and
//! [`ConversationHub::submit`] and forwards the frames it receives.
//!
//! Guarantees:
//! - a user's message is committed (with its `ack` frame) before it is acknowledged or
//!   answered, so an acknowledged message survives a crash; unanswered messages are picked
//!   up again by [`ConversationHub::recover`] at start;
//! - a resend of the same client message id is acknowledged again and never processed twice;
//! - every durable frame has a per-conversation sequence number; a client that reopens with
//!   the last number it saw gets every durable frame after it, plus the reply being streamed;
//! - one turn at a time per conversation, in order of arrival.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kizuna_nlu::accounts::AccountDirectory;
use kizuna_protocol::{ErrorCode, MessageStatus, ServerFrame};
use kizuna_store::{Conversation, Store, StoreError, UserMessageInsert};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use crate::clock::Clock;
use crate::engine::{Agent, ContextChunk};
use crate::identity::{Identity, Role};
use crate::intent::IntentModel;
use crate::planner::PlannerConfig;
use crate::sentiment::SentimentModel;

mod cluster;
mod handover;
pub mod optout;
mod outreach;
mod turn;

pub use handover::{EscalationCheck, EscalationInput, HandoverConfig};
pub use optout::{is_opt_in_request, is_opt_out_request};

/// What the knowledge base found for a user's message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retrieval {
    /// Chunks above the similarity threshold, best first, for the model's context.
    pub chunks: Vec<ContextChunk>,
    /// A FAQ answer confident enough to send as is, without the model (seed 003 §6.1
    /// Level 1).
    pub direct_answer: Option<DirectAnswer>,
    /// The best FAQ when it is good enough to answer a message that asks a question about
    /// the service (the intent model says `faq`), though not confident on its own.
    pub faq_answer: Option<DirectAnswer>,
    /// The best cosine similarity of any knowledge the message found (FAQ or chunk), recorded
    /// with the message: a low one marks a question the knowledge does not answer
    /// (docs/insights.md). `None` when nothing was searched.
    pub best_score: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirectAnswer {
    pub doc_id: String,
    pub title: String,
    pub text: String,
    pub score: f32,
}

/// Supplies knowledge for a user's message (the knowledge crate implements it).
#[async_trait]
pub trait Retriever: Send + Sync {
    async fn retrieve(&self, query: &str, identity: &Identity) -> Retrieval;
}

/// Optional parts of the hub beyond the agent itself.
#[derive(Default, Clone)]
pub struct HubServices {
    pub retriever: Option<Arc<dyn Retriever>>,
    pub sentiment: Option<Arc<dyn SentimentModel>>,
    pub intent: Option<Arc<dyn IntentModel>>,
    pub escalation: Option<Arc<dyn EscalationCheck>>,
    pub handover: HandoverConfig,
    pub planner: PlannerConfig,
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Earlier messages given to the model.
    pub history_messages: i64,
    /// Frames buffered per conversation for slow sockets before they must resume.
    pub frame_buffer: usize,
    /// Longest accepted message, in characters.
    pub max_message_chars: usize,
    /// A conversation worker with no socket and no work exits after this long.
    pub idle_timeout: Duration,
    /// Messages of one conversation waiting for an answer; more are refused with
    /// [`HubError::Busy`] (docs/security.md, "Fair use of the model").
    pub max_pending_per_conversation: usize,
    /// Turns waiting or running in all; more are refused with [`HubError::Overloaded`].
    pub max_queued_turns: usize,
    /// The same for anonymous visitors (lower, so signed-in customers keep room).
    pub max_queued_turns_anonymous: usize,
    /// How long a replica's claim on a conversation's turn lasts without renewal: after a
    /// crash, another replica answers after at most this long (docs/deployment.md).
    pub lease_ttl: Duration,
    /// How often a replica sharing PostgreSQL looks for messages no replica is answering.
    pub sweep_interval: Duration,
    /// Anonymous escalations an address may cause per hour; above it the bot keeps
    /// answering instead (escalation by rule costs an attacker nothing). `None`: no cap.
    pub anonymous_escalations_per_hour_per_address: Option<u32>,
    /// Anonymous escalations per hour in all, with the same effect.
    pub anonymous_escalations_per_hour: Option<u32>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history_messages: 12,
            frame_buffer: 16,
            max_message_chars: 2000,
            idle_timeout: Duration::from_secs(300),
            max_pending_per_conversation: 3,
            max_queued_turns: 64,
            max_queued_turns_anonymous: 24,
            lease_ttl: Duration::from_secs(15),
            sweep_interval: Duration::from_secs(5),
            anonymous_escalations_per_hour_per_address: None,
            anonymous_escalations_per_hour: None,
        }
    }
}

/// A frame for the client, already serialised. `seq` is set on durable frames.
#[derive(Debug, Clone, PartialEq)]
pub struct OutFrame {
    pub seq: Option<i64>,
    pub json: Arc<str>,
}

impl OutFrame {
    /// A frame that is not stored (deltas, tool progress, a duplicate ack).
    pub fn transient(frame: &ServerFrame) -> Self {
        Self {
            seq: None,
            json: frame.to_json().into(),
        }
    }

    /// A frame just stored under `seq`.
    pub fn durable(seq: i64, frame: ServerFrame) -> Self {
        Self {
            seq: Some(seq),
            json: frame.with_seq(seq).to_json().into(),
        }
    }

    /// A frame read back from the log (written from a [`ServerFrame`] by this or another
    /// replica; kept as stored so older frames replay unchanged).
    pub fn stored(seq: i64, mut payload: Value) -> Self {
        payload["seq"] = Value::from(seq);
        Self {
            seq: Some(seq),
            json: payload.to_string().into(),
        }
    }

    /// A transient frame another replica published (already serialised there).
    fn relayed(payload: &Value) -> Self {
        Self {
            seq: None,
            json: payload.to_string().into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("this conversation belongs to someone else")]
    Forbidden,
    #[error("no such conversation")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    /// This conversation already has as many messages waiting as it may.
    #[error("the previous messages are still being answered; send this one after the reply")]
    Busy,
    /// An anonymous escalation over its hourly budget (docs/security.md); the bot answers.
    #[error("anonymous escalations are over their hourly budget")]
    EscalationCapped,
    /// Too many turns are waiting in all; the message was not stored.
    #[error("too many conversations are waiting for an answer; resend in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HubError {
    /// The one code this error has on every surface: the websocket's error frame and the
    /// staff API's JSON error (docs/protocol.md, docs/api.md).
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::Forbidden => ErrorCode::Forbidden,
            HubError::NotFound => ErrorCode::NotFound,
            HubError::Conflict(_) => ErrorCode::Conflict,
            HubError::BadRequest(_) => ErrorCode::BadRequest,
            HubError::Busy => ErrorCode::Busy,
            HubError::EscalationCapped => ErrorCode::Capped,
            HubError::Overloaded { .. } => ErrorCode::Overloaded,
            HubError::Store(_) => ErrorCode::Unavailable,
        }
    }

    /// The message a client may read: the error's own words, except for store failures,
    /// whose details stay in the log.
    pub fn client_message(&self) -> String {
        match self {
            HubError::Store(_) => "temporarily unavailable; retry later".to_string(),
            HubError::Conflict(m) | HubError::BadRequest(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

/// What a socket gets when it opens a conversation.
pub struct Opened {
    pub conversation_id: String,
    /// The highest durable sequence number so far.
    pub last_seq: i64,
    /// Durable frames after the client's last seen sequence number, then the reply in progress.
    pub replay: Vec<OutFrame>,
    /// Live frames from now on (may repeat replayed ones: skip seq ≤ the last replayed).
    pub live: broadcast::Receiver<OutFrame>,
}

/// The outcome of a submitted message.
pub enum Submitted {
    /// Stored; the `ack` frame reaches every socket of the conversation.
    Accepted { message_id: String },
    /// Already received earlier: this frame re-acknowledges it for the sender only.
    Duplicate(OutFrame),
}

struct Job {
    message_id: String,
    client_msg_id: String,
    text: String,
    identity: Identity,
    /// Its place in the queues; given back when the job is done or dropped.
    _ticket: Option<TurnTicket>,
}

/// Turns waiting or running, in all and for anonymous visitors.
#[derive(Default)]
struct QueueCounts {
    all: std::sync::atomic::AtomicUsize,
    anonymous: std::sync::atomic::AtomicUsize,
}

/// A counted place in the conversation's and the hub's queues, released on drop.
struct TurnTicket {
    counts: Arc<QueueCounts>,
    live: Arc<Live>,
    anonymous: bool,
}

impl Drop for TurnTicket {
    fn drop(&mut self) {
        self.live.pending.fetch_sub(1, Ordering::AcqRel);
        self.counts.all.fetch_sub(1, Ordering::AcqRel);
        if self.anonymous {
            self.counts.anonymous.fetch_sub(1, Ordering::AcqRel);
        }
        metrics::gauge!("kizuna_queued_turns").set(self.counts.all.load(Ordering::Relaxed) as f64);
    }
}

/// The reply being streamed, for sockets that reconnect mid-reply.
struct Progress {
    reply_to: String,
    text: String,
}

struct Live {
    conversation_id: Arc<str>,
    frames: broadcast::Sender<OutFrame>,
    /// The highest durable sequence number broadcast here (for a resync after the cluster
    /// listener reconnects).
    last_seq: AtomicI64,
    /// The worker's inbox. The worker is spawned with the first message, so sockets that never
    /// send one cost no task.
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    progress: Mutex<Option<Progress>>,
    /// Jobs queued or running (bounded by `max_pending_per_conversation`).
    pending: std::sync::atomic::AtomicUsize,
}

impl Live {
    /// Broadcasts a frame to this replica's sockets of the conversation.
    fn publish(&self, frame: OutFrame) {
        if let Some(seq) = frame.seq {
            self.last_seq.fetch_max(seq, Ordering::AcqRel);
        }
        let _ = self.frames.send(frame);
    }

    fn worker_gone(&self) -> bool {
        self.jobs
            .lock()
            .expect("jobs lock")
            .as_ref()
            .is_some_and(|j| j.is_closed())
    }

    fn has_worker(&self) -> bool {
        self.jobs.lock().expect("jobs lock").is_some()
    }
}

pub struct ConversationHub {
    store: Store,
    agent: Arc<Agent>,
    clock: Arc<dyn Clock>,
    retriever: Option<Arc<dyn Retriever>>,
    sentiment: Option<Arc<dyn SentimentModel>>,
    intent: Option<Arc<dyn IntentModel>>,
    escalation: Option<Arc<dyn EscalationCheck>>,
    handover: HandoverConfig,
    planner: PlannerConfig,
    /// The last time stamp handed out by [`Self::now_ms`].
    last_ms: AtomicI64,
    /// Account ids and names, for accounts named in chat; refreshed now and then.
    directory: Mutex<Option<(Instant, Arc<AccountDirectory>)>>,
    /// Poked when a notification is queued, so its dispatcher sends it at once.
    outbox_wakeup: Arc<tokio::sync::Notify>,
    config: HubConfig,
    live: Mutex<HashMap<String, Arc<Live>>>,
    queues: Arc<QueueCounts>,
    /// When recent anonymous escalations happened, in all and per address (last hour).
    anonymous_escalations: Mutex<EscalationWindow>,
    /// Messages queued or being answered on this replica (so a sweep does not queue them
    /// twice).
    in_flight: Mutex<std::collections::HashSet<String>>,
    /// Transient frames for the other replicas (set by `start_cluster` on PostgreSQL).
    transient_out: std::sync::OnceLock<mpsc::UnboundedSender<cluster::TransientOut>>,
    me: Weak<ConversationHub>,
}

#[derive(Default)]
struct EscalationWindow {
    all: std::collections::VecDeque<Instant>,
    per_address: HashMap<std::net::IpAddr, std::collections::VecDeque<Instant>>,
}

impl EscalationWindow {
    const WINDOW: Duration = Duration::from_secs(3600);

    /// Counts one escalation if both budgets allow it.
    fn try_take(
        &mut self,
        address: Option<std::net::IpAddr>,
        per_address: Option<u32>,
        all: Option<u32>,
        now: Instant,
    ) -> bool {
        let expired = |q: &mut std::collections::VecDeque<Instant>| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
            {
                q.pop_front();
            }
        };
        expired(&mut self.all);
        self.per_address.retain(|_, q| {
            expired(q);
            !q.is_empty()
        });
        if all.is_some_and(|cap| self.all.len() >= cap as usize) {
            return false;
        }
        if let (Some(address), Some(cap)) = (address, per_address) {
            let q = self.per_address.entry(address).or_default();
            if q.len() >= cap as usize {
                return false;
            }
            q.push_back(now);
        }
        self.all.push_back(now);
        true
    }
}

impl ConversationHub {
    pub fn new(
        store: Store,
        agent: Arc<Agent>,
        clock: Arc<dyn Clock>,
        retriever: Option<Arc<dyn Retriever>>,
        config: HubConfig,
    ) -> Arc<Self> {
        Self::with_services(
            store,
            agent,
            clock,
            HubServices {
                retriever,
                ..HubServices::default()
            },
            config,
        )
    }

    pub fn with_services(
        store: Store,
        agent: Arc<Agent>,
        clock: Arc<dyn Clock>,
        services: HubServices,
        config: HubConfig,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            store,
            agent,
            clock,
            retriever: services.retriever,
            sentiment: services.sentiment,
            intent: services.intent,
            escalation: services.escalation,
            handover: services.handover,
            planner: services.planner,
            directory: Mutex::new(None),
            last_ms: AtomicI64::new(0),
            outbox_wakeup: Arc::new(tokio::sync::Notify::new()),
            config,
            live: Mutex::new(HashMap::new()),
            queues: Arc::new(QueueCounts::default()),
            anonymous_escalations: Mutex::new(EscalationWindow::default()),
            in_flight: Mutex::new(std::collections::HashSet::new()),
            transient_out: std::sync::OnceLock::new(),
            me: me.clone(),
        })
    }

    /// Notified whenever a notification is queued in the outbox.
    pub fn outbox_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_wakeup.clone()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The time stamped on stored messages and frames: the clock's milliseconds, but always
    /// later than the previous stamp, so two messages stored within one millisecond (a fast
    /// "はい" after a proposal) or under a fixed clock (the evaluation) keep their order.
    fn now_ms(&self) -> i64 {
        let now = self.clock.now().timestamp_millis();
        let previous = self
            .last_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(previous + 1)
    }

    /// Opens (or starts) a conversation for a socket. A new conversation is only written to
    /// the database with its first message, so idle visitors cost no rows.
    pub async fn open(
        &self,
        identity: &Identity,
        conversation_id: Option<&str>,
        last_seq: i64,
    ) -> Result<Opened, HubError> {
        let id = match conversation_id {
            Some(id) => validate_conversation_id(id)?,
            // A customer arriving without a conversation first sees the one the agent
            // started for them (outreach) and they have not answered yet.
            None => match self.pending_proactive(identity).await? {
                Some(id) => id,
                None => uuid::Uuid::new_v4().to_string(),
            },
        };
        let existing = self.store.conversation(&id).await?;
        if let Some(conv) = &existing {
            check_owner(conv, identity)?;
            if identity.role == Role::Customer {
                // The customer now sees what the agent sent them.
                self.record_outreach_opened(&id).await;
            }
        }
        // Subscribe before reading the log so no frame falls between the two.
        let live = self.live(&id);
        let receiver = live.frames.subscribe();
        let mut replay: Vec<OutFrame> = self
            .store
            .frames_after(&id, last_seq.max(0))
            .await?
            .into_iter()
            .map(|f| OutFrame::stored(f.seq, f.payload))
            .collect();
        if let Some(p) = live.progress.lock().expect("progress lock").as_ref() {
            replay.push(OutFrame::transient(&ServerFrame::Delta {
                reply_to: p.reply_to.clone(),
                index: 0,
                text: p.text.clone(),
                replace: Some(true),
            }));
        }
        let last_seq = existing
            .map(|c| c.last_seq)
            .unwrap_or(0)
            .max(replay.iter().filter_map(|f| f.seq).max().unwrap_or(0));
        Ok(Opened {
            conversation_id: id,
            last_seq,
            replay,
            live: receiver,
        })
    }

    /// Stores a user's message and queues it for an answer.
    pub async fn submit(
        &self,
        identity: &Identity,
        conversation_id: &str,
        client_msg_id: &str,
        text: &str,
    ) -> Result<Submitted, HubError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(HubError::BadRequest("the message is empty".into()));
        }
        if text.chars().count() > self.config.max_message_chars {
            return Err(HubError::BadRequest(format!(
                "the message is longer than {} characters",
                self.config.max_message_chars
            )));
        }
        if client_msg_id.is_empty() || client_msg_id.len() > 128 {
            return Err(HubError::BadRequest(
                "the message id must be 1–128 characters".into(),
            ));
        }
        let now = self.now_ms();
        match self.store.conversation(conversation_id).await? {
            Some(conv) => check_owner(&conv, identity)?,
            None => {
                let conv_id = validate_conversation_id(conversation_id)?;
                match self
                    .store
                    .create_conversation(
                        &conv_id,
                        identity.role.as_str(),
                        &identity.subject,
                        identity.customer_id.as_deref(),
                        now,
                    )
                    .await
                {
                    Ok(_) => {}
                    // Two sockets raced to create it: fine if it is ours.
                    Err(StoreError::Database(_)) => {
                        match self.store.conversation(&conv_id).await? {
                            Some(conv) => check_owner(&conv, identity)?,
                            None => {
                                return Err(HubError::BadRequest(
                                    "could not create the conversation".into(),
                                ))
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let ticket = self.admit(conversation_id, identity)?;
        let message_id = uuid::Uuid::new_v4().to_string();
        // The text rides along so a replay (another device, the console) can show it.
        let ack = ServerFrame::Ack {
            seq: None,
            id: client_msg_id.to_string(),
            message_id: message_id.clone(),
            text: Some(text.to_string()),
            duplicate: None,
            status: None,
        };
        match self
            .store
            .insert_user_message(
                conversation_id,
                &message_id,
                client_msg_id,
                text,
                &ack.to_value(),
                now,
            )
            .await?
        {
            UserMessageInsert::Duplicate { message_id, status } => {
                metrics::counter!("kizuna_duplicate_messages_total").increment(1);
                Ok(Submitted::Duplicate(OutFrame::transient(
                    &ServerFrame::Ack {
                        seq: None,
                        id: client_msg_id.to_string(),
                        message_id,
                        text: None,
                        duplicate: Some(true),
                        status: MessageStatus::parse(&status),
                    },
                )))
            }
            UserMessageInsert::New {
                message_id,
                ack_seq,
            } => {
                metrics::counter!("kizuna_messages_total").increment(1);
                let live = self.live(conversation_id);
                live.publish(OutFrame::durable(ack_seq, ack));
                self.enqueue(
                    conversation_id,
                    Job {
                        message_id: message_id.clone(),
                        client_msg_id: client_msg_id.to_string(),
                        text: text.to_string(),
                        identity: identity.clone(),
                        _ticket: Some(ticket),
                    },
                );
                Ok(Submitted::Accepted { message_id })
            }
        }
    }

    /// Takes a place in the conversation's and the hub's queues, or says why not. Checked
    /// before the message is stored, so a refused message is simply sent again later.
    fn admit(&self, conversation_id: &str, identity: &Identity) -> Result<TurnTicket, HubError> {
        let live = self.live(conversation_id);
        let anonymous = identity.role == Role::Anonymous;
        if live.pending.fetch_add(1, Ordering::AcqRel) >= self.config.max_pending_per_conversation {
            live.pending.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("kizuna_refused_turns_total", "reason" => "busy").increment(1);
            return Err(HubError::Busy);
        }
        let all = self.queues.all.fetch_add(1, Ordering::AcqRel);
        let anon = if anonymous {
            self.queues.anonymous.fetch_add(1, Ordering::AcqRel)
        } else {
            0
        };
        // The ticket undoes all three increments if we refuse below.
        let ticket = TurnTicket {
            counts: self.queues.clone(),
            live,
            anonymous,
        };
        if all >= self.config.max_queued_turns
            || (anonymous && anon >= self.config.max_queued_turns_anonymous)
        {
            metrics::counter!("kizuna_refused_turns_total", "reason" => "overloaded").increment(1);
            // A rough wait: the queue ahead at a few seconds a turn, at least 5 s.
            let retry_after_secs = (all as u64 * 3).clamp(5, 120);
            return Err(HubError::Overloaded { retry_after_secs });
        }
        metrics::gauge!("kizuna_queued_turns").set((all + 1) as f64);
        Ok(ticket)
    }

    /// Whether an escalation of `identity` fits the anonymous budgets (always for others).
    fn escalation_budget_allows(&self, identity: &Identity) -> bool {
        if identity.role != Role::Anonymous {
            return true;
        }
        let allowed = self
            .anonymous_escalations
            .lock()
            .expect("escalation window lock")
            .try_take(
                identity.address,
                self.config.anonymous_escalations_per_hour_per_address,
                self.config.anonymous_escalations_per_hour,
                Instant::now(),
            );
        if !allowed {
            metrics::counter!("kizuna_capped_escalations_total").increment(1);
        }
        allowed
    }

    /// Number of conversations with a live worker (for metrics).
    pub fn live_conversations(&self) -> usize {
        self.live.lock().expect("live lock").len()
    }

    fn enqueue(&self, conversation_id: &str, job: Job) {
        self.mark_in_flight(&job.message_id);
        let job = match self.send_job(conversation_id, job) {
            Ok(()) => return,
            Err(job) => job,
        };
        // The worker exited between lookup and send: replace it and try once more.
        self.live.lock().expect("live lock").remove(conversation_id);
        if self.send_job(conversation_id, *job).is_err() {
            tracing::error!(
                conversation_id,
                "could not queue a message; it stays pending until restart"
            );
        }
    }

    /// Hands the job to the worker, or gives it back (boxed) when the worker is gone.
    fn send_job(&self, conversation_id: &str, job: Job) -> Result<(), Box<Job>> {
        let live = self.live(conversation_id);
        let mut jobs = live.jobs.lock().expect("jobs lock");
        let sender = jobs.get_or_insert_with(|| {
            let (sender, inbox) = mpsc::unbounded_channel();
            tokio::spawn(worker(
                self.me.clone(),
                conversation_id.to_string(),
                live.clone(),
                inbox,
            ));
            sender
        });
        sender
            .send(job)
            .map_err(|mpsc::error::SendError(job)| Box::new(job))
    }

    /// Called when a socket leaves a conversation: forgets a conversation nobody watches and
    /// no worker serves (a worker forgets its own when idle).
    pub fn release(&self, conversation_id: &str) {
        let mut map = self.live.lock().expect("live lock");
        if let Some(live) = map.get(conversation_id) {
            if live.frames.receiver_count() == 0 && !live.has_worker() {
                map.remove(conversation_id);
            }
        }
    }

    fn live(&self, conversation_id: &str) -> Arc<Live> {
        let mut map = self.live.lock().expect("live lock");
        if let Some(live) = map.get(conversation_id) {
            if !live.worker_gone() {
                return live.clone();
            }
        }
        let (frames, _) = broadcast::channel(self.config.frame_buffer);
        let live = Arc::new(Live {
            conversation_id: conversation_id.into(),
            last_seq: AtomicI64::new(0),
            frames,
            jobs: Mutex::new(None),
            progress: Mutex::new(None),
            pending: std::sync::atomic::AtomicUsize::new(0),
        });
        map.insert(conversation_id.to_string(), live.clone());
        live
    }
}

async fn worker(
    hub: Weak<ConversationHub>,
    conversation_id: String,
    live: Arc<Live>,
    mut inbox: mpsc::UnboundedReceiver<Job>,
) {
    loop {
        let idle_timeout = match hub.upgrade() {
            Some(h) => h.config.idle_timeout,
            None => return,
        };
        match tokio::time::timeout(idle_timeout, inbox.recv()).await {
            Ok(Some(job)) => {
                let Some(hub) = hub.upgrade() else { return };
                hub.run_job(&conversation_id, &live, job).await;
            }
            Ok(None) => return,
            Err(_) => {
                let Some(hub) = hub.upgrade() else { return };
                let mut map = hub.live.lock().expect("live lock");
                if live.frames.receiver_count() == 0 && inbox.is_empty() {
                    if map
                        .get(&conversation_id)
                        .is_some_and(|l| Arc::ptr_eq(l, &live))
                    {
                        map.remove(&conversation_id);
                    }
                    inbox.close();
                    // A job sent just before the close is still in the channel: answer it
                    // (recv yields it, then None) rather than drop it.
                    if inbox.is_empty() {
                        return;
                    }
                }
            }
        }
    }
}

fn validate_conversation_id(id: &str) -> Result<String, HubError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| HubError::BadRequest("conversation_id must be a UUID".into()))
}

/// Customers and managers own their conversations; an anonymous conversation is reachable
/// by anyone anonymous who holds its (random, unguessable) id.
fn check_owner(conv: &Conversation, identity: &Identity) -> Result<(), HubError> {
    let owns = conv.owner_role == identity.role.as_str()
        && (identity.role == Role::Anonymous || conv.owner_id == identity.subject);
    if owns {
        Ok(())
    } else {
        Err(HubError::Forbidden)
    }
}

fn owner_identity(conv: &Conversation) -> Identity {
    match conv.owner_role.as_str() {
        "customer" => Identity::customer(
            conv.customer_id
                .clone()
                .unwrap_or_else(|| conv.owner_id.clone()),
        ),
        "manager" => Identity::manager(conv.owner_id.clone()),
        _ => Identity::anonymous(conv.owner_id.clone()),
    }
}

#[cfg(test)]
mod tests;
