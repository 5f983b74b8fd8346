//! Trained churn models (`churn_models`), versioned 1, 2, …; the newest one is used.

use sqlx::Row;

use crate::{Result, Store};

/// A stored model as text: the churn domain parses the date and the JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChurnModelRecord {
    pub version: i64,
    /// `YYYY-MM-DD`.
    pub as_of: String,
    pub metrics: String,
    pub model: String,
}

impl Store {
    /// Stores a model as the next version and returns that version.
    pub async fn save_churn_model(
        &self,
        as_of: &str,
        trained_rows: i64,
        positives: i64,
        metrics_json: &str,
        model_json: &str,
        now_ms: i64,
    ) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let latest: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM churn_models")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        let version = latest.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO churn_models (version, created_at, as_of, trained_rows, positives, metrics, model)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(version)
        .bind(now_ms)
        .bind(as_of)
        .bind(trained_rows)
        .bind(positives)
        .bind(metrics_json)
        .bind(model_json)
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    pub async fn latest_churn_model(&self) -> Result<Option<ChurnModelRecord>> {
        let row = sqlx::query(
            "SELECT version, as_of, metrics, model FROM churn_models ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ChurnModelRecord {
                version: r.try_get("version")?,
                as_of: r.try_get("as_of")?,
                metrics: r.try_get("metrics")?,
                model: r.try_get("model")?,
            })
        })
        .transpose()
    }
}
