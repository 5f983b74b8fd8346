//! Each B2B customer's last computed health colour and since when
//! (`customer_health_state`): the `health_red` trigger fires when the colour turns red.

use sqlx::{AssertSqlSafe, Row};

use crate::{Result, Store};

/// Rows per INSERT when states are written: 4 parameters each, well under the parameter
/// limits of SQLite (32,766) and PostgreSQL (65,535).
const ROWS_PER_STATEMENT: usize = 500;

/// A stored colour, as text: the outreach crate parses it (and skips what it cannot read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStateRow {
    pub customer_id: String,
    pub status: String,
    /// `YYYY-MM-DD`.
    pub since: String,
}

impl Store {
    pub async fn health_states(&self) -> Result<Vec<HealthStateRow>> {
        let rows = sqlx::query("SELECT customer_id, status, since FROM customer_health_state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(HealthStateRow {
                    customer_id: r.try_get("customer_id")?,
                    status: r.try_get("status")?,
                    since: r.try_get("since")?,
                })
            })
            .collect()
    }

    /// Stores `changes` in one transaction, many rows per statement. A row whose stored
    /// colour already equals the new one is left alone, so a concurrent run (another
    /// replica) that stored the same turn first keeps its `since`. Returns the rows written.
    pub async fn save_health_states(&self, changes: &[HealthStateRow], now_ms: i64) -> Result<u64> {
        if changes.is_empty() {
            return Ok(0);
        }
        let full_chunk: std::sync::Arc<str> = upsert_sql(ROWS_PER_STATEMENT).into();
        let mut tx = self.begin_write().await?;
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
                    .bind(change.status.as_str())
                    .bind(change.since.as_str())
                    .bind(now_ms);
            }
            written += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }
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

    #[test]
    fn upsert_sql_numbers_every_placeholder() {
        let sql = upsert_sql(2);
        assert!(
            sql.contains("($1, $2, $3, $4), ($5, $6, $7, $8) ON CONFLICT"),
            "{sql}"
        );
    }
}
