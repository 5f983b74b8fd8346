//! The triggers and their pure evaluation over customer records (seed 003 §5.1–5.4).

use std::collections::HashMap;
use std::fmt;

use chrono::{Datelike, Duration, NaiveDate};
use kizuna_tools::booking::{Reminder, ReminderKind};
use kizuna_tools::crm::Customer;
use kizuna_tools::health::HealthStatus;
use serde::{Deserialize, Serialize};

use crate::health_state::{current_status, HealthState};

/// A trigger; its slug is the template trigger in `knowledge/content/templates/` and the
/// campaign id of its sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Trigger {
    #[serde(rename = "payment_overdue_21")]
    PaymentOverdue21,
    #[serde(rename = "payment_overdue_14")]
    PaymentOverdue14,
    #[serde(rename = "payment_overdue_7")]
    PaymentOverdue7,
    #[serde(rename = "low_nps")]
    LowNps,
    #[serde(rename = "health_red")]
    HealthRed,
    #[serde(rename = "renewal_90d_at_risk")]
    Renewal90dAtRisk,
    #[serde(rename = "renewal_90d_healthy")]
    Renewal90dHealthy,
    #[serde(rename = "usage_drop")]
    UsageDrop,
    #[serde(rename = "onboarding_day0")]
    OnboardingDay0,
    #[serde(rename = "onboarding_day1")]
    OnboardingDay1,
    #[serde(rename = "onboarding_day3")]
    OnboardingDay3,
    #[serde(rename = "onboarding_day5")]
    OnboardingDay5,
    #[serde(rename = "onboarding_day7")]
    OnboardingDay7,
    /// A Day 1/3/5/7 step's content reached the chat and was not opened.
    #[serde(rename = "onboarding_video_unwatched")]
    OnboardingContentUnopened,
    /// Day 15–30 with no measurement yet.
    #[serde(rename = "onboarding_first_measurement_pending")]
    OnboardingFirstMeasurementPending,
    #[serde(rename = "booking_reminder_d3")]
    BookingReminderD3,
    #[serde(rename = "booking_reminder_d1")]
    BookingReminderD1,
    #[serde(rename = "booking_reminder_d0")]
    BookingReminderD0,
}

/// Onboarding steps: days after `customer_since`.
const ONBOARDING: [(i64, Trigger); 5] = [
    (0, Trigger::OnboardingDay0),
    (1, Trigger::OnboardingDay1),
    (3, Trigger::OnboardingDay3),
    (5, Trigger::OnboardingDay5),
    (7, Trigger::OnboardingDay7),
];

// Seed 003 §5.1 (../shared/seeds/003_191486e8329942f5.txt, 「B2B オンボーディング自動化」):
// the Day 1–7 content is tracked, 「未視聴なら自動リマインダー」 (no wait given: we wait two
// days, so a step is reminded of when the next step goes out); Day 8–14 is still onboarding
// (interactive tutorial); Day 15–30: 「初回測定実施」をゴールに、「未実施なら3日おきに
// リマインダー」.

/// The steps that send content to open (Day 0 is the welcome).
pub const CONTENT_STEPS: [Trigger; 4] = [
    Trigger::OnboardingDay1,
    Trigger::OnboardingDay3,
    Trigger::OnboardingDay5,
    Trigger::OnboardingDay7,
];
/// Days after reaching the chat before an unopened step is reminded of.
pub const UNOPENED_REMINDER_AFTER_DAYS: i64 = 2;
/// Unopened-content reminders go out only within these days of `customer_since`.
pub const ONBOARDING_DAYS: i64 = 14;
/// The days after `customer_since` in which a missing first measurement is nudged.
pub const FIRST_MEASUREMENT_DAYS: (i64, i64) = (15, 30);
/// The first-measurement nudge repeats every these days inside the window.
pub const FIRST_MEASUREMENT_EVERY_DAYS: i64 = 3;

impl Trigger {
    /// In priority order: when the frequency cap leaves room for fewer messages than fired,
    /// the earlier ones go first.
    pub const ALL: [Trigger; 18] = [
        Trigger::PaymentOverdue21,
        Trigger::PaymentOverdue14,
        Trigger::PaymentOverdue7,
        Trigger::LowNps,
        Trigger::HealthRed,
        Trigger::Renewal90dAtRisk,
        Trigger::Renewal90dHealthy,
        Trigger::UsageDrop,
        Trigger::OnboardingDay0,
        Trigger::OnboardingDay1,
        Trigger::OnboardingDay3,
        Trigger::OnboardingDay5,
        Trigger::OnboardingDay7,
        Trigger::OnboardingContentUnopened,
        Trigger::OnboardingFirstMeasurementPending,
        Trigger::BookingReminderD3,
        Trigger::BookingReminderD1,
        Trigger::BookingReminderD0,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::PaymentOverdue21 => "payment_overdue_21",
            Trigger::PaymentOverdue14 => "payment_overdue_14",
            Trigger::PaymentOverdue7 => "payment_overdue_7",
            Trigger::LowNps => "low_nps",
            Trigger::HealthRed => "health_red",
            Trigger::Renewal90dAtRisk => "renewal_90d_at_risk",
            Trigger::Renewal90dHealthy => "renewal_90d_healthy",
            Trigger::UsageDrop => "usage_drop",
            Trigger::OnboardingDay0 => "onboarding_day0",
            Trigger::OnboardingDay1 => "onboarding_day1",
            Trigger::OnboardingDay3 => "onboarding_day3",
            Trigger::OnboardingDay5 => "onboarding_day5",
            Trigger::OnboardingDay7 => "onboarding_day7",
            Trigger::OnboardingContentUnopened => "onboarding_video_unwatched",
            Trigger::OnboardingFirstMeasurementPending => "onboarding_first_measurement_pending",
            Trigger::BookingReminderD3 => "booking_reminder_d3",
            Trigger::BookingReminderD1 => "booking_reminder_d1",
            Trigger::BookingReminderD0 => "booking_reminder_d0",
        }
    }

    pub fn parse(slug: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str() == slug)
    }

    /// Service messages the customer expects (onboarding, booking reminders): exempt from the
    /// frequency cap and the cooldown. The unopened-content reminder belongs to the onboarding
    /// journey (at most one per Day 1/3/5/7 step, within the first two weeks; under the 30-day
    /// cooldown only the first could go out). The first-measurement nudge is a proactive push
    /// and counts toward the cap.
    pub fn is_service(self) -> bool {
        matches!(
            self,
            Trigger::OnboardingDay0
                | Trigger::OnboardingDay1
                | Trigger::OnboardingDay3
                | Trigger::OnboardingDay5
                | Trigger::OnboardingDay7
                | Trigger::OnboardingContentUnopened
                | Trigger::BookingReminderD3
                | Trigger::BookingReminderD1
                | Trigger::BookingReminderD0
        )
    }

    /// Triggers whose cause keys already space them (the first-measurement nudge: one cause
    /// per 3-day slot): the per-trigger cooldown does not apply, the frequency cap does.
    pub fn paces_itself(self) -> bool {
        self == Trigger::OnboardingFirstMeasurementPending
    }

    /// The content an onboarding step sends (seed 003 §5.1), as its reminder names it; `None`
    /// for Day 0 (the welcome, nothing to watch) and every other trigger.
    pub fn onboarding_content(self) -> Option<&'static str> {
        match self {
            Trigger::OnboardingDay1 => Some("ZENBUの使い方"),
            Trigger::OnboardingDay3 => Some("初回測定の依頼方法"),
            Trigger::OnboardingDay5 => Some("レポートの見方"),
            Trigger::OnboardingDay7 => Some("入居者への案内方法"),
            _ => None,
        }
    }

    /// The purpose `kizuna_tools::followup::placeholder_values` knows for this trigger.
    pub(crate) fn value_purpose(self) -> &'static str {
        match self {
            Trigger::PaymentOverdue21 | Trigger::PaymentOverdue14 | Trigger::PaymentOverdue7 => {
                "payment_overdue"
            }
            Trigger::Renewal90dAtRisk | Trigger::Renewal90dHealthy => "renewal_90d",
            other => other.as_str(),
        }
    }

    fn for_reminder(kind: ReminderKind) -> Trigger {
        match kind {
            ReminderKind::D3 => Trigger::BookingReminderD3,
            ReminderKind::D1 => Trigger::BookingReminderD1,
            ReminderKind::D0 => Trigger::BookingReminderD0,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that should reach a customer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub customer_id: String,
    pub trigger: Trigger,
    /// Identifies the cause; with customer and trigger it is the idempotency key.
    pub cause_key: String,
    /// The template trigger to compose from (= `trigger.as_str()`).
    pub template_purpose: &'static str,
    /// A person acts (payment 21 days overdue: CSM intervention and instalment proposal);
    /// the composed message is their draft, nothing goes to the customer automatically.
    pub human_task: bool,
    /// The CSM is alerted at once (NPS detractor), besides the message.
    pub csm_alert: bool,
    /// The booking reminder behind a `booking_reminder_*` candidate.
    pub reminder_id: Option<String>,
    /// The onboarding step an `onboarding_video_unwatched` candidate reminds of.
    pub unopened_step: Option<Trigger>,
}

/// An onboarding step send (Day 1/3/5/7) that reached the chat and has no `opened` event;
/// the engine loads them for [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnopenedStep {
    pub send_id: String,
    pub customer_id: String,
    /// The step's trigger (`onboarding_day1` …).
    pub step: Trigger,
    /// The local day it reached the chat.
    pub sent_on: NaiveDate,
}

impl Candidate {
    fn new(customer_id: &str, trigger: Trigger, cause_key: String) -> Self {
        Self {
            customer_id: customer_id.to_string(),
            trigger,
            cause_key,
            template_purpose: trigger.as_str(),
            human_task: trigger == Trigger::PaymentOverdue21,
            csm_alert: trigger == Trigger::LowNps,
            reminder_id: None,
            unopened_step: None,
        }
    }
}

/// The month, as the cause of a state that persists (low usage, low NPS): while
/// the state lasts it is one cause per month (and the cooldown spaces them further).
fn month_key(prefix: &str, today: NaiveDate) -> String {
    format!("{prefix}:{:04}-{:02}", today.year(), today.month())
}

/// Every candidate for `today`, per customer in [`Trigger::ALL`] priority order, customers in
/// input order, then the due booking reminders. Opted-out customers are included (the engine
/// reports them as skipped); `enabled` filters triggers. `unopened` are the onboarding step
/// sends not opened yet (any customers, any order). `health` holds the stored health states
/// (see [`crate::health_state`]): `health_red` names the day the current red turn began.
/// Pure: no I/O, no clock.
pub fn evaluate(
    customers: &[Customer],
    reminders: &[Reminder],
    unopened: &[UnopenedStep],
    today: NaiveDate,
    enabled: &[Trigger],
    health: &HashMap<String, HealthState>,
) -> Vec<Candidate> {
    let on = |t: Trigger| enabled.contains(&t);
    let mut unopened_by_customer: HashMap<&str, Vec<&UnopenedStep>> = HashMap::new();
    for step in unopened {
        unopened_by_customer
            .entry(step.customer_id.as_str())
            .or_default()
            .push(step);
    }
    let mut out = Vec::new();
    for customer in customers {
        let start = out.len();
        let steps = unopened_by_customer
            .get(customer.id.as_str())
            .map_or(&[][..], Vec::as_slice);
        customer_candidates(customer, today, health.get(&customer.id), steps, &mut out);
        // Keep this customer's candidates in priority order, drop disabled ones.
        let mut mine: Vec<Candidate> = out.drain(start..).filter(|c| on(c.trigger)).collect();
        if mine
            .iter()
            .any(|c| c.trigger == Trigger::OnboardingFirstMeasurementPending)
        {
            // No measurement yet is no drop in usage: the nudge says it better.
            mine.retain(|c| c.trigger != Trigger::UsageDrop);
        }
        mine.sort_by_key(|c| c.trigger);
        out.extend(mine);
    }
    for reminder in reminders.iter().filter(|r| r.status == "pending") {
        let trigger = Trigger::for_reminder(reminder.kind);
        if !on(trigger) {
            continue;
        }
        let mut candidate = Candidate::new(
            &reminder.customer_id,
            trigger,
            format!("reminder:{}", reminder.id),
        );
        candidate.reminder_id = Some(reminder.id.clone());
        out.push(candidate);
    }
    out
}

fn customer_candidates(
    customer: &Customer,
    today: NaiveDate,
    stored_health: Option<&HealthState>,
    unopened: &[&UnopenedStep],
    out: &mut Vec<Candidate>,
) {
    let id = customer.id.as_str();
    if let Some(days) = customer.payment_overdue_days.filter(|d| *d >= 7) {
        // Only the step reached: a customer first seen at 35 days gets the CSM, not day 7.
        let trigger = match days {
            d if d >= 21 => Trigger::PaymentOverdue21,
            d if d >= 14 => Trigger::PaymentOverdue14,
            _ => Trigger::PaymentOverdue7,
        };
        let overdue_since = today - Duration::days(days);
        out.push(Candidate::new(
            id,
            trigger,
            format!("overdue_since:{overdue_since}"),
        ));
    }
    if let Some(nps) = customer.nps.filter(|n| *n <= 6.0) {
        out.push(Candidate::new(
            id,
            Trigger::LowNps,
            format!("{}:{nps}", month_key("nps", today)),
        ));
    }
    // B2B only from here: B2C customers have no health score.
    let Some(status) = current_status(customer, today) else {
        return;
    };
    if status == HealthStatus::Red {
        // One cause per red turn: the day it began stays while the customer stays red, so
        // the turn sends once, on the first run whose guard rails let it through (a turn seen
        // in quiet hours goes out in the morning). Red → yellow → red is a new turn.
        let turn = HealthState::next(stored_health, status, today);
        out.push(Candidate::new(
            id,
            Trigger::HealthRed,
            format!("red_since:{}", turn.since),
        ));
    }
    if let Some(end) = customer.contract_end {
        let days_left = (end - today).num_days();
        if (1..=90).contains(&days_left) {
            let trigger = if status.is_at_risk() {
                Trigger::Renewal90dAtRisk
            } else {
                Trigger::Renewal90dHealthy
            };
            out.push(Candidate::new(id, trigger, format!("contract_end:{end}")));
        }
    }
    if let (Some(used), Some(quota)) = (
        customer.measurements_30d,
        customer.monthly_measurements.filter(|q| *q > 0),
    ) {
        if used * 2 < quota {
            out.push(Candidate::new(
                id,
                Trigger::UsageDrop,
                month_key("usage", today),
            ));
        }
    }
    if let Some(since) = customer.customer_since {
        let day = (today - since).num_days();
        // The latest step reached in the first week, so a missed run catches up once.
        if let Some((_, trigger)) = ONBOARDING
            .iter()
            .rev()
            .find(|(n, _)| (0..=7).contains(&day) && *n <= day)
        {
            out.push(Candidate::new(id, *trigger, format!("since:{since}")));
        }
        if (0..=ONBOARDING_DAYS).contains(&day) {
            out.extend(unopened_reminders(id, unopened, today));
        }
        if let Some(nudge) = first_measurement_nudge(customer, since, day) {
            out.push(nudge);
        }
    }
}

/// One reminder per Day 1/3/5/7 step that reached the chat at least
/// [`UNOPENED_REMINDER_AFTER_DAYS`] ago and is still unopened, in step order.
fn unopened_reminders(
    customer_id: &str,
    unopened: &[&UnopenedStep],
    today: NaiveDate,
) -> Vec<Candidate> {
    let mut due: Vec<&UnopenedStep> = unopened
        .iter()
        .copied()
        .filter(|s| s.customer_id == customer_id && s.step.onboarding_content().is_some())
        .filter(|s| (today - s.sent_on).num_days() >= UNOPENED_REMINDER_AFTER_DAYS)
        .collect();
    due.sort_by(|a, b| (a.step, &a.send_id).cmp(&(b.step, &b.send_id)));
    due.into_iter()
        .map(|s| {
            let mut candidate = Candidate::new(
                customer_id,
                Trigger::OnboardingContentUnopened,
                format!("unopened:{}", s.send_id),
            );
            candidate.unopened_step = Some(s.step);
            candidate
        })
        .collect()
}

/// Day 15–30 with no measurement in the last 30 days (= none since the contract began):
/// one cause per 3-day slot (days 15, 18, …, 30), so the nudge repeats every 3 days while
/// nothing is measured. An unknown count (`None`) sends nothing.
fn first_measurement_nudge(customer: &Customer, since: NaiveDate, day: i64) -> Option<Candidate> {
    let (first, last) = FIRST_MEASUREMENT_DAYS;
    if !(first..=last).contains(&day) || customer.measurements_30d != Some(0) {
        return None;
    }
    let slot = first + (day - first) / FIRST_MEASUREMENT_EVERY_DAYS * FIRST_MEASUREMENT_EVERY_DAYS;
    Some(Candidate::new(
        &customer.id,
        Trigger::OnboardingFirstMeasurementPending,
        format!("since:{since}:day{slot}"),
    ))
}
