//! Proactive outreach's tables: sends (`outreach_sends`, claimed by a unique key on
//! customer, trigger and cause), their events (`outreach_events`), attempts on extra channels
//! (`outreach_attempts`), the sends a conversation holds, and a customer's opt-out.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{Result, Store};

/// An `outreach_sends` row. Every read of a send goes through [`send_from_row`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutreachSend {
    pub id: String,
    pub customer_id: String,
    pub trigger_slug: String,
    /// What caused it (e.g. `reminder:<id>`): one send per customer, trigger and cause.
    pub cause_key: String,
    pub campaign_id: String,
    pub variant: String,
    /// `sending`, `delivered`, `pending_visit`, `awaiting_approval`, `human_task`, `rejected`.
    pub status: String,
    pub template_id: Option<String>,
    pub message: Option<String>,
    pub live: bool,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// A send to claim (see [`Store::claim_outreach_send`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutreachSend<'a> {
    pub id: &'a str,
    pub customer_id: &'a str,
    pub trigger_slug: &'a str,
    pub cause_key: &'a str,
    pub campaign_id: &'a str,
    pub variant: &'a str,
    pub status: &'a str,
    pub template_id: &'a str,
    pub message: &'a str,
    pub created_at: i64,
}

/// One delivery attempt on an extra channel (`outreach_attempts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutreachAttempt {
    pub id: String,
    pub send_id: String,
    pub channel: String,
    /// 1 for the first attempt of this send on this channel.
    pub attempt: i64,
    pub ok: bool,
    /// The provider's message id (or SMTP reply) on success, the error on failure.
    pub detail: Option<String>,
    /// Epoch milliseconds.
    pub created_at: i64,
}

/// Event counts of one campaign, variant and event kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutreachEventCount {
    pub campaign_id: String,
    pub variant: String,
    pub kind: String,
    pub count: i64,
}

const SEND_COLUMNS: &str = "s.id, s.customer_id, s.trigger_slug, s.cause_key, s.campaign_id, \
    s.variant, s.status, s.template_id, s.message, s.live, s.created_at, s.sent_at";

fn send_from_row(r: &AnyRow) -> Result<OutreachSend> {
    Ok(OutreachSend {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        trigger_slug: r.try_get("trigger_slug")?,
        cause_key: r.try_get("cause_key")?,
        campaign_id: r.try_get("campaign_id")?,
        variant: r.try_get("variant")?,
        status: r.try_get("status")?,
        template_id: r.try_get("template_id")?,
        message: r.try_get("message")?,
        live: r.try_get::<i64, _>("live")? != 0,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

impl Store {
    /// `SELECT <every send column> FROM outreach_sends s <rest>`, bound with `binds`.
    async fn sends_where(&self, rest: &str, binds: &[Bind<'_>]) -> Result<Vec<OutreachSend>> {
        let sql = format!("SELECT {SEND_COLUMNS} FROM outreach_sends s {rest}");
        // Only the fixed column list and the caller's fixed clause are spliced; every value
        // is bound.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                Bind::Int(v) => query.bind(*v),
                Bind::Text(v) => query.bind(*v),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(send_from_row).collect()
    }

    /// Claims a send: whoever inserts it first sends; `false` when this customer, trigger
    /// and cause were already claimed.
    pub async fn claim_outreach_send(&self, send: &NewOutreachSend<'_>) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO outreach_sends (id, customer_id, trigger_slug, cause_key, campaign_id,
                variant, status, template_id, message, live, created_at, sent_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, NULL)
             ON CONFLICT (customer_id, trigger_slug, cause_key) DO NOTHING",
        )
        .bind(send.id)
        .bind(send.customer_id)
        .bind(send.trigger_slug)
        .bind(send.cause_key)
        .bind(send.campaign_id)
        .bind(send.variant)
        .bind(send.status)
        .bind(send.template_id)
        .bind(send.message)
        .bind(send.created_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }

    /// Whether this customer, trigger and cause were already claimed.
    pub async fn outreach_send_claimed(
        &self,
        customer_id: &str,
        trigger_slug: &str,
        cause_key: &str,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM outreach_sends
             WHERE customer_id = $1 AND trigger_slug = $2 AND cause_key = $3",
        )
        .bind(customer_id)
        .bind(trigger_slug)
        .bind(cause_key)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    pub async fn outreach_send(&self, id: &str) -> Result<Option<OutreachSend>> {
        Ok(self
            .sends_where("WHERE s.id = $1", &[Bind::Text(id)])
            .await?
            .into_iter()
            .next())
    }

    /// Sends created at or after `created_since`, or sent at or after `sent_since`.
    pub async fn recent_outreach_sends(
        &self,
        created_since: i64,
        sent_since: i64,
    ) -> Result<Vec<OutreachSend>> {
        self.sends_where(
            "WHERE s.created_at >= $1 OR s.sent_at >= $2",
            &[Bind::Int(created_since), Bind::Int(sent_since)],
        )
        .await
    }

    /// Delivered sends (live or waiting for the next visit) created at or after
    /// `created_since`, of one of `trigger_slugs` (four), never opened.
    pub async fn unopened_outreach_sends(
        &self,
        created_since: i64,
        trigger_slugs: [&str; 4],
    ) -> Result<Vec<OutreachSend>> {
        let [a, b, c, d] = trigger_slugs;
        self.sends_where(
            "WHERE s.status IN ('delivered', 'pending_visit') AND s.created_at >= $1
               AND s.trigger_slug IN ($2, $3, $4, $5) AND s.sent_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM outreach_events e
                               WHERE e.send_id = s.id AND e.kind = 'opened')",
            &[
                Bind::Int(created_since),
                Bind::Text(a),
                Bind::Text(b),
                Bind::Text(c),
                Bind::Text(d),
            ],
        )
        .await
    }

    /// Delivered sends (live or waiting for the next visit) sent at or after `sent_since`
    /// with no `converted` event, oldest first.
    pub async fn unconverted_outreach_sends(&self, sent_since: i64) -> Result<Vec<OutreachSend>> {
        self.sends_where(
            "WHERE s.status IN ('delivered', 'pending_visit') AND s.sent_at >= $1
               AND NOT EXISTS (SELECT 1 FROM outreach_events e
                               WHERE e.send_id = s.id AND e.kind = 'converted')
             ORDER BY s.sent_at, s.id",
            &[Bind::Int(sent_since)],
        )
        .await
    }

    /// Sends awaiting a person's approval, oldest first.
    pub async fn outreach_sends_awaiting_approval(&self) -> Result<Vec<OutreachSend>> {
        self.sends_where(
            "WHERE s.status = 'awaiting_approval' ORDER BY s.created_at, s.id",
            &[],
        )
        .await
    }

    /// Moves a send from status `from` to `to`; `false` when it was not in `from`.
    pub async fn move_outreach_send(&self, id: &str, from: &str, to: &str) -> Result<bool> {
        let moved =
            sqlx::query("UPDATE outreach_sends SET status = $1 WHERE id = $2 AND status = $3")
                .bind(to)
                .bind(id)
                .bind(from)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(moved > 0)
    }

    pub async fn set_outreach_send_status(&self, id: &str, status: &str) -> Result<()> {
        sqlx::query("UPDATE outreach_sends SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops a claim still `sending` (its delivery failed), so a later run retries.
    pub async fn release_outreach_send(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM outreach_sends WHERE id = $1 AND status = 'sending'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the send as delivered (`live`: the customer's widget was connected) or as
    /// waiting for the next visit.
    pub async fn mark_outreach_sent(&self, id: &str, live: bool, sent_at: i64) -> Result<()> {
        let status = if live { "delivered" } else { "pending_visit" };
        sqlx::query("UPDATE outreach_sends SET status = $1, live = $2, sent_at = $3 WHERE id = $4")
            .bind(status)
            .bind(i64::from(live))
            .bind(sent_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Event counts per campaign, variant and kind over events recorded in `[from_ms, to_ms)`.
    pub async fn outreach_event_counts(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<OutreachEventCount>> {
        let rows = sqlx::query(
            "SELECT s.campaign_id AS campaign_id, s.variant AS variant, e.kind AS kind,
                    COUNT(*) AS n
             FROM outreach_events e JOIN outreach_sends s ON s.id = e.send_id
             WHERE e.created_at >= $1 AND e.created_at < $2
             GROUP BY s.campaign_id, s.variant, e.kind",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutreachEventCount {
                    campaign_id: r.try_get("campaign_id")?,
                    variant: r.try_get("variant")?,
                    kind: r.try_get("kind")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }

    /// The attempts on extra channels for one send, oldest first.
    pub async fn outreach_attempts(&self, send_id: &str) -> Result<Vec<OutreachAttempt>> {
        let rows = sqlx::query(
            "SELECT id, send_id, channel, attempt, ok, detail, created_at FROM outreach_attempts
             WHERE send_id = $1 ORDER BY created_at, channel, attempt, id",
        )
        .bind(send_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutreachAttempt {
                    id: r.try_get("id")?,
                    send_id: r.try_get("send_id")?,
                    channel: r.try_get("channel")?,
                    attempt: r.try_get("attempt")?,
                    ok: r.try_get::<i64, _>("ok")? != 0,
                    detail: r.try_get("detail")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Records an attempt, numbered after the earlier ones of this send on this channel (a
    /// row is sent by one replica at a time, under the dispatcher's claim).
    pub async fn record_outreach_attempt(
        &self,
        send_id: &str,
        channel: &str,
        ok: bool,
        detail: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO outreach_attempts (id, send_id, channel, attempt, ok, detail, created_at)
             SELECT $1, $2, $3, COALESCE(MAX(attempt), 0) + 1, $4, $5, $6
             FROM outreach_attempts WHERE send_id = $2 AND channel = $3",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(send_id)
        .bind(channel)
        .bind(i64::from(ok))
        .bind(detail)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

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

/// A value bound to a send query.
enum Bind<'a> {
    Int(i64),
    Text(&'a str),
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
