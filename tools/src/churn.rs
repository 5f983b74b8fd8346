//! Churn on the store's customers: features from the CRM table and the conversation history,
//! training on the customers with a known outcome (`churned_at` set or still a customer),
//! models versioned in the database with their metrics, and predictions with the top risk
//! factors (TreeSHAP contributions) and the seed's retention plan.
//!
//! The model covers B2B accounts (companies with contracts). It predicts leaving within the
//! next [`HORIZON_DAYS`]: a churned customer's features are taken as of that many days before
//! the day it left, so nothing from the last month (or after leaving) leaks into training.

use chrono::{Datelike, NaiveDate, NaiveTime, Utc};
use kizuna_churn::{
    cross_validate, retention_plan, top_factors, ChurnModel, CvReport, Dataset, Factor, Params,
    RetentionAction, RiskLevel,
};
use kizuna_store::{ChurnModelRecord, Store};
use serde::Serialize;

use crate::crm::{list_customers, Customer, CustomerError, CustomerFilter, CustomerKind};

/// How far ahead the model looks: "will this account leave within a month?"
pub const HORIZON_DAYS: i64 = 30;

/// The features, in model order (the seed's names where it has one).
pub const FEATURES: [&str; 14] = [
    "monthly_usage_rate",
    "usage_trend_3m",
    "days_since_last_use",
    "login_frequency_30d",
    "report_view_rate",
    "feature_adoption",
    "support_ticket_count",
    "escalation_count",
    "nps_score",
    "csat_score",
    "negative_feedback_count",
    "payment_delay_days",
    "contract_length_months",
    "days_until_renewal",
];

/// A feature's name for a Japanese reply.
pub fn feature_label_ja(feature: &str) -> &'static str {
    match feature {
        "monthly_usage_rate" => "月間利用率",
        "usage_trend_3m" => "3ヶ月の利用トレンド",
        "days_since_last_use" => "最終利用からの日数",
        "login_frequency_30d" => "30日間のログイン回数",
        "report_view_rate" => "レポート閲覧率",
        "feature_adoption" => "機能活用度",
        "support_ticket_count" => "問い合わせ件数(90日)",
        "escalation_count" => "エスカレーション件数(30日)",
        "nps_score" => "NPS",
        "csat_score" => "CSAT",
        "negative_feedback_count" => "否定的なメッセージ数(90日)",
        "payment_delay_days" => "支払い遅延日数",
        "contract_length_months" => "契約期間(月)",
        "days_until_renewal" => "更新までの日数",
        _ => "その他",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChurnError {
    #[error(transparent)]
    Customers(#[from] CustomerError),
    #[error(transparent)]
    Database(#[from] kizuna_store::StoreError),
    #[error(transparent)]
    Model(#[from] kizuna_churn::ModelError),
    #[error("stored churn model {0} is unreadable: {1}")]
    Corrupt(i64, String),
    #[error("not enough labelled accounts to train: {churned} churned and {retained} current B2B accounts (at least {needed} of each)")]
    TooFewLabels {
        churned: usize,
        retained: usize,
        needed: usize,
    },
    #[error("no churn model yet: train one with `kizuna churn train`")]
    NoModel,
}

/// What the store knows about an account's conversations in a window before `as_of`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct History {
    /// Conversations started in the last 90 days.
    pub tickets_90d: i64,
    /// Escalations to a person in the last 30 days.
    pub escalations_30d: i64,
    /// Customer messages the sentiment model read as anger or anxiety, last 90 days.
    pub negative_messages_90d: i64,
}

fn end_of_day_ms(day: NaiveDate) -> i64 {
    day.and_time(NaiveTime::MIN).and_utc().timestamp_millis() + 86_400_000
}

/// The account's conversation history up to the end of `as_of`.
pub async fn history(
    store: &Store,
    customer_id: &str,
    as_of: NaiveDate,
) -> Result<History, kizuna_store::StoreError> {
    let until = end_of_day_ms(as_of);
    let since_90 = until - 90 * 86_400_000;
    let since_30 = until - 30 * 86_400_000;
    let activity = store
        .customer_activity(customer_id, (since_90, until), since_30)
        .await?;
    let tickets = activity.conversations;
    let escalations = activity.escalations;
    let negative = activity
        .user_message_metadata
        .iter()
        .flatten()
        .filter(|m| is_negative(m))
        .count() as i64;
    Ok(History {
        tickets_90d: tickets,
        escalations_30d: escalations,
        negative_messages_90d: negative,
    })
}

/// Whether a message's metadata holds a negative sentiment reading (anger or anxiety).
fn is_negative(metadata: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(metadata)
        .ok()
        .and_then(|v| v["sentiment"]["label"].as_str().map(str::to_string))
        .is_some_and(|l| l == "anger" || l == "anxious")
}

fn months_between(from: NaiveDate, to: NaiveDate) -> f64 {
    let months = (to.year() - from.year()) * 12 + to.month() as i32 - from.month() as i32;
    let adjust = if to.day() < from.day() { 1 } else { 0 };
    f64::from((months - adjust).max(0))
}

/// The account's features as of `as_of`, in [`FEATURES`] order; `NaN` where the CRM has no
/// value (the trees route missing values on their own).
pub fn features(c: &Customer, h: &History, as_of: NaiveDate) -> Vec<f64> {
    features_at(c, h, as_of, as_of)
}

/// Features where the CRM row is a snapshot taken on `snapshot` (a churned account's last
/// state, on the day it left) and the calendar features (`contract_length_months`,
/// `days_until_renewal`) are taken as of `as_of`. `days_since_last_use` is relative to the
/// snapshot, as the CRM's other usage figures are.
pub fn features_at(c: &Customer, h: &History, snapshot: NaiveDate, as_of: NaiveDate) -> Vec<f64> {
    let opt = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let usage_rate = match (c.measurements_30d, c.monthly_measurements) {
        (Some(used), Some(contract)) if contract > 0 => used as f64 / contract as f64,
        _ => f64::NAN,
    };
    let trend = match (c.measurements_30d, c.measurements_90d) {
        (Some(m30), Some(m90)) if m90 > 0 => {
            let monthly = m90 as f64 / 3.0;
            (m30 as f64 - monthly) / monthly
        }
        (Some(m30), Some(0)) => {
            if m30 > 0 {
                1.0
            } else {
                0.0
            }
        }
        _ => f64::NAN,
    };
    let escalations = c.escalations_30d.unwrap_or(0).max(h.escalations_30d);
    vec![
        usage_rate,
        trend,
        opt(c
            .last_login
            .map(|d| (snapshot - d).num_days().max(0) as f64)),
        opt(c.logins_30d.map(|v| v as f64)),
        opt(c.report_view_rate),
        opt(c.feature_adoption),
        h.tickets_90d as f64,
        escalations as f64,
        opt(c.nps),
        opt(c.csat),
        h.negative_messages_90d as f64,
        opt(c.payment_overdue_days.map(|v| v as f64)),
        opt(c.customer_since.map(|d| months_between(d, as_of))),
        opt(c.contract_end.map(|d| (d - as_of).num_days() as f64)),
    ]
}

/// Metrics stored with a model.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelMetrics {
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub calibration_error: f64,
    pub folds: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub version: i64,
    pub as_of: NaiveDate,
    pub rows: usize,
    pub churned: usize,
    pub metrics: ModelMetrics,
    #[serde(skip)]
    pub cv: CvReport,
}

/// Builds the labelled B2B set: every account with `churned_at` (label 1, features as of
/// [`HORIZON_DAYS`] before that day) and every current account (label 0, features as of
/// `as_of`).
pub async fn training_set(store: &Store, as_of: NaiveDate) -> Result<Dataset, ChurnError> {
    let customers = list_customers(store, &CustomerFilter::default()).await?;
    let mut columns = vec![Vec::new(); FEATURES.len()];
    let mut labels = Vec::new();
    let mut ids = Vec::new();
    for c in customers.iter().filter(|c| c.kind == CustomerKind::B2b) {
        let day = c
            .churned_at
            .map_or(as_of, |d| d - chrono::Duration::days(HORIZON_DAYS));
        let h = history(store, &c.id, day).await?;
        let snapshot = c.churned_at.unwrap_or(as_of);
        for (col, v) in columns.iter_mut().zip(features_at(c, &h, snapshot, day)) {
            col.push(v);
        }
        labels.push(if c.churned_at.is_some() { 1.0 } else { 0.0 });
        ids.push(c.id.clone());
    }
    Ok(Dataset {
        feature_names: FEATURES.iter().map(|s| s.to_string()).collect(),
        columns,
        labels,
        ids: Some(ids),
        encoder: Default::default(),
    })
}

/// Trains on the labelled accounts, scores it by stratified k-fold and stores the model
/// trained on all of them as the next version.
pub async fn train(
    store: &Store,
    as_of: NaiveDate,
    folds: usize,
    seed: u64,
) -> Result<TrainReport, ChurnError> {
    let ds = training_set(store, as_of).await?;
    let churned = ds.positives();
    let retained = ds.rows() - churned;
    let needed = folds.max(2);
    if churned < needed || retained < needed {
        return Err(ChurnError::TooFewLabels {
            churned,
            retained,
            needed,
        });
    }
    let params = Params::default();
    let cv = cross_validate(&ds, folds, seed, &params)?;
    let all: Vec<usize> = (0..ds.rows()).collect();
    let model = ChurnModel::fit(
        ds.feature_names.clone(),
        &ds.column_major(&all),
        &ds.labels,
        &params,
    )?;
    let metrics = ModelMetrics {
        roc_auc: cv.roc_auc,
        pr_auc: cv.pr_auc,
        calibration_error: cv.calibration_error,
        folds,
        seed,
    };
    let version = save_model(store, &model, &metrics, as_of, ds.rows(), churned).await?;
    Ok(TrainReport {
        version,
        as_of,
        rows: ds.rows(),
        churned,
        metrics,
        cv,
    })
}

async fn save_model(
    store: &Store,
    model: &ChurnModel,
    metrics: &ModelMetrics,
    as_of: NaiveDate,
    rows: usize,
    positives: usize,
) -> Result<i64, ChurnError> {
    Ok(store
        .save_churn_model(
            &as_of.to_string(),
            rows as i64,
            positives as i64,
            &serde_json::to_string(metrics).unwrap_or_default(),
            &model.to_json()?,
            Utc::now().timestamp_millis(),
        )
        .await?)
}

/// A stored model and what it was measured at.
pub struct StoredModel {
    pub version: i64,
    pub as_of: NaiveDate,
    pub metrics: ModelMetrics,
    pub model: ChurnModel,
}

/// The newest stored model, if any.
pub async fn latest_model(store: &Store) -> Result<Option<StoredModel>, ChurnError> {
    let Some(ChurnModelRecord {
        version,
        as_of,
        metrics,
        model,
    }) = store.latest_churn_model().await?
    else {
        return Ok(None);
    };
    let corrupt = |e: String| ChurnError::Corrupt(version, e);
    Ok(Some(StoredModel {
        version,
        as_of: crate::crm::parse_date(&as_of).ok_or_else(|| corrupt(format!("as_of {as_of:?}")))?,
        metrics: serde_json::from_str(&metrics).map_err(|e| corrupt(e.to_string()))?,
        model: ChurnModel::from_json(&model).map_err(|e| corrupt(e.to_string()))?,
    }))
}

/// The starter model (version 0) for a store that has not trained its own: trained once per
/// process on the bundled demo history (demo/customers.csv and demo/past_customers.csv, 75
/// B2B accounts, 15 of them churned, as of 2026-11-21; no conversation history). It gives a
/// manager a ranked answer from day one; `kizuna churn train` replaces it with the store's own.
pub fn starter_model() -> Option<&'static StoredModel> {
    static STARTER: std::sync::OnceLock<Option<StoredModel>> = std::sync::OnceLock::new();
    STARTER
        .get_or_init(|| {
            let as_of = NaiveDate::from_ymd_opt(2026, 11, 21)?;
            let mut customers = crate::crm::parse_customers(
                include_bytes!("../../demo/customers.csv"),
                crate::crm::Format::Csv,
            )
            .ok()?;
            customers.extend(
                crate::crm::parse_customers(
                    include_bytes!("../../demo/past_customers.csv"),
                    crate::crm::Format::Csv,
                )
                .ok()?,
            );
            let mut columns = vec![Vec::new(); FEATURES.len()];
            let mut labels = Vec::new();
            for c in customers.iter().filter(|c| c.kind == CustomerKind::B2b) {
                let day = c
                    .churned_at
                    .map_or(as_of, |d| d - chrono::Duration::days(HORIZON_DAYS));
                let snapshot = c.churned_at.unwrap_or(as_of);
                let row = features_at(c, &History::default(), snapshot, day);
                for (col, v) in columns.iter_mut().zip(row) {
                    col.push(v);
                }
                labels.push(if c.churned_at.is_some() { 1.0 } else { 0.0 });
            }
            let ds = Dataset {
                feature_names: FEATURES.iter().map(|s| s.to_string()).collect(),
                columns,
                labels,
                ids: None,
                encoder: Default::default(),
            };
            let params = Params {
                parallel: false,
                ..Params::default()
            };
            let cv = cross_validate(&ds, 5, 42, &params).ok()?;
            let all: Vec<usize> = (0..ds.rows()).collect();
            let model = ChurnModel::fit(
                ds.feature_names.clone(),
                &ds.column_major(&all),
                &ds.labels,
                &params,
            )
            .ok()?;
            Some(StoredModel {
                version: 0,
                as_of,
                metrics: ModelMetrics {
                    roc_auc: cv.roc_auc,
                    pr_auc: cv.pr_auc,
                    calibration_error: cv.calibration_error,
                    folds: 5,
                    seed: 42,
                },
                model,
            })
        })
        .as_ref()
}

/// One account's churn prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub customer_id: String,
    pub name: String,
    pub probability: f64,
    pub risk_level: RiskLevel,
    /// Up to three features that raise this account's risk most.
    pub top_risk_factors: Vec<Factor>,
    pub recommended_actions: Vec<RetentionAction>,
    pub model_version: i64,
}

/// Predicts one account as of `as_of`.
pub async fn predict(
    store: &Store,
    stored: &StoredModel,
    c: &Customer,
    as_of: NaiveDate,
) -> Result<Prediction, ChurnError> {
    let h = history(store, &c.id, as_of).await?;
    let row = features(c, &h, as_of);
    let probability = stored.model.probability(&row)?;
    let contributions = stored.model.contributions(&row)?;
    let level = RiskLevel::from_probability(probability);
    let factors = top_factors(&stored.model.feature_names, &row, &contributions, 3);
    Ok(Prediction {
        customer_id: c.id.clone(),
        name: c.name.clone(),
        probability,
        risk_level: level,
        recommended_actions: retention_plan(level, &factors),
        top_risk_factors: factors,
        model_version: stored.version,
    })
}

/// Every current B2B account (not churned), most likely to leave first.
pub async fn predict_all(
    store: &Store,
    stored: &StoredModel,
    as_of: NaiveDate,
) -> Result<Vec<Prediction>, ChurnError> {
    let customers = list_customers(store, &CustomerFilter::default()).await?;
    let mut out = Vec::new();
    for c in customers
        .iter()
        .filter(|c| c.kind == CustomerKind::B2b && c.churned_at.is_none())
    {
        out.push(predict(store, stored, c, as_of).await?);
    }
    out.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn features_from_the_crm_fields_and_history() {
        let mut c = Customer::new("B-1", CustomerKind::B2b, "テスト管理");
        c.monthly_measurements = Some(20);
        c.measurements_30d = Some(5);
        c.measurements_90d = Some(45);
        c.last_login = Some(day("2026-11-01"));
        c.logins_30d = Some(3);
        c.report_view_rate = Some(0.4);
        c.nps = Some(5.0);
        c.escalations_30d = Some(1);
        c.payment_overdue_days = Some(14);
        c.customer_since = Some(day("2025-05-30"));
        c.contract_end = Some(day("2027-01-31"));
        let h = History {
            tickets_90d: 4,
            escalations_30d: 2,
            negative_messages_90d: 3,
        };
        let f = features(&c, &h, day("2026-11-21"));
        assert_eq!(f.len(), FEATURES.len());
        let get = |name: &str| f[FEATURES.iter().position(|n| *n == name).unwrap()];
        assert_eq!(get("monthly_usage_rate"), 0.25);
        assert!((get("usage_trend_3m") - (5.0 - 15.0) / 15.0).abs() < 1e-12);
        assert_eq!(get("days_since_last_use"), 20.0);
        assert_eq!(get("login_frequency_30d"), 3.0);
        assert_eq!(get("support_ticket_count"), 4.0);
        assert_eq!(
            get("escalation_count"),
            2.0,
            "the larger of CRM and store counts"
        );
        assert_eq!(get("negative_feedback_count"), 3.0);
        assert_eq!(get("payment_delay_days"), 14.0);
        assert_eq!(get("contract_length_months"), 17.0);
        assert_eq!(get("days_until_renewal"), 71.0);
        assert!(get("csat_score").is_nan(), "no survey is missing, not zero");
        assert!(get("feature_adoption").is_nan());
    }

    #[test]
    fn a_churned_snapshot_keeps_its_usage_figures_and_moves_the_calendar() {
        let mut c = Customer::new("B-3", CustomerKind::B2b, "x");
        c.last_login = Some(day("2026-06-20"));
        c.contract_end = Some(day("2026-07-05"));
        c.churned_at = Some(day("2026-07-01"));
        let f = features_at(
            &c,
            &History::default(),
            day("2026-07-01"),
            day("2026-06-01"),
        );
        assert_eq!(f[2], 11.0, "days since last use, at the snapshot");
        assert_eq!(f[13], 34.0, "days until renewal, a month before leaving");
    }

    #[test]
    fn missing_usage_fields_are_missing_features() {
        let c = Customer::new("B-2", CustomerKind::B2b, "x");
        let f = features(&c, &History::default(), day("2026-11-21"));
        assert!(f[0].is_nan() && f[1].is_nan() && f[2].is_nan());
        assert_eq!(f[6], 0.0);
    }

    #[test]
    fn negative_messages_are_anger_or_anxiety_readings() {
        assert!(is_negative(
            r#"{"sentiment":{"label":"anger","score":0.9}}"#
        ));
        assert!(is_negative(
            r#"{"sentiment":{"label":"anxious","score":0.6}}"#
        ));
        assert!(!is_negative(
            r#"{"sentiment":{"label":"neutral","score":0.9}}"#
        ));
        assert!(!is_negative(r#"{"sentiment":null}"#));
        assert!(!is_negative("not json"));
    }
}

/// `predict_churn` (managers): accounts by churn probability with filters, or one account
/// with its top 3 factors and the retention plan.
pub struct PredictChurn {
    store: Store,
}

impl PredictChurn {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct PredictArgs {
    customer_id: Option<String>,
    min_risk: Option<String>,
    min_probability: Option<f64>,
    renewal_within_days: Option<i64>,
    limit: Option<i64>,
}

fn factor_text(f: &Factor) -> String {
    let label = feature_label_ja(&f.feature);
    match f.value {
        Some(v) if f.feature.ends_with("_rate") || f.feature == "feature_adoption" => {
            format!("{label} {}%", (v * 100.0).round() as i64)
        }
        Some(v) if f.feature == "usage_trend_3m" => {
            format!("{label} {:+}%", (v * 100.0).round() as i64)
        }
        Some(v) => format!("{label} {}", (v * 10.0).round() / 10.0),
        None => format!("{label} 記録なし"),
    }
}

fn prediction_json(p: &Prediction) -> serde_json::Value {
    serde_json::json!({
        "customer_id": p.customer_id,
        "name": p.name,
        "churn_probability": (p.probability * 1000.0).round() / 1000.0,
        "risk_level": p.risk_level,
        "top_risk_factors": p.top_risk_factors.iter().map(|f| serde_json::json!({
            "feature": f.feature,
            "label": feature_label_ja(&f.feature),
            "value": f.value,
            "contribution": f.contribution,
        })).collect::<Vec<_>>(),
        "recommended_actions": p.recommended_actions,
        "model_version": p.model_version,
    })
}

fn percent(p: f64) -> String {
    format!("{}%", (p * 100.0).round() as i64)
}

#[async_trait::async_trait]
impl kizuna_agent::tool::Tool for PredictChurn {
    fn name(&self) -> &str {
        "predict_churn"
    }

    fn description(&self) -> &str {
        "管理者向け: 解約予測モデルで法人アカウントの解約確率・リスクレベル・主な要因（上位3つ）とリテンション施策を出す。customer_id を指定するとその1社、省略すると確率の高い順の一覧"
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "customer_id": {"type": "string", "description": "one account; omit for the list"},
                "min_risk": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
                "min_probability": {"type": "number", "description": "only accounts at or above this probability (0..1)"},
                "renewal_within_days": {"type": "integer", "description": "only contracts ending within this many days"},
                "limit": {"type": "integer", "description": "at most this many accounts (default 5, max 50)"}
            }
        })
    }

    fn risk(&self) -> kizuna_agent::tool::RiskClass {
        kizuna_agent::tool::RiskClass::Read
    }

    async fn call(
        &self,
        ctx: &kizuna_agent::tool::ToolContext,
        args: serde_json::Value,
    ) -> Result<kizuna_agent::tool::ToolOutput, kizuna_agent::tool::ToolError> {
        use kizuna_agent::tool::{ToolError, ToolOutput};
        crate::access::require_manager(ctx)?;
        let args: PredictArgs =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let min_risk = match args.min_risk.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(RiskLevel::parse(s).ok_or_else(|| {
                ToolError::InvalidArguments(format!(
                    "min_risk {s:?} must be low, medium, high or critical"
                ))
            })?),
        };
        let failed = |e: ChurnError| ToolError::Failed(e.to_string());
        let date = crate::accounts::as_of(ctx);
        let own = latest_model(&self.store).await.map_err(failed)?;
        let stored = match own.as_ref() {
            Some(m) => Some(m),
            None => starter_model(),
        };
        let Some(stored) = stored else {
            return Ok(ToolOutput {
                data: serde_json::json!({"as_of": date.to_string(), "model": null, "accounts": []}),
                display: "解約予測モデルがまだ学習されていません（`kizuna churn train` で学習できます）。".into(),
                must_quote: vec![],
                effects: Vec::new(),
            });
        };
        let model_note = if stored.version == 0 {
            format!(
                "（解約予測: デモ履歴で学習した初期モデル、交差検証 ROC-AUC {:.2}。`kizuna churn train` で自社データのモデルに置き換えられます）",
                stored.metrics.roc_auc
            )
        } else {
            format!(
                "（解約予測モデル v{}、交差検証 ROC-AUC {:.2}）",
                stored.version, stored.metrics.roc_auc
            )
        };
        if let Some(id) = args
            .customer_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let c = crate::crm::get_customer(&self.store, id)
                .await
                .map_err(|e| ToolError::Failed(e.to_string()))?
                .ok_or_else(|| ToolError::NotFound(format!("顧客 {id} が見つかりません。")))?;
            let p = predict(&self.store, stored, &c, date)
                .await
                .map_err(failed)?;
            let factors: Vec<String> = p.top_risk_factors.iter().map(factor_text).collect();
            let actions: Vec<String> = p
                .recommended_actions
                .iter()
                .map(|a| {
                    format!(
                        "{}（{}、{}）",
                        a.description,
                        a.owner,
                        kizuna_churn::risk::deadline_ja(&a.deadline)
                    )
                })
                .collect();
            let display = format!(
                "{} {} の解約確率は {}（リスク: {}）{model_note}\n主な要因: {}\n推奨施策: {}",
                p.customer_id,
                p.name,
                percent(p.probability),
                p.risk_level.label_ja(),
                if factors.is_empty() {
                    "目立ったリスク要因なし".to_string()
                } else {
                    factors.join("／")
                },
                if actions.is_empty() {
                    "定期フォローを継続".to_string()
                } else {
                    actions.join("／")
                },
            );
            return Ok(ToolOutput {
                data: serde_json::json!({"as_of": date.to_string(), "account": prediction_json(&p)}),
                display,
                must_quote: vec![p.customer_id.clone()],
                effects: Vec::new(),
            });
        }
        let mut all = predict_all(&self.store, stored, date)
            .await
            .map_err(failed)?;
        let customers = list_customers(&self.store, &CustomerFilter::default())
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        all.retain(|p| {
            min_risk.is_none_or(|m| p.risk_level >= m)
                && args.min_probability.is_none_or(|m| p.probability >= m)
                && args.renewal_within_days.is_none_or(|w| {
                    customers
                        .iter()
                        .find(|c| c.id == p.customer_id)
                        .and_then(|c| c.contract_end)
                        .is_some_and(|end| (0..=w).contains(&(end - date).num_days()))
                })
        });
        all.truncate(args.limit.unwrap_or(5).clamp(1, 50) as usize);
        let mut display = format!(
            "{}時点の解約確率が高い順（{}件）{model_note}:",
            crate::accounts::long_date(date),
            all.len()
        );
        for (n, p) in all.iter().enumerate() {
            let factors: Vec<String> = p.top_risk_factors.iter().map(factor_text).collect();
            display.push_str(&format!(
                "\n{}. {} {} — 解約確率 {}（{}）\n   要因: {}",
                n + 1,
                p.customer_id,
                p.name,
                percent(p.probability),
                p.risk_level.label_ja(),
                if factors.is_empty() {
                    "目立ったリスク要因なし".to_string()
                } else {
                    factors.join("／")
                }
            ));
        }
        Ok(ToolOutput {
            data: serde_json::json!({
                "as_of": date.to_string(),
                "model": {"version": stored.version, "metrics": stored.metrics},
                "accounts": all.iter().map(prediction_json).collect::<Vec<_>>(),
            }),
            display,
            must_quote: all.iter().map(|p| p.customer_id.clone()).collect(),
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use kizuna_agent::identity::Identity;
    use kizuna_agent::tool::{Tool, ToolContext, ToolError};

    fn ctx(identity: Identity) -> ToolContext {
        ToolContext {
            identity,
            conversation_id: "c".into(),
            now: chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00+09:00").unwrap(),
        }
    }

    async fn demo_store(dir: &std::path::Path) -> Store {
        let store = Store::connect(&format!("sqlite://{}?mode=rwc", dir.join("c.db").display()))
            .await
            .unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["demo/customers.csv", "demo/past_customers.csv"] {
            let bytes = std::fs::read(root.join(file)).unwrap();
            crate::crm::import_customers(&store, &bytes, crate::crm::Format::Csv)
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn train_store_versions_and_predict_on_the_demo_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = demo_store(dir.path()).await;
        let c = crate::crm::get_customer(&store, "B-2901")
            .await
            .unwrap()
            .unwrap();
        assert!(c.churned_at.is_some(), "churned_at imports");
        let as_of = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let first = train(&store, as_of, 5, 42).await.unwrap();
        assert_eq!((first.version, first.rows, first.churned), (1, 75, 15));
        assert!(first.metrics.roc_auc > 0.7, "{:?}", first.metrics);
        let second = train(&store, as_of, 5, 7).await.unwrap();
        assert_eq!(second.version, 2);
        let stored = latest_model(&store).await.unwrap().unwrap();
        assert_eq!((stored.version, stored.metrics.seed), (2, 7));
        let all = predict_all(&store, &stored, as_of).await.unwrap();
        assert_eq!(all.len(), 60, "current B2B accounts only");
        assert!(all.windows(2).all(|w| w[0].probability >= w[1].probability));
        assert!(all.iter().all(|p| !p.customer_id.starts_with("B-29")));
        assert!(all.iter().all(|p| p.top_risk_factors.len() <= 3));

        // The tool: managers get the list and one account; customers and visitors never.
        let tool = PredictChurn::new(store.clone());
        let out = tool
            .call(
                &ctx(Identity::manager("M-1")),
                serde_json::json!({"limit": 3}),
            )
            .await
            .unwrap();
        assert_eq!(out.data["accounts"].as_array().unwrap().len(), 3);
        assert!(out.display.contains("解約確率"), "{}", out.display);
        let one = tool
            .call(
                &ctx(Identity::manager("M-1")),
                serde_json::json!({"customer_id": "B-2002"}),
            )
            .await
            .unwrap();
        assert_eq!(one.data["account"]["customer_id"], "B-2002");
        assert!(one.display.contains("主な要因"));
        for who in [
            Identity::customer("B-2002"),
            Identity::customer("C-1001"),
            Identity::anonymous("v"),
        ] {
            for args in [
                serde_json::json!({}),
                serde_json::json!({"customer_id": "B-2002"}),
            ] {
                let err = tool.call(&ctx(who.clone()), args).await.unwrap_err();
                assert!(matches!(err, ToolError::Forbidden(_)), "{err:?}");
                assert!(!err.to_string().contains("B-2002"));
            }
        }
        // Churned accounts are not at risk by health score either.
        let at_risk = crate::accounts::at_risk_accounts(&store, as_of, &Default::default())
            .await
            .unwrap();
        assert!(at_risk.iter().all(|a| a.customer.churned_at.is_none()));
    }

    #[tokio::test]
    async fn old_files_without_the_new_columns_still_import_and_untrained_stores_use_the_starter_model(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("c.db").display()
        ))
        .await
        .unwrap();
        let csv = "id,kind,name\nB-1,b2b,テスト管理\n";
        crate::crm::import_customers(&store, csv.as_bytes(), crate::crm::Format::Csv)
            .await
            .unwrap();
        let c = crate::crm::get_customer(&store, "B-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.churned_at, c.measurements_90d, c.logins_30d),
            (None, None, None)
        );
        let out = PredictChurn::new(store.clone())
            .call(&ctx(Identity::manager("M-1")), serde_json::json!({}))
            .await
            .unwrap();
        assert!(out.display.contains("初期モデル"), "{}", out.display);
        assert_eq!(out.data["accounts"][0]["customer_id"], "B-1");
        assert_eq!(out.data["accounts"][0]["model_version"], 0);
        let starter = starter_model().unwrap();
        assert!(starter.metrics.roc_auc > 0.7, "{:?}", starter.metrics);
        let as_of = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        assert!(matches!(
            train(&store, as_of, 5, 1).await,
            Err(ChurnError::TooFewLabels { .. })
        ));
    }
}
