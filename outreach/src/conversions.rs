//! Conversions measured from outcomes: a delivered send converts when what it asked for
//! happened within the conversion window (the payment cleared, the contract was extended, a
//! booking was made, …). Each run records the `converted` event for such sends, once per
//! send.
//!
//! Goals per trigger, judged on the current customer row and the bookings:
//! - `payment_overdue_*`: nothing is overdue now.
//! - `renewal_90d_*`: the contract now ends later than the end named in the cause.
//! - `usage_drop`: at least half the monthly quota used in the last 30 days.
//! - `health_red`: the health is no longer red.
//! - `low_nps`: NPS now above 6, or a booking made after the send.
//! - `onboarding_*` (the unopened-content reminder too): a booking made after the send
//!   (`bookings.created_at`).
//! - `onboarding_first_measurement_pending`: a measurement in the last 30 days, or a booking
//!   made after the send.
//! - `booking_reminder_*`: the booking was kept: still booked once its slot started.
//!
//! Bookings that were cancelled do not count as made.

use std::collections::HashMap;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate};
use kizuna_store::Store;
use kizuna_tools::crm::Customer;
use kizuna_tools::health::HealthStatus;

use crate::events::{record_event, EventKind};
use crate::health_state::current_status;
use crate::trigger::Trigger;
use crate::OutreachError;

/// A delivered send whose conversion is not recorded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSend {
    pub send_id: String,
    pub customer_id: String,
    pub trigger: Trigger,
    pub cause_key: String,
    pub sent_at_ms: i64,
}

/// What the bookings say, as far as the goals need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookingFacts {
    /// Per customer: when their latest booking that is not cancelled was made (ms).
    pub latest_booking_ms: HashMap<String, i64>,
    /// Per booking reminder whose booking's slot has started: whether it is still booked.
    pub reminder_kept: HashMap<String, bool>,
}

impl BookingFacts {
    fn booked_after(&self, customer_id: &str, at_ms: i64) -> bool {
        self.latest_booking_ms
            .get(customer_id)
            .is_some_and(|created| *created > at_ms)
    }
}

/// Whether `send`'s goal is reached, judged on `customer` as it is now. Pure.
pub fn goal_reached(
    send: &OpenSend,
    customer: &Customer,
    today: NaiveDate,
    bookings: &BookingFacts,
) -> bool {
    match send.trigger {
        Trigger::PaymentOverdue7 | Trigger::PaymentOverdue14 | Trigger::PaymentOverdue21 => {
            customer.payment_overdue_days.unwrap_or(0) == 0
        }
        Trigger::Renewal90dAtRisk | Trigger::Renewal90dHealthy => {
            let old_end = send
                .cause_key
                .strip_prefix("contract_end:")
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            matches!((old_end, customer.contract_end), (Some(old), Some(now)) if now > old)
        }
        Trigger::UsageDrop => matches!(
            (customer.measurements_30d, customer.monthly_measurements),
            (Some(used), Some(quota)) if used * 2 >= quota
        ),
        Trigger::HealthRed => {
            current_status(customer, today).is_some_and(|s| s != HealthStatus::Red)
        }
        Trigger::LowNps => {
            customer.nps.is_some_and(|n| n > 6.0)
                || bookings.booked_after(&customer.id, send.sent_at_ms)
        }
        Trigger::OnboardingDay0
        | Trigger::OnboardingDay1
        | Trigger::OnboardingDay3
        | Trigger::OnboardingDay5
        | Trigger::OnboardingDay7
        | Trigger::OnboardingContentUnopened => {
            bookings.booked_after(&customer.id, send.sent_at_ms)
        }
        Trigger::OnboardingFirstMeasurementPending => {
            customer.measurements_30d.is_some_and(|m| m > 0)
                || bookings.booked_after(&customer.id, send.sent_at_ms)
        }
        Trigger::BookingReminderD3 | Trigger::BookingReminderD1 | Trigger::BookingReminderD0 => {
            send.cause_key
                .strip_prefix("reminder:")
                .and_then(|id| bookings.reminder_kept.get(id))
                .copied()
                .unwrap_or(false)
        }
    }
}

/// Delivered sends (live or waiting for the next visit) sent at or after `since` with no
/// `converted` event, oldest first.
pub async fn open_sends(
    store: &Store,
    since: DateTime<FixedOffset>,
) -> Result<Vec<OpenSend>, OutreachError> {
    let rows = store
        .unconverted_outreach_sends(since.timestamp_millis())
        .await?;
    let mut sends = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(trigger) = Trigger::parse(&row.trigger_slug) else {
            continue;
        };
        sends.push(OpenSend {
            send_id: row.id,
            customer_id: row.customer_id,
            trigger,
            cause_key: row.cause_key,
            // The query asks for sent_at >= since, so it is set.
            sent_at_ms: row.sent_at.unwrap_or_default(),
        });
    }
    Ok(sends)
}

/// The booking facts `sends` need, as of `now`: bookings made since `since`, and the
/// bookings behind the reminder sends.
async fn booking_facts(
    store: &Store,
    sends: &[OpenSend],
    since: DateTime<FixedOffset>,
    now: DateTime<FixedOffset>,
) -> Result<BookingFacts, OutreachError> {
    let mut facts = BookingFacts::default();
    let needs_new_bookings = sends.iter().any(|s| {
        matches!(
            s.trigger,
            Trigger::LowNps
                | Trigger::OnboardingDay0
                | Trigger::OnboardingDay1
                | Trigger::OnboardingDay3
                | Trigger::OnboardingDay5
                | Trigger::OnboardingDay7
                | Trigger::OnboardingContentUnopened
                | Trigger::OnboardingFirstMeasurementPending
        )
    });
    if needs_new_bookings {
        facts.latest_booking_ms = store
            .latest_booking_per_customer(since.timestamp_millis())
            .await?
            .into_iter()
            .collect();
    }
    for send in sends {
        let Some(reminder_id) = send.cause_key.strip_prefix("reminder:") else {
            continue;
        };
        // Slots are Unix seconds; a slot that has not started yet is not judged.
        let status = store
            .started_reminder_booking_status(reminder_id, now.timestamp())
            .await?;
        if let Some(status) = status {
            facts
                .reminder_kept
                .insert(reminder_id.to_string(), status == "booked");
        }
    }
    Ok(facts)
}

/// What [`record_conversions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversionCounts {
    /// Delivered sends in the window still waiting for their goal before this pass.
    pub checked: usize,
    /// `converted` events recorded now.
    pub converted: usize,
}

/// Records `converted` (at `now`) for every send delivered in the last `window_days` whose
/// goal is reached, judged on `customers` (the current rows) as of `today`. Sends of
/// customers not in `customers` are left for later.
pub async fn record_conversions(
    store: &Store,
    customers: &[Customer],
    now: DateTime<FixedOffset>,
    today: NaiveDate,
    window_days: i64,
) -> Result<ConversionCounts, OutreachError> {
    if window_days <= 0 {
        return Ok(ConversionCounts::default());
    }
    let since = now - Duration::days(window_days);
    let sends = open_sends(store, since).await?;
    let mut counts = ConversionCounts {
        checked: sends.len(),
        converted: 0,
    };
    if sends.is_empty() {
        return Ok(counts);
    }
    let facts = booking_facts(store, &sends, since, now).await?;
    let by_id: HashMap<&str, &Customer> = customers.iter().map(|c| (c.id.as_str(), c)).collect();
    for send in &sends {
        let Some(customer) = by_id.get(send.customer_id.as_str()) else {
            continue;
        };
        if goal_reached(send, customer, today, &facts)
            && record_event(store, &send.send_id, EventKind::Converted, now).await?
        {
            counts.converted += 1;
        }
    }
    tracing::info!(
        checked = counts.checked,
        converted = counts.converted,
        "outreach conversions measured"
    );
    Ok(counts)
}
