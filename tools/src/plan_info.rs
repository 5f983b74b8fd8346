//! `plan_info`: the price table and how the plans differ, for fact questions. A question
//! about one plan's price gets that plan's price (not a recommendation of another plan);
//! a comparison quotes every plan it names.

use async_trait::async_trait;
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::plans::{self, yen, Plan};

pub struct PlanInfo;

#[derive(Debug, Default, Deserialize)]
struct Args {
    #[serde(default)]
    plans: Vec<String>,
    #[serde(default)]
    aspect: Option<String>,
    /// For `duration`: the start asked about ("21:00"), so the end time is given too.
    #[serde(default)]
    start: Option<String>,
}

/// Minutes after midnight of "HH:MM".
fn minutes_of(hm: &str) -> Option<u32> {
    let (h, m) = hm.split_once(':')?;
    let (h, m): (u32, u32) = (h.trim().parse().ok()?, m.trim().parse().ok()?);
    (h < 48 && m < 60).then_some(h * 60 + m)
}

fn clock(minutes: u32) -> String {
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// How long the plans' measurements take, and when they end after `start`: answered from
/// the catalogue (seed 001: ライト 1時間, スタンダード・プレミアム 2時間), plans of the same
/// length together.
fn duration_answer(shown: &[Plan], start: Option<u32>) -> String {
    let mut groups: Vec<(u32, Vec<&str>)> = Vec::new();
    for plan in shown {
        match groups
            .iter_mut()
            .find(|(hours, _)| *hours == plan.measurement_hours)
        {
            Some((_, names)) => names.push(plan.name),
            None => groups.push((plan.measurement_hours, vec![plan.name])),
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(hours, names)| match start {
            Some(start) => format!(
                "{}（{hours}時間の測定）は{}",
                names.join("と"),
                clock(start + hours * 60)
            ),
            None => format!("{}が{hours}時間", names.join("と")),
        })
        .collect();
    let body = match start {
        Some(start) => format!(
            "{}開始の場合、{}に終わる予定です。",
            clock(start),
            parts.join("、")
        ),
        None => format!("測定時間は、{}です。", parts.join("、")),
    };
    format!("{body}機器の設置と撤去に、その前後で少しお時間をいただきます。")
}

fn hours(plan: &Plan) -> String {
    format!("{}時間の測定", plan.measurement_hours)
}

/// One plan on one line: name, price, what it includes.
fn plan_line(plan: &Plan, with_features: bool) -> String {
    if with_features {
        format!(
            "・{}: {}（{}）",
            plan.name,
            yen(plan.price_jpy),
            plan.features.join("、")
        )
    } else {
        format!(
            "・{}: {}（{}）",
            plan.name,
            yen(plan.price_jpy),
            hours(plan)
        )
    }
}

fn mediation_line() -> String {
    format!(
        "・{}（オプション）: +{}",
        plans::MEDIATION.name,
        yen(plans::MEDIATION.price_jpy)
    )
}

/// What the more expensive of two plans adds, from their feature lists.
fn difference(cheaper: &Plan, dearer: &Plan) -> String {
    let added: Vec<&str> = dearer
        .features
        .iter()
        .filter(|f| !cheaper.features.contains(f) && !f.contains("内容すべて"))
        .copied()
        .collect();
    let mut text = format!(
        "{}は{}より{}高く",
        dearer.name,
        cheaper.name,
        yen(dearer.price_jpy - cheaper.price_jpy)
    );
    if dearer.measurement_hours != cheaper.measurement_hours {
        text.push_str(&format!(
            "、測定時間が{}時間から{}時間になり",
            cheaper.measurement_hours, dearer.measurement_hours
        ));
    }
    if added.is_empty() {
        text.push_str("ます。");
    } else {
        text.push_str(&format!("、{}が加わります。", added.join("・")));
    }
    text
}

#[async_trait]
impl Tool for PlanInfo {
    fn name(&self) -> &str {
        "plan_info"
    }

    fn description(&self) -> &str {
        "測定プラン（ライト/スタンダード/プレミアム）とAI仲裁サービスの料金・内容・違いを答える"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "plans": {"type": "array", "items": {"type": "string", "enum": ["light", "standard", "premium", "mediation"]}, "description": "the plans asked about; empty for all"},
                "aspect": {"type": "string", "enum": ["price", "compare", "duration"]},
                "start": {"type": "string", "description": "for duration: a start time HH:MM, to give the end time"}
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
        let mut named: Vec<Plan> = Vec::new();
        let mut mediation = false;
        for id in &args.plans {
            match id.as_str() {
                "mediation" => mediation = true,
                other => {
                    let plan = plans::by_id(other).ok_or_else(|| {
                        ToolError::InvalidArguments(format!(
                            "unknown plan {other:?}: use light, standard, premium or mediation"
                        ))
                    })?;
                    if !named.contains(&plan) {
                        named.push(plan);
                    }
                }
            }
        }
        if args.aspect.as_deref() == Some("duration") {
            let start = match args.start.as_deref() {
                Some(hm) => Some(minutes_of(hm).ok_or_else(|| {
                    ToolError::InvalidArguments(format!("start {hm:?} is not HH:MM"))
                })?),
                None => None,
            };
            let shown = if named.is_empty() {
                plans::PLANS.to_vec()
            } else {
                named
            };
            return Ok(ToolOutput {
                data: json!({
                    "plans": shown.iter().map(|p| json!({"id": p.id, "hours": p.measurement_hours})).collect::<Vec<_>>(),
                    "start": args.start,
                }),
                display: duration_answer(&shown, start),
                must_quote: Vec::new(),
                effects: Vec::new(),
            });
        }
        let compare = args.aspect.as_deref() == Some("compare");
        let all = named.is_empty() && !mediation;
        let shown: Vec<Plan> = if all || (compare && named.len() < 2 && !mediation) {
            plans::PLANS.to_vec()
        } else {
            named.clone()
        };
        let mut lines = Vec::new();
        let mut must_quote = Vec::new();
        match (compare, shown.as_slice(), mediation) {
            // One plan's price: that plan alone.
            (false, [plan], false) => lines.push(format!(
                "{}の料金は{}です（{}）。",
                plan.name,
                yen(plan.price_jpy),
                hours(plan)
            )),
            (false, [], true) => lines.push(format!(
                "{}はオプションで、測定プランの料金に+{}です。",
                plans::MEDIATION.name,
                yen(plans::MEDIATION.price_jpy)
            )),
            _ => {
                lines.push(if compare {
                    "各プランの内容と料金です。".to_string()
                } else {
                    "測定プランの料金です。".to_string()
                });
                lines.extend(shown.iter().map(|p| plan_line(p, compare)));
                if mediation || all {
                    lines.push(mediation_line());
                }
            }
        }
        if compare {
            let mut by_price = shown.clone();
            by_price.sort_by_key(|p| p.price_jpy);
            for pair in by_price.windows(2) {
                lines.push(difference(&pair[0], &pair[1]));
            }
        }
        if mediation && !shown.is_empty() {
            if let [plan] = shown.as_slice() {
                let total = plan.price_jpy + plans::MEDIATION.price_jpy;
                lines.push(format!(
                    "{}に{}を付けると、合計{}です。",
                    plan.name,
                    plans::MEDIATION.name,
                    yen(total)
                ));
                must_quote.push(yen(total));
            }
        }
        for plan in &shown {
            must_quote.push(yen(plan.price_jpy));
        }
        let data = json!({
            "plans": shown.iter().map(|p| json!({
                "plan": p.id, "name": p.name, "price_jpy": p.price_jpy,
                "measurement_hours": p.measurement_hours, "features": p.features,
            })).collect::<Vec<_>>(),
            "mediation": if mediation || all { json!(plans::MEDIATION) } else { Value::Null },
        });
        Ok(ToolOutput {
            data,
            display: lines.join("\n"),
            must_quote,
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn info(args: Value) -> ToolOutput {
        let ctx = ToolContext {
            identity: kizuna_agent::identity::Identity::anonymous("v"),
            conversation_id: "c".into(),
            now: chrono::Utc::now().with_timezone(&kizuna_agent::clock::jst()),
        };
        PlanInfo.call(&ctx, args).await.unwrap()
    }

    #[tokio::test]
    async fn one_plans_price_names_that_plan_only() {
        let out = info(json!({"plans": ["standard"], "aspect": "price"})).await;
        assert_eq!(
            out.display,
            "スタンダードプランの料金は12,800円です（2時間の測定）。"
        );
        assert!(!out.display.contains("8,800円"));
        assert!(!out.display.contains("24,800円"));
        assert_eq!(out.must_quote, vec!["12,800円".to_string()]);
    }

    #[tokio::test]
    async fn no_plan_named_gives_the_price_table() {
        let out = info(json!({"plans": [], "aspect": "price"})).await;
        for price in ["8,800円", "12,800円", "24,800円", "+8,000円"] {
            assert!(out.display.contains(price), "{}", out.display);
        }
    }

    #[tokio::test]
    async fn a_comparison_quotes_both_plans_and_the_difference() {
        let out = info(json!({"plans": ["premium", "standard"], "aspect": "compare"})).await;
        assert!(out.display.contains("12,800円") && out.display.contains("24,800円"));
        assert!(out
            .display
            .contains("プレミアムプランはスタンダードプランより12,000円高く"));
        assert!(out.display.contains("弁護士レビュー"), "{}", out.display);
        assert!(!out.display.contains("ライトプラン"));
        let light = info(json!({"plans": ["light", "standard"], "aspect": "compare"})).await;
        assert!(light
            .display
            .contains("4,000円高く、測定時間が1時間から2時間になり"));
    }

    #[tokio::test]
    async fn duration_and_end_time_come_from_the_catalogue() {
        let all = info(json!({"aspect": "duration"})).await;
        assert!(
            all.display
                .starts_with("測定時間は、ライトプランが1時間、スタンダードプランとプレミアムプランが2時間です。"),
            "{}",
            all.display
        );
        let end =
            info(json!({"plans": ["standard"], "aspect": "duration", "start": "21:00"})).await;
        assert!(
            end.display.starts_with(
                "21:00開始の場合、スタンダードプラン（2時間の測定）は23:00に終わる予定です。"
            ),
            "{}",
            end.display
        );
        assert!(!end.display.contains("ライト"));
        let both = info(json!({"aspect": "duration", "start": "21:00"})).await;
        assert!(
            both.display.contains("ライトプラン（1時間の測定）は22:00"),
            "{}",
            both.display
        );
        assert!(both
            .display
            .contains("スタンダードプランとプレミアムプラン（2時間の測定）は23:00"));
        let ctx = ToolContext {
            identity: kizuna_agent::identity::Identity::anonymous("v"),
            conversation_id: "c".into(),
            now: chrono::Utc::now().with_timezone(&kizuna_agent::clock::jst()),
        };
        assert!(PlanInfo
            .call(&ctx, json!({"aspect": "duration", "start": "nine"}))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn the_mediation_add_on_with_a_plan_gives_the_total() {
        let out = info(json!({"plans": ["standard", "mediation"], "aspect": "price"})).await;
        assert!(out.display.contains("合計20,800円"), "{}", out.display);
        let alone = info(json!({"plans": ["mediation"], "aspect": "price"})).await;
        assert!(alone.display.contains("+8,000円"));
    }
}
