//! Customer data: the CRM import format of `shared/spec/crm-import.md` (CSV or JSON Lines),
//! all-or-nothing validation with line numbers, and the queries tools read customers with.
//!
//! Storage (migration 0002): dates are TEXT `YYYY-MM-DD`, rates and survey scores are
//! floating point, `opted_out` is 0/1, audit timestamps are Unix milliseconds. Migration 0006
//! adds `time_zone` (TEXT), an optional column beyond the spec: files without it import
//! unchanged.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use chrono::{FixedOffset, NaiveDate, Utc};
use kizuna_store::{CustomerQuery, CustomerRecord, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Business-to-consumer (a resident who books a measurement) or business-to-business
/// (a property management company with a monthly contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomerKind {
    B2c,
    B2b,
}

impl CustomerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerKind::B2c => "b2c",
            CustomerKind::B2b => "b2b",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "b2c" => Some(CustomerKind::B2c),
            "b2b" => Some(CustomerKind::B2b),
            _ => None,
        }
    }
}

impl fmt::Display for CustomerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One customer as the CRM exports it. `None` means the CRM left the value empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub kind: CustomerKind,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// b2c: `light`, `standard` or `premium`; b2b: the contract's plan name.
    pub plan: Option<String>,
    /// b2b: measurements per month included in the contract.
    pub monthly_measurements: Option<i64>,
    /// b2b: monthly recurring revenue in yen.
    pub mrr_jpy: Option<i64>,
    pub contract_end: Option<NaiveDate>,
    pub customer_since: Option<NaiveDate>,
    pub measurements_30d: Option<i64>,
    pub last_login: Option<NaiveDate>,
    pub report_view_rate: Option<f64>,
    pub feature_adoption: Option<f64>,
    pub csat: Option<f64>,
    pub nps: Option<f64>,
    pub escalations_30d: Option<i64>,
    pub payment_overdue_days: Option<i64>,
    /// No proactive outreach when true.
    pub opted_out: bool,
    /// The customer's time zone for quiet hours: an IANA name (`America/Los_Angeles`) or a
    /// fixed offset (`+09:00`), as written in the file. `None`: the configured zone.
    pub time_zone: Option<String>,
    /// The day the customer left (`None`: still a customer). Labels for churn training; a
    /// churned customer is not scored as at-risk.
    pub churned_at: Option<NaiveDate>,
    /// Measurements in the last 90 days (optional column beyond the spec's first version):
    /// with `measurements_30d` it gives the 3-month usage trend.
    pub measurements_90d: Option<i64>,
    /// Logins in the last 30 days (optional column).
    pub logins_30d: Option<i64>,
}

impl Customer {
    /// A customer with only the required fields set.
    pub fn new(id: impl Into<String>, kind: CustomerKind, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind,
            name: name.into(),
            email: None,
            phone: None,
            plan: None,
            monthly_measurements: None,
            mrr_jpy: None,
            contract_end: None,
            customer_since: None,
            measurements_30d: None,
            last_login: None,
            report_view_rate: None,
            feature_adoption: None,
            csat: None,
            nps: None,
            escalations_30d: None,
            payment_overdue_days: None,
            opted_out: false,
            time_zone: None,
            churned_at: None,
            measurements_90d: None,
            logins_30d: None,
        }
    }
}

/// The two file formats of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// By file extension: `.csv`, or `.jsonl` / `.ndjson`. `None` for anything else.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            _ => None,
        }
    }

    /// From the content: JSON Lines start with `{`, anything else is read as CSV.
    pub fn sniff(bytes: &[u8]) -> Format {
        let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Format::JsonLines,
            _ => Format::Csv,
        }
    }

    /// The extension's format, or the sniffed one when the extension says nothing.
    pub fn detect(path: &Path, bytes: &[u8]) -> Format {
        Self::from_path(path).unwrap_or_else(|| Self::sniff(bytes))
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One problem in the file. `line` is the physical line where the record starts (the CSV
/// header is line 1); `column` is `None` for problems with the whole record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: u64,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "line {}, column {column}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file has bad rows; nothing was written.
    #[error("{}", describe_row_errors(.0))]
    Invalid(Vec<RowError>),
    #[error(transparent)]
    Database(#[from] kizuna_store::StoreError),
}

fn describe_row_errors(errors: &[RowError]) -> String {
    let mut out = format!(
        "the customers file has {} error(s); nothing was imported:",
        errors.len()
    );
    for error in errors {
        out.push_str("\n  ");
        out.push_str(&error.to_string());
    }
    out
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ImportReport {
    pub inserted: usize,
    pub updated: usize,
}

/// Validates every row, then upserts all of them in one transaction. Any bad row fails the
/// whole import with every error found (and their line numbers) and writes nothing.
pub async fn import_customers(
    store: &Store,
    bytes: &[u8],
    format: Format,
) -> Result<ImportReport, ImportError> {
    let customers = parse_customers(bytes, format).map_err(ImportError::Invalid)?;
    let records: Vec<CustomerRecord> = customers.iter().map(customer_record).collect();
    let imported = store
        .import_customers(&records, Utc::now().timestamp_millis())
        .await?;
    let report = ImportReport {
        inserted: imported.inserted,
        updated: imported.updated,
    };
    tracing::info!(
        inserted = report.inserted,
        updated = report.updated,
        "customers imported"
    );
    Ok(report)
}

/// Parses and validates a customers file without touching the database.
pub fn parse_customers(bytes: &[u8], format: Format) -> Result<Vec<Customer>, Vec<RowError>> {
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let (rows, mut errors) = match format {
        Format::Csv => csv_rows(body)?,
        Format::JsonLines => json_rows(body),
    };
    if rows.is_empty() && errors.is_empty() {
        return Err(vec![RowError {
            line: 1,
            column: None,
            message: "the file has no customer rows".into(),
        }]);
    }
    let mut customers = Vec::with_capacity(rows.len());
    let mut first_line_of_id: HashMap<String, u64> = HashMap::new();
    for (line, fields) in rows {
        match customer_from_fields(&fields) {
            Ok(customer) => {
                if let Some(first) = first_line_of_id.get(&customer.id) {
                    errors.push(RowError {
                        line,
                        column: Some("id".into()),
                        message: format!("duplicate id; it already appears on line {first}"),
                    });
                } else {
                    first_line_of_id.insert(customer.id.clone(), line);
                    customers.push(customer);
                }
            }
            Err(problems) => {
                errors.extend(problems.into_iter().map(|(column, message)| RowError {
                    line,
                    column: Some(column.to_string()),
                    message,
                }))
            }
        }
    }
    if errors.is_empty() {
        Ok(customers)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// A raw value from either format.
enum Raw {
    Text(String),
    Json(Value),
}

type Fields = HashMap<String, Raw>;
/// Records with their line numbers, and the records that could not be read at all.
type Rows = (Vec<(u64, Fields)>, Vec<RowError>);

const REQUIRED_COLUMNS: [&str; 3] = ["id", "kind", "name"];

/// Header problems fail at once: without a usable header no record can be read.
fn csv_rows(body: &[u8]) -> Result<Rows, Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(body);
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.trim().to_ascii_lowercase()).collect(),
        Err(e) => {
            return Err(vec![RowError {
                line: 1,
                column: None,
                message: format!("unreadable header row: {e}"),
            }])
        }
    };
    let mut errors = Vec::new();
    for required in REQUIRED_COLUMNS {
        if !headers.iter().any(|h| h == required) {
            errors.push(RowError {
                line: 1,
                column: Some(required.into()),
                message: "required column is missing from the header".into(),
            });
        }
    }
    for (i, header) in headers.iter().enumerate() {
        if headers[..i].contains(header) && !header.is_empty() {
            errors.push(RowError {
                line: 1,
                column: Some(header.clone()),
                message: "column appears twice in the header".into(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                // A line with no fields at all (e.g. a trailing blank line) is not a record.
                if record.len() == 1 && record[0].trim().is_empty() && headers.len() > 1 {
                    continue;
                }
                let fields = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| (h.clone(), Raw::Text(v.to_string())))
                    .collect();
                rows.push((line, fields));
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let message = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!("the record has {len} fields; the header has {expected_len}"),
                    csv::ErrorKind::Utf8 { .. } => "the record is not valid UTF-8".to_string(),
                    _ => format!("unreadable record: {e}"),
                };
                errors.push(RowError {
                    line,
                    column: None,
                    message,
                });
                // An I/O-level error cannot be skipped past.
                if !matches!(
                    e.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ) {
                    break;
                }
            }
        }
    }
    Ok((rows, errors))
}

fn json_rows(body: &[u8]) -> Rows {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (index, raw_line) in body.split(|b| *b == b'\n').enumerate() {
        let line = index as u64 + 1;
        let Ok(text) = std::str::from_utf8(raw_line) else {
            errors.push(RowError {
                line,
                column: None,
                message: "the line is not valid UTF-8".into(),
            });
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => {
                let fields = map
                    .into_iter()
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), Raw::Json(v)))
                    .collect();
                rows.push((line, fields));
            }
            Ok(_) => errors.push(RowError {
                line,
                column: None,
                message: "each line must be a JSON object".into(),
            }),
            Err(e) => errors.push(RowError {
                line,
                column: None,
                message: format!("invalid JSON: {e}"),
            }),
        }
    }
    (rows, errors)
}

/// Reads typed values out of one row, collecting a message per bad column.
struct FieldReader<'a> {
    fields: &'a Fields,
    problems: Vec<(&'static str, String)>,
}

impl<'a> FieldReader<'a> {
    /// The value as text; `None` when absent, empty or JSON null.
    fn text(&mut self, column: &'static str) -> Option<String> {
        match self.fields.get(column)? {
            Raw::Text(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Raw::Json(Value::Null) => None,
            Raw::Json(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Raw::Json(Value::Number(n)) => Some(n.to_string()),
            Raw::Json(Value::Bool(b)) => Some(b.to_string()),
            Raw::Json(_) => {
                self.problems.push((
                    column,
                    "expected a single value, not a list or object".into(),
                ));
                None
            }
        }
    }

    fn string(&mut self, column: &'static str, max_chars: usize) -> Option<String> {
        let value = self.text(column)?;
        if value.chars().count() > max_chars {
            self.problems
                .push((column, format!("longer than {max_chars} characters")));
            return None;
        }
        if value.chars().any(char::is_control) {
            self.problems
                .push((column, "contains control characters".into()));
            return None;
        }
        Some(value)
    }

    fn required(&mut self, column: &'static str, max_chars: usize) -> Option<String> {
        let before = self.problems.len();
        let value = self.string(column, max_chars);
        if value.is_none() && self.problems.len() == before {
            self.problems
                .push((column, "required value is missing".into()));
        }
        value
    }

    fn integer(&mut self, column: &'static str, min: i64, max: i64) -> Option<i64> {
        let value = self.text(column)?;
        match value.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(_) => {
                self.problems
                    .push((column, format!("{value} is outside {min}..={max}")));
                None
            }
            Err(_) => {
                self.problems
                    .push((column, format!("{value:?} is not a whole number")));
                None
            }
        }
    }

    fn number(&mut self, column: &'static str, min: f64, max: f64) -> Option<f64> {
        let value = self.text(column)?;
        match value.parse::<f64>() {
            Ok(n) if n.is_finite() && (min..=max).contains(&n) => Some(n),
            Ok(_) => {
                self.problems
                    .push((column, format!("{value} is outside {min}..={max}")));
                None
            }
            Err(_) => {
                self.problems
                    .push((column, format!("{value:?} is not a number")));
                None
            }
        }
    }

    fn date(&mut self, column: &'static str) -> Option<NaiveDate> {
        let value = self.text(column)?;
        match parse_date(&value) {
            Some(date) => Some(date),
            None => {
                self.problems
                    .push((column, format!("{value:?} is not a date YYYY-MM-DD")));
                None
            }
        }
    }

    fn time_zone(&mut self, column: &'static str) -> Option<String> {
        let value = self.string(column, 64)?;
        if is_time_zone(&value) {
            Some(value)
        } else {
            self.problems.push((
                column,
                format!("{value:?} is not a time zone (an IANA name like Asia/Tokyo, or an offset like +09:00)"),
            ));
            None
        }
    }

    fn boolean(&mut self, column: &'static str) -> Option<bool> {
        let value = self.text(column)?;
        match value.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.problems
                    .push((column, format!("{value:?} is not true or false")));
                None
            }
        }
    }
}

/// Strict `YYYY-MM-DD` (chrono alone would also take `2026-1-5`).
pub fn parse_date(value: &str) -> Option<NaiveDate> {
    let bytes = value.as_bytes();
    let shape_ok = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shape_ok {
        return None;
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
}

/// An IANA zone name (`Asia/Tokyo`, case as in the tz database) or a fixed offset (`+09:00`).
/// The same two parsers the outreach engine reads the zone with, so an imported zone is
/// always usable there.
pub fn is_time_zone(value: &str) -> bool {
    FixedOffset::from_str(value).is_ok() || chrono_tz::Tz::from_str(value).is_ok()
}

const B2C_PLANS: [&str; 3] = ["light", "standard", "premium"];
/// Generous bounds that still catch unit mistakes (e.g. an MRR in sen, a phone in a count).
const MAX_COUNT: i64 = 1_000_000;
const MAX_YEN: i64 = 1_000_000_000_000;

fn customer_from_fields(fields: &Fields) -> Result<Customer, Vec<(&'static str, String)>> {
    let mut r = FieldReader {
        fields,
        problems: Vec::new(),
    };
    let id = r.required("id", 128);
    let kind =
        r.required("kind", 8)
            .and_then(|k| match CustomerKind::parse(&k.to_ascii_lowercase()) {
                Some(kind) => Some(kind),
                None => {
                    r.problems
                        .push(("kind", format!("{k:?} is not b2c or b2b")));
                    None
                }
            });
    let name = r.required("name", 200);
    let email = r.string("email", 254);
    if let Some(email) = &email {
        let valid = email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !email.contains(char::is_whitespace);
        if !valid {
            r.problems
                .push(("email", format!("{email:?} is not an email address")));
        }
    }
    let phone = r.string("phone", 32);
    if let Some(phone) = &phone {
        let valid = phone.chars().any(|c| c.is_ascii_digit())
            && phone
                .chars()
                .all(|c| c.is_ascii_digit() || "+-() ".contains(c));
        if !valid {
            r.problems
                .push(("phone", format!("{phone:?} is not a phone number")));
        }
    }
    let mut plan = r.string("plan", 100);
    if kind == Some(CustomerKind::B2c) {
        if let Some(p) = &plan {
            let lower = p.to_ascii_lowercase();
            if B2C_PLANS.contains(&lower.as_str()) {
                plan = Some(lower);
            } else {
                r.problems.push((
                    "plan",
                    format!("{p:?} is not a b2c plan (light, standard or premium)"),
                ));
            }
        }
    }
    let monthly_measurements = r.integer("monthly_measurements", 0, MAX_COUNT);
    let mrr_jpy = r.integer("mrr_jpy", 0, MAX_YEN);
    let contract_end = r.date("contract_end");
    let customer_since = r.date("customer_since");
    let measurements_30d = r.integer("measurements_30d", 0, MAX_COUNT);
    let last_login = r.date("last_login");
    let report_view_rate = r.number("report_view_rate", 0.0, 1.0);
    let feature_adoption = r.number("feature_adoption", 0.0, 1.0);
    let csat = r.number("csat", 1.0, 5.0);
    let nps = r.number("nps", 0.0, 10.0);
    let escalations_30d = r.integer("escalations_30d", 0, MAX_COUNT);
    let payment_overdue_days = r.integer("payment_overdue_days", 0, 36_500);
    let opted_out = r.boolean("opted_out").unwrap_or(false);
    let time_zone = r.time_zone("time_zone");
    let churned_at = r.date("churned_at");
    let measurements_90d = r.integer("measurements_90d", 0, MAX_COUNT);
    let logins_30d = r.integer("logins_30d", 0, MAX_COUNT);

    match (id, kind, name) {
        (Some(id), Some(kind), Some(name)) if r.problems.is_empty() => Ok(Customer {
            id,
            kind,
            name,
            email,
            phone,
            plan,
            monthly_measurements,
            mrr_jpy,
            contract_end,
            customer_since,
            measurements_30d,
            last_login,
            report_view_rate,
            feature_adoption,
            csat,
            nps,
            escalations_30d,
            payment_overdue_days,
            opted_out,
            time_zone,
            churned_at,
            measurements_90d,
            logins_30d,
        }),
        _ => Err(r.problems),
    }
}

/// The row a customer is stored as.
fn customer_record(c: &Customer) -> CustomerRecord {
    CustomerRecord {
        id: c.id.clone(),
        kind: c.kind.as_str().to_string(),
        name: c.name.clone(),
        email: c.email.clone(),
        phone: c.phone.clone(),
        plan: c.plan.clone(),
        monthly_measurements: c.monthly_measurements,
        mrr_jpy: c.mrr_jpy,
        contract_end: c.contract_end.map(|d| d.to_string()),
        customer_since: c.customer_since.map(|d| d.to_string()),
        measurements_30d: c.measurements_30d,
        last_login: c.last_login.map(|d| d.to_string()),
        report_view_rate: c.report_view_rate,
        feature_adoption: c.feature_adoption,
        csat: c.csat,
        nps: c.nps,
        escalations_30d: c.escalations_30d,
        payment_overdue_days: c.payment_overdue_days,
        opted_out: c.opted_out,
        time_zone: c.time_zone.clone(),
        churned_at: c.churned_at.map(|d| d.to_string()),
        measurements_90d: c.measurements_90d,
        logins_30d: c.logins_30d,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error(transparent)]
    Database(#[from] kizuna_store::StoreError),
    #[error("stored customer {id} is corrupt: {detail}")]
    Corrupt { id: String, detail: String },
}

/// One customer by id.
pub async fn get_customer(store: &Store, id: &str) -> Result<Option<Customer>, CustomerError> {
    store
        .customer(id)
        .await?
        .map(customer_from_record)
        .transpose()
}

/// Sets whether the customer refuses proactive messages (配信停止 / 配信再開). Returns true
/// when a customer row changed; false when the flag already had this value or no customer
/// has this id.
pub async fn set_opted_out(
    store: &Store,
    customer_id: &str,
    opted_out: bool,
) -> Result<bool, CustomerError> {
    let changed = store
        .set_customer_opted_out(customer_id, opted_out, Utc::now().timestamp_millis())
        .await?;
    Ok(changed == Some(true))
}

/// Which customers [`list_customers`] returns. Empty filter: everyone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerFilter {
    pub kind: Option<CustomerKind>,
    pub plan: Option<String>,
    /// Contracts ending on or before this date (and not missing).
    pub contract_end_until: Option<NaiveDate>,
    pub opted_out: Option<bool>,
    pub limit: Option<i64>,
}

/// Customers matching `filter`, ordered by id.
pub async fn list_customers(
    store: &Store,
    filter: &CustomerFilter,
) -> Result<Vec<Customer>, CustomerError> {
    let query = CustomerQuery {
        kind: filter.kind.map(CustomerKind::as_str),
        plan: filter.plan.as_deref(),
        contract_end_until: filter.contract_end_until.map(|d| d.to_string()),
        opted_out: filter.opted_out,
        limit: filter.limit,
    };
    store
        .customers(&query)
        .await?
        .into_iter()
        .map(customer_from_record)
        .collect()
}

/// Number of stored customers.
pub async fn count_customers(store: &Store) -> Result<i64, kizuna_store::StoreError> {
    store.count_customers().await
}

fn customer_from_record(r: CustomerRecord) -> Result<Customer, CustomerError> {
    let corrupt = |detail: String| CustomerError::Corrupt {
        id: r.id.clone(),
        detail,
    };
    let kind = CustomerKind::parse(&r.kind).ok_or_else(|| corrupt(format!("kind {:?}", r.kind)))?;
    let date = |column: &str, text: &Option<String>| -> Result<Option<NaiveDate>, CustomerError> {
        text.as_ref()
            .map(|t| parse_date(t).ok_or_else(|| corrupt(format!("{column} {t:?}"))))
            .transpose()
    };
    Ok(Customer {
        kind,
        contract_end: date("contract_end", &r.contract_end)?,
        customer_since: date("customer_since", &r.customer_since)?,
        last_login: date("last_login", &r.last_login)?,
        churned_at: date("churned_at", &r.churned_at)?,
        name: r.name,
        email: r.email,
        phone: r.phone,
        plan: r.plan,
        monthly_measurements: r.monthly_measurements,
        mrr_jpy: r.mrr_jpy,
        measurements_30d: r.measurements_30d,
        report_view_rate: r.report_view_rate,
        feature_adoption: r.feature_adoption,
        csat: r.csat,
        nps: r.nps,
        escalations_30d: r.escalations_30d,
        payment_overdue_days: r.payment_overdue_days,
        opted_out: r.opted_out,
        time_zone: r.time_zone,
        measurements_90d: r.measurements_90d,
        logins_30d: r.logins_30d,
        id: r.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "id,kind,name,email,plan,monthly_measurements,contract_end,csat,nps,report_view_rate,opted_out,extra";

    #[test]
    fn csv_rows_parse_with_unknown_columns_ignored() {
        let csv = format!(
            "{HEADER}\nB-1,b2b,\"株式会社サンプル管理, 本社\",a@example.jp,ビジネス30,30,2027-01-31,4.5,8,0.75,false,ignored\nC-1,b2c,山田 花子,,Standard,,,,,,TRUE,\n"
        );
        let customers = parse_customers(csv.as_bytes(), Format::Csv).unwrap();
        assert_eq!(customers.len(), 2);
        assert_eq!(customers[0].name, "株式会社サンプル管理, 本社");
        assert_eq!(customers[0].monthly_measurements, Some(30));
        assert_eq!(customers[0].contract_end, parse_date("2027-01-31"));
        assert_eq!(customers[0].csat, Some(4.5));
        assert!(!customers[0].opted_out);
        assert_eq!(customers[1].plan.as_deref(), Some("standard"));
        assert_eq!(customers[1].csat, None);
        assert!(customers[1].opted_out);
    }

    #[test]
    fn every_bad_value_is_reported_with_its_physical_line() {
        // The quoted name spans two physical lines, so the next record starts on line 4.
        let csv = format!(
            "{HEADER}\nB-1,b2b,x,,,,,,,,,\"two\nlines\"\nC-2,b2x,,not-an-email,gold,-1,2026-13-01,5.5,11,1.2,maybe,\n"
        );
        let errors = parse_customers(csv.as_bytes(), Format::Csv).unwrap_err();
        let at = |column: &str| {
            errors
                .iter()
                .find(|e| e.column.as_deref() == Some(column))
                .unwrap_or_else(|| panic!("no error for {column}: {errors:?}"))
        };
        for column in [
            "kind",
            "name",
            "email",
            "monthly_measurements",
            "contract_end",
            "csat",
            "nps",
            "report_view_rate",
            "opted_out",
        ] {
            assert_eq!(at(column).line, 4, "{column}");
        }
        assert!(errors.iter().all(|e| e.line == 4));
    }

    #[test]
    fn b2c_plans_are_checked_and_b2b_plans_are_free_text() {
        let csv = format!("{HEADER}\nC-1,b2c,山田,,gold,,,,,,,\nB-1,b2b,管理,,gold,,,,,,,\n");
        let errors = parse_customers(csv.as_bytes(), Format::Csv).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
        assert_eq!(errors[0].column.as_deref(), Some("plan"));
    }

    #[test]
    fn header_problems_short_rows_and_duplicates() {
        let missing = parse_customers(b"id,name\nC-1,x\n", Format::Csv).unwrap_err();
        assert_eq!(missing[0].line, 1);
        assert_eq!(missing[0].column.as_deref(), Some("kind"));

        let short = parse_customers(b"id,kind,name\nC-1,b2c\n", Format::Csv).unwrap_err();
        assert_eq!(short[0].line, 2);
        assert!(short[0].message.contains("2 fields"));

        let dup = parse_customers(
            b"id,kind,name\nC-1,b2c,a\nC-2,b2c,b\nC-1,b2c,c\n",
            Format::Csv,
        )
        .unwrap_err();
        assert_eq!(dup.len(), 1);
        assert_eq!(dup[0].line, 4);
        assert!(dup[0].message.contains("line 2"));

        let empty = parse_customers(b"id,kind,name\n", Format::Csv).unwrap_err();
        assert!(empty[0].message.contains("no customer rows"));
    }

    #[test]
    fn json_lines_use_line_numbers_and_accept_native_types() {
        let body = "{\"id\":\"B-1\",\"kind\":\"b2b\",\"name\":\"管理\",\"monthly_measurements\":20,\"csat\":null,\"opted_out\":true}\n\n{\"id\":\"C-1\",\"kind\":\"b2c\",\"name\":\"x\",\"nps\":\"7\"}\n";
        let customers = parse_customers(body.as_bytes(), Format::JsonLines).unwrap();
        assert_eq!(customers[0].monthly_measurements, Some(20));
        assert!(customers[0].opted_out);
        assert_eq!(customers[1].nps, Some(7.0));

        let bad = "{\"id\":\"B-1\",\"kind\":\"b2b\",\"name\":\"x\"}\n\n[1]\n{\"id\":\"C-1\",\"kind\":\"b2c\",\"name\":\"x\",\"csat\":0}\n{oops\n";
        let errors = parse_customers(bad.as_bytes(), Format::JsonLines).unwrap_err();
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert_eq!(errors[1].column.as_deref(), Some("csat"));
    }

    #[test]
    fn formats_by_extension_and_content() {
        assert_eq!(
            Format::from_path(Path::new("a/customers.CSV")),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_path(Path::new("c.ndjson")),
            Some(Format::JsonLines)
        );
        assert_eq!(Format::from_path(Path::new("c.txt")), None);
        assert_eq!(Format::sniff(b"  \n{\"id\":1}"), Format::JsonLines);
        assert_eq!(Format::sniff(b"\xEF\xBB\xBFid,kind"), Format::Csv);
        assert_eq!(
            Format::detect(Path::new("x.data"), b"{}"),
            Format::JsonLines
        );
    }

    #[test]
    fn dates_are_strict() {
        assert!(parse_date("2026-11-21").is_some());
        assert!(parse_date("2026-1-21").is_none());
        assert!(parse_date("2026-02-30").is_none());
        assert!(parse_date("2026/11/21").is_none());
    }

    #[test]
    fn time_zones_are_iana_names_or_offsets() {
        for zone in [
            "Asia/Tokyo",
            "America/Los_Angeles",
            "Europe/London",
            "UTC",
            "+09:00",
            "-08:00",
        ] {
            assert!(is_time_zone(zone), "{zone}");
        }
        for zone in ["", "Tokyo", "asia/tokyo", "Mars/Olympus", "+25:00", "9"] {
            assert!(!is_time_zone(zone), "{zone}");
        }
    }

    #[test]
    fn bom_is_stripped() {
        let csv = "\u{FEFF}id,kind,name\nC-1,b2c,x\n";
        assert_eq!(
            parse_customers(csv.as_bytes(), Format::Csv).unwrap()[0].id,
            "C-1"
        );
    }
}
