//! `recommend_plan`: from the conversation's facts to light / standard / premium
//! (+ mediation), with reasons and prices.

use async_trait::async_trait;
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::plans::{self, yen, Plan};

#[derive(Debug, Default, Deserialize)]
struct Args {
    noise_type: Option<String>,
    time_of_day: Option<String>,
    duration_months: Option<u32>,
    negotiation_attempts: Option<u32>,
    #[serde(default)]
    wants_legal_evidence: bool,
    #[serde(default)]
    wants_mediation: bool,
}

pub struct RecommendPlan;

fn noise_label(kind: &str) -> &'static str {
    match kind {
        "footsteps" => "足音などの生活音",
        "voices" => "話し声",
        "music" => "音楽・楽器・テレビの音",
        "pets" => "ペットの鳴き声",
        "construction" => "工事の音",
        "low_frequency" => "低周波音・振動",
        _ => "騒音",
    }
}

/// The decision, separate from I/O so every rule is unit-tested.
fn decide(args: &Args) -> (Plan, Vec<String>, bool) {
    let mut reasons = Vec::new();
    let attempts = args.negotiation_attempts.unwrap_or(0);
    let night = matches!(args.time_of_day.as_deref(), Some("late_night" | "night"));
    let low_frequency = args.noise_type.as_deref() == Some("low_frequency");
    let long_running = args.duration_months.unwrap_or(0) >= 1;

    let plan = if attempts >= 3 || args.wants_legal_evidence {
        if attempts >= 3 {
            reasons.push(format!("これまでに{attempts}回交渉されても改善していないため、法的効力を強めたレポートが有効です"));
        }
        if args.wants_legal_evidence {
            reasons.push("法的な証拠として使える記録をご希望のため、弁護士レビュー付きのプランが適しています".to_string());
        }
        plans::PREMIUM
    } else if night || low_frequency || long_running {
        if night {
            reasons.push("夜間に発生する音の実態を2時間の測定で把握できます".to_string());
        }
        if low_frequency {
            reasons.push("低周波音は周波数スペクトル解析で確認する必要があります".to_string());
        }
        if long_running {
            reasons.push(
                "長く続いている問題のため、法的根拠となる詳細レポートが役立ちます".to_string(),
            );
        }
        plans::STANDARD
    } else {
        reasons.push("まずは1時間の測定で音の大きさを確認できます".to_string());
        plans::LIGHT
    };
    if let Some(kind) = &args.noise_type {
        reasons.insert(0, format!("{}のご相談です", noise_label(kind)));
    }
    let mediation = args.wants_mediation || attempts >= 1;
    (plan, reasons, mediation)
}

#[async_trait]
impl Tool for RecommendPlan {
    fn name(&self) -> &str {
        "recommend_plan"
    }

    fn description(&self) -> &str {
        "騒音の状況から最適な測定プラン（ライト/スタンダード/プレミアム）と料金を提案する"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "noise_type": {"type": "string", "enum": ["footsteps", "voices", "music", "pets", "construction", "low_frequency", "other"]},
                "time_of_day": {"type": "string", "enum": ["late_night", "night", "morning", "daytime"]},
                "duration_months": {"type": "integer", "description": "how long the problem has lasted, in months"},
                "negotiation_attempts": {"type": "integer", "description": "times the customer already complained or negotiated"},
                "wants_legal_evidence": {"type": "boolean"},
                "wants_mediation": {"type": "boolean"}
            }
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    fn audience(&self) -> Audience {
        Audience::Everyone
    }

    async fn call(&self, _ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let args: Args =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let (plan, reasons, mediation) = decide(&args);
        let price = yen(plan.price_jpy);
        let mut display = format!(
            "【おすすめ】{}（{}、{}時間測定）\n",
            plan.name, price, plan.measurement_hours
        );
        for reason in &reasons {
            display.push_str(&format!("・{reason}\n"));
        }
        if mediation {
            display.push_str(&format!(
                "・測定後の話し合いには{}（+{}）もご利用いただけます\n",
                plans::MEDIATION.name,
                yen(plans::MEDIATION.price_jpy)
            ));
        }
        display.push_str("ご予約の候補日時もお調べできます。");
        let alternatives: Vec<Value> = plans::PLANS
            .iter()
            .filter(|p| p.id != plan.id)
            .map(|p| json!({"plan": p.id, "name": p.name, "price_jpy": p.price_jpy, "measurement_hours": p.measurement_hours}))
            .collect();
        Ok(ToolOutput {
            data: json!({
                "plan": plan.id,
                "name": plan.name,
                "price_jpy": plan.price_jpy,
                "price": price,
                "measurement_hours": plan.measurement_hours,
                "features": plan.features,
                "reasons": reasons,
                "add_ons": if mediation { json!([plans::MEDIATION]) } else { json!([]) },
                "alternatives": alternatives,
            }),
            display,
            must_quote: vec![price],
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Args {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn seed_example_footsteps_late_night_one_month_is_standard() {
        let (plan, reasons, mediation) = decide(&args(
            json!({"noise_type": "footsteps", "time_of_day": "late_night", "duration_months": 1}),
        ));
        assert_eq!(plan.id, "standard");
        assert_eq!(plan.price_jpy, 12_800);
        assert!(reasons[0].contains("足音"));
        assert!(!mediation);
    }

    #[test]
    fn rule_boundaries() {
        assert_eq!(decide(&args(json!({}))).0.id, "light");
        assert_eq!(
            decide(&args(json!({"time_of_day": "daytime"}))).0.id,
            "light"
        );
        assert_eq!(
            decide(&args(json!({"time_of_day": "night"}))).0.id,
            "standard"
        );
        assert_eq!(
            decide(&args(json!({"noise_type": "low_frequency"}))).0.id,
            "standard"
        );
        assert_eq!(decide(&args(json!({"duration_months": 0}))).0.id, "light");
        assert_eq!(
            decide(&args(json!({"duration_months": 1}))).0.id,
            "standard"
        );
        assert_eq!(
            decide(&args(json!({"negotiation_attempts": 2}))).0.id,
            "light"
        );
        assert_eq!(
            decide(&args(json!({"negotiation_attempts": 3}))).0.id,
            "premium"
        );
        assert_eq!(
            decide(&args(json!({"wants_legal_evidence": true}))).0.id,
            "premium"
        );
        assert!(decide(&args(json!({"negotiation_attempts": 1}))).2);
        assert!(decide(&args(json!({"wants_mediation": true}))).2);
    }

    #[tokio::test]
    async fn output_quotes_the_price() {
        let ctx = ToolContext {
            identity: kizuna_agent::identity::Identity::anonymous("v"),
            conversation_id: "c".into(),
            now: chrono::Utc::now().with_timezone(&kizuna_agent::clock::jst()),
        };
        let out = RecommendPlan
            .call(
                &ctx,
                json!({"time_of_day": "late_night", "negotiation_attempts": 1}),
            )
            .await
            .unwrap();
        assert_eq!(out.must_quote, vec!["12,800円".to_string()]);
        assert!(out.display.contains("スタンダードプラン（12,800円"));
        assert!(out.display.contains("AI仲裁サービス（+8,000円）"));
        assert_eq!(out.data["alternatives"].as_array().unwrap().len(), 2);
    }
}
