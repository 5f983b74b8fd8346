//! `kizuna mcp`: the MCP server on stdin/stdout for one client (Claude Desktop, an IDE, an
//! internal agent), with the identity of `KIZUNA_MCP_TOKEN` (docs/mcp.md). `/mcp` on
//! `kizuna serve` is the same server over Streamable HTTP (src/api/mcp.rs).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kizuna_agent::identity::{Identity, TokenVerifier};
use kizuna_mcp::{FaqDocument, KnowledgeSearch, McpConfig, McpServices};
use kizuna_store::Store;

use crate::config::{ServeArgs, Settings};

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Identity token of the caller (manager or customer, from `kizuna token`); unset = an
    /// anonymous caller, offered the public tools only.
    #[arg(long, env = "KIZUNA_MCP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// What the MCP server offers, over the configured store, tools and knowledge base.
pub async fn services(
    settings: &Settings,
    store: Store,
    knowledge: Option<Arc<kizuna_knowledge::KnowledgeBase>>,
) -> anyhow::Result<Arc<McpServices>> {
    let templates = Arc::new(kizuna_tools::TemplateCatalog::load_content(
        &settings.knowledge.content_dir,
    )?);
    let tools = crate::wiring::tools(settings, store.clone(), templates)?;
    let faq = FaqDocument::load_dir(&settings.knowledge.content_dir).with_context(|| {
        format!(
            "cannot read the FAQ under {}",
            settings.knowledge.content_dir.display()
        )
    })?;
    let config = McpConfig {
        calls_per_minute: settings.mcp.calls_per_minute,
        ..McpConfig::default()
    };
    Ok(McpServices::new(
        tools,
        store,
        knowledge.map(|k| k as Arc<dyn KnowledgeSearch>),
        faq,
        config,
    ))
}

pub async fn run(config: Option<PathBuf>, args: McpArgs) -> anyhow::Result<()> {
    let settings = crate::settings(config, &args.serve)?;
    // stdout carries the protocol: logs go to stderr (main's tracing setup already does).
    let verifier = TokenVerifier::new(settings.token_secret()?.into_bytes())
        .context("invalid token secret (need ≥ 32 bytes)")?;
    let identity = match args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(token) => verifier
            .verify(token, chrono::Utc::now().timestamp())
            .context("KIZUNA_MCP_TOKEN is not a valid token for this server")?,
        None => Identity::anonymous(format!("mcp-stdio-{}", uuid::Uuid::new_v4())),
    };
    let store = crate::data::open_store(&settings).await?;
    // The in-process index is held by a running `kizuna serve` on the same data dir: then
    // this session goes without knowledge search rather than not at all (docs/mcp.md).
    let knowledge = if settings.knowledge.enabled {
        match crate::Knowledge::load(&settings).await {
            Ok(k) => k.base,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no knowledge search in this MCP session");
                None
            }
        }
    } else {
        None
    };
    let services = services(&settings, store, knowledge).await?;
    tracing::info!(role = identity.role.as_str(), "MCP server on stdio");
    kizuna_mcp::serve_stdio(services, identity).await?;
    Ok(())
}
