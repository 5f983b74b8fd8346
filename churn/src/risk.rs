//! Risk levels, risk factors and the retention plan (seed 003 §5).

use serde::{Deserialize, Serialize};

use crate::model::Contributions;

/// critical ≥ 0.7, high ≥ 0.5, medium ≥ 0.3, otherwise low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub fn from_probability(p: f64) -> Self {
        if p >= 0.7 {
            RiskLevel::Critical
        } else if p >= 0.5 {
            RiskLevel::High
        } else if p >= 0.3 {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Critical => "critical",
            RiskLevel::High => "high",
            RiskLevel::Medium => "medium",
            RiskLevel::Low => "low",
        }
    }

    pub fn label_ja(self) -> &'static str {
        match self {
            RiskLevel::Critical => "危険",
            RiskLevel::High => "高",
            RiskLevel::Medium => "中",
            RiskLevel::Low => "低",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Some(RiskLevel::Critical),
            "high" => Some(RiskLevel::High),
            "medium" => Some(RiskLevel::Medium),
            "low" => Some(RiskLevel::Low),
            _ => None,
        }
    }
}

/// One feature's push on one prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub feature: String,
    /// The account's value (`None`: missing).
    pub value: Option<f64>,
    /// Contribution to the margin (log-odds); positive raises the churn risk.
    pub contribution: f64,
}

/// The `n` features that raise this prediction most (positive contributions only), largest
/// first.
pub fn top_factors(names: &[String], row: &[f64], c: &Contributions, n: usize) -> Vec<Factor> {
    let mut idx: Vec<usize> = (0..c.per_feature.len())
        .filter(|j| c.per_feature[*j] > 1e-9)
        .collect();
    idx.sort_by(|a, b| c.per_feature[*b].total_cmp(&c.per_feature[*a]));
    idx.into_iter()
        .take(n)
        .map(|j| Factor {
            feature: names[j].clone(),
            value: row.get(j).copied().filter(|v| !v.is_nan()),
            contribution: c.per_feature[j],
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionAction {
    pub action: String,
    pub owner: String,
    pub deadline: String,
    pub description: String,
}

fn action(action: &str, owner: &str, deadline: &str, description: &str) -> RetentionAction {
    RetentionAction {
        action: action.into(),
        owner: owner.into(),
        deadline: deadline.into(),
        description: description.into(),
    }
}

/// A deadline as a Japanese reply shows it: "24 hours" → 「24時間以内」, "immediate" → 「即時」.
pub fn deadline_ja(deadline: &str) -> String {
    if deadline == "immediate" {
        return "即時".into();
    }
    match deadline
        .strip_suffix(" hours")
        .and_then(|n| n.parse::<u32>().ok())
    {
        Some(n) => format!("{n}時間以内"),
        None => deadline.to_string(),
    }
}

/// The seed's retention plan: executive meeting and a 3-month 20% offer for critical, a CSM
/// call within 24 hours for critical and high, and per factor: a falling 3-month usage trend
/// starts the reactivation e-mails, an NPS below 7 a satisfaction recovery.
pub fn retention_plan(level: RiskLevel, factors: &[Factor]) -> Vec<RetentionAction> {
    let mut actions = Vec::new();
    if level == RiskLevel::Critical {
        actions.push(action(
            "executive_intervention",
            "CEO",
            "48 hours",
            "経営陣による緊急ミーティング",
        ));
        actions.push(action(
            "special_discount_offer",
            "CSM",
            "72 hours",
            "3ヶ月20%割引オファー",
        ));
    }
    if matches!(level, RiskLevel::Critical | RiskLevel::High) {
        actions.push(action(
            "csm_phone_call",
            "CSM",
            "24 hours",
            "CSMから電話で課題ヒアリング",
        ));
    }
    for f in factors {
        let Some(v) = f.value else { continue };
        if f.feature == "usage_trend_3m" && v < 0.0 {
            actions.push(action(
                "reactivation_campaign",
                "Marketing Automation",
                "immediate",
                "活用促進メールシーケンス送信",
            ));
        }
        if f.feature == "nps_score" && v < 7.0 {
            actions.push(action(
                "satisfaction_recovery",
                "CSM",
                "24 hours",
                "不満点のヒアリングと改善提案",
            ));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_read_as_japanese() {
        assert_eq!(deadline_ja("24 hours"), "24時間以内");
        assert_eq!(deadline_ja("immediate"), "即時");
        assert_eq!(deadline_ja("next week"), "next week");
    }

    #[test]
    fn risk_level_boundaries() {
        use RiskLevel::*;
        for (p, want) in [
            (1.0, Critical),
            (0.7, Critical),
            (0.699_999, High),
            (0.5, High),
            (0.499_999, Medium),
            (0.3, Medium),
            (0.299_999, Low),
            (0.0, Low),
        ] {
            assert_eq!(RiskLevel::from_probability(p), want, "p = {p}");
        }
        assert!(Critical > High && High > Medium && Medium > Low);
        assert_eq!(RiskLevel::parse("HIGH"), Some(High));
        assert_eq!(High.as_str(), "high");
    }

    fn factor(feature: &str, value: f64) -> Factor {
        Factor {
            feature: feature.into(),
            value: Some(value),
            contribution: 0.5,
        }
    }

    #[test]
    fn retention_plan_per_level_and_factor() {
        let names = |plan: Vec<RetentionAction>| -> Vec<String> {
            plan.into_iter().map(|a| a.action).collect()
        };
        assert_eq!(
            names(retention_plan(RiskLevel::Critical, &[])),
            [
                "executive_intervention",
                "special_discount_offer",
                "csm_phone_call"
            ]
        );
        assert_eq!(
            names(retention_plan(RiskLevel::High, &[])),
            ["csm_phone_call"]
        );
        assert!(retention_plan(RiskLevel::Medium, &[]).is_empty());
        assert!(retention_plan(RiskLevel::Low, &[]).is_empty());
        let f = [factor("usage_trend_3m", -0.3), factor("nps_score", 4.0)];
        assert_eq!(
            names(retention_plan(RiskLevel::Medium, &f)),
            ["reactivation_campaign", "satisfaction_recovery"]
        );
        let fine = [factor("usage_trend_3m", 0.1), factor("nps_score", 7.0)];
        assert!(retention_plan(RiskLevel::Low, &fine).is_empty());
    }

    #[test]
    fn top_factors_are_the_largest_positive_contributions() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let c = Contributions {
            per_feature: vec![0.2, -0.9, 0.5, 0.1, 0.3],
            bias: -1.0,
        };
        let row = [1.0, 2.0, f64::NAN, 4.0, 5.0];
        let top = top_factors(&names, &row, &c, 3);
        let got: Vec<&str> = top.iter().map(|f| f.feature.as_str()).collect();
        assert_eq!(got, ["c", "e", "a"]);
        assert_eq!(top[0].value, None);
        assert_eq!(top[1].value, Some(5.0));
        assert_eq!(
            top_factors(&names, &row, &c, 10).len(),
            4,
            "only risk-raising ones"
        );
    }
}
