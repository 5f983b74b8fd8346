//! `kizuna`: the customer-success agent server. This binary is thin: command line and
//! settings, wiring of the crates, and the axum transport.

mod api;
mod bench;
mod chat;
mod churn;
mod client_addr;
mod cluster;
mod config;
mod data;
mod eval;
mod insights;
mod line;
mod listener;
mod mcp;
mod outreach;
mod ratelimit;
mod revocation;
mod server;
mod wiring;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kizuna_agent::clock::SystemClock;
use kizuna_agent::engine::{Agent, AgentConfig};
use kizuna_agent::hub::{ConversationHub, HubConfig, HubServices, Retriever};
use kizuna_agent::identity::{Claims, Role, TokenVerifier};
use kizuna_agent::prompts::Prompts;
use kizuna_llm::local::LocalModel;
use kizuna_store::Store;
use tokio::sync::watch;

use crate::config::{ServeArgs, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "kizuna",
    version,
    about = "Kizuna (絆): a self-hostable customer-success agent server"
)]
struct Cli {
    /// TOML settings file (flags and environment variables override it).
    #[arg(long, env = "KIZUNA_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(
        long,
        env = "KIZUNA_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP health/metrics endpoints and the chat websocket at /ws.
    Serve(ServeArgs),
    /// Print a signed identity token for a customer or manager (for testing and integration).
    Token(TokenArgs),
    /// A terminal chat client for a running server.
    Chat(chat::ChatArgs),
    /// Measure memory per idle websocket, per-turn server overhead and local-model speed.
    Bench(bench::BenchArgs),
    /// Import data (customers from a CRM export).
    #[command(subcommand)]
    Import(data::ImportCommand),
    /// Ingest knowledge documents (FAQ, scenarios, templates) into the vector index;
    /// unchanged documents are skipped, changed ones replaced, deleted ones removed.
    Ingest(data::IngestArgs),
    /// Knowledge base tools: retrieval evaluation and calibration, index statistics.
    #[command(subcommand)]
    Knowledge(data::KnowledgeCommand),
    /// Train the sentiment head over the e5 embedding and report held-out accuracy.
    TrainSentiment(data::TrainSentimentArgs),
    /// Classify messages read from stdin, one per line: prints `label<TAB>score` per line.
    Sentiment(ServeArgs),
    /// Train the intent head over the e5 embedding and report per-intent held-out scores.
    TrainIntents(data::TrainIntentsArgs),
    /// Train the escalation head (does a message need a person, and why) over the e5
    /// embedding and report per-label scores on its separately written test file; the policy
    /// uses it to drop escalations of messages it is sure need no person (docs/evals.md).
    TrainEscalation(data::TrainEscalationArgs),
    /// Read messages from stdin, one per line: prints the escalation head's label and
    /// probability, then the text rules' reason (or `-`), tab-separated.
    Escalation(ServeArgs),
    /// Classify messages read from stdin, one per line: prints `intent<TAB>probability` and
    /// the runner-up per line.
    Intents(ServeArgs),
    /// Customer segments: RFM scores and k-means profiles.
    Segments(data::SegmentsArgs),
    /// Replay transcripts and score the agent's decisions (see docs/evals.md).
    Eval(eval::EvalArgs),
    /// Proactive outreach: preview a trigger run, or report campaign rates.
    #[command(subcommand)]
    Outreach(outreach::OutreachCommand),
    /// Churn model: evaluate on any CSV by k-fold (train and predict on the store's customers
    /// come with the store integration).
    #[command(subcommand)]
    Churn(churn::ChurnCommand),
    /// Voice of the customer for the last N days: topics (clusters of the customers'
    /// messages), escalations by reason over time, the sentiment trend and the top unanswered
    /// questions (docs/insights.md).
    Insights(insights::InsightsArgs),
    /// The MCP server on stdin/stdout (for Claude Desktop and other MCP clients), as the
    /// caller of KIZUNA_MCP_TOKEN; `kizuna serve` offers the same at /mcp (docs/mcp.md).
    Mcp(mcp::McpArgs),
    /// The LINE channel: account-link tokens for customers (docs/line.md).
    #[command(subcommand)]
    Line(line::LineCommand),
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// customer or manager.
    #[arg(long, env = "KIZUNA_TOKEN_ROLE", value_parser = ["customer", "manager"])]
    role: String,
    /// Customer id (role customer) or manager id (role manager).
    #[arg(long, env = "KIZUNA_TOKEN_SUBJECT")]
    subject: String,
    /// Display name.
    #[arg(long, env = "KIZUNA_TOKEN_NAME")]
    name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, env = "KIZUNA_TOKEN_TTL_SECS", default_value_t = 86_400)]
    ttl_secs: i64,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // Everything Kizuna creates (the database with customers' emails and phones, the token
    // secret, models, exports) is for its own user only (docs/security.md).
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(cli.config, args).await,
            Command::Token(args) => token(cli.config, args),
            Command::Chat(args) => chat::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Import(cmd) => data::import(cli.config, cmd).await,
            Command::Ingest(args) => data::ingest(cli.config, args).await,
            Command::Knowledge(cmd) => data::knowledge(cli.config, cmd).await,
            Command::TrainSentiment(args) => data::train_sentiment(cli.config, args).await,
            Command::Sentiment(args) => data::sentiment(cli.config, args).await,
            Command::TrainIntents(args) => data::train_intents(cli.config, args).await,
            Command::TrainEscalation(args) => data::train_escalation(cli.config, args).await,
            Command::Escalation(args) => data::escalation(cli.config, args).await,
            Command::Intents(args) => data::intents(cli.config, args).await,
            Command::Segments(args) => data::segments(cli.config, args).await,
            Command::Eval(args) => eval::run(cli.config, args).await,
            Command::Outreach(cmd) => outreach::run(cli.config, cmd).await,
            Command::Churn(cmd) => churn::run(cli.config, cmd).await,
            Command::Insights(args) => insights::run(cli.config, args).await,
            Command::Mcp(args) => mcp::run(cli.config, args).await,
            Command::Line(cmd) => line::run(cli.config, cmd).await,
        }
    })
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KIZUNA_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,qdrant_edge=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) fn settings(config: Option<PathBuf>, args: &ServeArgs) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(config.as_deref())?;
    settings.apply(args);
    settings.validate()?;
    Ok(settings)
}

fn token(config: Option<PathBuf>, args: TokenArgs) -> anyhow::Result<()> {
    let settings = settings(config, &args.serve)?;
    let verifier = TokenVerifier::new(settings.token_secret()?.into_bytes())
        .context("invalid token secret")?;
    let role = if args.role == "manager" {
        Role::Manager
    } else {
        Role::Customer
    };
    let claims = Claims {
        role,
        sub: args.subject,
        name: args.name,
        exp: chrono::Utc::now().timestamp() + args.ttl_secs,
    };
    println!("{}", verifier.sign(&claims));
    Ok(())
}

fn agent_config(settings: &Settings) -> AgentConfig {
    AgentConfig {
        max_steps: settings.llm.max_steps,
        llm_timeout: Duration::from_secs(settings.llm.timeout_secs),
        max_reply_tokens: settings.llm.max_reply_tokens,
        temperature: settings.llm.temperature,
        model_concurrency: match (settings.llm.concurrency, &settings.llm.backend) {
            (0, config::LlmBackend::Local) => 1,
            (0, config::LlmBackend::Openai) => 8,
            (n, _) => n,
        },
        ..AgentConfig::default()
    }
}

/// The knowledge base, the sentiment model and the intent model, which share the embedding
/// model (and its cache: each message is embedded once).
pub struct Knowledge {
    pub base: Option<Arc<kizuna_knowledge::KnowledgeBase>>,
    pub sentiment: Option<Arc<dyn kizuna_agent::sentiment::SentimentModel>>,
    pub intent: Option<Arc<dyn kizuna_agent::intent::IntentModel>>,
    /// The escalation head (`escalation/model`), a signal of the escalation check.
    pub escalation_head: Option<kizuna_escalation::EscalationClassifier>,
}

impl Knowledge {
    pub async fn load(settings: &Settings) -> anyhow::Result<Self> {
        if !settings.knowledge.enabled {
            tracing::warn!(
                "the knowledge base is disabled: no retrieval, no sentiment or intent model"
            );
            return Ok(Self {
                base: None,
                sentiment: None,
                intent: None,
                escalation_head: None,
            });
        }
        let path = settings.knowledge.embedder_path.clone();
        let embedder = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || wiring::load_embedder(&settings))
                .await
                .context("embedding model loader panicked")?
                .with_context(|| format!("{} (or set knowledge.enabled = false)", path.display()))?
        };
        let base = wiring::knowledge_base(settings, embedder.clone()).await?;
        let sentiment = match wiring::sentiment_model(settings, embedder.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no sentiment model: escalation uses its text rules only");
                None
            }
        };
        let escalation_head = match kizuna_escalation::load(
            std::path::Path::new(kizuna_escalation::DEFAULT_MODEL_DIR),
            embedder.clone(),
        ) {
            Ok(head) => Some(head),
            Err(e) => {
                tracing::warn!(error = %e, "no escalation head: escalation uses its rules and sentiment only");
                None
            }
        };
        let intent = match wiring::intent_model(settings, embedder) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no intent model: turns are answered from the FAQ, the model or a clarifying question");
                None
            }
        };
        Ok(Self {
            base: Some(base),
            sentiment,
            intent,
            escalation_head,
        })
    }

    pub fn retriever(&self) -> Option<Arc<dyn Retriever>> {
        self.base.clone().map(|b| b as Arc<dyn Retriever>)
    }
}

/// The agent over the configured model, prompts and tools; also the embedded model, when
/// that is the backend, for the caller to warm.
async fn build_agent(
    settings: &Settings,
    store: &Store,
    templates: Arc<kizuna_tools::TemplateCatalog>,
) -> anyhow::Result<(Arc<Agent>, Option<LocalModel>)> {
    let prompts = Prompts::load(&settings.prompts_dir)?;
    let tools = wiring::tools(settings, store.clone(), templates)?;
    let (llm, local_model) = wiring::build_llm(settings).await?;
    let agent = Arc::new(
        Agent::new(llm, tools, prompts, agent_config(settings))
            .with_known_prices(kizuna_tools::price_table()),
    );
    Ok((agent, local_model))
}

/// A hub over the configured store and agent, for commands that post into conversations
/// without serving (`kizuna outreach run`): no retrieval or escalation is needed to post.
pub(crate) async fn delivery_hub(
    settings: &Settings,
    templates: Arc<kizuna_tools::TemplateCatalog>,
) -> anyhow::Result<Arc<ConversationHub>> {
    let store = data::open_store(settings).await?;
    let (agent, _) = build_agent(settings, &store, templates).await?;
    let services = HubServices {
        handover: settings.handover.clone(),
        ..HubServices::default()
    };
    Ok(ConversationHub::with_services(
        store,
        agent,
        Arc::new(SystemClock),
        services,
        HubConfig::default(),
    ))
}

/// The SQLite files hold customers' emails and phone numbers: owner-only, also for data dirs
/// created before Kizuna set its umask (docs/security.md).
fn restrict_database_files(settings: &Settings) {
    #[cfg(unix)]
    if settings.database_url.is_none() {
        use std::os::unix::fs::PermissionsExt;
        for name in [
            "kizuna.db",
            "kizuna.db-wal",
            "kizuna.db-shm",
            "token_secret",
        ] {
            let path = settings.data_dir.join(name);
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    if let Err(e) =
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    {
                        tracing::warn!(path = %path.display(), error = %e, "cannot make the file owner-only");
                    }
                }
            }
        }
    }
}

async fn serve(config: Option<PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    let settings = settings(config, &args)?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let db_url = settings.database_url();
    let store = Store::connect(&db_url).await.with_context(|| {
        format!(
            "cannot open the database {}",
            kizuna_store::redact_url(&db_url)
        )
    })?;
    restrict_database_files(&settings);
    let templates = Arc::new(kizuna_tools::TemplateCatalog::load_content(
        &settings.knowledge.content_dir,
    )?);
    tracing::info!(count = templates.len(), "message templates loaded");
    let verifier = TokenVerifier::new(settings.token_secret()?.into_bytes())
        .context("invalid token secret (need ≥ 32 bytes)")?;

    let (agent, local_model) = build_agent(&settings, &store, templates.clone()).await?;
    // Ready once the model can answer; the embedded one first prefills the exact system
    // message the agent sends, so every conversation starts from the cached prefix.
    let ready = Arc::new(AtomicBool::new(local_model.is_none()));
    if let Some(model) = local_model {
        let system_message = agent.system_message().to_string();
        let ready = ready.clone();
        tokio::spawn(async move {
            match model.warm_prefix(&system_message).await {
                Ok(took) => tracing::info!(
                    ms = took.as_millis() as u64,
                    "system prompt prefilled and cached"
                ),
                Err(e) => tracing::warn!(error = %e, "could not prefill the system prompt"),
            }
            ready.store(true, Ordering::Relaxed);
        });
    }
    let knowledge = Knowledge::load(&settings).await?;
    let mut handover = settings.handover.clone();
    let mut senders: std::collections::HashMap<String, Arc<dyn kizuna_notify::NotificationSender>> =
        std::collections::HashMap::new();
    if let Some(url) = &settings.slack.webhook_url {
        let hook = kizuna_notify::slack::SlackWebhook::new(url.clone())
            .context("invalid Slack webhook URL")?;
        senders.insert(kizuna_notify::slack::CHANNEL.to_string(), Arc::new(hook));
        handover.notify_channel = Some(kizuna_notify::slack::CHANNEL.to_string());
        tracing::info!("escalations and outreach tasks are notified on Slack");
    }
    let outreach_senders = settings
        .outreach
        .channels
        .senders(&store)
        .context("invalid [outreach.channels] settings")?;
    if !outreach_senders.is_empty() {
        let channels: Vec<&String> = outreach_senders.keys().collect();
        tracing::info!(?channels, "outreach also goes out on these channels");
    }
    senders.extend(outreach_senders);
    if settings.line.enabled() {
        let client = kizuna_line::LineClient::new(kizuna_line::LineConfig {
            api_base_url: settings.line.api_base_url.clone(),
            channel_access_token: settings
                .line
                .channel_access_token
                .clone()
                .unwrap_or_default(),
            timeout: Duration::from_secs(10),
        })
        .context("cannot set up the LINE client")?;
        // One sender for the channel: the forwarder's replies and, with
        // [outreach.channels.line], outreach pushes (recorded, opt-out checked per attempt).
        senders.insert(
            kizuna_line::CHANNEL.to_string(),
            kizuna_outreach::line_sender(&store, Arc::new(client)),
        );
        tracing::info!(api = %settings.line.api_base_url, "LINE channel on: webhook at /channels/line/webhook");
    }
    let services = HubServices {
        retriever: knowledge.retriever(),
        sentiment: knowledge.sentiment.clone(),
        intent: knowledge.intent.clone(),
        escalation: Some(wiring::escalation_check(
            &settings,
            knowledge.escalation_head.clone(),
        )),
        handover,
        planner: settings.planner.clone(),
    };
    let hub_config = HubConfig {
        max_message_chars: settings.limits.max_message_chars,
        max_pending_per_conversation: settings.limits.max_pending_per_conversation,
        max_queued_turns: settings.limits.max_queued_turns,
        max_queued_turns_anonymous: settings.limits.max_queued_turns_anonymous,
        anonymous_escalations_per_hour_per_address: Some(
            settings.limits.anonymous_escalations_per_hour_per_ip,
        ),
        anonymous_escalations_per_hour: Some(settings.limits.anonymous_escalations_per_hour),
        lease_ttl: Duration::from_secs(settings.cluster.turn_lease_secs),
        sweep_interval: Duration::from_secs(settings.cluster.sweep_interval_secs),
        ..HubConfig::default()
    };
    let hub = ConversationHub::with_services(
        store.clone(),
        agent,
        Arc::new(SystemClock),
        services,
        hub_config,
    );
    hub.recover().await?;
    // Other replicas' frames reach this replica's sockets; work a dead replica left is
    // picked up (PostgreSQL only; docs/deployment.md).
    hub.start_cluster()
        .await
        .context("cannot listen for the other replicas' changes")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Ends the MCP sessions (their open SSE streams) when the server drains.
    let mcp_cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(kizuna_notify::Dispatcher::run(
        store.clone(),
        senders,
        kizuna_notify::DispatcherConfig::default(),
        hub.outbox_wakeup(),
        shutdown_rx.clone(),
    ));
    let outreach_delivery = Arc::new(outreach::ServerDelivery::new(hub.clone(), &settings));
    outreach::spawn_scheduler(
        &settings,
        outreach_delivery.clone(),
        templates,
        shutdown_rx.clone(),
    )?;
    let trusted_proxies = Arc::new(
        client_addr::TrustedProxies::parse(&settings.security.trusted_proxies)
            .map_err(anyhow::Error::msg)?,
    );
    let revocations = Arc::new(revocation::Revocations::new(store.clone()));
    revocations
        .refresh()
        .await
        .context("cannot read the token revocation list")?;
    tokio::spawn(revocations.clone().run_refresh(shutdown_rx.clone()));
    let mcp = if settings.mcp.enabled {
        let services = mcp::services(&settings, store.clone(), knowledge.base.clone()).await?;
        Some(api::mcp::McpEndpoint::new(
            services,
            &settings,
            mcp_cancel.clone(),
        ))
    } else {
        None
    };
    let line = settings
        .line
        .channel_secret
        .as_deref()
        .filter(|_| settings.line.enabled())
        .map(|secret| {
            line::spawn_forwarder(
                hub.clone(),
                settings.outreach.channels.line.is_some(),
                Duration::from_millis(settings.line.forward_interval_ms.max(50)),
                Duration::from_secs(settings.cluster.singleton_lease_secs),
                shutdown_rx.clone(),
            );
            Ok::<_, anyhow::Error>(Arc::new(api::line::LineEndpoint::new(
                secret,
                line::LinkIssuer::from_settings(&settings)?,
            )))
        })
        .transpose()?;
    let state = Arc::new(server::AppState {
        mcp,
        line,
        knowledge: knowledge.base.clone(),
        content_dir: settings.knowledge.content_dir.clone(),
        outreach: outreach_delivery,
        hub,
        verifier,
        ip_limiter: ratelimit::IpLimiter::new(
            settings.limits.connections_per_ip,
            settings.limits.messages_per_minute_per_ip,
        ),
        limits: settings.limits.clone(),
        metrics,
        model_ready: ready,
        connections: AtomicUsize::new(0),
        shutdown: shutdown_rx.clone(),
        web_dir: settings.web_dir.clone(),
        security: settings.security.clone(),
        trusted_proxies: trusted_proxies.clone(),
        revocations,
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let listener_limits = listener::ListenerLimits {
        max_connections: listener::connection_cap(settings.limits.max_connections),
        connections_per_address: settings.limits.connections_per_address,
        header_read_timeout: Duration::from_secs(settings.limits.header_read_timeout_secs),
    };
    tracing::info!(
        address = %listener.local_addr()?,
        backend = ?settings.llm.backend,
        max_connections = listener_limits.max_connections,
        "kizuna is listening"
    );
    let counts = listener::AddressCounts::new(listener_limits.connections_per_address);
    let app = server::router(state.clone());
    let serving = tokio::spawn(listener::serve(
        listener,
        app,
        listener_limits,
        trusted_proxies,
        counts,
        shutdown_rx,
    ));
    server::shutdown_signal().await;
    tracing::info!("shutting down: closing websockets");
    let _ = shutdown_tx.send(true);
    mcp_cancel.cancel();
    server::drain(&state, Duration::from_secs(state.limits.drain_secs)).await;
    let _ = serving.await;
    tracing::info!("stopped");
    Ok(())
}
