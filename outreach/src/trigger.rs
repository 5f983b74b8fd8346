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

impl Trigger {
    /// In priority order: when the frequency cap leaves room for fewer messages than fired,
    /// the earlier ones go first.
    pub const ALL: [Trigger; 16] = [
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
            Trigger::BookingReminderD3 => "booking_reminder_d3",
            Trigger::BookingReminderD1 => "booking_reminder_d1",
            Trigger::BookingReminderD0 => "booking_reminder_d0",
        }
    }

    pub fn parse(slug: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str() == slug)
    }

    /// Service messages the customer expects (onboarding, booking reminders): exempt from the
    /// frequency cap and the cooldown.
    pub fn is_service(self) -> bool {
        matches!(
            self,
            Trigger::OnboardingDay0
                | Trigger::OnboardingDay1
                | Trigger::OnboardingDay3
                | Trigger::OnboardingDay5
                | Trigger::OnboardingDay7
                | Trigger::BookingReminderD3
                | Trigger::BookingReminderD1
                | Trigger::BookingReminderD0
        )
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
/// reports them as skipped); `enabled` filters triggers. `health` holds the stored health
/// states (see [`crate::health_state`]): `health_red` names the day the current red turn
/// began. Pure: no I/O, no clock.
pub fn evaluate(
    customers: &[Customer],
    reminders: &[Reminder],
    today: NaiveDate,
    enabled: &[Trigger],
    health: &HashMap<String, HealthState>,
) -> Vec<Candidate> {
    let on = |t: Trigger| enabled.contains(&t);
    let mut out = Vec::new();
    for customer in customers {
        let start = out.len();
        customer_candidates(customer, today, health.get(&customer.id), &mut out);
        // Keep this customer's candidates in priority order, drop disabled ones.
        let mut mine: Vec<Candidate> = out.drain(start..).filter(|c| on(c.trigger)).collect();
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
    }
}
