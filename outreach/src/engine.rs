//! One pass of the outreach engine: candidates → guard rails → compose → claim (unique key)
//! → deliver or hold for a person → record.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, FixedOffset, NaiveDate};
use kizuna_store::{NewOutreachSend, OutreachSend, Store};
use kizuna_tools::booking::{due_reminders, mark_reminder_sent, upcoming_bookings};
use kizuna_tools::crm::{get_customer, list_customers, Customer, CustomerFilter};
use kizuna_tools::followup::{
    compose, placeholder_values, Followup, MessageTemplate, TemplateSource,
};

use crate::channels::{enqueue_channel_messages, ChannelsConfig};
use crate::config::{ConfigError, OutreachConfig, Zone};
use crate::conversions::record_conversions;
use crate::events::{record_event, EventKind};
use crate::health_state::{health_changes, load_health_states, save_health_states, HealthChange};
use crate::trigger::{evaluate, Candidate, Trigger, UnopenedStep, CONTENT_STEPS, ONBOARDING_DAYS};
use crate::OutreachError;

/// Most due booking reminders handled in one run.
const REMINDER_BATCH: i64 = 10_000;

/// One message on its way to a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The `outreach_sends` row; pass it to [`record_event`] for opened / replied / converted.
    pub send_id: String,
    pub customer_id: String,
    pub text: String,
    /// = the trigger's slug.
    pub campaign_id: String,
    pub trigger: Trigger,
    /// `A` or `B`.
    pub variant: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// True: shown in a connected widget session now. False: left as a pending conversation
    /// for the customer's next visit.
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffTaskKind {
    /// An important account: a person approves the draft before it is sent.
    Approval,
    /// A person acts instead of a message (payment 21 days overdue).
    HumanTask,
    /// NPS detractor: the CSM hears at once; the message is sent too.
    CsmAlert,
}

/// Something the staff must know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffTask {
    pub kind: StaffTaskKind,
    pub send_id: String,
    pub customer_id: String,
    pub customer_name: String,
    pub trigger: Trigger,
    /// The composed message (the draft, for approvals and human tasks).
    pub draft: String,
}

/// How messages reach customers and tasks reach staff (the server implements it).
#[async_trait]
pub trait Delivery: Send + Sync {
    async fn deliver(&self, message: &OutboundMessage) -> Result<DeliveryOutcome, String>;

    /// Staff notification (Slack, the hand-off queue). Default: only logged.
    async fn notify_staff(&self, task: &StaffTask) -> Result<(), String> {
        tracing::info!(kind = ?task.kind, customer_id = %task.customer_id, trigger = %task.trigger, "outreach staff task");
        Ok(())
    }
}

/// Why a candidate was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    OptedOut,
    /// This cause was already handled (sent, queued for a person, …).
    AlreadySent,
    /// The same trigger reached this customer within the cooldown.
    Cooldown,
    /// The frequency cap is reached; it is tried again on a later run.
    Capped,
    /// Quiet hours; tried again on a run at or after this time.
    QuietHours {
        until: DateTime<FixedOffset>,
    },
    UnknownCustomer,
    /// No template could be filled.
    NoMessage(String),
    /// The delivery failed; the claim was released so a later run retries.
    DeliveryFailed(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::OptedOut => f.write_str("opted out"),
            SkipReason::AlreadySent => f.write_str("already sent for this cause"),
            SkipReason::Cooldown => f.write_str("same trigger sent recently (cooldown)"),
            SkipReason::Capped => f.write_str("frequency cap reached"),
            SkipReason::QuietHours { until } => {
                write!(
                    f,
                    "quiet hours, deferred to {}",
                    until.format("%Y-%m-%d %H:%M %:z")
                )
            }
            SkipReason::UnknownCustomer => f.write_str("unknown customer"),
            SkipReason::NoMessage(e) => write!(f, "no message: {e}"),
            SkipReason::DeliveryFailed(e) => write!(f, "delivery failed: {e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        send_id: String,
        live: bool,
    },
    /// Dry run: would be delivered.
    WouldSend,
    /// Held for a person's approval (dry run: would be).
    AwaitingApproval {
        send_id: Option<String>,
    },
    /// Handed to a person (dry run: would be).
    HumanTask {
        send_id: Option<String>,
    },
    Skipped(SkipReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEntry {
    pub customer_id: String,
    pub trigger: Trigger,
    pub cause_key: String,
    pub variant: String,
    /// The composed message, when one was composed.
    pub message: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub now: DateTime<FixedOffset>,
    pub dry_run: bool,
    pub entries: Vec<RunEntry>,
    /// Earlier sends whose goal was reached, recorded as `converted` by this run (none in a
    /// dry run).
    pub conversions: usize,
}

impl RunReport {
    pub fn delivered(&self) -> impl Iterator<Item = &RunEntry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Delivered { .. } | Outcome::WouldSend))
    }

    pub fn entries_for<'a>(&'a self, customer_id: &'a str) -> impl Iterator<Item = &'a RunEntry> {
        self.entries
            .iter()
            .filter(move |e| e.customer_id == customer_id)
    }

    pub fn outcome(&self, customer_id: &str, trigger: Trigger) -> Option<&Outcome> {
        self.entries
            .iter()
            .find(|e| e.customer_id == customer_id && e.trigger == trigger)
            .map(|e| &e.outcome)
    }

    fn counts(&self) -> (usize, usize, usize, usize) {
        let mut sent = 0;
        let mut approval = 0;
        let mut human = 0;
        let mut skipped = 0;
        for e in &self.entries {
            match e.outcome {
                Outcome::Delivered { .. } | Outcome::WouldSend => sent += 1,
                Outcome::AwaitingApproval { .. } => approval += 1,
                Outcome::HumanTask { .. } => human += 1,
                Outcome::Skipped(_) => skipped += 1,
            }
        }
        (sent, approval, human, skipped)
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sent, approval, human, skipped) = self.counts();
        let verb = if self.dry_run { "would send" } else { "sent" };
        write!(
            f,
            "outreach run at {}{}: {verb} {sent}, awaiting approval {approval}, human tasks {human}, skipped {skipped}",
            self.now.format("%Y-%m-%d %H:%M %:z"),
            if self.dry_run { " (dry run)" } else { "" },
        )?;
        if self.dry_run {
            writeln!(f)?;
        } else {
            writeln!(f, ", conversions {}", self.conversions)?;
        }
        for e in &self.entries {
            let what = match &e.outcome {
                Outcome::Delivered { live: true, .. } => "delivered (live)".to_string(),
                Outcome::Delivered { live: false, .. } => "delivered (next visit)".to_string(),
                Outcome::WouldSend => "would send".to_string(),
                Outcome::AwaitingApproval { .. } => "awaiting approval".to_string(),
                Outcome::HumanTask { .. } => "human task".to_string(),
                Outcome::Skipped(reason) => format!("skipped: {reason}"),
            };
            writeln!(
                f,
                "  {} {} [{}] variant {}: {what}",
                e.customer_id, e.trigger, e.cause_key, e.variant
            )?;
        }
        Ok(())
    }
}

/// A/B variant, stable across runs and replicas (FNV-1a over customer id and campaign).
pub fn variant_for(customer_id: &str, campaign_id: &str) -> &'static str {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in customer_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(campaign_id.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    if hash.is_multiple_of(2) {
        "A"
    } else {
        "B"
    }
}

pub struct OutreachEngine {
    config: OutreachConfig,
    zone: Zone,
    /// Email / webhook besides the chat (none by default).
    channels: ChannelsConfig,
}

/// The triggers evaluated over the stored data at one instant.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub customers: Vec<Customer>,
    pub candidates: Vec<Candidate>,
    /// B2B customers whose health colour is new or changed since the stored state; a real
    /// run stores them.
    pub health_changes: Vec<HealthChange>,
}

/// What earlier runs left, for the cap and the cooldown.
struct History {
    recent_sends: HashMap<String, u32>,
    recent_triggers: HashSet<(String, String)>,
}

impl OutreachEngine {
    pub fn new(config: OutreachConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let zone = config.quiet_hours.zone()?;
        Ok(Self {
            config,
            zone,
            channels: ChannelsConfig::default(),
        })
    }

    /// Also queues each delivered message on these channels (email, webhook for SMS).
    pub fn with_channels(mut self, channels: ChannelsConfig) -> Self {
        self.channels = channels;
        self
    }

    pub fn config(&self) -> &OutreachConfig {
        &self.config
    }

    /// Today in the engine's time zone.
    pub fn local_date(&self, now: DateTime<FixedOffset>) -> NaiveDate {
        self.zone.local(now).date_naive()
    }

    /// The candidates for `now` over the stored customers, their stored health states and
    /// the due booking reminders. Reads only.
    pub async fn candidates(
        &self,
        store: &Store,
        now: DateTime<FixedOffset>,
    ) -> Result<Evaluation, OutreachError> {
        let customers = list_customers(store, &CustomerFilter::default()).await?;
        let reminders = due_reminders(store, now, REMINDER_BATCH).await?;
        let health = load_health_states(store).await?;
        let unopened = self.unopened_steps(store, now).await?;
        let today = self.local_date(now);
        let candidates = evaluate(
            &customers,
            &reminders,
            &unopened,
            today,
            &self.config.enabled_triggers,
            &health,
        );
        let health_changes = health_changes(&customers, today, &health);
        Ok(Evaluation {
            customers,
            candidates,
            health_changes,
        })
    }

    /// One pass: stores the changed health states, handles the candidates, then records the
    /// conversions of earlier sends. With `dry_run` nothing is written or delivered; the
    /// report says what would be sent and why the rest would not.
    pub async fn run_once(
        &self,
        store: &Store,
        now: DateTime<FixedOffset>,
        templates: Arc<dyn TemplateSource>,
        delivery: &dyn Delivery,
        dry_run: bool,
    ) -> Result<RunReport, OutreachError> {
        let Evaluation {
            customers,
            candidates,
            health_changes,
        } = self.candidates(store, now).await?;
        if !dry_run && !health_changes.is_empty() {
            // Before any claim, so that the stored turn always matches the claimed causes.
            let written = save_health_states(store, &health_changes, now).await?;
            tracing::info!(
                changed = health_changes.len(),
                written,
                "customer health states stored"
            );
        }
        let by_id: HashMap<&str, &Customer> =
            customers.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut history = self.history(store, now).await?;
        let customer_zones = customer_zones(&customers);
        let today = self.local_date(now);
        let mut entries = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let variant = variant_for(&candidate.customer_id, candidate.trigger.as_str());
            let mut entry = RunEntry {
                customer_id: candidate.customer_id.clone(),
                trigger: candidate.trigger,
                cause_key: candidate.cause_key.clone(),
                variant: variant.to_string(),
                message: None,
                outcome: Outcome::WouldSend,
            };
            let Some(customer) = by_id.get(candidate.customer_id.as_str()).copied() else {
                entry.outcome = Outcome::Skipped(SkipReason::UnknownCustomer);
                entries.push(entry);
                continue;
            };
            // Quiet hours in the customer's own zone; trigger dates stay in the configured one.
            let zone = customer_zones
                .get(customer.id.as_str())
                .copied()
                .unwrap_or(self.zone);
            let quiet_until = self.config.quiet_hours.deferred_until(zone, now);
            if let Some(reason) = self
                .guard(store, customer, &candidate, &history, quiet_until)
                .await?
            {
                entry.outcome = Outcome::Skipped(reason);
                entries.push(entry);
                continue;
            }
            let followup = match self
                .compose_for(
                    store,
                    customer,
                    &candidate,
                    variant,
                    today,
                    now,
                    templates.as_ref(),
                )
                .await
            {
                Ok(f) => f,
                Err(problem) => {
                    entry.outcome = Outcome::Skipped(SkipReason::NoMessage(problem));
                    entries.push(entry);
                    continue;
                }
            };
            entry.message = Some(followup.message.clone());
            let needs_person = self.needs_person(customer, &candidate);
            if dry_run {
                entry.outcome = match needs_person {
                    Some(StaffTaskKind::HumanTask) => Outcome::HumanTask { send_id: None },
                    Some(_) => Outcome::AwaitingApproval { send_id: None },
                    None => {
                        history.count_send(&candidate);
                        Outcome::WouldSend
                    }
                };
                entries.push(entry);
                continue;
            }
            entry.outcome = self
                .claim_and_send(
                    store,
                    now,
                    customer,
                    &candidate,
                    variant,
                    &followup,
                    needs_person,
                    delivery,
                )
                .await?;
            if matches!(entry.outcome, Outcome::Delivered { .. }) {
                history.count_send(&candidate);
            }
            entries.push(entry);
        }
        let conversions = if dry_run {
            0
        } else {
            record_conversions(
                store,
                &customers,
                now,
                today,
                self.config.conversion_window_days,
            )
            .await?
            .converted
        };
        let report = RunReport {
            now,
            dry_run,
            entries,
            conversions,
        };
        let (sent, approval, human, skipped) = report.counts();
        tracing::info!(
            dry_run,
            sent,
            approval,
            human,
            skipped,
            conversions,
            "outreach run finished"
        );
        Ok(report)
    }

    /// The Day 1/3/5/7 onboarding sends that reached the chat and were not opened. Only sends
    /// claimed within the onboarding window are read (the status index bounds the scan by
    /// `created_at`; the events' unique key serves the NOT EXISTS), so the query stays small
    /// however many customers there are.
    async fn unopened_steps(
        &self,
        store: &Store,
        now: DateTime<FixedOffset>,
    ) -> Result<Vec<UnopenedStep>, OutreachError> {
        // A day of slack for the local-date boundary.
        let since = (now - Duration::days(ONBOARDING_DAYS + 1)).timestamp_millis();
        let rows = store
            .unopened_outreach_sends(since, CONTENT_STEPS.map(|step| step.as_str()))
            .await?;
        let mut unopened = Vec::with_capacity(rows.len());
        for row in rows {
            let (Some(step), Some(sent)) = (
                Trigger::parse(&row.trigger_slug),
                row.sent_at.and_then(DateTime::from_timestamp_millis),
            ) else {
                continue;
            };
            unopened.push(UnopenedStep {
                send_id: row.id,
                customer_id: row.customer_id,
                step,
                sent_on: self.local_date(sent.fixed_offset()),
            });
        }
        Ok(unopened)
    }

    /// Recent sends: per customer the proactive ones in the cap window, and which triggers
    /// reached whom within the cooldown.
    async fn history(
        &self,
        store: &Store,
        now: DateTime<FixedOffset>,
    ) -> Result<History, OutreachError> {
        let window_start =
            (now - Duration::days(self.config.frequency_cap.window_days)).timestamp_millis();
        let cooldown_start = (now - Duration::days(self.config.cooldown_days)).timestamp_millis();
        let rows = store
            .recent_outreach_sends(window_start.min(cooldown_start), window_start)
            .await?;
        let mut history = History {
            recent_sends: HashMap::new(),
            recent_triggers: HashSet::new(),
        };
        for row in rows {
            let OutreachSend {
                customer_id,
                trigger_slug: slug,
                status,
                created_at,
                sent_at,
                ..
            } = row;
            let Some(trigger) = Trigger::parse(&slug) else {
                continue;
            };
            if trigger.is_service() {
                continue;
            }
            let delivered = matches!(status.as_str(), "delivered" | "pending_visit");
            if delivered && sent_at.is_some_and(|t| t >= window_start) {
                *history.recent_sends.entry(customer_id.clone()).or_default() += 1;
            }
            if created_at >= cooldown_start {
                history.recent_triggers.insert((customer_id, slug));
            }
        }
        Ok(history)
    }

    /// The guard rails, in order: opt-out, same cause, cooldown, then (for messages that go
    /// straight to the customer) quiet hours and the frequency cap.
    async fn guard(
        &self,
        store: &Store,
        customer: &Customer,
        candidate: &Candidate,
        history: &History,
        quiet_until: Option<DateTime<FixedOffset>>,
    ) -> Result<Option<SkipReason>, OutreachError> {
        if customer.opted_out {
            return Ok(Some(SkipReason::OptedOut));
        }
        let claimed = store
            .outreach_send_claimed(
                &candidate.customer_id,
                candidate.trigger.as_str(),
                &candidate.cause_key,
            )
            .await?;
        if claimed {
            return Ok(Some(SkipReason::AlreadySent));
        }
        let trigger = candidate.trigger;
        if !trigger.is_service()
            && !trigger.paces_itself()
            && history
                .recent_triggers
                .contains(&(candidate.customer_id.clone(), trigger.as_str().to_string()))
        {
            return Ok(Some(SkipReason::Cooldown));
        }
        if self.needs_person(customer, candidate).is_some() {
            // Nothing reaches the customer now: no quiet hours, no cap.
            return Ok(None);
        }
        if let Some(until) = quiet_until {
            return Ok(Some(SkipReason::QuietHours { until }));
        }
        if !trigger.is_service() {
            let used = history
                .recent_sends
                .get(&candidate.customer_id)
                .copied()
                .unwrap_or(0);
            if used >= self.config.frequency_cap.max_sends {
                return Ok(Some(SkipReason::Capped));
            }
        }
        Ok(None)
    }

    fn needs_person(&self, customer: &Customer, candidate: &Candidate) -> Option<StaffTaskKind> {
        if candidate.human_task {
            Some(StaffTaskKind::HumanTask)
        } else if !candidate.trigger.is_service()
            && customer
                .mrr_jpy
                .is_some_and(|mrr| mrr >= self.config.approval_mrr_jpy)
        {
            Some(StaffTaskKind::Approval)
        } else {
            None
        }
    }

    /// Templates of the preferred channel first; variant B tries that channel's second
    /// template first, so that the two variants compare wordings.
    #[allow(clippy::too_many_arguments)]
    async fn compose_for(
        &self,
        store: &Store,
        customer: &Customer,
        candidate: &Candidate,
        variant: &str,
        today: NaiveDate,
        now: DateTime<FixedOffset>,
        templates: &dyn TemplateSource,
    ) -> Result<Followup, String> {
        let audience = customer.kind.as_str();
        let mut list: Vec<MessageTemplate> = templates
            .templates(candidate.template_purpose, audience)
            .await
            .map_err(|e| e.to_string())?;
        list.sort_by_key(|t| t.channel != self.config.channel);
        let preferred = list
            .iter()
            .take_while(|t| t.channel == self.config.channel)
            .count();
        if variant == "B" && preferred >= 2 {
            list.swap(0, 1);
        }
        let next_booking = if candidate.reminder_id.is_some() {
            upcoming_bookings(store, &customer.id, now)
                .await
                .map_err(|e| e.to_string())?
                .first()
                .map(|b| b.slot_start)
        } else {
            None
        };
        let purpose = candidate.trigger.value_purpose();
        let mut values = placeholder_values(
            customer,
            purpose,
            today,
            next_booking,
            self.config.link.as_deref(),
        );
        if let Some(content) = candidate
            .unopened_step
            .and_then(Trigger::onboarding_content)
        {
            // The reminder names the step's content, not the plan.
            values.insert("product", content.to_string());
        }
        if candidate.trigger == Trigger::OnboardingFirstMeasurementPending {
            if let Some(since) = customer.customer_since {
                values.insert("days", (today - since).num_days().to_string());
            }
        }
        compose(&list, &values, candidate.template_purpose, audience, None)
            .map_err(|e| e.to_string())
    }

    #[allow(clippy::too_many_arguments)]
    async fn claim_and_send(
        &self,
        store: &Store,
        now: DateTime<FixedOffset>,
        customer: &Customer,
        candidate: &Candidate,
        variant: &str,
        followup: &Followup,
        needs_person: Option<StaffTaskKind>,
        delivery: &dyn Delivery,
    ) -> Result<Outcome, OutreachError> {
        let send_id = uuid::Uuid::new_v4().to_string();
        let status = match needs_person {
            Some(StaffTaskKind::HumanTask) => "human_task",
            Some(_) => "awaiting_approval",
            None => "sending",
        };
        // The claim: whoever inserts the row first sends; everyone else sees a conflict.
        let claimed = store
            .claim_outreach_send(&NewOutreachSend {
                id: &send_id,
                customer_id: &candidate.customer_id,
                trigger_slug: candidate.trigger.as_str(),
                cause_key: &candidate.cause_key,
                campaign_id: candidate.trigger.as_str(),
                variant,
                status,
                template_id: &followup.template_id,
                message: &followup.message,
                created_at: now.timestamp_millis(),
            })
            .await?;
        if !claimed {
            return Ok(Outcome::Skipped(SkipReason::AlreadySent));
        }
        let task = |kind| StaffTask {
            kind,
            send_id: send_id.clone(),
            customer_id: customer.id.clone(),
            customer_name: customer.name.clone(),
            trigger: candidate.trigger,
            draft: followup.message.clone(),
        };
        if let Some(kind) = needs_person {
            if let Err(e) = delivery.notify_staff(&task(kind)).await {
                tracing::warn!(error = %e, send_id, "outreach staff notification failed");
            }
            return Ok(match kind {
                StaffTaskKind::HumanTask => Outcome::HumanTask {
                    send_id: Some(send_id),
                },
                _ => Outcome::AwaitingApproval {
                    send_id: Some(send_id),
                },
            });
        }
        if candidate.csm_alert {
            if let Err(e) = delivery.notify_staff(&task(StaffTaskKind::CsmAlert)).await {
                tracing::warn!(error = %e, send_id, "outreach CSM alert failed");
            }
        }
        let message = OutboundMessage {
            send_id: send_id.clone(),
            customer_id: customer.id.clone(),
            text: followup.message.clone(),
            campaign_id: candidate.trigger.as_str().to_string(),
            trigger: candidate.trigger,
            variant: variant.to_string(),
        };
        match delivery.deliver(&message).await {
            Ok(outcome) => {
                mark_delivered(store, &send_id, outcome, now).await?;
                if let Some(reminder_id) = &candidate.reminder_id {
                    mark_reminder_sent(store, reminder_id).await?;
                }
                queue_channels(store, &self.channels, customer, &message, outcome.live, now).await;
                Ok(Outcome::Delivered {
                    send_id,
                    live: outcome.live,
                })
            }
            Err(e) => {
                // Release the claim so that a later run (or another replica) retries.
                store.release_outreach_send(&send_id).await?;
                tracing::warn!(error = %e, customer_id = %customer.id, trigger = %candidate.trigger, "outreach delivery failed");
                Ok(Outcome::Skipped(SkipReason::DeliveryFailed(e)))
            }
        }
    }
}

impl History {
    fn count_send(&mut self, candidate: &Candidate) {
        if !candidate.trigger.is_service() {
            *self
                .recent_sends
                .entry(candidate.customer_id.clone())
                .or_default() += 1;
        }
    }
}

async fn mark_delivered(
    store: &Store,
    send_id: &str,
    outcome: DeliveryOutcome,
    now: DateTime<FixedOffset>,
) -> Result<(), OutreachError> {
    store
        .mark_outreach_sent(send_id, outcome.live, now.timestamp_millis())
        .await?;
    record_event(store, send_id, EventKind::Delivered, now).await?;
    Ok(())
}

/// A send held for approval, as a person reviews it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    pub send_id: String,
    pub customer_id: String,
    pub trigger: String,
    pub variant: String,
    pub message: String,
    pub created_at_ms: i64,
}

/// Sends awaiting a person's approval, oldest first.
pub async fn pending_approvals(store: &Store) -> Result<Vec<PendingApproval>, OutreachError> {
    let rows = store.outreach_sends_awaiting_approval().await?;
    Ok(rows
        .into_iter()
        .map(|send| PendingApproval {
            send_id: send.id,
            customer_id: send.customer_id,
            trigger: send.trigger_slug,
            variant: send.variant,
            message: send.message.unwrap_or_default(),
            created_at_ms: send.created_at,
        })
        .collect())
}

/// The customers that have a time zone of their own, each zone name parsed once. The import
/// validates zones, so one that does not parse was written some other way: it is logged
/// once and its customers keep the configured zone.
fn customer_zones(customers: &[Customer]) -> HashMap<&str, Zone> {
    let mut parsed: HashMap<&str, Option<Zone>> = HashMap::new();
    let mut zones = HashMap::new();
    for customer in customers {
        let Some(name) = customer.time_zone.as_deref() else {
            continue;
        };
        let zone = *parsed.entry(name).or_insert_with(|| {
            let zone = Zone::parse(name).ok();
            if zone.is_none() {
                tracing::warn!(
                    customer_id = %customer.id,
                    time_zone = name,
                    "unknown customer time zone; quiet hours use the configured zone"
                );
            }
            zone
        });
        if let Some(zone) = zone {
            zones.insert(customer.id.as_str(), zone);
        }
    }
    zones
}

/// Queues a delivered message on the extra channels. The chat already has it: a failure here
/// is logged, not returned, so the send stays delivered.
async fn queue_channels(
    store: &Store,
    channels: &ChannelsConfig,
    customer: &Customer,
    message: &OutboundMessage,
    live: bool,
    now: DateTime<FixedOffset>,
) {
    match enqueue_channel_messages(store, channels, customer, message, live, now).await {
        Ok(queued) if !queued.is_empty() => {
            tracing::debug!(send_id = %message.send_id, ?queued, "outreach queued on extra channels")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, send_id = %message.send_id, "could not queue outreach on the extra channels")
        }
    }
}

/// A person approved send `send_id`: deliver its message (chat, then `channels`). Returns
/// `None` when it is not (or no longer) awaiting approval, so two approvers cannot send it
/// twice.
pub async fn approve_and_deliver(
    store: &Store,
    send_id: &str,
    delivery: &dyn Delivery,
    channels: &ChannelsConfig,
    now: DateTime<FixedOffset>,
) -> Result<Option<DeliveryOutcome>, OutreachError> {
    let taken = store
        .move_outreach_send(send_id, "awaiting_approval", "sending")
        .await?;
    if !taken {
        return Ok(None);
    }
    let send = store
        .outreach_send(send_id)
        .await?
        .ok_or_else(|| OutreachError::UnknownSend(send_id.to_string()))?;
    let trigger = Trigger::parse(&send.trigger_slug)
        .ok_or_else(|| OutreachError::UnknownSend(send_id.to_string()))?;
    let message = OutboundMessage {
        send_id: send_id.to_string(),
        customer_id: send.customer_id,
        text: send.message.unwrap_or_default(),
        campaign_id: send.campaign_id,
        trigger,
        variant: send.variant,
    };
    match delivery.deliver(&message).await {
        Ok(outcome) => {
            mark_delivered(store, send_id, outcome, now).await?;
            if let Some(customer) = get_customer(store, &message.customer_id).await? {
                queue_channels(store, channels, &customer, &message, outcome.live, now).await;
            }
            Ok(Some(outcome))
        }
        Err(e) => {
            store
                .set_outreach_send_status(send_id, "awaiting_approval")
                .await?;
            Err(OutreachError::Delivery(e))
        }
    }
}
