//! Proactive outreach in the binary: the scheduler inside `kizuna serve`, delivery through
//! the conversation hub, and `kizuna outreach` (preview and report).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use clap::Subcommand;
use kizuna_agent::hub::ConversationHub;
use kizuna_outreach::{Delivery, DeliveryOutcome, OutboundMessage, OutreachEngine};
use kizuna_tools::followup::TemplateSource;
use tokio::sync::watch;

use crate::config::{ServeArgs, Settings};

#[derive(Debug, Subcommand)]
pub enum OutreachCommand {
    /// Evaluate the triggers once and print what would be sent and why others are skipped;
    /// writes and sends nothing (the server's scheduler does the sending).
    Preview {
        /// Evaluate as of this time (RFC 3339, e.g. 2026-11-21T10:00:00+09:00); default now.
        #[arg(long, env = "KIZUNA_OUTREACH_AT")]
        at: Option<chrono::DateTime<chrono::FixedOffset>>,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Delivered / opened / replied / converted rates per campaign and variant.
    Report {
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// Delivers into the customer's chat: live when their widget is connected, otherwise as the
/// conversation their next visit opens.
pub struct HubDelivery(pub Arc<ConversationHub>);

#[async_trait]
impl Delivery for HubDelivery {
    async fn deliver(&self, m: &OutboundMessage) -> Result<DeliveryOutcome, String> {
        let campaign = format!("{}:{}", m.campaign_id, m.variant);
        let (_, live) = self
            .0
            .deliver_proactive(&m.customer_id, &m.text, &campaign, m.trigger.as_str())
            .await
            .map_err(|e| e.to_string())?;
        Ok(DeliveryOutcome { live })
    }
}

/// Nothing is delivered in a preview.
struct NoDelivery;

#[async_trait]
impl Delivery for NoDelivery {
    async fn deliver(&self, _m: &OutboundMessage) -> Result<DeliveryOutcome, String> {
        Err("preview: nothing is delivered".into())
    }
}

/// Runs the triggers every `interval_secs` until shutdown.
pub fn spawn_scheduler(
    settings: &Settings,
    hub: Arc<ConversationHub>,
    templates: Arc<dyn TemplateSource>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let interval = settings.outreach.interval_secs;
    if interval == 0 {
        tracing::info!("outreach scheduler is off (outreach.interval_secs = 0)");
        return Ok(());
    }
    let mut rules = settings.outreach.rules.clone();
    if rules.link.is_none() {
        rules.link = Some(settings.outreach.link.clone());
    }
    let engine = OutreachEngine::new(rules).context("invalid [outreach.rules] settings")?;
    tokio::spawn(async move {
        let delivery = HubDelivery(hub.clone());
        loop {
            let now = hub.clock().now();
            match engine
                .run_once(hub.store(), now, templates.clone(), &delivery, false)
                .await
            {
                Ok(report) => {
                    tracing::info!(entries = report.entries.len(), "outreach run finished")
                }
                Err(e) => {
                    tracing::error!(error = %e, "outreach run failed; retrying next interval")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(interval)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(())
}

pub async fn run(config: Option<PathBuf>, command: OutreachCommand) -> anyhow::Result<()> {
    match command {
        OutreachCommand::Preview { at, serve } => {
            let settings = crate::settings(config, &serve)?;
            let store = crate::data::open_store(&settings).await?;
            let templates: Arc<dyn TemplateSource> = Arc::new(
                crate::wiring::ContentTemplates::load(&settings.knowledge.content_dir)?,
            );
            let mut rules = settings.outreach.rules.clone();
            if rules.link.is_none() {
                rules.link = Some(settings.outreach.link.clone());
            }
            let engine = OutreachEngine::new(rules)?;
            let now =
                at.unwrap_or_else(|| chrono::Utc::now().with_timezone(&kizuna_agent::clock::jst()));
            let report = engine
                .run_once(&store, now, templates, &NoDelivery, true)
                .await?;
            println!("{report}");
            Ok(())
        }
        OutreachCommand::Report { serve } => {
            let settings = crate::settings(config, &serve)?;
            let store = crate::data::open_store(&settings).await?;
            let report = kizuna_outreach::campaign_report(&store, None, None).await?;
            println!("{report}");
            Ok(())
        }
    }
}
