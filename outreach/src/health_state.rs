//! Each B2B customer's last health colour and since when (`customer_health_state`), so that
//! `health_red` fires when the colour *turns* red, once per turn, instead of every month
//! while it stays red.
//!
//! A customer with no stored state who is red now counts as having turned red today: when it
//! really happened is unknown (before the first run, or before the table existed).

use std::collections::HashMap;

use chrono::{DateTime, FixedOffset, NaiveDate};
use kizuna_store::{HealthStateRow, Store};
use kizuna_tools::crm::{Customer, CustomerKind};
use kizuna_tools::health::{health_score, HealthStatus};

use crate::OutreachError;

/// A customer's health colour and the day it took that colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    pub status: HealthStatus,
    pub since: NaiveDate,
}

impl HealthState {
    /// The state on `today` for a customer whose colour is now `status`: `since` stays while
    /// the colour stays, and is `today` when it changed or nothing was stored.
    pub fn next(previous: Option<&HealthState>, status: HealthStatus, today: NaiveDate) -> Self {
        match previous {
            Some(p) if p.status == status => *p,
            _ => HealthState {
                status,
                since: today,
            },
        }
    }
}

/// A state to store: the colour is new or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub customer_id: String,
    pub state: HealthState,
}

/// The current colour of a B2B customer; `None` for B2C customers (no health score).
pub fn current_status(customer: &Customer, today: NaiveDate) -> Option<HealthStatus> {
    if customer.kind != CustomerKind::B2b {
        return None;
    }
    health_score(customer, today).ok().map(|h| h.status)
}

/// The B2B customers whose colour on `today` differs from `previous` (or who have none
/// stored), with their new state. Pure: no I/O, no clock.
pub fn health_changes(
    customers: &[Customer],
    today: NaiveDate,
    previous: &HashMap<String, HealthState>,
) -> Vec<HealthChange> {
    customers
        .iter()
        .filter_map(|customer| {
            let status = current_status(customer, today)?;
            let stored = previous.get(&customer.id);
            if stored.is_some_and(|s| s.status == status) {
                return None;
            }
            Some(HealthChange {
                customer_id: customer.id.clone(),
                state: HealthState::next(stored, status, today),
            })
        })
        .collect()
}

/// Every stored state. Rows that cannot be read (unknown colour, bad date) are left out with
/// a warning, so such a customer is treated as first seen.
pub async fn load_health_states(
    store: &Store,
) -> Result<HashMap<String, HealthState>, OutreachError> {
    let rows = store.health_states().await?;
    let mut states = HashMap::with_capacity(rows.len());
    for HealthStateRow {
        customer_id,
        status,
        since,
    } in rows
    {
        let parsed =
            HealthStatus::parse(&status).zip(NaiveDate::parse_from_str(&since, "%Y-%m-%d").ok());
        match parsed {
            Some((status, since)) => {
                states.insert(customer_id, HealthState { status, since });
            }
            None => {
                tracing::warn!(
                    customer_id,
                    status,
                    since,
                    "unreadable health state ignored"
                );
            }
        }
    }
    Ok(states)
}

/// Stores `changes` (see [`Store::save_health_states`]). Returns the rows written.
pub async fn save_health_states(
    store: &Store,
    changes: &[HealthChange],
    now: DateTime<FixedOffset>,
) -> Result<u64, OutreachError> {
    let rows: Vec<HealthStateRow> = changes
        .iter()
        .map(|change| HealthStateRow {
            customer_id: change.customer_id.clone(),
            status: change.state.status.as_str().to_string(),
            since: change.state.since.to_string(),
        })
        .collect();
    Ok(store
        .save_health_states(&rows, now.timestamp_millis())
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).expect("date")
    }

    #[test]
    fn since_stays_while_the_colour_stays() {
        let red = HealthState {
            status: HealthStatus::Red,
            since: date(1),
        };
        assert_eq!(
            HealthState::next(Some(&red), HealthStatus::Red, date(9)),
            red
        );
        assert_eq!(
            HealthState::next(Some(&red), HealthStatus::Yellow, date(9)),
            HealthState {
                status: HealthStatus::Yellow,
                since: date(9)
            }
        );
        assert_eq!(
            HealthState::next(None, HealthStatus::Red, date(9)).since,
            date(9)
        );
    }
}
