//! The CRM's customers (`customers`). Values are stored as the import validated them; the
//! customer domain (`kizuna-tools`' `crm`) turns a [`CustomerRecord`] into its `Customer`
//! (kinds, dates) and back.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{Result, Store};

/// A `customers` row: dates as `YYYY-MM-DD` text, the kind as `b2c` / `b2b`.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRecord {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub plan: Option<String>,
    pub monthly_measurements: Option<i64>,
    pub mrr_jpy: Option<i64>,
    pub contract_end: Option<String>,
    pub customer_since: Option<String>,
    pub measurements_30d: Option<i64>,
    pub last_login: Option<String>,
    pub report_view_rate: Option<f64>,
    pub feature_adoption: Option<f64>,
    pub csat: Option<f64>,
    pub nps: Option<f64>,
    pub escalations_30d: Option<i64>,
    pub payment_overdue_days: Option<i64>,
    pub opted_out: bool,
    pub time_zone: Option<String>,
    pub churned_at: Option<String>,
    pub measurements_90d: Option<i64>,
    pub logins_30d: Option<i64>,
}

/// Which customers [`Store::customers`] returns; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerQuery<'a> {
    pub kind: Option<&'a str>,
    pub plan: Option<&'a str>,
    /// Contracts ending on or before this `YYYY-MM-DD` date (and not missing).
    pub contract_end_until: Option<String>,
    pub opted_out: Option<bool>,
    pub limit: Option<i64>,
}

/// What [`Store::import_customers`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CustomerImport {
    pub inserted: usize,
    pub updated: usize,
}

const CUSTOMER_COLUMNS: &str = "id, kind, name, email, phone, plan, monthly_measurements, \
    mrr_jpy, contract_end, customer_since, measurements_30d, last_login, report_view_rate, \
    feature_adoption, csat, nps, escalations_30d, payment_overdue_days, opted_out, time_zone, \
    churned_at, measurements_90d, logins_30d";

fn customer_from_row(r: &AnyRow) -> Result<CustomerRecord> {
    Ok(CustomerRecord {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        phone: r.try_get("phone")?,
        plan: r.try_get("plan")?,
        monthly_measurements: r.try_get("monthly_measurements")?,
        mrr_jpy: r.try_get("mrr_jpy")?,
        contract_end: r.try_get("contract_end")?,
        customer_since: r.try_get("customer_since")?,
        measurements_30d: r.try_get("measurements_30d")?,
        last_login: r.try_get("last_login")?,
        report_view_rate: r.try_get("report_view_rate")?,
        feature_adoption: r.try_get("feature_adoption")?,
        csat: r.try_get("csat")?,
        nps: r.try_get("nps")?,
        escalations_30d: r.try_get("escalations_30d")?,
        payment_overdue_days: r.try_get("payment_overdue_days")?,
        opted_out: r.try_get::<i64, _>("opted_out")? != 0,
        time_zone: r.try_get("time_zone")?,
        churned_at: r.try_get("churned_at")?,
        measurements_90d: r.try_get("measurements_90d")?,
        logins_30d: r.try_get("logins_30d")?,
    })
}

impl Store {
    /// Every customer's id and name (for accounts named in chat, by id or by name).
    pub async fn account_names(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, name FROM customers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("name")?)))
            .collect()
    }

    pub async fn customer(&self, id: &str) -> Result<Option<CustomerRecord>> {
        let sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1");
        // Only the fixed column list is spliced in; values are bound.
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(customer_from_row).transpose()
    }

    /// Customers matching `query`, ordered by id.
    pub async fn customers(&self, query: &CustomerQuery<'_>) -> Result<Vec<CustomerRecord>> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers
             WHERE ($1 IS NULL OR kind = $1)
               AND ($2 IS NULL OR plan = $2)
               AND ($3 IS NULL OR (contract_end IS NOT NULL AND contract_end <= $3))
               AND ($4 IS NULL OR opted_out = $4)
             ORDER BY id
             LIMIT $5"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(query.kind)
            .bind(query.plan)
            .bind(query.contract_end_until.as_deref())
            .bind(query.opted_out.map(i64::from))
            .bind(query.limit.unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(customer_from_row).collect()
    }

    pub async fn count_customers(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM customers")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Upserts every customer in one transaction (all or nothing). An opt-out already stored
    /// is kept whatever the import says: only the customer withdraws it.
    pub async fn import_customers(
        &self,
        customers: &[CustomerRecord],
        now_ms: i64,
    ) -> Result<CustomerImport> {
        let mut tx = self.begin_write().await?;
        let mut report = CustomerImport::default();
        for customer in customers {
            let exists = sqlx::query("SELECT 1 AS one FROM customers WHERE id = $1")
                .bind(&customer.id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            upsert(&mut tx, customer, now_ms).await?;
            if exists {
                report.updated += 1;
            } else {
                report.inserted += 1;
            }
        }
        tx.commit().await?;
        Ok(report)
    }
}

async fn upsert(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    c: &CustomerRecord,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO customers (id, kind, name, email, phone, plan, monthly_measurements, mrr_jpy,
            contract_end, customer_since, measurements_30d, last_login, report_view_rate,
            feature_adoption, csat, nps, escalations_30d, payment_overdue_days, opted_out,
            time_zone, churned_at, measurements_90d, logins_30d, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $24)
         ON CONFLICT (id) DO UPDATE SET
            kind = excluded.kind, name = excluded.name, email = excluded.email,
            phone = excluded.phone, plan = excluded.plan,
            monthly_measurements = excluded.monthly_measurements, mrr_jpy = excluded.mrr_jpy,
            contract_end = excluded.contract_end, customer_since = excluded.customer_since,
            measurements_30d = excluded.measurements_30d, last_login = excluded.last_login,
            report_view_rate = excluded.report_view_rate,
            feature_adoption = excluded.feature_adoption, csat = excluded.csat,
            nps = excluded.nps, escalations_30d = excluded.escalations_30d,
            payment_overdue_days = excluded.payment_overdue_days,
            opted_out = CASE WHEN customers.opted_out = 1 THEN 1 ELSE excluded.opted_out END,
            time_zone = excluded.time_zone, churned_at = excluded.churned_at,
            measurements_90d = excluded.measurements_90d, logins_30d = excluded.logins_30d,
            updated_at = excluded.updated_at",
    )
    .bind(&c.id)
    .bind(&c.kind)
    .bind(&c.name)
    .bind(&c.email)
    .bind(&c.phone)
    .bind(&c.plan)
    .bind(c.monthly_measurements)
    .bind(c.mrr_jpy)
    .bind(&c.contract_end)
    .bind(&c.customer_since)
    .bind(c.measurements_30d)
    .bind(&c.last_login)
    .bind(c.report_view_rate)
    .bind(c.feature_adoption)
    .bind(c.csat)
    .bind(c.nps)
    .bind(c.escalations_30d)
    .bind(c.payment_overdue_days)
    .bind(c.opted_out as i64)
    .bind(&c.time_zone)
    .bind(&c.churned_at)
    .bind(c.measurements_90d)
    .bind(c.logins_30d)
    .bind(now_ms)
    // Not a cached prepared statement: sqlx 0.9's Any driver sends a NULL f64 to PostgreSQL
    // as float4, and a statement prepared with that type rejects a later 8-byte float.
    .persistent(false)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
