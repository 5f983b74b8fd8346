//! Each B2B customer's last health colour and since when (`customer_health_state`), so that
//! `health_red` fires when the colour *turns* red, once per turn, instead of every month
//! while it stays red.
//!
//! A customer with no stored state who is red now counts as having turned red today: when it
//! really happened is unknown (before the first run, or before the table existed).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate};
use kizuna_store::Store;
use kizuna_tools::crm::{Customer, CustomerKind};
use kizuna_tools::health::{health_score, HealthStatus};
use sqlx::{AssertSqlSafe, Row};

use crate::OutreachError;

/// Rows per INSERT when states are written: 4 parameters each, well under the parameter
/// limits of SQLite (32,766) and PostgreSQL (65,535).
const ROWS_PER_STATEMENT: usize = 500;

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
    let rows = sqlx::query("SELECT customer_id, status, since FROM customer_health_state")
        .fetch_all(store.pool())
        .await?;
    let mut states = HashMap::with_capacity(rows.len());
    for row in rows {
        let customer_id: String = row.try_get("customer_id")?;
        let status: String = row.try_get("status")?;
        let since: String = row.try_get("since")?;
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

/// Stores `changes` in one transaction, many rows per statement. A row whose stored colour
/// already equals the new one is left alone, so a concurrent run (another replica) that
/// stored the same turn first keeps its `since`. Returns the rows written.
pub async fn save_health_states(
    store: &Store,
    changes: &[HealthChange],
    now: DateTime<FixedOffset>,
) -> Result<u64, OutreachError> {
    if changes.is_empty() {
        return Ok(0);
    }
    let now_ms = now.timestamp_millis();
    let full_chunk: Arc<str> = upsert_sql(ROWS_PER_STATEMENT).into();
    let mut tx = store.begin_write().await?;
    let mut written = 0;
    for chunk in changes.chunks(ROWS_PER_STATEMENT) {
        let sql = if chunk.len() == ROWS_PER_STATEMENT {
            full_chunk.clone()
        } else {
            upsert_sql(chunk.len()).into()
        };
        // Only numbered placeholders are generated; every value is bound.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for change in chunk {
            query = query
                .bind(change.customer_id.as_str())
                .bind(change.state.status.as_str())
                .bind(change.state.since.to_string())
                .bind(now_ms);
        }
        written += query.execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(written)
}

/// `INSERT … VALUES ($1, $2, $3, $4), … ON CONFLICT … DO UPDATE` for `rows` rows.
fn upsert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO customer_health_state (customer_id, status, since, updated_at) VALUES ",
    );
    for row in 0..rows {
        let p = row * 4;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4));
    }
    sql.push_str(
        " ON CONFLICT (customer_id) DO UPDATE SET status = excluded.status,
            since = excluded.since, updated_at = excluded.updated_at
         WHERE customer_health_state.status <> excluded.status",
    );
    sql
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

    #[test]
    fn upsert_sql_numbers_every_placeholder() {
        let sql = upsert_sql(2);
        assert!(
            sql.contains("($1, $2, $3, $4), ($5, $6, $7, $8) ON CONFLICT"),
            "{sql}"
        );
    }
}
