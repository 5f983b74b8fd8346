//! `recommend_upsell`: the upsell patterns of seed 003 §5.4, top 3 by confidence.
//!
//! The CRM format has no column for several of the seed's signals, so they come from the
//! conversation as optional arguments and default to "not observed":
//!
//! | pattern | confidence | fires when |
//! | --- | --- | --- |
//! | B2C ライト→スタンダード | 0.85 | plan `light` and `measurement_hours` > 1 |
//! | B2C スタンダード→プレミアム | 0.78 | plan `standard` and `negotiation_attempts` ≥ 3 |
//! | B2C AI仲裁サービス | 0.92 | a report exists (`report_received`, or else `measurements_30d` ≥ 1 or `report_view_rate` > 0) and `mediation_used` is not true |
//! | B2B 上位プラン | 0.89 | `measurements_30d` ≥ 90 % of `monthly_measurements` |
//! | B2B 対象物件の追加 | 0.73 | `properties_covered` < 50 % of `total_properties` (both given) |
//! | B2B API連携 | 0.81 | the plan name contains "enterprise"/"エンタープライズ" and `api_enabled` is not true |
//!
//! Prices come from [`crate::plans`] (B2C) and the seed's differences (B2B). The seed's
//! campaign discounts are not quoted: whether one runs is the business's decision.

use async_trait::async_trait;
use kizuna_agent::identity::Role;
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use kizuna_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access;
use crate::accounts::load_customer;
use crate::crm::{Customer, CustomerKind};
use crate::plans::{self, yen};

/// Facts from the conversation that the CRM does not hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct UpsellSignals {
    /// Hours the noise needs to be measured (B2C).
    pub measurement_hours: Option<f64>,
    /// Times the customer already negotiated with the neighbour (B2C).
    pub negotiation_attempts: Option<i64>,
    pub report_received: Option<bool>,
    pub mediation_used: Option<bool>,
    /// B2B: properties whose residents can use ZENBU, and all managed properties.
    pub properties_covered: Option<i64>,
    pub total_properties: Option<i64>,
    pub api_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpsellRecommendation {
    pub product: &'static str,
    pub name: String,
    pub confidence: f64,
    pub reason: String,
    pub value_proposition: String,
    pub price_difference: String,
}

/// The patterns that fire for `customer`, highest confidence first, at most three.
pub fn upsell_recommendations(
    customer: &Customer,
    signals: &UpsellSignals,
) -> Vec<UpsellRecommendation> {
    let mut out = match customer.kind {
        CustomerKind::B2c => b2c(customer, signals),
        CustomerKind::B2b => b2b(customer, signals),
    };
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out.truncate(3);
    out
}

fn b2c(customer: &Customer, s: &UpsellSignals) -> Vec<UpsellRecommendation> {
    let mut out = Vec::new();
    let plan = customer.plan.as_deref();
    if plan == Some("light") && s.measurement_hours.is_some_and(|h| h > 1.0) {
        out.push(UpsellRecommendation {
            product: "standard_plan",
            name: plans::STANDARD.name.into(),
            confidence: 0.85,
            reason: "測定時間が1時間を超える状況のため".into(),
            value_proposition:
                "スタンダードプランなら2時間の測定で、時間帯別の詳細分析まで確認できます".into(),
            price_difference: format!(
                "+{}",
                yen(plans::STANDARD.price_jpy - plans::LIGHT.price_jpy)
            ),
        });
    }
    if plan == Some("standard") && s.negotiation_attempts.is_some_and(|n| n >= 3) {
        out.push(UpsellRecommendation {
            product: "premium_plan",
            name: plans::PREMIUM.name.into(),
            confidence: 0.78,
            reason: "交渉が難航しているため".into(),
            value_proposition: "弁護士レビュー付きのレポートで法的効力を強化できます".into(),
            price_difference: format!(
                "+{}",
                yen(plans::PREMIUM.price_jpy - plans::STANDARD.price_jpy)
            ),
        });
    }
    let report_generated = s.report_received.unwrap_or_else(|| {
        customer.measurements_30d.unwrap_or(0) >= 1
            || customer.report_view_rate.unwrap_or(0.0) > 0.0
    });
    if report_generated && s.mediation_used != Some(true) {
        out.push(UpsellRecommendation {
            product: "ai_mediation_service",
            name: plans::MEDIATION.name.into(),
            confidence: 0.92,
            reason: "測定後の話し合いによる解決をお手伝いできるため".into(),
            value_proposition: "AIが中立的な立場で仲裁し、合意形成を支援します（合意形成率75%）"
                .into(),
            price_difference: format!("+{}", yen(plans::MEDIATION.price_jpy)),
        });
    }
    out
}

fn b2b(customer: &Customer, s: &UpsellSignals) -> Vec<UpsellRecommendation> {
    let mut out = Vec::new();
    let used = customer.measurements_30d.unwrap_or(0);
    if let Some(quota) = customer.monthly_measurements.filter(|q| *q > 0) {
        // ≥ 90 % of the quota, in integers.
        if used * 10 >= quota * 9 {
            out.push(UpsellRecommendation {
                product: "upgrade_to_next_tier",
                name: format!("月{}件プラン", quota * 2),
                confidence: 0.89,
                reason: format!(
                    "直近30日の利用が{used}件で、契約の月{quota}件の上限に近づいているため"
                ),
                value_proposition: format!(
                    "月{}件のプランで、1件あたりの単価を抑えながら追加料金なしでご利用いただけます",
                    quota * 2
                ),
                price_difference: "+40,000円/月".into(),
            });
        }
    }
    if let (Some(covered), Some(total)) = (s.properties_covered, s.total_properties) {
        if total > 0 && covered * 2 < total {
            out.push(UpsellRecommendation {
                product: "add_more_properties",
                name: "対象物件の追加".into(),
                confidence: 0.73,
                reason: format!("管理物件{total}件のうち対象は{covered}件のため"),
                value_proposition: "全物件をカバーすることで入居者満足度の向上につながります"
                    .into(),
                price_difference: "+20,000円/月（50物件追加）".into(),
            });
        }
    }
    let plan = customer.plan.as_deref().unwrap_or("");
    let enterprise =
        plan.to_ascii_lowercase().contains("enterprise") || plan.contains("エンタープライズ");
    if enterprise && s.api_enabled != Some(true) {
        out.push(UpsellRecommendation {
            product: "api_integration",
            name: "API連携".into(),
            confidence: 0.81,
            reason: "業務システムとの連携でさらに効率化できるため".into(),
            value_proposition: "API連携で管理システムと自動で連携し、手作業を減らせます".into(),
            price_difference: "+30,000円/月".into(),
        });
    }
    out
}

/// `recommend_upsell`: customers get their own account; managers name any.
pub struct RecommendUpsell {
    store: Store,
}

impl RecommendUpsell {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Args {
    customer_id: Option<String>,
    #[serde(flatten)]
    signals: UpsellSignals,
}

#[async_trait]
impl Tool for RecommendUpsell {
    fn name(&self) -> &str {
        "recommend_upsell"
    }

    fn description(&self) -> &str {
        "ご利用状況から上位プラン・追加サービスのおすすめを確度の高い順に最大3件、理由と差額付きで提案する"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "customer_id": {"type": "string", "description": "managers: the account; customers always get their own"},
                "measurement_hours": {"type": "number", "description": "B2C: hours the noise needs to be measured"},
                "negotiation_attempts": {"type": "integer", "description": "B2C: times the customer already negotiated"},
                "report_received": {"type": "boolean", "description": "B2C: a measurement report was delivered"},
                "mediation_used": {"type": "boolean", "description": "B2C: the AI mediation service was already used"},
                "properties_covered": {"type": "integer", "description": "B2B: properties covered by the contract"},
                "total_properties": {"type": "integer", "description": "B2B: all properties the company manages"},
                "api_enabled": {"type": "boolean", "description": "B2B: API integration already enabled"}
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
        let args: Args =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let id = access::target_customer(ctx, args.customer_id.as_deref())?;
        let customer = load_customer(&self.store, &id).await?;
        let recommendations = upsell_recommendations(&customer, &args.signals);
        let manager = ctx.identity.role == Role::Manager;
        let display = if recommendations.is_empty() {
            "現在のご利用状況から、特におすすめできる追加プラン・サービスはありません。".to_string()
        } else {
            let mut text = if manager {
                format!(
                    "{}（{}）へのアップセル提案（確度の高い順）:",
                    customer.name, customer.id
                )
            } else {
                "ご利用状況から、次のプラン・サービスをおすすめします。".to_string()
            };
            for (n, r) in recommendations.iter().enumerate() {
                let confidence = if manager {
                    format!("［確度 {:.2}］", r.confidence)
                } else {
                    String::new()
                };
                text.push_str(&format!(
                    "\n{}. {}（{}）{confidence}\n   理由: {}。{}",
                    n + 1,
                    r.name,
                    r.price_difference,
                    r.reason,
                    r.value_proposition
                ));
            }
            text
        };
        Ok(ToolOutput {
            data: json!({
                "customer_id": customer.id,
                "kind": customer.kind,
                "recommendations": recommendations,
            }),
            display,
            must_quote: recommendations
                .iter()
                .map(|r| r.price_difference.clone())
                .collect(),
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b2c_customer(plan: &str) -> Customer {
        let mut c = Customer::new("C-1", CustomerKind::B2c, "山田 花子");
        c.plan = Some(plan.into());
        c
    }

    fn products(c: &Customer, s: &UpsellSignals) -> Vec<&'static str> {
        upsell_recommendations(c, s)
            .iter()
            .map(|r| r.product)
            .collect()
    }

    #[test]
    fn b2c_patterns_fire_on_their_conditions_only() {
        let light = b2c_customer("light");
        assert!(products(&light, &UpsellSignals::default()).is_empty());
        let long = UpsellSignals {
            measurement_hours: Some(1.5),
            ..Default::default()
        };
        assert_eq!(products(&light, &long), ["standard_plan"]);
        let one_hour = UpsellSignals {
            measurement_hours: Some(1.0),
            ..Default::default()
        };
        assert!(products(&light, &one_hour).is_empty());

        let standard = b2c_customer("standard");
        let two = UpsellSignals {
            negotiation_attempts: Some(2),
            ..Default::default()
        };
        assert!(products(&standard, &two).is_empty());
        let three = UpsellSignals {
            negotiation_attempts: Some(3),
            report_received: Some(true),
            ..Default::default()
        };
        // Sorted by confidence: mediation 0.92 before premium 0.78.
        let recs = upsell_recommendations(&standard, &three);
        assert_eq!(
            recs.iter().map(|r| r.product).collect::<Vec<_>>(),
            ["ai_mediation_service", "premium_plan"]
        );
        assert_eq!(recs[1].price_difference, "+12,000円");
        assert_eq!(recs[0].price_difference, "+8,000円");

        let used = UpsellSignals {
            report_received: Some(true),
            mediation_used: Some(true),
            ..Default::default()
        };
        assert!(products(&standard, &used).is_empty());
    }

    #[test]
    fn a_measured_customer_counts_as_having_a_report() {
        let mut c = b2c_customer("premium");
        assert!(products(&c, &UpsellSignals::default()).is_empty());
        c.measurements_30d = Some(1);
        assert_eq!(
            products(&c, &UpsellSignals::default()),
            ["ai_mediation_service"]
        );
    }

    #[test]
    fn b2b_patterns_and_top_three() {
        let mut c = Customer::new("B-1", CustomerKind::B2b, "サンプル管理株式会社");
        c.plan = Some("Enterprise 50".into());
        c.monthly_measurements = Some(50);
        c.measurements_30d = Some(44);
        let none = UpsellSignals {
            api_enabled: Some(true),
            ..Default::default()
        };
        assert!(products(&c, &none).is_empty()); // 44 < 45
        c.measurements_30d = Some(45);
        let all = UpsellSignals {
            properties_covered: Some(10),
            total_properties: Some(40),
            ..Default::default()
        };
        let recs = upsell_recommendations(&c, &all);
        assert_eq!(
            recs.iter().map(|r| r.product).collect::<Vec<_>>(),
            [
                "upgrade_to_next_tier",
                "api_integration",
                "add_more_properties"
            ]
        );
        assert_eq!(recs[0].name, "月100件プラン");
        assert_eq!(recs[0].price_difference, "+40,000円/月");
        let half = UpsellSignals {
            properties_covered: Some(20),
            total_properties: Some(40),
            api_enabled: Some(true),
            ..Default::default()
        };
        assert_eq!(products(&c, &half), ["upgrade_to_next_tier"]);
    }
}
