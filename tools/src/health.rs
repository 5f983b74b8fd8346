//! The B2B health score of `shared/spec/crm-import.md` (seed 003 §5.2), computed as of a
//! date the caller passes — never the system clock — so replays and tests are stable.
//!
//! **B2C customers get no health score**: the spec defines it for management-company
//! contracts (usage against a monthly quota, logins, renewals), which a one-off measurement
//! customer does not have. [`health_score`] returns [`NotApplicable`] for them and the
//! `lookup_health` tool answers with a clear "not applicable" result instead of a number.
//!
//! Choices where the spec is silent (documented so the numbers can be explained):
//! - `monthly_measurements` 0 or missing: the usage rate is undefined; positive usage counts
//!   as at or above the contract (the limit of `n / 0`, 35 points), no usage as below 50 %
//!   (5 points). `measurements_30d` missing counts as 0.
//! - `last_login` missing: never logged in, 0 login points. A login after the as-of date
//!   counts as 0 days ago.
//! - `report_view_rate` / `feature_adoption` missing count as 0; `escalations_30d` and
//!   `payment_overdue_days` missing count as 0 (none).
//! - engagement and the total are rounded to two decimals so that binary floating point
//!   (e.g. `0.7 × 10 = 7.000000000000001`) cannot move an account across a status boundary.

use chrono::NaiveDate;
use serde::Serialize;

use crate::crm::{Customer, CustomerKind};

pub const USAGE_MAX: f64 = 35.0;
pub const ENGAGEMENT_MAX: f64 = 25.0;
pub const SUPPORT_MAX: f64 = 20.0;
pub const PAYMENT_MAX: f64 = 20.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Red,
    Yellow,
    Green,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Red => "red",
            HealthStatus::Yellow => "yellow",
            HealthStatus::Green => "green",
        }
    }

    pub fn label_ja(self) -> &'static str {
        match self {
            HealthStatus::Red => "レッド：チャーンリスク高",
            HealthStatus::Yellow => "イエロー：要注意",
            HealthStatus::Green => "グリーン：健全",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "red" => Some(HealthStatus::Red),
            "yellow" => Some(HealthStatus::Yellow),
            "green" => Some(HealthStatus::Green),
            _ => None,
        }
    }

    /// Red or yellow.
    pub fn is_at_risk(self) -> bool {
        self != HealthStatus::Green
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Breakdown {
    pub usage: f64,
    pub engagement: f64,
    pub support: f64,
    pub payment: f64,
}

impl Breakdown {
    pub fn total(&self) -> f64 {
        round2(self.usage + self.engagement + self.support + self.payment)
    }

    /// Components from weakest to strongest, by share of their maximum (ties keep the
    /// spec's order: usage, engagement, support, payment).
    pub fn weakest_first(&self) -> Vec<Component> {
        let mut parts = vec![
            Component::Usage,
            Component::Engagement,
            Component::Support,
            Component::Payment,
        ];
        parts.sort_by(|a, b| a.share(self).total_cmp(&b.share(self)));
        parts
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Usage,
    Engagement,
    Support,
    Payment,
}

impl Component {
    pub fn points(self, b: &Breakdown) -> f64 {
        match self {
            Component::Usage => b.usage,
            Component::Engagement => b.engagement,
            Component::Support => b.support,
            Component::Payment => b.payment,
        }
    }

    pub fn max(self) -> f64 {
        match self {
            Component::Usage => USAGE_MAX,
            Component::Engagement => ENGAGEMENT_MAX,
            Component::Support => SUPPORT_MAX,
            Component::Payment => PAYMENT_MAX,
        }
    }

    fn share(self, b: &Breakdown) -> f64 {
        self.points(b) / self.max()
    }

    pub fn label_ja(self) -> &'static str {
        match self {
            Component::Usage => "利用頻度",
            Component::Engagement => "エンゲージメント",
            Component::Support => "サポート満足度",
            Component::Payment => "支払い健全性",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Sent by the automation without a person.
    Automated,
    /// A person must act.
    Human,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Stable code: `reengagement_campaign`, `tutorial_content`, `csm_call`,
    /// `executive_escalation`.
    pub action: &'static str,
    pub kind: ActionKind,
    pub severity: Severity,
    pub text: &'static str,
}

/// The facts the score was computed from, for explanations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthInputs {
    /// `None` when the contract has no monthly quota.
    pub usage_rate: Option<f64>,
    pub measurements_30d: i64,
    pub monthly_measurements: Option<i64>,
    /// `None` when the customer never logged in.
    pub days_since_login: Option<i64>,
    pub report_view_rate: f64,
    pub feature_adoption: f64,
    pub csat: Option<f64>,
    pub escalations_30d: i64,
    pub payment_overdue_days: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub customer_id: String,
    pub as_of: NaiveDate,
    pub total: f64,
    pub status: HealthStatus,
    pub breakdown: Breakdown,
    pub inputs: HealthInputs,
    pub recommendations: Vec<Recommendation>,
}

/// Why a customer has no health score.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the health score applies to b2b accounts; {customer_id} is {kind}")]
pub struct NotApplicable {
    pub customer_id: String,
    pub kind: CustomerKind,
}

/// The health score of a b2b customer as of `as_of`.
pub fn health_score(customer: &Customer, as_of: NaiveDate) -> Result<HealthReport, NotApplicable> {
    if customer.kind != CustomerKind::B2b {
        return Err(NotApplicable {
            customer_id: customer.id.clone(),
            kind: customer.kind,
        });
    }
    let measurements = customer.measurements_30d.unwrap_or(0);
    let days_since_login = customer.last_login.map(|d| (as_of - d).num_days().max(0));
    let inputs = HealthInputs {
        usage_rate: usage_rate(measurements, customer.monthly_measurements),
        measurements_30d: measurements,
        monthly_measurements: customer.monthly_measurements,
        days_since_login,
        report_view_rate: customer.report_view_rate.unwrap_or(0.0),
        feature_adoption: customer.feature_adoption.unwrap_or(0.0),
        csat: customer.csat,
        escalations_30d: customer.escalations_30d.unwrap_or(0),
        payment_overdue_days: customer.payment_overdue_days.unwrap_or(0),
    };
    let breakdown = Breakdown {
        usage: usage_points(measurements, customer.monthly_measurements),
        engagement: engagement_points(
            days_since_login,
            inputs.report_view_rate,
            inputs.feature_adoption,
        ),
        support: support_points(customer.csat, inputs.escalations_30d),
        payment: payment_points(inputs.payment_overdue_days),
    };
    let total = breakdown.total();
    Ok(HealthReport {
        customer_id: customer.id.clone(),
        as_of,
        total,
        status: status_for(total),
        recommendations: recommendations(&breakdown, total),
        breakdown,
        inputs,
    })
}

fn usage_rate(measurements: i64, monthly: Option<i64>) -> Option<f64> {
    match monthly {
        Some(m) if m > 0 => Some(measurements as f64 / m as f64),
        _ => None,
    }
}

/// Usage (max 35): rate ≥ 1.0 → 35, ≥ 0.7 → 25, ≥ 0.5 → 15, otherwise 5. Compared in
/// integers so that e.g. 7 of 10 is exactly 0.7.
pub fn usage_points(measurements_30d: i64, monthly_measurements: Option<i64>) -> f64 {
    let m = measurements_30d;
    match monthly_measurements {
        Some(quota) if quota > 0 => {
            if m >= quota {
                35.0
            } else if m * 10 >= quota * 7 {
                25.0
            } else if m * 2 >= quota {
                15.0
            } else {
                5.0
            }
        }
        _ if m > 0 => 35.0,
        _ => 5.0,
    }
}

/// Engagement (max 25): login ≤ 7 days ago → 10, ≤ 14 → 5, otherwise 0; plus
/// `report_view_rate × 10`; plus `feature_adoption × 5`.
pub fn engagement_points(
    days_since_login: Option<i64>,
    report_view_rate: f64,
    feature_adoption: f64,
) -> f64 {
    let login = match days_since_login {
        Some(d) if d <= 7 => 10.0,
        Some(d) if d <= 14 => 5.0,
        _ => 0.0,
    };
    round2(login + report_view_rate * 10.0 + feature_adoption * 5.0)
}

/// Support (max 20): csat ≥ 4.5 → 20, ≥ 4.0 → 15, ≥ 3.0 → 10, below → 5, no survey → 10;
/// then −5 when there were 2 or more escalations in 30 days, never below 0.
pub fn support_points(csat: Option<f64>, escalations_30d: i64) -> f64 {
    let base: f64 = match csat {
        None => 10.0,
        Some(c) if c >= 4.5 => 20.0,
        Some(c) if c >= 4.0 => 15.0,
        Some(c) if c >= 3.0 => 10.0,
        Some(_) => 5.0,
    };
    if escalations_30d >= 2 {
        (base - 5.0).max(0.0)
    } else {
        base
    }
}

/// Payment (max 20): overdue 0 days → 20, 1–7 → 15, 8–14 → 10, 15–30 → 5, over 30 → 0.
pub fn payment_points(overdue_days: i64) -> f64 {
    match overdue_days {
        d if d <= 0 => 20.0,
        1..=7 => 15.0,
        8..=14 => 10.0,
        15..=30 => 5.0,
        _ => 0.0,
    }
}

/// total ≤ 40 → red, ≤ 70 → yellow, otherwise green.
pub fn status_for(total: f64) -> HealthStatus {
    if total <= 40.0 {
        HealthStatus::Red
    } else if total <= 70.0 {
        HealthStatus::Yellow
    } else {
        HealthStatus::Green
    }
}

/// usage < 15 → re-engagement campaign (automated); engagement < 10 → tutorial content
/// (automated); support < 10 → CSM call (human, critical); total < 40 → executive
/// escalation (human, critical). Most severe first, then in that order.
pub fn recommendations(breakdown: &Breakdown, total: f64) -> Vec<Recommendation> {
    let mut out = Vec::new();
    if breakdown.usage < 15.0 {
        out.push(Recommendation {
            action: "reengagement_campaign",
            kind: ActionKind::Automated,
            severity: Severity::High,
            text: "ご利用が少ない企業様向けの活用促進キャンペーンを自動でお送りします",
        });
    }
    if breakdown.engagement < 10.0 {
        out.push(Recommendation {
            action: "tutorial_content",
            kind: ActionKind::Automated,
            severity: Severity::High,
            text: "活用方法のチュートリアル動画を自動でお送りします",
        });
    }
    if breakdown.support < 10.0 {
        out.push(Recommendation {
            action: "csm_call",
            kind: ActionKind::Human,
            severity: Severity::Critical,
            text: "CSMが直接お電話でフォローします",
        });
    }
    if total < 40.0 {
        out.push(Recommendation {
            action: "executive_escalation",
            kind: ActionKind::Human,
            severity: Severity::Critical,
            text: "エグゼクティブへエスカレーションし、経営層から直接ご連絡します",
        });
    }
    // Stable sort: critical actions first, the spec's order within a severity.
    out.sort_by_key(|r| std::cmp::Reverse(r.severity));
    out
}

/// `62.5`, `40`, `17.25`: points without trailing zeros.
pub fn format_points(x: f64) -> String {
    let s = format!("{:.2}", round2(x));
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b2b() -> Customer {
        let mut c = Customer::new("B-1", CustomerKind::B2b, "サンプル管理株式会社");
        c.monthly_measurements = Some(20);
        c.measurements_30d = Some(20);
        c.last_login = NaiveDate::from_ymd_opt(2026, 11, 20);
        c.report_view_rate = Some(1.0);
        c.feature_adoption = Some(1.0);
        c.csat = Some(4.8);
        c.escalations_30d = Some(0);
        c.payment_overdue_days = Some(0);
        c
    }

    fn as_of() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
    }

    #[test]
    fn usage_boundaries() {
        let q = Some(10);
        assert_eq!(usage_points(11, q), 35.0);
        assert_eq!(usage_points(10, q), 35.0); // rate 1.0
        assert_eq!(usage_points(9, q), 25.0); // 0.9
        assert_eq!(usage_points(7, q), 25.0); // 0.7
        assert_eq!(usage_points(6, q), 15.0); // 0.6
        assert_eq!(usage_points(5, q), 15.0); // 0.5
        assert_eq!(usage_points(4, q), 5.0); // 0.4
        assert_eq!(usage_points(0, q), 5.0);
        // 0.7 and 0.5 with quotas where binary fractions are inexact.
        assert_eq!(usage_points(21, Some(30)), 25.0);
        assert_eq!(usage_points(20, Some(30)), 15.0);
        assert_eq!(usage_points(7, Some(14)), 15.0);
        assert_eq!(usage_points(6, Some(14)), 5.0);
        assert_eq!(usage_points(29, Some(30)), 25.0);
    }

    #[test]
    fn usage_without_a_quota() {
        assert_eq!(usage_points(3, Some(0)), 35.0);
        assert_eq!(usage_points(3, None), 35.0);
        assert_eq!(usage_points(0, Some(0)), 5.0);
        assert_eq!(usage_points(0, None), 5.0);
        let mut c = b2b();
        c.monthly_measurements = None;
        c.measurements_30d = None;
        let r = health_score(&c, as_of()).unwrap();
        assert_eq!(r.breakdown.usage, 5.0);
        assert_eq!(r.inputs.usage_rate, None);
    }

    #[test]
    fn login_boundaries() {
        assert_eq!(engagement_points(Some(0), 0.0, 0.0), 10.0);
        assert_eq!(engagement_points(Some(7), 0.0, 0.0), 10.0);
        assert_eq!(engagement_points(Some(8), 0.0, 0.0), 5.0);
        assert_eq!(engagement_points(Some(14), 0.0, 0.0), 5.0);
        assert_eq!(engagement_points(Some(15), 0.0, 0.0), 0.0);
        assert_eq!(engagement_points(None, 0.0, 0.0), 0.0);
    }

    #[test]
    fn engagement_adds_views_and_adoption() {
        assert_eq!(engagement_points(Some(1), 1.0, 1.0), 25.0);
        assert_eq!(engagement_points(Some(1), 0.7, 0.0), 17.0);
        assert_eq!(engagement_points(Some(20), 0.35, 0.5), 6.0);
        assert_eq!(engagement_points(Some(9), 0.33, 0.1), 8.8);
    }

    #[test]
    fn login_days_count_from_the_as_of_date() {
        let mut c = b2b();
        c.report_view_rate = None;
        c.feature_adoption = None;
        for (login, points) in [
            ("2026-11-14", 10.0),
            ("2026-11-13", 5.0),
            ("2026-11-07", 5.0),
            ("2026-11-06", 0.0),
            ("2026-11-30", 10.0),
        ] {
            c.last_login = crate::crm::parse_date(login);
            let r = health_score(&c, as_of()).unwrap();
            assert_eq!(r.breakdown.engagement, points, "{login}");
        }
        c.last_login = None;
        let r = health_score(&c, as_of()).unwrap();
        assert_eq!(r.breakdown.engagement, 0.0);
        assert_eq!(r.inputs.days_since_login, None);
    }

    #[test]
    fn support_boundaries() {
        assert_eq!(support_points(Some(5.0), 0), 20.0);
        assert_eq!(support_points(Some(4.5), 0), 20.0);
        assert_eq!(support_points(Some(4.49), 0), 15.0);
        assert_eq!(support_points(Some(4.0), 0), 15.0);
        assert_eq!(support_points(Some(3.99), 0), 10.0);
        assert_eq!(support_points(Some(3.0), 0), 10.0);
        assert_eq!(support_points(Some(2.99), 0), 5.0);
        assert_eq!(support_points(Some(1.0), 0), 5.0);
        assert_eq!(support_points(None, 0), 10.0);
    }

    #[test]
    fn escalations_subtract_five_from_two_and_never_go_below_zero() {
        assert_eq!(support_points(Some(4.5), 1), 20.0);
        assert_eq!(support_points(Some(4.5), 2), 15.0);
        assert_eq!(support_points(Some(4.5), 9), 15.0);
        assert_eq!(support_points(None, 2), 5.0);
        assert_eq!(support_points(Some(1.0), 1), 5.0);
        assert_eq!(support_points(Some(1.0), 2), 0.0);
    }

    #[test]
    fn payment_boundaries() {
        for (days, points) in [
            (0, 20.0),
            (1, 15.0),
            (7, 15.0),
            (8, 10.0),
            (14, 10.0),
            (15, 5.0),
            (30, 5.0),
            (31, 0.0),
            (120, 0.0),
        ] {
            assert_eq!(payment_points(days), points, "{days} days");
        }
    }

    #[test]
    fn status_boundaries() {
        assert_eq!(status_for(0.0), HealthStatus::Red);
        assert_eq!(status_for(40.0), HealthStatus::Red);
        assert_eq!(status_for(40.5), HealthStatus::Yellow);
        assert_eq!(status_for(41.0), HealthStatus::Yellow);
        assert_eq!(status_for(70.0), HealthStatus::Yellow);
        assert_eq!(status_for(71.0), HealthStatus::Green);
        assert_eq!(status_for(100.0), HealthStatus::Green);
    }

    fn totals(usage: f64, engagement: f64, support: f64, payment: f64) -> Breakdown {
        Breakdown {
            usage,
            engagement,
            support,
            payment,
        }
    }

    fn actions(b: &Breakdown) -> Vec<&'static str> {
        recommendations(b, b.total())
            .iter()
            .map(|r| r.action)
            .collect()
    }

    #[test]
    fn recommendation_triggers() {
        // Everything at its trigger's boundary: nothing fires.
        assert!(actions(&totals(15.0, 10.0, 10.0, 5.0)).is_empty()); // total 40
                                                                     // Just below each boundary.
        assert_eq!(
            actions(&totals(5.0, 25.0, 20.0, 20.0)),
            ["reengagement_campaign"]
        );
        assert_eq!(
            actions(&totals(35.0, 9.99, 20.0, 20.0)),
            ["tutorial_content"]
        );
        assert_eq!(actions(&totals(35.0, 25.0, 5.0, 20.0)), ["csm_call"]);
        assert_eq!(
            actions(&totals(15.0, 10.0, 10.0, 4.99)),
            ["executive_escalation"]
        );
        // All four, critical (human) ones first.
        let all = recommendations(&totals(5.0, 0.0, 0.0, 0.0), 5.0);
        assert_eq!(
            all.iter().map(|r| r.action).collect::<Vec<_>>(),
            [
                "csm_call",
                "executive_escalation",
                "reengagement_campaign",
                "tutorial_content"
            ]
        );
        assert!(all[..2]
            .iter()
            .all(|r| r.kind == ActionKind::Human && r.severity == Severity::Critical));
        assert!(all[2..]
            .iter()
            .all(|r| r.kind == ActionKind::Automated && r.severity == Severity::High));
    }

    #[test]
    fn totals_at_the_status_boundaries() {
        let mut c = b2b();
        // usage 15 (rate 0.5), engagement 10 (login today), support 10 (no csat), payment 5.
        c.measurements_30d = Some(10);
        c.report_view_rate = Some(0.0);
        c.feature_adoption = Some(0.0);
        c.csat = None;
        c.payment_overdue_days = Some(20);
        let r = health_score(&c, as_of()).unwrap();
        assert_eq!(r.total, 40.0);
        assert_eq!(r.status, HealthStatus::Red);
        assert!(!r
            .recommendations
            .iter()
            .any(|x| x.action == "executive_escalation"));

        c.report_view_rate = Some(0.1); // +1
        let r = health_score(&c, as_of()).unwrap();
        assert_eq!(r.total, 41.0);
        assert_eq!(r.status, HealthStatus::Yellow);

        // usage 25, engagement 10 + 0.5×10 + 0, support 10, payment 20 → 70.
        c.measurements_30d = Some(14);
        c.report_view_rate = Some(0.5);
        c.payment_overdue_days = Some(0);
        let r = health_score(&c, as_of()).unwrap();
        assert_eq!(r.total, 70.0);
        assert_eq!(r.status, HealthStatus::Yellow);

        c.feature_adoption = Some(0.2); // +1
        let r = health_score(&c, as_of()).unwrap();
        assert_eq!(r.total, 71.0);
        assert_eq!(r.status, HealthStatus::Green);
    }

    #[test]
    fn fractional_rates_do_not_cross_boundaries_by_rounding_error() {
        let mut c = b2b();
        // 25 + (10 + 0.7×10 + 0.6×5 = 20) + 10 + 15 = 70 exactly, never 70.00000000000001.
        c.measurements_30d = Some(14);
        c.report_view_rate = Some(0.7);
        c.feature_adoption = Some(0.6);
        c.csat = Some(3.0);
        c.payment_overdue_days = Some(3);
        let r = health_score(&c, as_of()).unwrap();
        assert_eq!(r.total, 70.0);
        assert_eq!(r.status, HealthStatus::Yellow);
    }

    #[test]
    fn perfect_and_worst_accounts() {
        let r = health_score(&b2b(), as_of()).unwrap();
        assert_eq!(r.total, 100.0);
        assert_eq!(r.status, HealthStatus::Green);
        assert!(r.recommendations.is_empty());

        let mut c = Customer::new("B-9", CustomerKind::B2b, "x");
        c.monthly_measurements = Some(10);
        c.csat = Some(1.0);
        c.escalations_30d = Some(3);
        c.payment_overdue_days = Some(45);
        let r = health_score(&c, as_of()).unwrap();
        assert_eq!(r.breakdown, totals(5.0, 0.0, 0.0, 0.0));
        assert_eq!(r.total, 5.0);
        assert_eq!(r.status, HealthStatus::Red);
        assert_eq!(r.recommendations.len(), 4);
    }

    #[test]
    fn b2c_customers_are_not_scored() {
        let c = Customer::new("C-1", CustomerKind::B2c, "山田 花子");
        let err = health_score(&c, as_of()).unwrap_err();
        assert_eq!(err.kind, CustomerKind::B2c);
    }

    #[test]
    fn points_format_without_trailing_zeros() {
        assert_eq!(format_points(62.5), "62.5");
        assert_eq!(format_points(40.0), "40");
        assert_eq!(format_points(17.25), "17.25");
        assert_eq!(format_points(7.000000000000001), "7");
    }

    #[test]
    fn weakest_components_come_first() {
        let b = totals(15.0, 20.0, 5.0, 20.0);
        assert_eq!(
            b.weakest_first(),
            [
                Component::Support,
                Component::Usage,
                Component::Engagement,
                Component::Payment
            ]
        );
    }
}
