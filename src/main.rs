//! `kizuna`: the customer-success agent server. This binary is thin: command line and
//! settings, wiring of the crates, and the axum transport.

mod bench;
mod chat;
mod config;
mod ratelimit;
mod server;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kizuna_agent::clock::SystemClock;
use kizuna_agent::engine::{Agent, AgentConfig};
use kizuna_agent::hub::{ConversationHub, HubConfig};
use kizuna_agent::identity::{Claims, Role, TokenVerifier};
use kizuna_agent::llm::LanguageModel;
use kizuna_agent::prompts::Prompts;
use kizuna_llm::local::{LocalConfig, LocalModel};
use kizuna_llm::openai::{OpenAiConfig, OpenAiModel};
use kizuna_store::Store;
use tokio::sync::watch;

use crate::config::{LlmBackend, ServeArgs, Settings};

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(cli.config, args).await,
            Command::Token(args) => token(cli.config, args),
            Command::Chat(args) => chat::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KIZUNA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn settings(config: Option<PathBuf>, args: &ServeArgs) -> anyhow::Result<Settings> {
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

/// Builds the configured model backend. For the embedded model it also returns the model
/// itself, so the caller can prefill the agent's system prompt once it exists.
async fn build_llm(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn LanguageModel>, Option<LocalModel>)> {
    match settings.llm.backend {
        LlmBackend::Openai => {
            let mut cfg = OpenAiConfig::new(
                settings.llm.openai_base_url.clone(),
                settings.llm.openai_model.clone(),
            );
            cfg.api_key = settings.llm.openai_api_key.clone();
            cfg.request_timeout = Duration::from_secs(settings.llm.timeout_secs);
            let model =
                OpenAiModel::new(cfg).context("cannot set up the OpenAI-compatible backend")?;
            tracing::info!(base_url = %settings.llm.openai_base_url, model = %settings.llm.openai_model, "using an OpenAI-compatible endpoint");
            Ok((Arc::new(model), None))
        }
        LlmBackend::Local => {
            let mut cfg =
                LocalConfig::with_paths(&settings.llm.model_path, &settings.llm.tokenizer_path);
            cfg.context_tokens = settings.llm.context_tokens;
            let model = LocalModel::load_async(cfg).await.context(
                "cannot load the local model (run scripts/setup, or set KIZUNA_LLM=openai)",
            )?;
            tracing::info!(path = %settings.llm.model_path.display(), load_ms = model.load_time().as_millis() as u64, "local model loaded");
            Ok((Arc::new(model.clone()), Some(model)))
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
    let prompts = Prompts::load(&settings.prompts_dir)?;
    let tools = kizuna_tools::registry(store.clone(), settings.booking.clone())?;
    let verifier = TokenVerifier::new(settings.token_secret()?.into_bytes())
        .context("invalid token secret (need ≥ 32 bytes)")?;

    let (llm, local_model) = build_llm(&settings).await?;
    let agent_config = AgentConfig {
        max_steps: settings.llm.max_steps,
        llm_timeout: Duration::from_secs(settings.llm.timeout_secs),
        max_reply_tokens: settings.llm.max_reply_tokens,
        temperature: settings.llm.temperature,
        ..AgentConfig::default()
    };
    let agent = Arc::new(Agent::new(llm, tools, prompts, agent_config));
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
    let hub_config = HubConfig {
        max_message_chars: settings.limits.max_message_chars,
        ..HubConfig::default()
    };
    let hub = ConversationHub::new(store, agent, Arc::new(SystemClock), None, hub_config);
    hub.recover().await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(server::AppState {
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
        shutdown: shutdown_rx,
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tracing::info!(address = %listener.local_addr()?, backend = ?settings.llm.backend, "kizuna is listening");
    // Chat frames are small and latency-bound: without TCP_NODELAY, Nagle's algorithm and the
    // client's delayed ACK add ~40 ms to every turn.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let app =
        server::router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let drain_state = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            server::shutdown_signal().await;
            tracing::info!("shutting down: closing websockets");
            let _ = shutdown_tx.send(true);
            server::drain(
                &drain_state,
                Duration::from_secs(drain_state.limits.drain_secs),
            )
            .await;
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}
