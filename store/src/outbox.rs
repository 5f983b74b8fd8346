//! The notification outbox (`outbox`): notices queued with the change that caused them and
//! delivered later by `kizuna-notify`'s dispatcher, which claims rows with a lease so
//! replicas never send one twice at once.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Result, Store};

/// A notification to deliver later (e.g. Slack), committed with the change that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxInsert {
    pub id: String,
    pub channel: String,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// A pending notification, as the dispatcher reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: String,
    pub channel: String,
    pub kind: String,
    /// The JSON payload as stored (the dispatcher reports a payload that does not parse).
    pub payload: String,
    pub attempts: i64,
    /// Also the claim: a claimed row's time is moved to the end of the claimer's lease.
    pub next_attempt_at: i64,
}

/// Where a notification stands.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxState {
    /// `pending`, `sent` or `dead`.
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
}

impl Store {
    pub async fn outbox_state(&self, id: &str) -> Result<Option<OutboxState>> {
        let row =
            sqlx::query("SELECT status, attempts, last_error, sent_at FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(OutboxState {
                status: r.try_get("status")?,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
                sent_at: r.try_get("sent_at")?,
            })
        })
        .transpose()
    }

    /// Notifications of `channel` not yet sent (the outbox's backlog).
    pub async fn pending_notifications(&self, channel: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending FROM outbox WHERE status = 'pending' AND channel = $1",
        )
        .bind(channel)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("pending")?)
    }

    /// Queues a notification on its own (outside another change).
    pub async fn enqueue_outbox(&self, n: &OutboxInsert, now_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_outbox(&mut tx, n, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pending rows of `channel` (and `kind`, when given) due at `now_ms`, oldest first.
    pub async fn due_outbox(
        &self,
        channel: &str,
        kind: Option<&str>,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>> {
        let rows = match kind {
            None => {
                sqlx::query(
                    "SELECT id, channel, kind, payload, attempts, next_attempt_at FROM outbox
                     WHERE status = 'pending' AND channel = $1 AND next_attempt_at <= $2
                     ORDER BY created_at, id LIMIT $3",
                )
                .bind(channel)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            Some(kind) => {
                sqlx::query(
                    "SELECT id, channel, kind, payload, attempts, next_attempt_at FROM outbox
                     WHERE status = 'pending' AND channel = $1 AND kind = $2 AND next_attempt_at <= $3
                     ORDER BY created_at, id LIMIT $4",
                )
                .bind(channel)
                .bind(kind)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(outbox_row).collect()
    }

    /// Moves a pending row's next attempt from `from` to `to` only if nobody moved it since:
    /// `to` = the end of a lease claims the row, the reverse hands it back. `false` when
    /// another replica got there first.
    pub async fn move_outbox_attempt(&self, id: &str, from: i64, to: i64) -> Result<bool> {
        let moved = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1
             WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3",
        )
        .bind(to)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    pub async fn mark_outbox_sent(&self, id: &str, attempts: i64, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'sent', sent_at = $1, attempts = $2, last_error = NULL
             WHERE id = $3 AND status = 'pending'",
        )
        .bind(now_ms)
        .bind(attempts)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives up on a row: it stays in the table as `dead`, with its last error.
    pub async fn mark_outbox_dead(&self, id: &str, attempts: i64, last_error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET status = 'dead', attempts = $1, last_error = $2
             WHERE id = $3 AND status = 'pending'",
        )
        .bind(attempts)
        .bind(last_error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn retry_outbox_at(
        &self,
        id: &str,
        attempts: i64,
        last_error: &str,
        next_attempt_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET attempts = $1, last_error = $2, next_attempt_at = $3
             WHERE id = $4 AND status = 'pending'",
        )
        .bind(attempts)
        .bind(last_error)
        .bind(next_attempt_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Pending rows per channel.
    pub async fn pending_outbox_by_channel(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT channel, COUNT(*) AS pending FROM outbox WHERE status = 'pending' GROUP BY channel",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("channel")?, r.try_get("pending")?)))
            .collect()
    }
}

fn outbox_row(r: &AnyRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        channel: r.try_get("channel")?,
        kind: r.try_get("kind")?,
        payload: r.try_get("payload")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
    })
}

pub(crate) async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    n: &OutboxInsert,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (id, channel, kind, payload, status, attempts, next_attempt_at, last_error, created_at, sent_at)
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, NULL, $5, NULL)",
    )
    .bind(&n.id)
    .bind(&n.channel)
    .bind(&n.kind)
    .bind(n.payload.to_string())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
