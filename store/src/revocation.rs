//! The token revocation list (migration 0008).

use sqlx::Row;

use crate::{Result, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// `token` or `subject`.
    pub kind: String,
    pub value: String,
    pub reason: Option<String>,
    pub revoked_by: String,
    pub revoked_at: i64,
    pub expires_at: i64,
}

impl Store {
    /// Adds (or renews) a revocation; times are Unix milliseconds.
    pub async fn revoke(&self, r: &Revocation) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM token_revocations WHERE kind = $1 AND value = $2")
            .bind(&r.kind)
            .bind(&r.value)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO token_revocations (kind, value, reason, revoked_by, revoked_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&r.kind)
        .bind(&r.value)
        .bind(&r.reason)
        .bind(&r.revoked_by)
        .bind(r.revoked_at)
        .bind(r.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lifts a revocation; false when there was none.
    pub async fn unrevoke(&self, kind: &str, value: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM token_revocations WHERE kind = $1 AND value = $2")
            .bind(kind)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revocations still in force at `now_ms`.
    pub async fn revocations(&self, now_ms: i64) -> Result<Vec<Revocation>> {
        let rows = sqlx::query(
            "SELECT kind, value, reason, revoked_by, revoked_at, expires_at
             FROM token_revocations WHERE expires_at > $1 ORDER BY revoked_at",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Revocation {
                    kind: row.try_get("kind")?,
                    value: row.try_get("value")?,
                    reason: row.try_get("reason")?,
                    revoked_by: row.try_get("revoked_by")?,
                    revoked_at: row.try_get("revoked_at")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect()
    }
}
