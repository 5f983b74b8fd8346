//! `lookup_health` and `list_at_risk_accounts`: the health score of one account, and the
//! red/yellow accounts a manager should act on first.

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use kizuna_agent::clock::jst;
use kizuna_agent::identity::Role;
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use kizuna_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access;
use crate::crm::{get_customer, list_customers, Customer, CustomerFilter, CustomerKind};
use crate::health::{
    format_points, health_score, ActionKind, Component, HealthReport, HealthStatus, Severity,
};

/// The business date (JST) of a tool call: the as-of date of every score.
pub(crate) fn as_of(ctx: &ToolContext) -> NaiveDate {
    ctx.now.with_timezone(&jst()).date_naive()
}

/// `2026年11月21日`.
pub(crate) fn long_date(date: NaiveDate) -> String {
    format!("{}年{}月{}日", date.year(), date.month(), date.day())
}

fn percent(rate: f64) -> String {
    format!("{}%", (rate * 100.0).round() as i64)
}

/// One line explaining a component's points from the inputs.
pub fn component_reason(component: Component, report: &HealthReport) -> String {
    let i = &report.inputs;
    let b = &report.breakdown;
    let facts = match component {
        Component::Usage => match (i.usage_rate, i.monthly_measurements) {
            (Some(rate), Some(quota)) => format!(
                "利用率 {}（直近30日 {}件／契約 月{}件）",
                percent(rate),
                i.measurements_30d,
                quota
            ),
            _ => format!(
                "直近30日の測定 {}件（契約件数の登録なし）",
                i.measurements_30d
            ),
        },
        Component::Engagement => {
            let login = match i.days_since_login {
                Some(d) => format!("最終ログイン {d}日前"),
                None => "ログイン記録なし".to_string(),
            };
            format!(
                "{login}、レポート閲覧率 {}、機能利用率 {}",
                percent(i.report_view_rate),
                percent(i.feature_adoption)
            )
        }
        Component::Support => {
            let csat = match i.csat {
                Some(c) => format!("CSAT {}", format_points(c)),
                None => "CSAT 未回答".to_string(),
            };
            format!("{csat}、直近30日のエスカレーション {}件", i.escalations_30d)
        }
        Component::Payment => match i.payment_overdue_days {
            0 => "支払い遅延なし".to_string(),
            d => format!("支払い遅延 {d}日"),
        },
    };
    format!(
        "{} {}/{}点（{facts}）",
        component.label_ja(),
        format_points(component.points(b)),
        format_points(component.max())
    )
}

/// `lookup_health`: customers see their own account's score; managers any account's, with
/// the recommended actions. B2C accounts answer "not applicable" (see [`crate::health`]).
pub struct LookupHealth {
    store: Store,
}

impl LookupHealth {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[derive(Debug, Default, Deserialize)]
struct LookupArgs {
    customer_id: Option<String>,
}

pub(crate) async fn load_customer(store: &Store, id: &str) -> Result<Customer, ToolError> {
    get_customer(store, id)
        .await
        .map_err(|e| ToolError::Failed(e.to_string()))?
        .ok_or_else(|| ToolError::NotFound(format!("顧客 {id} の登録が見つかりません")))
}

#[async_trait]
impl Tool for LookupHealth {
    fn name(&self) -> &str {
        "lookup_health"
    }

    fn description(&self) -> &str {
        "法人（管理会社）アカウントのヘルススコア（0〜100点、利用・エンゲージメント・サポート・支払いの内訳と推奨アクション）を調べる"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "customer_id": {"type": "string", "description": "managers: the account to look up; customers always get their own account"}
            }
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    fn audience(&self) -> Audience {
        Audience::Managers
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let args: LookupArgs =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let id = access::target_customer(ctx, args.customer_id.as_deref())?;
        let customer = load_customer(&self.store, &id).await?;
        let date = as_of(ctx);
        let report = match health_score(&customer, date) {
            Ok(report) => report,
            Err(_) => {
                return Ok(ToolOutput {
                    data: json!({
                        "customer_id": customer.id,
                        "kind": customer.kind,
                        "applicable": false,
                        "reason": "the health score is defined for b2b accounts only",
                    }),
                    display: "ヘルススコアは法人（管理会社）契約のご利用状況を測る指標のため、個人のお客様のアカウントには算出していません。".into(),
                    must_quote: vec![],
                    effects: Vec::new(),
                })
            }
        };
        let manager = ctx.identity.role == Role::Manager;
        let score = format!("{}点", format_points(report.total));
        // Staff look accounts up by name as often as by id: say which account this is.
        let who = if manager {
            format!("{}（{}）", customer.name, customer.id)
        } else {
            customer.name.clone()
        };
        let mut display = format!(
            "{who}様のヘルススコアは{score}（{}）です（{}時点）。",
            report.status.label_ja(),
            long_date(date)
        );
        for component in [
            Component::Usage,
            Component::Engagement,
            Component::Support,
            Component::Payment,
        ] {
            display.push_str(&format!("\n・{}", component_reason(component, &report)));
        }
        if manager && !report.recommendations.is_empty() {
            display.push_str("\n推奨アクション:");
            for r in &report.recommendations {
                let who = match r.kind {
                    ActionKind::Automated => "自動",
                    ActionKind::Human => "担当者",
                };
                let urgency = match r.severity {
                    Severity::Critical => "・緊急",
                    Severity::High => "",
                };
                display.push_str(&format!("\n・[{who}{urgency}] {}", r.text));
            }
        }
        let mut data = json!({
            "customer_id": customer.id,
            "name": customer.name,
            "kind": customer.kind,
            "applicable": true,
            "as_of": date.to_string(),
            "total": report.total,
            "status": report.status,
            "breakdown": report.breakdown,
            "inputs": report.inputs,
        });
        // Internal playbook actions are for the business, not for the account itself.
        if manager {
            data["recommendations"] = json!(report.recommendations);
        }
        Ok(ToolOutput {
            data,
            display,
            must_quote: vec![score],
            effects: Vec::new(),
        })
    }
}

/// Which at-risk accounts to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AtRiskFilter {
    /// Only `red` or only `yellow`; both when unset.
    pub status: Option<HealthStatus>,
    pub plan: Option<String>,
    /// Contract ends within this many days of the as-of date (today included).
    pub renewal_within_days: Option<i64>,
    pub limit: Option<usize>,
}

/// An at-risk account with why and what to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtRiskAccount {
    pub customer: Customer,
    pub report: HealthReport,
    /// The weakest components, explained (at most two).
    pub reasons: Vec<String>,
    pub recommended_action: String,
    pub days_to_renewal: Option<i64>,
}

const DEFAULT_AT_RISK_LIMIT: usize = 10;
const MAX_AT_RISK_LIMIT: usize = 100;
/// Seed 003 §5.2 Trigger 4 / §5.3 Scenario 2: at-risk accounts 90 days before renewal.
const RENEWAL_WINDOW_DAYS: i64 = 90;

/// Red and yellow b2b accounts as of `as_of`, lowest total first (then by id).
pub async fn at_risk_accounts(
    store: &Store,
    as_of: NaiveDate,
    filter: &AtRiskFilter,
) -> Result<Vec<AtRiskAccount>, crate::crm::CustomerError> {
    let customers = list_customers(
        store,
        &CustomerFilter {
            kind: Some(CustomerKind::B2b),
            plan: filter.plan.clone(),
            ..Default::default()
        },
    )
    .await?;
    let mut accounts: Vec<AtRiskAccount> = customers
        .into_iter()
        .filter_map(|customer| {
            // A customer who already left is not at risk (crm-import.md, `churned_at`).
            if customer.churned_at.is_some_and(|d| d <= as_of) {
                return None;
            }
            let report = health_score(&customer, as_of).ok()?;
            if !report.status.is_at_risk() {
                return None;
            }
            if filter.status.is_some_and(|s| s != report.status) {
                return None;
            }
            let days_to_renewal = customer.contract_end.map(|end| (end - as_of).num_days());
            if let Some(window) = filter.renewal_within_days {
                if !days_to_renewal.is_some_and(|d| (0..=window).contains(&d)) {
                    return None;
                }
            }
            let weakest = report.breakdown.weakest_first();
            let reasons = weakest
                .iter()
                .filter(|c| c.points(&report.breakdown) < c.max())
                .take(2)
                .map(|c| component_reason(*c, &report))
                .collect();
            let recommended_action = recommended_action(&report, weakest[0], days_to_renewal);
            Some(AtRiskAccount {
                customer,
                report,
                reasons,
                recommended_action,
                days_to_renewal,
            })
        })
        .collect();
    accounts.sort_by(|a, b| {
        a.report
            .total
            .total_cmp(&b.report.total)
            .then_with(|| a.customer.id.cmp(&b.customer.id))
    });
    accounts.truncate(
        filter
            .limit
            .unwrap_or(DEFAULT_AT_RISK_LIMIT)
            .clamp(1, MAX_AT_RISK_LIMIT),
    );
    Ok(accounts)
}

/// The spec's most severe recommendation; when none fires, the action for the weakest
/// component. A renewal within 90 days adds the seed's retention step.
fn recommended_action(
    report: &HealthReport,
    weakest: Component,
    days_to_renewal: Option<i64>,
) -> String {
    let mut action = match report.recommendations.first() {
        Some(r) => r.text.to_string(),
        None => match weakest {
            Component::Usage => "活用状況を確認し、未利用分の活用方法をご提案します".to_string(),
            Component::Engagement => "レポートの見方と便利な機能をご案内します".to_string(),
            Component::Support => "CSMがご不満点をヒアリングし、改善策をご提案します".to_string(),
            Component::Payment => "お支払い状況を確認し、リマインダーをお送りします".to_string(),
        },
    };
    if days_to_renewal.is_some_and(|d| (0..=RENEWAL_WINDOW_DAYS).contains(&d)) {
        action.push_str(
            "。契約更新まで90日以内のため、CSMからのお電話でリテンション施策を開始します",
        );
    }
    action
}

/// `list_at_risk_accounts` (managers only).
pub struct ListAtRiskAccounts {
    store: Store,
}

impl ListAtRiskAccounts {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ListArgs {
    status: Option<String>,
    plan: Option<String>,
    renewal_within_days: Option<i64>,
    limit: Option<i64>,
}

#[async_trait]
impl Tool for ListAtRiskAccounts {
    fn name(&self) -> &str {
        "list_at_risk_accounts"
    }

    fn description(&self) -> &str {
        "管理者向け: ヘルススコアがレッド・イエローの法人アカウントをスコアの低い順に、主な要因と推奨アクション付きで一覧する"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["red", "yellow", "any"]},
                "plan": {"type": "string", "description": "only accounts on this plan"},
                "renewal_within_days": {"type": "integer", "description": "only contracts ending within this many days"},
                "limit": {"type": "integer", "description": "at most this many accounts (default 10, max 100)"}
            }
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    fn audience(&self) -> Audience {
        Audience::Managers
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        access::require_manager(ctx)?;
        let args: ListArgs =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let status = match args.status.as_deref() {
            None | Some("any") | Some("") => None,
            Some("red") => Some(HealthStatus::Red),
            Some("yellow") => Some(HealthStatus::Yellow),
            Some(other) => {
                return Err(ToolError::InvalidArguments(format!(
                    "status {other:?} must be red, yellow or any"
                )))
            }
        };
        if args.renewal_within_days.is_some_and(|d| d < 0) {
            return Err(ToolError::InvalidArguments(
                "renewal_within_days must not be negative".into(),
            ));
        }
        let filter = AtRiskFilter {
            status,
            plan: args.plan.filter(|p| !p.trim().is_empty()),
            renewal_within_days: args.renewal_within_days,
            limit: args.limit.map(|l| l.max(1) as usize),
        };
        let date = as_of(ctx);
        let accounts = at_risk_accounts(&self.store, date, &filter)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        if accounts.is_empty() {
            return Ok(ToolOutput {
                data: json!({"as_of": date.to_string(), "accounts": []}),
                display: format!(
                    "{}時点で条件に当てはまるリスクのあるアカウントはありません。",
                    long_date(date)
                ),
                must_quote: vec![],
                effects: Vec::new(),
            });
        }
        let mut display = format!(
            "{}時点でリスクのあるアカウント（スコアの低い順、{}件）:",
            long_date(date),
            accounts.len()
        );
        for (n, a) in accounts.iter().enumerate() {
            let renewal = match a.days_to_renewal {
                Some(d) if (0..=RENEWAL_WINDOW_DAYS).contains(&d) => {
                    format!("／契約更新まで{d}日")
                }
                _ => String::new(),
            };
            display.push_str(&format!(
                "\n{}. {} {} — {}点（{}）{renewal}\n   要因: {}\n   推奨: {}",
                n + 1,
                a.customer.id,
                a.customer.name,
                format_points(a.report.total),
                a.report.status.label_ja(),
                a.reasons.join("／"),
                a.recommended_action
            ));
        }
        let data = json!({
            "as_of": date.to_string(),
            "accounts": accounts.iter().map(|a| json!({
                "customer_id": a.customer.id,
                "name": a.customer.name,
                "plan": a.customer.plan,
                "total": a.report.total,
                "status": a.report.status,
                "breakdown": a.report.breakdown,
                "reasons": a.reasons,
                "recommended_action": a.recommended_action,
                "recommendations": a.report.recommendations,
                "contract_end": a.customer.contract_end.map(|d| d.to_string()),
                "days_to_renewal": a.days_to_renewal,
            })).collect::<Vec<_>>(),
        });
        Ok(ToolOutput {
            data,
            display,
            must_quote: accounts.iter().map(|a| a.customer.id.clone()).collect(),
            effects: Vec::new(),
        })
    }
}
