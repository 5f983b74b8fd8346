//! `my_account`: the signed-in customer's own contract (plan, monthly measurements, contract
//! end) and upcoming bookings, for 「私のプランは？」「予約はいつ？」「契約はいつまで？」.
//! Read-only, and only ever the caller's own account (`access::target_customer`).

use async_trait::async_trait;
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use kizuna_store::Store;
use serde_json::{json, Value};

use crate::access;
use crate::accounts::{load_customer, long_date};
use crate::availability::slot_label;
use crate::booking::upcoming_bookings;
use crate::crm::CustomerKind;
use crate::plans::{by_id, yen};

pub struct MyAccount {
    store: Store,
}

impl MyAccount {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Tool for MyAccount {
    fn name(&self) -> &str {
        "my_account"
    }

    fn description(&self) -> &str {
        "ログイン中のお客様ご自身の契約内容（プラン、月間測定件数、契約期間）と今後のご予約を調べる"
    }

    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    fn audience(&self) -> Audience {
        Audience::Customers
    }

    async fn call(&self, ctx: &ToolContext, _args: Value) -> Result<ToolOutput, ToolError> {
        let id = access::target_customer(ctx, None)?;
        let customer = load_customer(&self.store, &id).await?;
        let bookings = upcoming_bookings(&self.store, &id, ctx.now)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;

        let mut lines = vec![format!("{}様のご契約内容です。", customer.name)];
        match (&customer.kind, customer.plan.as_deref()) {
            (CustomerKind::B2c, Some(plan)) => match by_id(plan) {
                Some(p) => lines.push(format!("・プラン: {}（{}）", p.name, yen(p.price_jpy))),
                None => lines.push(format!("・プラン: {plan}")),
            },
            (_, Some(plan)) => lines.push(format!("・ご契約プラン: {plan}")),
            (_, None) => {}
        }
        if let Some(quota) = customer.monthly_measurements {
            lines.push(format!("・月間の測定件数: 月{quota}件まで"));
        }
        if let Some(end) = customer.contract_end {
            lines.push(format!("・契約期間: {}まで", long_date(end)));
        }
        if bookings.is_empty() {
            lines.push("・今後のご予約: ありません".to_string());
        } else {
            for b in &bookings {
                let plan = by_id(&b.plan).map(|p| p.name).unwrap_or(b.plan.as_str());
                let mediation = if b.mediation { "＋AI仲裁" } else { "" };
                lines.push(format!(
                    "・ご予約: {}〜 {plan}{mediation}（予約番号 {}）",
                    slot_label(b.slot_start),
                    b.id
                ));
            }
        }
        let data = json!({
            "customer_id": customer.id,
            "plan": customer.plan,
            "monthly_measurements": customer.monthly_measurements,
            "contract_end": customer.contract_end.map(|d| d.to_string()),
            "bookings": bookings.iter().map(|b| json!({
                "booking_id": b.id,
                "start": b.slot_start.to_rfc3339(),
                "plan": b.plan,
                "mediation": b.mediation,
            })).collect::<Vec<_>>(),
        });
        Ok(ToolOutput {
            data,
            display: lines.join("\n"),
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
}
