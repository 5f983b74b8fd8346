//! Running transcripts against a target: in-process over a fresh store per conversation, or
//! over a running server's websocket.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use kizuna_agent::clock::{Clock, FixedClock, SystemClock};
use kizuna_agent::hub::{ConversationHub, OutFrame};
use kizuna_agent::identity::{Claims, Identity, Role, TokenVerifier};
use kizuna_store::Store;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{score_turn, Report, TranscriptResult, TrialResult};
use crate::transcript::{ActorRole, Transcript};
use crate::EvalError;

/// What one turn produced, as the harness observed it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TurnOutcome {
    pub reply: String,
    /// Tools that ran successfully.
    pub tools: Vec<String>,
    /// Every tool call made, refused or failed ones included.
    pub attempted_tools: Vec<String>,
    pub sources: Vec<String>,
    /// The conversation was handed to people during this turn.
    pub escalated: bool,
    pub escalation_reason: Option<String>,
    /// People hold the conversation after this turn.
    pub handed_over: bool,
    /// From sending the message to the final reply (or, when held, its acknowledgement).
    pub latency_ms: u64,
    /// From sending the message to the first text the customer could read (a delta or the
    /// reply); 0 when nothing was shown.
    pub first_text_ms: u64,
    /// The turn could not be run (timeout, transport failure, unsupported).
    pub error: Option<String>,
}

/// One conversation in progress.
#[async_trait]
pub trait Session: Send {
    async fn user(&mut self, text: &str) -> TurnOutcome;
    async fn proactive(&mut self, trigger: &str, customer_id: &str) -> TurnOutcome;
}

/// Where conversations run.
#[async_trait]
pub trait Target: Send + Sync {
    fn describe(&self) -> String;
    async fn start(&self, transcript: &Transcript) -> Result<Box<dyn Session>, EvalError>;
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub trials: usize,
    /// Longest wait for one reply.
    pub turn_timeout: Duration,
    /// Print one line per transcript to stderr.
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            trials: 1,
            turn_timeout: Duration::from_secs(300),
            progress: true,
        }
    }
}

/// Replays every transcript `trials` times and scores it.
pub async fn run_all(
    target: &dyn Target,
    transcripts: Vec<Result<Transcript, EvalError>>,
    options: &RunOptions,
) -> Report {
    let total = transcripts.len();
    let mut results = Vec::with_capacity(total);
    for (n, loaded) in transcripts.into_iter().enumerate() {
        let transcript = match loaded {
            Ok(t) => t,
            Err(e) => {
                if options.progress {
                    eprintln!("[eval] {}/{} load error: {e}", n + 1, total);
                }
                results.push(TranscriptResult::load_error(e.to_string()));
                continue;
            }
        };
        let mut trials = Vec::new();
        for _ in 0..options.trials.max(1) {
            trials.push(run_one(target, &transcript).await);
        }
        let result = TranscriptResult::new(&transcript, trials);
        if options.progress {
            let turns: usize = result.trials.iter().map(|t| t.turns.len()).sum();
            eprintln!(
                "[eval] {}/{} {} {} ({} turns)",
                n + 1,
                total,
                if result.passed { "PASS" } else { "FAIL" },
                result.id,
                turns
            );
        }
        results.push(result);
    }
    Report::new(target.describe(), options.trials.max(1), results)
}

async fn run_one(target: &dyn Target, transcript: &Transcript) -> TrialResult {
    let mut session = match target.start(transcript).await {
        Ok(s) => s,
        Err(e) => return TrialResult::failed_to_start(e.to_string()),
    };
    let mut turns = Vec::new();
    for (i, turn) in transcript.turns.iter().enumerate() {
        let outcome = match (&turn.user, &turn.proactive) {
            (Some(text), _) => session.user(text).await,
            (None, Some(p)) => session.proactive(&p.trigger, &p.customer_id).await,
            (None, None) => TurnOutcome {
                error: Some("empty turn".into()),
                ..TurnOutcome::default()
            },
        };
        turns.push(score_turn(i + 1, &turn.expect, outcome));
    }
    TrialResult::new(turns)
}

/// The identity a transcript's actor speaks with.
pub fn actor_identity(transcript: &Transcript) -> Identity {
    match transcript.actor.role {
        ActorRole::Customer => {
            Identity::customer(transcript.actor.customer_id.clone().unwrap_or_default())
        }
        ActorRole::Manager => Identity::manager("eval-manager"),
        ActorRole::Anonymous => Identity::anonymous(format!("eval-{}", uuid::Uuid::new_v4())),
    }
}

// ---------------------------------------------------------------------------------------
// In-process

/// A composed agent-initiated message.
#[derive(Debug, Clone)]
pub struct ProactiveMessage {
    pub text: String,
    pub campaign_id: String,
}

/// Builds the hub for one transcript over the store the harness prepared (fixtures loaded,
/// clock fixed). The binary implements it with the same wiring as `kizuna serve`.
#[async_trait]
pub trait HubFactory: Send + Sync {
    async fn build(
        &self,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<ConversationHub>, String>;

    /// Composes the first message of an agent-initiated conversation.
    async fn compose_proactive(
        &self,
        hub: &ConversationHub,
        trigger: &str,
        customer_id: &str,
    ) -> Result<ProactiveMessage, String>;
}

/// Runs each transcript in this process over a fresh SQLite store in a temporary directory.
pub struct InProcessTarget<F: HubFactory> {
    pub factory: Arc<F>,
    pub turn_timeout: Duration,
}

#[async_trait]
impl<F: HubFactory + 'static> Target for InProcessTarget<F> {
    fn describe(&self) -> String {
        "in-process".into()
    }

    async fn start(&self, transcript: &Transcript) -> Result<Box<dyn Session>, EvalError> {
        let dir = tempfile_dir()?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("eval.db").display());
        let store = Store::connect(&url)
            .await
            .map_err(|e| EvalError::Target(format!("cannot create the store: {e}")))?;
        if let Some(path) = transcript.customers_fixture() {
            load_customers(&store, &path).await?;
        }
        let clock: Arc<dyn Clock> = match transcript.now {
            Some(now) => Arc::new(FixedClock(now)),
            None => Arc::new(SystemClock),
        };
        let hub = self
            .factory
            .build(store, clock)
            .await
            .map_err(EvalError::Target)?;
        let identity = actor_identity(transcript);
        let opened = hub
            .open(&identity, None, 0)
            .await
            .map_err(|e| EvalError::Target(e.to_string()))?;
        Ok(Box::new(HubSession {
            factory: self.factory.clone(),
            hub,
            identity,
            conversation_id: opened.conversation_id,
            live: opened.live,
            held: false,
            timeout: self.turn_timeout,
            _dir: dir,
        }))
    }
}

fn tempfile_dir() -> Result<TempDir, EvalError> {
    TempDir::new().map_err(|source| EvalError::Io {
        path: std::env::temp_dir().display().to_string(),
        source,
    })
}

/// A directory removed when dropped (a tiny stand-in for the tempfile crate, which is only
/// a dev-dependency).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("kizuna-eval-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn load_customers(store: &Store, path: &Path) -> Result<(), EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let format = kizuna_tools::crm::Format::detect(path, &bytes);
    kizuna_tools::crm::import_customers(store, &bytes, format)
        .await
        .map_err(|e| EvalError::Target(format!("fixture {}: {e}", path.display())))?;
    Ok(())
}

struct HubSession<F: HubFactory> {
    factory: Arc<F>,
    hub: Arc<ConversationHub>,
    identity: Identity,
    conversation_id: String,
    live: broadcast::Receiver<OutFrame>,
    /// People hold the conversation: the bot will not answer.
    held: bool,
    timeout: Duration,
    _dir: TempDir,
}

#[async_trait]
impl<F: HubFactory + 'static> Session for HubSession<F> {
    async fn user(&mut self, text: &str) -> TurnOutcome {
        let client_id = uuid::Uuid::new_v4().to_string();
        let mut collector = Collector::new(client_id.clone(), self.held);
        if let Err(e) = self
            .hub
            .submit(&self.identity, &self.conversation_id, &client_id, text)
            .await
        {
            return TurnOutcome {
                error: Some(format!("submit failed: {e}")),
                ..TurnOutcome::default()
            };
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.live.recv()).await {
                Ok(Ok(frame)) => frame,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => {
                    collector.outcome.error = Some("the conversation closed".into());
                    break;
                }
                Err(_) => {
                    collector.outcome.error =
                        Some(format!("no reply within {} s", self.timeout.as_secs()));
                    break;
                }
            };
            let Ok(value) = serde_json::from_str::<Value>(&frame.json) else {
                continue;
            };
            if collector.take(&value) {
                break;
            }
        }
        self.held = collector.held;
        collector.finish()
    }

    async fn proactive(&mut self, trigger: &str, customer_id: &str) -> TurnOutcome {
        let started = Instant::now();
        let message = match self
            .factory
            .compose_proactive(&self.hub, trigger, customer_id)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                return TurnOutcome {
                    error: Some(format!("proactive message not composed: {e}")),
                    ..TurnOutcome::default()
                }
            }
        };
        let owner = match self.identity.role {
            Role::Customer => self.identity.clone(),
            _ => Identity::customer(customer_id),
        };
        if owner.customer_id.as_deref() != Some(customer_id) {
            return TurnOutcome {
                error: Some(format!(
                    "the actor is {:?}, not the proactive turn's customer {customer_id}",
                    self.identity.customer_id
                )),
                ..TurnOutcome::default()
            };
        }
        match self
            .hub
            .post_proactive(
                &owner,
                &self.conversation_id,
                &message.text,
                &message.campaign_id,
                trigger,
                None,
            )
            .await
        {
            Ok(_) => TurnOutcome {
                reply: message.text,
                latency_ms: started.elapsed().as_millis() as u64,
                ..TurnOutcome::default()
            },
            Err(e) => TurnOutcome {
                error: Some(format!("proactive message not delivered: {e}")),
                ..TurnOutcome::default()
            },
        }
    }
}

/// Reads a turn's frames: deltas and tool frames are ignored, the `reply` to our message
/// ends the turn; a held conversation ends it at the `ack`.
struct Collector {
    client_id: String,
    held: bool,
    started: Instant,
    outcome: TurnOutcome,
}

impl Collector {
    /// Starts collecting the frames of the message just sent with `client_id`.
    fn new(client_id: String, held: bool) -> Self {
        Self {
            client_id,
            held,
            started: Instant::now(),
            outcome: TurnOutcome::default(),
        }
    }

    /// The outcome, with the turn's timings and who holds the conversation now.
    fn finish(mut self) -> TurnOutcome {
        self.outcome.handed_over = self.held;
        self.outcome.latency_ms = self.started.elapsed().as_millis() as u64;
        self.outcome
    }

    /// Takes one frame; true when the turn is complete.
    fn take(&mut self, frame: &Value) -> bool {
        let shows_text = matches!(frame["type"].as_str(), Some("delta") | Some("reply"))
            && frame["reply_to"] == self.client_id.as_str()
            && frame["text"].as_str().is_some_and(|t| !t.trim().is_empty());
        if shows_text && self.outcome.first_text_ms == 0 {
            self.outcome.first_text_ms = self.started.elapsed().as_millis().max(1) as u64;
        }
        match frame["type"].as_str() {
            Some("ack") if frame["id"] == self.client_id.as_str() => self.held,
            Some("status") => {
                match frame["status"].as_str() {
                    Some("escalated") => {
                        self.outcome.escalated = true;
                        self.outcome.escalation_reason =
                            frame["reason"].as_str().map(str::to_string);
                        self.held = true;
                    }
                    Some("human") => self.held = true,
                    Some("bot") | Some("closed") => self.held = false,
                    _ => {}
                }
                false
            }
            Some("reply") if frame["reply_to"] == self.client_id.as_str() => {
                self.outcome.reply = frame["text"].as_str().unwrap_or_default().to_string();
                let calls = frame["tool_calls"].as_array().cloned().unwrap_or_default();
                self.outcome.tools = calls
                    .iter()
                    .filter(|c| c["ok"] != false)
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect();
                self.outcome.attempted_tools = calls
                    .iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect();
                self.outcome.sources = frame["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["doc_id"].as_str().map(str::to_string))
                    .collect();
                true
            }
            Some("error") if frame["id"] == self.client_id.as_str() => {
                self.outcome.error = Some(format!(
                    "server error {}: {}",
                    frame["code"].as_str().unwrap_or("?"),
                    frame["message"].as_str().unwrap_or("")
                ));
                true
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Over a websocket

/// Runs transcripts against a running server (`--url`). The server's own data and clock are
/// used: fixtures and `now` are not applied (a warning says so), and proactive turns are
/// reported as not supported.
pub struct WebsocketTarget {
    pub url: String,
    /// Signs the actors' tokens; must be the server's `KIZUNA_TOKEN_SECRET`.
    pub signer: Option<TokenVerifier>,
    pub turn_timeout: Duration,
}

#[async_trait]
impl Target for WebsocketTarget {
    fn describe(&self) -> String {
        format!("websocket {}", self.url)
    }

    async fn start(&self, transcript: &Transcript) -> Result<Box<dyn Session>, EvalError> {
        if transcript.fixtures.is_some() || transcript.now.is_some() {
            tracing::warn!(id = %transcript.id, "fixtures and `now` are not applied to a remote server");
        }
        let identity = actor_identity(transcript);
        let token = match (identity.role, &self.signer) {
            (Role::Anonymous, _) => None,
            (_, Some(signer)) => Some(
                signer.sign(&Claims {
                    role: identity.role,
                    sub: identity
                        .customer_id
                        .clone()
                        .unwrap_or(identity.subject.clone()),
                    name: None,
                    exp: chrono::Utc::now().timestamp() + 3600,
                }),
            ),
            (_, None) => return Err(EvalError::Target(
                "customer and manager actors need the server's token secret (KIZUNA_TOKEN_SECRET)"
                    .into(),
            )),
        };
        let (mut ws, _) = tokio_tungstenite::connect_async(self.url.as_str())
            .await
            .map_err(|e| EvalError::Target(format!("cannot connect to {}: {e}", self.url)))?;
        let hello = json!({"type": "hello", "token": token});
        ws.send(Message::text(hello.to_string()))
            .await
            .map_err(|e| EvalError::Target(e.to_string()))?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .map_err(|_| EvalError::Target("no welcome from the server".into()))?;
            let Some(Ok(Message::Text(text))) = msg else {
                return Err(EvalError::Target("the server closed the socket".into()));
            };
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            match v["type"].as_str() {
                Some("welcome") => break,
                Some("error") => return Err(EvalError::Target(format!("server refused: {v}"))),
                _ => {}
            }
        }
        Ok(Box::new(WebsocketSession {
            ws,
            held: false,
            timeout: self.turn_timeout,
        }))
    }
}

struct WebsocketSession {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    held: bool,
    timeout: Duration,
}

#[async_trait]
impl Session for WebsocketSession {
    async fn user(&mut self, text: &str) -> TurnOutcome {
        let client_id = uuid::Uuid::new_v4().to_string();
        let frame = json!({"type": "message", "id": client_id, "text": text});
        let mut collector = Collector::new(client_id, self.held);
        if let Err(e) = self.ws.send(Message::text(frame.to_string())).await {
            return TurnOutcome {
                error: Some(format!("send failed: {e}")),
                ..TurnOutcome::default()
            };
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let Ok(value) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if collector.take(&value) {
                        break;
                    }
                }
                Ok(Some(Ok(_))) => continue,
                Ok(_) => {
                    collector.outcome.error = Some("the server closed the socket".into());
                    break;
                }
                Err(_) => {
                    collector.outcome.error =
                        Some(format!("no reply within {} s", self.timeout.as_secs()));
                    break;
                }
            }
        }
        self.held = collector.held;
        collector.finish()
    }

    async fn proactive(&mut self, _trigger: &str, _customer_id: &str) -> TurnOutcome {
        TurnOutcome {
            error: Some(
                "proactive turns run in-process only (they trigger outreach inside the server)"
                    .into(),
            ),
            ..TurnOutcome::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_reads_an_escalated_turn_and_holds_the_next() {
        let mut c = Collector::new("m1".into(), false);
        assert!(!c.take(&json!({"type": "ack", "id": "m1", "seq": 1})));
        assert!(!c.take(&json!({"type": "status", "status": "escalated", "reason": "legal"})));
        assert!(c.take(&json!({"type": "reply", "reply_to": "m1", "text": "担当者におつなぎします", "tool_calls": [{"name": "escalate_to_human", "ok": true}], "sources": []})));
        assert!(c.outcome.escalated);
        assert_eq!(c.outcome.escalation_reason.as_deref(), Some("legal"));
        assert_eq!(c.outcome.tools, ["escalate_to_human"]);
        // The next message of a held conversation ends at its ack.
        let mut next = Collector::new("m2".into(), c.held);
        assert!(!next.take(&json!({"type": "ack", "id": "other"})));
        assert!(next.take(&json!({"type": "ack", "id": "m2"})));
        assert!(!next.outcome.escalated);
    }

    #[test]
    fn failed_tool_calls_do_not_count_as_called() {
        let mut c = Collector::new("m1".into(), false);
        assert!(c.take(&json!({"type": "reply", "reply_to": "m1", "text": "x", "tool_calls": [{"name": "lookup_health", "ok": false}, {"name": "recommend_plan", "ok": true}], "sources": [{"doc_id": "faq-price-001"}]})));
        assert_eq!(c.outcome.tools, ["recommend_plan"]);
        assert_eq!(
            c.outcome.attempted_tools,
            ["lookup_health", "recommend_plan"]
        );
        assert_eq!(c.outcome.sources, ["faq-price-001"]);
    }
}
