//! Proactive outreach in the binary: the scheduler inside `kizuna serve`, delivery through
//! the conversation hub (plus email / webhook through the outbox), staff tasks on Slack, and
//! `kizuna outreach` (run, report).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use clap::Subcommand;
use kizuna_agent::hub::ConversationHub;
use kizuna_notify::{OutreachTaskNotice, KIND_OUTREACH_TASK};
use kizuna_outreach::{
    ChannelsConfig, Delivery, DeliveryOutcome, OutboundMessage, OutreachEngine, StaffTask,
    StaffTaskKind,
};
use kizuna_store::OutboxInsert;
use kizuna_tools::followup::TemplateSource;
use tokio::sync::watch;

use crate::config::{ServeArgs, Settings};

#[derive(Debug, Subcommand)]
pub enum OutreachCommand {
    /// Evaluate the triggers once. With --dry-run, print what would be sent and why the rest
    /// is skipped, writing and sending nothing. Without it, send for real (into the chat for
    /// the customer's next visit, and on the email / webhook channels): for a cron job when
    /// the server's scheduler is off.
    Run {
        /// Only show what would happen.
        #[arg(long, env = "KIZUNA_OUTREACH_DRY_RUN")]
        dry_run: bool,
        /// Evaluate as of this time (RFC 3339, e.g. 2026-11-21T10:00:00+09:00); default now.
        #[arg(long, env = "KIZUNA_OUTREACH_AT")]
        at: Option<chrono::DateTime<chrono::FixedOffset>>,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Same as `run --dry-run`.
    Preview {
        /// Evaluate as of this time (RFC 3339); default now.
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

/// How the server delivers outreach: into the customer's chat through the hub (live when
/// their widget is connected, otherwise the conversation their next visit opens), and staff
/// tasks as Slack notices through the outbox when Slack is configured.
pub struct ServerDelivery {
    hub: Arc<ConversationHub>,
    /// Outbox channel for staff tasks (`slack`); `None`: tasks are only logged.
    staff_channel: Option<String>,
    console_url: String,
    /// Extra channels for messages a person approved.
    pub channels: ChannelsConfig,
}

impl ServerDelivery {
    pub fn new(hub: Arc<ConversationHub>, settings: &Settings) -> Self {
        Self {
            hub,
            staff_channel: settings
                .slack
                .webhook_url
                .as_ref()
                .map(|_| kizuna_notify::slack::CHANNEL.to_string()),
            console_url: settings.handover.console_url.clone(),
            channels: settings.outreach.channels.clone(),
        }
    }
}

fn task_name(kind: StaffTaskKind) -> &'static str {
    match kind {
        StaffTaskKind::Approval => "approval",
        StaffTaskKind::HumanTask => "human_task",
        StaffTaskKind::CsmAlert => "csm_alert",
    }
}

#[async_trait]
impl Delivery for ServerDelivery {
    async fn deliver(&self, m: &OutboundMessage) -> Result<DeliveryOutcome, String> {
        let campaign = format!("{}:{}", m.campaign_id, m.variant);
        let (_, live) = self
            .hub
            .deliver_proactive(
                &m.customer_id,
                &m.text,
                &campaign,
                m.trigger.as_str(),
                Some(&m.send_id),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(DeliveryOutcome { live })
    }

    async fn notify_staff(&self, task: &StaffTask) -> Result<(), String> {
        let kind = task_name(task.kind);
        tracing::info!(task = kind, customer_id = %task.customer_id, trigger = %task.trigger, send_id = %task.send_id, "outreach staff task");
        let Some(channel) = &self.staff_channel else {
            return Ok(());
        };
        let notice = OutreachTaskNotice {
            task: kind.to_string(),
            send_id: task.send_id.clone(),
            customer_id: task.customer_id.clone(),
            customer_name: Some(task.customer_name.clone()),
            trigger: task.trigger.as_str().to_string(),
            draft: task.draft.clone(),
            console_url: Some(self.console_url.clone()),
            created_at: self.hub.clock().now().to_rfc3339(),
        };
        let payload = serde_json::to_value(&notice).map_err(|e| e.to_string())?;
        let insert = OutboxInsert {
            // One notice per task and send, however often the task is raised.
            id: format!("outreach-task:{}:{kind}", task.send_id),
            channel: channel.clone(),
            kind: KIND_OUTREACH_TASK.to_string(),
            payload,
        };
        self.hub
            .store()
            .enqueue_outbox(&insert, self.hub.clock().now().timestamp_millis())
            .await
            .map_err(|e| e.to_string())?;
        self.hub.outbox_wakeup().notify_one();
        Ok(())
    }
}

/// Nothing is delivered in a dry run.
struct NoDelivery;

#[async_trait]
impl Delivery for NoDelivery {
    async fn deliver(&self, _m: &OutboundMessage) -> Result<DeliveryOutcome, String> {
        Err("dry run: nothing is delivered".into())
    }
}

/// The engine with the configured rules and channels.
pub fn engine(settings: &Settings) -> anyhow::Result<OutreachEngine> {
    let mut rules = settings.outreach.rules.clone();
    if rules.link.is_none() {
        rules.link = Some(settings.outreach.link.clone());
    }
    Ok(OutreachEngine::new(rules)
        .context("invalid [outreach.rules] settings")?
        .with_channels(settings.outreach.channels.clone()))
}

/// Runs the triggers every `interval_secs` until shutdown.
pub fn spawn_scheduler(
    settings: &Settings,
    delivery: Arc<ServerDelivery>,
    templates: Arc<dyn TemplateSource>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let interval = settings.outreach.interval_secs;
    if interval == 0 {
        tracing::info!("outreach scheduler is off (outreach.interval_secs = 0)");
        return Ok(());
    }
    let engine = engine(settings)?;
    // One replica runs the scheduler (docs/deployment.md); the others stand by and take over
    // within the lease after it stops. The sends' unique keys keep a message from going out
    // twice even if two ever overlapped.
    let lease = Duration::from_secs(settings.cluster.singleton_lease_secs);
    let mut singleton = crate::cluster::Singleton::new("outreach", lease);
    let interval = Duration::from_secs(interval);
    tokio::spawn(async move {
        let hub = delivery.hub.clone();
        let mut last_run: Option<std::time::Instant> = None;
        loop {
            let due = last_run.is_none_or(|at| at.elapsed() >= interval);
            if singleton.lead(hub.store()).await && due {
                last_run = Some(std::time::Instant::now());
                let now = hub.clock().now();
                match engine
                    .run_once(
                        hub.store(),
                        now,
                        templates.clone(),
                        delivery.as_ref(),
                        false,
                    )
                    .await
                {
                    Ok(report) => {
                        tracing::info!(entries = report.entries.len(), "outreach run finished")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "outreach run failed; retrying next interval")
                    }
                }
            }
            // Wake often enough to renew the lease (or notice the leader is gone).
            let nap = (lease / 3).min(interval).max(Duration::from_millis(200));
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.changed() => {
                    singleton.step_down(hub.store()).await;
                    return;
                }
            }
        }
    });
    Ok(())
}

pub async fn run(config: Option<PathBuf>, command: OutreachCommand) -> anyhow::Result<()> {
    match command {
        OutreachCommand::Run { dry_run, at, serve } => one_run(config, serve, at, dry_run).await,
        OutreachCommand::Preview { at, serve } => one_run(config, serve, at, true).await,
        OutreachCommand::Report { serve } => {
            let settings = crate::settings(config, &serve)?;
            let store = crate::data::open_store(&settings).await?;
            let report = kizuna_outreach::campaign_report(&store, None, None).await?;
            println!("{report}");
            Ok(())
        }
    }
}

async fn one_run(
    config: Option<PathBuf>,
    serve: ServeArgs,
    at: Option<chrono::DateTime<chrono::FixedOffset>>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let settings = crate::settings(config, &serve)?;
    let content_templates = Arc::new(kizuna_tools::TemplateCatalog::load_content(
        &settings.knowledge.content_dir,
    )?);
    let templates: Arc<dyn TemplateSource> = content_templates.clone();
    let engine = engine(&settings)?;
    let now = at.unwrap_or_else(|| chrono::Utc::now().with_timezone(&kizuna_agent::clock::jst()));
    let report = if dry_run {
        let store = crate::data::open_store(&settings).await?;
        engine
            .run_once(&store, now, templates, &NoDelivery, true)
            .await?
    } else {
        // The same hub as the server's, so the chat messages are exactly what it would post;
        // nobody is connected to this process, so they wait for the customer's next visit.
        let hub = crate::delivery_hub(&settings, content_templates).await?;
        let delivery = ServerDelivery::new(hub.clone(), &settings);
        let report = engine
            .run_once(hub.store(), now, templates, &delivery, false)
            .await?;
        if settings.outreach.channels.email.is_some()
            || settings.outreach.channels.webhook.is_some()
        {
            println!(
                "email / webhook messages are queued in the outbox; `kizuna serve` sends them"
            );
        }
        report
    };
    println!("{report}");
    Ok(())
}
