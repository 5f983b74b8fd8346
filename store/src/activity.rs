//! What an account did, counted over `conversations`, `messages`, `escalations` and
//! `bookings`, for the churn model's features and the customer insight. Windows are
//! `[from_ms, until_ms)` on each row's `created_at`; `i64::MIN` / `i64::MAX` leave a side open.

use sqlx::Row;

use crate::{Result, Store};

/// One account's activity in a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerActivity {
    pub conversations: i64,
    pub escalations: i64,
    /// The metadata JSON of each of the customer's own messages (`None`: unreadable).
    pub user_message_metadata: Vec<Option<String>>,
}

impl Store {
    /// Conversations, escalations and the customer's messages in their windows (the churn
    /// model counts escalations over a shorter window than the rest).
    pub async fn customer_activity(
        &self,
        customer_id: &str,
        (from_ms, until_ms): (i64, i64),
        escalations_from_ms: i64,
    ) -> Result<CustomerActivity> {
        let conversations: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM conversations
             WHERE customer_id = $1 AND created_at >= $2 AND created_at < $3",
        )
        .bind(customer_id)
        .bind(from_ms)
        .bind(until_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let escalations: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM escalations e JOIN conversations c ON c.id = e.conversation_id
             WHERE c.customer_id = $1 AND e.created_at >= $2 AND e.created_at < $3",
        )
        .bind(customer_id)
        .bind(escalations_from_ms)
        .bind(until_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let rows = sqlx::query(
            "SELECT m.metadata AS metadata FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE c.customer_id = $1 AND m.role = 'user' AND m.created_at >= $2 AND m.created_at < $3",
        )
        .bind(customer_id)
        .bind(from_ms)
        .bind(until_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(CustomerActivity {
            conversations,
            escalations,
            user_message_metadata: rows
                .iter()
                .map(|r| r.try_get::<String, _>("metadata").ok())
                .collect(),
        })
    }

    /// Bookings the customer ever made (any status).
    pub async fn count_customer_bookings(&self, customer_id: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM bookings WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }
}
