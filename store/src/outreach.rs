//! What the conversation hub records about proactive outreach: events of a send
//! (`outreach_events`), the sends a conversation holds, and a customer's opt-out.

use sqlx::Row;

use crate::{Result, Store};

/// The outcome of [`Store::record_outreach_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutreachEventInsert {
    /// Stored now.
    Recorded,
    /// This kind was already recorded for the send (each kind counts once per send).
    AlreadyRecorded,
    /// No `outreach_sends` row has this id: nothing was stored.
    UnknownSend,
}

impl Store {
    /// Records that `kind` (`delivered`, `opened`, `replied`, `converted`) happened to send
    /// `send_id` at `at_ms`. An unknown send is reported, not an error, so that callers decide
    /// (outreach treats it as one; the hub only logs it).
    pub async fn record_outreach_event(
        &self,
        send_id: &str,
        kind: &str,
        at_ms: i64,
    ) -> Result<OutreachEventInsert> {
        let exists = sqlx::query("SELECT 1 AS one FROM outreach_sends WHERE id = $1")
            .bind(send_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if !exists {
            return Ok(OutreachEventInsert::UnknownSend);
        }
        let inserted = sqlx::query(
            "INSERT INTO outreach_events (id, send_id, kind, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (send_id, kind) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(send_id)
        .bind(kind)
        .bind(at_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(if inserted > 0 {
            OutreachEventInsert::Recorded
        } else {
            OutreachEventInsert::AlreadyRecorded
        })
    }

    /// The outreach sends whose messages a conversation holds (`metadata.proactive.send_id`
    /// of its agent-initiated messages), newest first, without repeats.
    pub async fn proactive_send_ids(&self, conversation_id: &str) -> Result<Vec<String>> {
        // The LIKE only narrows the rows to parse; the JSON decides.
        let rows = sqlx::query(
            "SELECT metadata FROM messages
             WHERE conversation_id = $1 AND role = 'assistant' AND reply_to IS NULL
               AND metadata LIKE '%\"send_id\"%'
             ORDER BY created_at DESC, id DESC",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        let mut ids: Vec<String> = Vec::new();
        for row in rows {
            let text: String = row.try_get("metadata")?;
            let Ok(metadata) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(id) = metadata
                .pointer("/proactive/send_id")
                .and_then(serde_json::Value::as_str)
            {
                if !ids.iter().any(|known| known == id) {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// Sets a customer's `opted_out` flag. `None`: no customer has this id. `Some(changed)`:
    /// whether the flag was different before.
    pub async fn set_customer_opted_out(
        &self,
        customer_id: &str,
        opted_out: bool,
        now_ms: i64,
    ) -> Result<Option<bool>> {
        let changed = sqlx::query(
            "UPDATE customers SET opted_out = $1, updated_at = $2 WHERE id = $3 AND opted_out <> $1",
        )
        .bind(i64::from(opted_out))
        .bind(now_ms)
        .bind(customer_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        // An explicit choice wins over one a LINE block made: following the account again
        // must not undo it (docs/line.md).
        sqlx::query("UPDATE line_users SET unfollow_opted_out = 0 WHERE customer_id = $1 AND unfollow_opted_out = 1")
            .bind(customer_id)
            .execute(&self.pool)
            .await?;
        if changed > 0 {
            return Ok(Some(true));
        }
        let exists = sqlx::query("SELECT 1 AS one FROM customers WHERE id = $1")
            .bind(customer_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        Ok(exists.then_some(false))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    async fn sqlite_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    async fn insert_send(store: &Store, id: &str) {
        sqlx::query(
            "INSERT INTO outreach_sends (id, customer_id, trigger_slug, cause_key, campaign_id,
                variant, status, created_at)
             VALUES ($1, 'C-1', 'usage_drop', $1, 'usage_drop', 'A', 'delivered', 1)",
        )
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn outreach_events_count_once_per_send_and_kind() {
        let (store, _dir) = sqlite_store().await;
        insert_send(&store, "s-1").await;
        assert_eq!(
            store
                .record_outreach_event("s-1", "opened", 10)
                .await
                .unwrap(),
            OutreachEventInsert::Recorded
        );
        assert_eq!(
            store
                .record_outreach_event("s-1", "opened", 20)
                .await
                .unwrap(),
            OutreachEventInsert::AlreadyRecorded
        );
        assert_eq!(
            store
                .record_outreach_event("s-1", "replied", 20)
                .await
                .unwrap(),
            OutreachEventInsert::Recorded
        );
        assert_eq!(
            store
                .record_outreach_event("no-such-send", "opened", 20)
                .await
                .unwrap(),
            OutreachEventInsert::UnknownSend
        );
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outreach_events")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn proactive_send_ids_are_newest_first() {
        let (store, _dir) = sqlite_store().await;
        store
            .create_conversation("c", "customer", "C-1", Some("C-1"), 1)
            .await
            .unwrap();
        for (id, send, at) in [
            ("p-1", json!({"proactive": {"send_id": "s-old"}}), 10),
            ("p-2", json!({"proactive": {"trigger": "usage_drop"}}), 20),
            ("p-3", json!({"proactive": {"send_id": "s-new"}}), 30),
            ("p-4", json!({"proactive": {"send_id": "s-old"}}), 5),
        ] {
            store
                .record_proactive("c", id, "ご案内", &send, &json!({"type": "proactive"}), at)
                .await
                .unwrap();
        }
        assert_eq!(
            store.proactive_send_ids("c").await.unwrap(),
            ["s-new", "s-old"]
        );
        assert!(store.proactive_send_ids("other").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn opted_out_reports_unknown_and_unchanged_customers() {
        let (store, _dir) = sqlite_store().await;
        sqlx::query(
            "INSERT INTO customers (id, kind, name, opted_out, created_at, updated_at)
             VALUES ('C-1', 'b2c', '山田', 0, 1, 1)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        assert_eq!(
            store.set_customer_opted_out("C-1", true, 5).await.unwrap(),
            Some(true)
        );
        assert_eq!(
            store.set_customer_opted_out("C-1", true, 6).await.unwrap(),
            Some(false)
        );
        assert_eq!(
            store
                .set_customer_opted_out("C-404", true, 6)
                .await
                .unwrap(),
            None
        );
        let (flag, updated): (i64, i64) =
            sqlx::query_as("SELECT opted_out, updated_at FROM customers WHERE id = 'C-1'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!((flag, updated), (1, 5));
    }
}
