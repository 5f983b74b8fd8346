//! `kizuna eval`: replays transcripts (shared/spec/transcripts.md) against the agent, wired
//! exactly as `kizuna serve` wires it, over a fresh store per transcript; or against a
//! running server with `--url`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use clap::Args;
use kizuna_agent::clock::Clock;
use kizuna_agent::engine::Agent;
use kizuna_agent::hub::{ConversationHub, HubConfig, HubServices};
use kizuna_agent::identity::{Identity, TokenVerifier};
use kizuna_agent::llm::LanguageModel;
use kizuna_agent::prompts::Prompts;
use kizuna_agent::tool::ToolContext;
use kizuna_evals::runner::{HubFactory, InProcessTarget, ProactiveMessage};
use kizuna_evals::{RunOptions, Target, WebsocketTarget};
use kizuna_store::Store;

use crate::config::{ServeArgs, Settings};
use crate::{wiring, Knowledge};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Directory of transcript files (*.yaml).
    #[arg(default_value = "evals/transcripts", env = "KIZUNA_EVAL_DIR")]
    pub dir: PathBuf,
    /// Run against a running server's websocket (ws://host:port/ws) instead of in-process.
    #[arg(long, env = "KIZUNA_EVAL_URL")]
    pub url: Option<String>,
    /// Replays per transcript; a transcript passes only if every replay passes (pass^k).
    #[arg(long, env = "KIZUNA_EVAL_TRIALS", default_value_t = 1)]
    pub trials: usize,
    /// One JSON document on stdout (totals, per-kind rates, per-transcript results).
    #[arg(long, env = "KIZUNA_EVAL_JSON")]
    pub json: bool,
    /// Also write the Markdown summary to this file.
    #[arg(long, env = "KIZUNA_EVAL_MARKDOWN")]
    pub markdown: Option<PathBuf>,
    /// Exit 0 even when transcripts fail.
    #[arg(long, env = "KIZUNA_EVAL_REPORT_ONLY")]
    pub report_only: bool,
    /// Fail only on these kinds of checks (comma-separated `KIND` or `KIND=MIN_RATE`, kinds:
    /// escalation, tools, retrieval, reply, run; a bare kind needs a rate of 1.0); the others
    /// are reported. Default: any failed transcript fails.
    #[arg(long, env = "KIZUNA_EVAL_GATE", value_delimiter = ',')]
    pub gate: Vec<String>,
    /// Longest wait for one reply, in seconds.
    #[arg(long, env = "KIZUNA_EVAL_TURN_TIMEOUT_SECS", default_value_t = 300)]
    pub turn_timeout_secs: u64,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Builds a hub per transcript with the server's wiring; the model, the embedder, the
/// knowledge index and the sentiment model are loaded once and shared.
struct ServerWiring {
    settings: Settings,
    llm: Arc<dyn LanguageModel>,
    prompts: Prompts,
    templates: Arc<kizuna_tools::TemplateCatalog>,
    knowledge: Knowledge,
}

#[async_trait]
impl HubFactory for ServerWiring {
    async fn build(
        &self,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<ConversationHub>, String> {
        let tools = wiring::tools(&self.settings, store.clone(), self.templates.clone())
            .map_err(|e| format!("{e:#}"))?;
        let agent = Arc::new(
            Agent::new(
                self.llm.clone(),
                tools,
                self.prompts.clone(),
                crate::agent_config(&self.settings),
            )
            .with_known_prices(kizuna_tools::price_table()),
        );
        let services = HubServices {
            retriever: self.knowledge.retriever(),
            sentiment: self.knowledge.sentiment.clone(),
            intent: self.knowledge.intent.clone(),
            escalation: Some(wiring::escalation_check(
                &self.settings,
                self.knowledge.escalation_head.clone(),
            )),
            handover: self.settings.handover.clone(),
            planner: self.settings.planner.clone(),
        };
        Ok(ConversationHub::with_services(
            store,
            agent,
            clock,
            services,
            HubConfig::default(),
        ))
    }

    async fn compose_proactive(
        &self,
        hub: &ConversationHub,
        trigger: &str,
        customer_id: &str,
    ) -> Result<ProactiveMessage, String> {
        let tool = hub
            .agent()
            .tools()
            .get("generate_followup")
            .ok_or("generate_followup is not registered")?;
        // Outreach acts for the business, with the customer's facts.
        let ctx = ToolContext {
            identity: Identity::manager("outreach"),
            conversation_id: String::new(),
            now: hub.clock().now(),
        };
        let args = serde_json::json!({"customer_id": customer_id, "purpose": trigger});
        let output = tool.call(&ctx, args).await.map_err(|e| e.to_string())?;
        let text = output.data["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(output.display);
        let template = output.data["template_id"].as_str().unwrap_or("none");
        Ok(ProactiveMessage {
            text,
            campaign_id: format!("{trigger}:{template}"),
        })
    }
}

pub async fn run(config: Option<PathBuf>, args: EvalArgs) -> anyhow::Result<()> {
    let settings = crate::settings(config, &args.serve)?;
    if !args.dir.is_dir() {
        bail!("{} is not a directory of transcripts", args.dir.display());
    }
    let transcripts = kizuna_evals::load_dir(&args.dir)?;
    if transcripts.is_empty() {
        bail!("no *.yaml transcripts in {}", args.dir.display());
    }
    let turn_timeout = Duration::from_secs(args.turn_timeout_secs);
    let target: Box<dyn Target> = match &args.url {
        Some(url) => {
            let signer = match settings.token_secret() {
                Ok(secret) => Some(TokenVerifier::new(secret.into_bytes())?),
                Err(_) => None,
            };
            Box::new(WebsocketTarget {
                url: url.clone(),
                signer,
                turn_timeout,
            })
        }
        None => {
            let (llm, local) = crate::wiring::build_llm(&settings).await?;
            let prompts = Prompts::load(&settings.prompts_dir)?;
            let templates = Arc::new(kizuna_tools::TemplateCatalog::load_content(
                &settings.knowledge.content_dir,
            )?);
            if let Some(model) = local {
                // Same cached prefix as the server (its system message lists the tools, so
                // build a throwaway agent with them): every conversation starts from it.
                let store = Store::connect("sqlite::memory:").await?;
                let tools = wiring::tools(&settings, store, templates.clone())?;
                let agent = Agent::new(
                    llm.clone(),
                    tools,
                    prompts.clone(),
                    crate::agent_config(&settings),
                );
                model
                    .warm_prefix(agent.system_message())
                    .await
                    .context("cannot prefill the system prompt")?;
            }
            let knowledge = Knowledge::load(&settings).await?;
            Box::new(InProcessTarget {
                factory: Arc::new(ServerWiring {
                    settings: settings.clone(),
                    llm,
                    prompts,
                    templates,
                    knowledge,
                }),
                turn_timeout,
            })
        }
    };
    eprintln!(
        "[eval] {} transcript(s) from {} on {} ({} trial(s) each)",
        transcripts.len(),
        args.dir.display(),
        target.describe(),
        args.trials.max(1)
    );
    let options = RunOptions {
        trials: args.trials.max(1),
        turn_timeout,
        progress: true,
    };
    let report = kizuna_evals::run_all(target.as_ref(), transcripts, &options).await;
    let markdown = report.markdown();
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        eprintln!("{markdown}");
    } else {
        println!("{markdown}");
    }
    if !args.gate.is_empty() {
        let gates = args
            .gate
            .iter()
            .map(|g| g.parse::<kizuna_evals::report::Gate>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let failing = report.failed_gates(&gates);
        if !failing.is_empty() && !args.report_only {
            bail!("gated checks failed: {}", failing.join(", "));
        }
        return Ok(());
    }
    if !report.passed && !args.report_only {
        bail!(
            "{} of {} transcripts failed",
            report.totals.transcripts.total - report.totals.transcripts.passed,
            report.totals.transcripts.total
        );
    }
    Ok(())
}
