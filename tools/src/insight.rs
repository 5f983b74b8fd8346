//! `customer_insight` (managers): one account's needs, usage pattern, cross-sell/upsell,
//! churn risk and its factors, and the recommended next action (seed 001), from its CRM
//! fields, its conversations (topics, sentiment, escalations), its bookings and the churn
//! model. Every statement names its source.

use async_trait::async_trait;
use kizuna_agent::tool::{RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use kizuna_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access;
use crate::accounts::{as_of, long_date};
use crate::churn::{feature_label_ja, latest_model, predict, starter_model};
use crate::crm::{get_customer, Customer};
use crate::health::health_score;
use crate::upsell::{upsell_recommendations, UpsellSignals};

/// One statement and where it comes from (`crm:<column>`, `conversations`, `bookings`,
/// `health_score`, `churn_model v<N>`, `upsell_rules`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    pub text: String,
    pub source: String,
}

fn st(text: impl Into<String>, source: impl Into<String>) -> Statement {
    Statement {
        text: text.into(),
        source: source.into(),
    }
}

/// What the store holds about the account's conversations and bookings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub conversations: i64,
    /// Intent labels of the customer's messages, most frequent first.
    pub topics: Vec<(String, i64)>,
    pub negative_messages: i64,
    pub messages: i64,
    pub escalations: i64,
    pub bookings: i64,
}

async fn activity(store: &Store, customer_id: &str) -> Result<Activity, kizuna_store::StoreError> {
    let everything = (i64::MIN, i64::MAX);
    let activity = store
        .customer_activity(customer_id, everything, i64::MIN)
        .await?;
    let conversations = activity.conversations;
    let rows = activity.user_message_metadata;
    let mut topics: std::collections::BTreeMap<String, i64> = Default::default();
    let mut negative = 0;
    for text in rows.iter().flatten() {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        if let Some(label) = v["intent"]["label"].as_str() {
            *topics.entry(label.to_string()).or_default() += 1;
        }
        if matches!(v["sentiment"]["label"].as_str(), Some("anger" | "anxious")) {
            negative += 1;
        }
    }
    let mut topics: Vec<(String, i64)> = topics.into_iter().collect();
    topics.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let escalations = activity.escalations;
    let bookings = store.count_customer_bookings(customer_id).await?;
    Ok(Activity {
        conversations,
        topics,
        negative_messages: negative,
        messages: rows.len() as i64,
        escalations,
        bookings,
    })
}

fn pct(v: f64) -> String {
    format!("{}%", (v * 100.0).round() as i64)
}

/// The insight sections from the facts (pure, tested without a store).
pub fn sections(
    c: &Customer,
    a: &Activity,
    churn: Option<&crate::churn::Prediction>,
    today: chrono::NaiveDate,
) -> Vec<(&'static str, Vec<Statement>)> {
    let mut needs = Vec::new();
    let mut usage = Vec::new();
    let mut upsell = Vec::new();
    let mut risk = Vec::new();
    let mut next = Vec::new();

    // Usage pattern.
    match (c.measurements_30d, c.monthly_measurements) {
        (Some(used), Some(quota)) if quota > 0 => usage.push(st(
            format!(
                "直近30日の測定 {used}件／契約 月{quota}件（利用率 {}）",
                pct(used as f64 / quota as f64)
            ),
            "crm:measurements_30d, crm:monthly_measurements",
        )),
        (Some(used), _) => usage.push(st(
            format!("直近30日の測定 {used}件"),
            "crm:measurements_30d",
        )),
        _ => {}
    }
    if let (Some(m30), Some(m90)) = (c.measurements_30d, c.measurements_90d) {
        if m90 > 0 {
            let trend = (m30 as f64 - m90 as f64 / 3.0) / (m90 as f64 / 3.0);
            usage.push(st(
                format!("3ヶ月の利用トレンド {:+}%", (trend * 100.0).round() as i64),
                "crm:measurements_30d, crm:measurements_90d",
            ));
        }
    }
    if let Some(d) = c.last_login {
        usage.push(st(
            format!("最終ログイン {}日前", (today - d).num_days().max(0)),
            "crm:last_login",
        ));
    }
    if let Some(r) = c.report_view_rate {
        usage.push(st(
            format!("レポート閲覧率 {}", pct(r)),
            "crm:report_view_rate",
        ));
    }
    if let Some(r) = c.feature_adoption {
        usage.push(st(format!("機能活用度 {}", pct(r)), "crm:feature_adoption"));
    }
    usage.push(st(format!("測定予約 {}件", a.bookings), "bookings"));

    // Needs: what they talked about and what the numbers say.
    if a.conversations > 0 {
        let topics: Vec<String> = a
            .topics
            .iter()
            .take(3)
            .map(|(t, n)| format!("{t}（{n}件）"))
            .collect();
        needs.push(st(
            format!(
                "会話 {}件・メッセージ {}件{}",
                a.conversations,
                a.messages,
                if topics.is_empty() {
                    String::new()
                } else {
                    format!("、主な話題: {}", topics.join("、"))
                }
            ),
            "conversations",
        ));
        needs.push(st(
            format!(
                "否定的なメッセージ {}件、エスカレーション {}件",
                a.negative_messages, a.escalations
            ),
            "conversations",
        ));
    } else {
        needs.push(st(
            "チャットでの問い合わせ履歴はありません",
            "conversations",
        ));
    }
    match (c.measurements_30d, c.monthly_measurements) {
        (Some(used), Some(quota)) if quota > 0 && (used as f64) < 0.5 * quota as f64 => {
            needs.push(st(
                "契約枠を使い切れていない: 活用方法の支援（オンボーディング・活用提案）が必要",
                "crm:measurements_30d, crm:monthly_measurements",
            ))
        }
        (Some(used), Some(quota)) if quota > 0 && used >= quota => needs.push(st(
            "契約枠を使い切っている: 測定枠の拡大ニーズ",
            "crm:measurements_30d, crm:monthly_measurements",
        )),
        _ => {}
    }
    if c.csat.is_some_and(|v| v < 3.5) || c.nps.is_some_and(|v| v <= 6.0) {
        needs.push(st(
            format!(
                "満足度に課題（CSAT {}、NPS {}）: 不満点のヒアリングが必要",
                c.csat.map_or("—".into(), |v| format!("{v:.1}")),
                c.nps.map_or("—".into(), |v| format!("{v:.0}"))
            ),
            "crm:csat, crm:nps",
        ));
    }
    if c.payment_overdue_days.is_some_and(|d| d > 0) {
        needs.push(st(
            format!("支払い {}日遅延", c.payment_overdue_days.unwrap_or(0)),
            "crm:payment_overdue_days",
        ));
    }

    // Cross-sell / upsell.
    for u in upsell_recommendations(c, &UpsellSignals::default()) {
        upsell.push(st(format!("{}: {}", u.name, u.reason), "upsell_rules"));
    }
    if upsell.is_empty() {
        upsell.push(st(
            "現時点で該当するアップセル・クロスセルの条件はありません",
            "upsell_rules",
        ));
    }

    // Churn risk and factors.
    if let Some(p) = churn {
        let source = format!("churn_model v{}", p.model_version);
        risk.push(st(
            format!(
                "解約確率 {}（リスク: {}）",
                pct(p.probability),
                p.risk_level.label_ja()
            ),
            source.clone(),
        ));
        for f in &p.top_risk_factors {
            risk.push(st(
                format!(
                    "要因: {}{}",
                    feature_label_ja(&f.feature),
                    f.value.map_or(" 記録なし".to_string(), |v| format!(
                        " {}",
                        (v * 100.0).round() / 100.0
                    ))
                ),
                source.clone(),
            ));
        }
        for action in &p.recommended_actions {
            next.push(st(
                format!(
                    "{}（{}、{}）",
                    action.description,
                    action.owner,
                    kizuna_churn::risk::deadline_ja(&action.deadline)
                ),
                source.clone(),
            ));
        }
    }
    if let Ok(h) = health_score(c, today) {
        risk.push(st(
            format!("ヘルススコア {:.1}点（{}）", h.total, h.status.label_ja()),
            "health_score",
        ));
        if next.is_empty() {
            if let Some(r) = h.recommendations.first() {
                next.push(st(r.text, "health_score"));
            }
        }
    }
    if next.is_empty() {
        if let Some(u) = upsell
            .first()
            .filter(|s| s.source == "upsell_rules" && !s.text.starts_with("現時点"))
        {
            next.push(st(format!("提案: {}", u.text), "upsell_rules"));
        } else {
            next.push(st(
                "定期フォローを継続（大きなリスク要因なし）",
                "health_score",
            ));
        }
    }
    vec![
        ("ニーズ・課題", needs),
        ("利用パターン", usage),
        ("アップセル・クロスセル", upsell),
        ("解約リスクと要因", risk),
        ("推奨される次のアクション", next),
    ]
}

pub struct CustomerInsight {
    store: Store,
}

impl CustomerInsight {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[derive(Debug, Deserialize)]
struct Args {
    customer_id: Option<String>,
}

#[async_trait]
impl Tool for CustomerInsight {
    fn name(&self) -> &str {
        "customer_insight"
    }

    fn description(&self) -> &str {
        "管理者向け: 1社の顧客インサイト（ニーズ・課題、利用パターン、アップセル・クロスセル、解約リスクと要因、推奨される次のアクション）をCRM・会話・予約・解約予測モデルから出典付きでまとめる"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"customer_id": {"type": "string"}},
            "required": ["customer_id"]
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        access::require_manager(ctx)?;
        let args: Args =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let id = access::target_customer(ctx, args.customer_id.as_deref())?;
        let failed = |e: String| ToolError::Failed(e);
        let c = get_customer(&self.store, &id)
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| ToolError::NotFound(format!("顧客 {id} が見つかりません。")))?;
        let today = as_of(ctx);
        let a = activity(&self.store, &id)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let own = latest_model(&self.store)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let model = match own.as_ref() {
            Some(m) => Some(m),
            None => starter_model(),
        };
        let churn = match (model, c.kind, c.churned_at) {
            (Some(m), crate::crm::CustomerKind::B2b, None) => Some(
                predict(&self.store, m, &c, today)
                    .await
                    .map_err(|e| failed(e.to_string()))?,
            ),
            _ => None,
        };
        let sections = sections(&c, &a, churn.as_ref(), today);
        let mut display = format!(
            "{} {} の顧客インサイト（{}時点、[ ]は出典）:",
            c.id,
            c.name,
            long_date(today)
        );
        for (title, items) in &sections {
            display.push_str(&format!("\n■ {title}"));
            for s in items {
                display.push_str(&format!("\n・{} [{}]", s.text, s.source));
            }
        }
        Ok(ToolOutput {
            data: json!({
                "customer_id": c.id,
                "name": c.name,
                "as_of": today.to_string(),
                "sections": sections.iter().map(|(t, items)| json!({"title": t, "items": items})).collect::<Vec<_>>(),
                "churn": churn.as_ref().map(|p| json!({
                    "probability": p.probability, "risk_level": p.risk_level,
                    "top_risk_factors": p.top_risk_factors, "model_version": p.model_version,
                })),
            }),
            display,
            must_quote: vec![c.id.clone()],
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::CustomerKind;
    use kizuna_agent::identity::Identity;

    fn ctx(identity: Identity) -> ToolContext {
        ToolContext {
            identity,
            conversation_id: "c".into(),
            now: chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00+09:00").unwrap(),
        }
    }

    #[test]
    fn every_statement_has_a_source_and_every_section_is_there() {
        let mut c = Customer::new("B-1", CustomerKind::B2b, "テスト管理");
        c.monthly_measurements = Some(20);
        c.measurements_30d = Some(4);
        c.nps = Some(4.0);
        c.payment_overdue_days = Some(14);
        let a = Activity {
            conversations: 2,
            topics: vec![("complaint".into(), 3)],
            negative_messages: 2,
            messages: 5,
            escalations: 1,
            bookings: 0,
        };
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let s = sections(&c, &a, None, today);
        let titles: Vec<&str> = s.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            titles,
            [
                "ニーズ・課題",
                "利用パターン",
                "アップセル・クロスセル",
                "解約リスクと要因",
                "推奨される次のアクション"
            ]
        );
        assert!(s.iter().all(|(_, items)| !items.is_empty()));
        assert!(s
            .iter()
            .flat_map(|(_, i)| i)
            .all(|st| !st.source.is_empty()));
        let needs: Vec<&str> = s[0].1.iter().map(|x| x.text.as_str()).collect();
        assert!(
            needs.iter().any(|t| t.contains("complaint（3件）")),
            "{needs:?}"
        );
        assert!(needs.iter().any(|t| t.contains("使い切れていない")));
        assert!(needs.iter().any(|t| t.contains("14日遅延")));
    }

    #[tokio::test]
    async fn managers_only_and_the_churn_model_is_cited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("c.db").display()
        ))
        .await
        .unwrap();
        let csv = "id,kind,name,monthly_measurements,measurements_30d,nps,contract_end\nB-1,b2b,テスト管理,20,3,4,2026-12-20\n";
        crate::crm::import_customers(&store, csv.as_bytes(), crate::crm::Format::Csv)
            .await
            .unwrap();
        let tool = CustomerInsight::new(store);
        let out = tool
            .call(
                &ctx(Identity::manager("M-1")),
                json!({"customer_id": "B-1"}),
            )
            .await
            .unwrap();
        assert!(out.display.contains("[churn_model v0]"), "{}", out.display);
        assert!(out.display.contains("推奨される次のアクション"));
        for who in [Identity::customer("B-1"), Identity::anonymous("v")] {
            let err = tool
                .call(&ctx(who), json!({"customer_id": "B-1"}))
                .await
                .unwrap_err();
            assert!(matches!(err, ToolError::Forbidden(_)));
        }
    }
}
