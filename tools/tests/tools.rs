//! The tools through the `Tool` interface: data isolation between customers, manager-only
//! tools, and what managers and customers get back.

mod common;

use std::sync::Arc;

use chrono::NaiveDate;
use common::ctx;
use kizuna_agent::identity::Identity;
use kizuna_agent::tool::{Tool, ToolError, ToolOutput};
use kizuna_store::Store;
use kizuna_tools::crm::get_customer;
use kizuna_tools::health::format_points;
use kizuna_tools::{
    health_score, import_customers, registry, BookMeasurement, BookingCalendar, CancelBooking,
    CatalogTemplate, Format, GenerateFollowup, ListAtRiskAccounts, LookupHealth, MessageTemplate,
    RecommendUpsell, SegmentCustomers, TemplateCatalog, ToolDeps,
};
use serde_json::json;

/// A fixture filed as an outreach template for the audience its id ends with (else both).
fn template(id: &str, trigger: &str, tone: &str, body: &str) -> CatalogTemplate {
    let audience = ["b2c", "b2b"]
        .into_iter()
        .find(|a| id.ends_with(a))
        .unwrap_or("all");
    CatalogTemplate {
        purpose: "outreach".into(),
        audience: audience.into(),
        template: MessageTemplate {
            id: id.into(),
            title: id.into(),
            body: body.into(),
            tone: tone.into(),
            channel: "email".into(),
            trigger: trigger.into(),
        },
    }
}

fn templates() -> Arc<TemplateCatalog> {
    Arc::new(TemplateCatalog::new(vec![
        template(
            "usage-drop-b2b",
            "usage_drop",
            "polite",
            "{{company}}様、いつもZENBUをご利用いただきありがとうございます。今月のご利用率は{{usage_rate}}です。未利用分を活かす3つのご提案をご用意しました。無料の活用相談をこちらからご予約ください。",
        ),
        template(
            "renewal-b2b",
            "renewal_90d",
            "polite",
            "{{company}}様、ご契約は{{date}}に更新を迎えます（あと{{days}}日）。担当CSMからのお電話の日時をお知らせください。",
        ),
        template("broken", "low_nps", "polite", "{{name}}様、{{coupon}}をお受け取りください。"),
        template(
            "measured-b2c",
            "post_measurement",
            "warm",
            "{{name}}様、{{plan}}での測定が完了しました。レポートはマイページからご確認ください。",
        ),
    ]))
}

async fn load_demo(store: &Store) {
    import_customers(store, &common::demo_csv(), Format::Csv)
        .await
        .unwrap();
}

fn forbidden(result: Result<ToolOutput, ToolError>) -> String {
    match result {
        Err(ToolError::Forbidden(message)) => message,
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

/// Customer B-2001 asks about B-2002 (and C-1001 about another customer's booking): each
/// tool refuses, and nothing of the other account appears in the refusal.
async fn customers_reach_only_their_own_account(store: &Store) {
    load_demo(store).await;
    let other = get_customer(store, "B-2002").await.unwrap().unwrap();
    let other_score = health_score(&other, NaiveDate::from_ymd_opt(2026, 11, 21).unwrap())
        .unwrap()
        .total;
    let secrets = [
        other.name.clone(),
        other.email.clone().unwrap(),
        format!("{}点", format_points(other_score)),
        "みなと".to_string(),
    ];
    let me = ctx(Identity::customer("B-2001"));
    let lookup = LookupHealth::new(store.clone());
    let upsell = RecommendUpsell::new(store.clone());
    let followup = GenerateFollowup::new(store.clone(), templates(), None);
    let mut refusals = vec![
        forbidden(lookup.call(&me, json!({"customer_id": "B-2002"})).await),
        forbidden(upsell.call(&me, json!({"customer_id": "B-2002"})).await),
        forbidden(
            followup
                .call(
                    &me,
                    json!({"customer_id": "B-2002", "purpose": "usage_drop"}),
                )
                .await,
        ),
    ];

    // C-1001 books; C-1002 tries to cancel that booking by its id.
    let book = BookMeasurement::new(store.clone(), BookingCalendar::default()).unwrap();
    let booked = book
        .call(
            &ctx(Identity::customer("C-1001")),
            json!({"slot_start": "2026-11-24T19:00:00+09:00", "plan": "standard"}),
        )
        .await
        .unwrap();
    let booking_id = booked.data["booking_id"].clone();
    let cancel = CancelBooking::new(store.clone());
    refusals.push(forbidden(
        cancel
            .call(
                &ctx(Identity::customer("C-1002")),
                json!({"booking_id": booking_id}),
            )
            .await,
    ));
    let hanako = get_customer(store, "C-1001").await.unwrap().unwrap();
    let booking_secrets = [
        hanako.name.clone(),
        hanako.email.clone().unwrap(),
        "11月24日".to_string(),
        "12,800円".to_string(),
    ];
    for refusal in &refusals {
        for secret in secrets.iter().chain(&booking_secrets) {
            assert!(
                !refusal.contains(secret.as_str()),
                "{refusal:?} leaks {secret:?}"
            );
        }
    }
    // The booking is untouched.
    let still = cancel
        .call(
            &ctx(Identity::customer("C-1001")),
            json!({"booking_id": booking_id}),
        )
        .await
        .unwrap();
    assert_eq!(still.data["cancelled"], json!(true));

    // Own account: allowed, with or without naming it.
    let own = lookup.call(&me, json!({})).await.unwrap();
    assert_eq!(own.data["customer_id"], json!("B-2001"));
    assert_eq!(own.must_quote, ["45.5点"]);
    assert!(
        own.data.get("recommendations").is_none(),
        "internal actions stay internal"
    );
    let own_named = lookup
        .call(&me, json!({"customer_id": "B-2001"}))
        .await
        .unwrap();
    assert_eq!(own_named.data["total"], json!(45.5));

    // Anonymous visitors see no account at all.
    let anonymous = ctx(Identity::anonymous("visitor"));
    for result in [
        lookup
            .call(&anonymous, json!({"customer_id": "B-2001"}))
            .await,
        upsell.call(&anonymous, json!({})).await,
        followup
            .call(
                &anonymous,
                json!({"customer_id": "B-2001", "purpose": "usage_drop"}),
            )
            .await,
        cancel
            .call(&anonymous, json!({"booking_id": "BK-000000000000"}))
            .await,
    ] {
        assert!(forbidden(result).contains("ログイン"));
    }
}
on_both_engines!(isolation, super::customers_reach_only_their_own_account);

async fn manager_only_tools_refuse_everyone_else(store: &Store) {
    load_demo(store).await;
    let at_risk = ListAtRiskAccounts::new(store.clone());
    let segments = SegmentCustomers::new(store.clone());
    for identity in [Identity::customer("B-2001"), Identity::anonymous("visitor")] {
        let c = ctx(identity);
        let refusal = forbidden(at_risk.call(&c, json!({})).await);
        assert!(!refusal.contains("B-2002"));
        forbidden(segments.call(&c, json!({})).await);
    }
}
on_both_engines!(
    managers_only,
    super::manager_only_tools_refuse_everyone_else
);

fn ids(out: &ToolOutput) -> Vec<String> {
    out.data["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["customer_id"].as_str().unwrap().to_string())
        .collect()
}

async fn managers_see_accounts(store: &Store) {
    load_demo(store).await;
    let manager = ctx(Identity::manager("M-1"));

    // Health of any account, with the recommended actions.
    let lookup = LookupHealth::new(store.clone());
    let red = lookup
        .call(&manager, json!({"customer_id": "B-2002"}))
        .await
        .unwrap();
    assert_eq!(red.data["status"], json!("red"));
    assert_eq!(red.data["total"], json!(7.5));
    let actions: Vec<&str> = red.data["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "csm_call",
            "executive_escalation",
            "reengagement_campaign",
            "tutorial_content"
        ]
    );
    assert!(red.display.contains("支払い遅延 35日"), "{}", red.display);
    assert!(red.display.contains("[担当者・緊急]"));
    assert!(matches!(
        lookup.call(&manager, json!({})).await,
        Err(ToolError::InvalidArguments(_))
    ));
    assert!(matches!(
        lookup
            .call(&manager, json!({"customer_id": "B-0000"}))
            .await,
        Err(ToolError::NotFound(_))
    ));
    let person = lookup
        .call(&manager, json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(person.data["applicable"], json!(false));
    assert!(person.display.contains("法人"));

    // At-risk accounts: lowest first, with reasons and the action.
    let list = ListAtRiskAccounts::new(store.clone());
    let all = list.call(&manager, json!({"limit": 100})).await.unwrap();
    let totals: Vec<f64> = all.data["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["total"].as_f64().unwrap())
        .collect();
    assert_eq!(totals.len(), 36, "17 red + 19 yellow in the demo data");
    assert!(totals.windows(2).all(|w| w[0] <= w[1]));
    assert!(totals.iter().all(|t| *t <= 70.0));
    let first = &all.data["accounts"][0];
    assert!(first["reasons"].as_array().unwrap().len() <= 2);
    assert!(!first["recommended_action"].as_str().unwrap().is_empty());
    assert!(ids(&all).contains(&"B-2002".to_string()));
    assert!(
        !ids(&all).contains(&"B-2003".to_string()),
        "green is not at risk"
    );
    assert_eq!(all.must_quote, ids(&all));
    assert!(all.display.contains("B-2002 みなと住宅管理株式会社"));

    let only_red = list
        .call(&manager, json!({"status": "red", "limit": 100}))
        .await
        .unwrap();
    assert_eq!(ids(&only_red).len(), 17);
    assert!(only_red.data["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["status"] == json!("red")));
    let renewing = list
        .call(&manager, json!({"renewal_within_days": 90, "limit": 100}))
        .await
        .unwrap();
    let renewing_ids = ids(&renewing);
    assert!(renewing_ids.contains(&"B-2002".to_string()));
    assert!(
        !renewing_ids.contains(&"B-2001".to_string()),
        "renews 2027-06-30"
    );
    assert!(renewing.data["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["days_to_renewal"].as_i64().unwrap() <= 90));
    assert!(renewing.display.contains("リテンション"));
    let on_plan = list
        .call(&manager, json!({"plan": "ビジネス20", "limit": 100}))
        .await
        .unwrap();
    assert!(on_plan.data["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["plan"] == json!("ビジネス20")));
    let top3 = list.call(&manager, json!({"limit": 3})).await.unwrap();
    assert_eq!(ids(&top3), ids(&all)[..3]);
    assert!(matches!(
        list.call(&manager, json!({"status": "purple"})).await,
        Err(ToolError::InvalidArguments(_))
    ));

    // Upsell for any account.
    let upsell = RecommendUpsell::new(store.clone());
    let near_quota = upsell
        .call(&manager, json!({"customer_id": "B-2003"}))
        .await
        .unwrap();
    assert_eq!(
        near_quota.data["recommendations"][0]["product"],
        json!("upgrade_to_next_tier")
    );
    assert!(near_quota.display.contains("+40,000円/月"));
    let enterprise = upsell
        .call(&manager, json!({"customer_id": "B-2006"}))
        .await
        .unwrap();
    let products: Vec<&str> = enterprise.data["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["product"].as_str().unwrap())
        .collect();
    assert_eq!(products, ["api_integration"]);

    // Segments of the demo data.
    let segments = SegmentCustomers::new(store.clone());
    let report = segments.call(&manager, json!({})).await.unwrap();
    let k = report.data["k"].as_u64().unwrap();
    assert!((5..=7).contains(&k));
    let sizes: u64 = report.data["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["size"].as_u64().unwrap())
        .sum();
    assert_eq!(sizes, 200);
    assert!(report.display.starts_with("顧客セグメント"));
    assert!(report.display.contains("推奨施策"));
    assert!(matches!(
        segments.call(&manager, json!({"k": 9})).await,
        Err(ToolError::InvalidArguments(_))
    ));
}
on_both_engines!(manager_views, super::managers_see_accounts);

async fn followups(store: &Store) {
    load_demo(store).await;
    let manager = ctx(Identity::manager("M-1"));
    let tool = GenerateFollowup::new(store.clone(), templates(), None);

    let out = tool
        .call(
            &manager,
            json!({"customer_id": "B-2001", "purpose": "usage_drop"}),
        )
        .await
        .unwrap();
    let message = out.data["message"].as_str().unwrap();
    assert_eq!(out.data["template_id"], json!("usage-drop-b2b"));
    assert!(message.starts_with("さくら不動産管理株式会社様、"));
    assert!(message.contains("ご利用率は30%"));
    assert!(message.chars().count() <= 200);
    assert!(!message.contains("{{"));
    assert_eq!(
        out.data["call_to_action"],
        json!("無料の活用相談をこちらからご予約ください。")
    );
    assert_eq!(out.display, message);

    let renewal = tool
        .call(
            &manager,
            json!({"customer_id": "B-2002", "purpose": "renewal_90d"}),
        )
        .await
        .unwrap();
    assert!(renewal.display.contains("2027年1月31日"));
    assert!(renewal.display.contains("あと71日"));

    // Opted out: a refusal and no message.
    let refused = tool
        .call(
            &manager,
            json!({"customer_id": "B-2005", "purpose": "usage_drop"}),
        )
        .await
        .unwrap();
    assert_eq!(refused.data["refused"], json!(true));
    assert!(refused.data.get("message").is_none());
    assert!(refused.display.contains("配信停止"));

    // A template with an unknown placeholder fails clearly; a purpose without templates is
    // not found.
    let err = tool
        .call(
            &manager,
            json!({"customer_id": "B-2001", "purpose": "low_nps"}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("{{coupon}}"), "{err}");
    assert!(matches!(
        tool.call(
            &manager,
            json!({"customer_id": "B-2001", "purpose": "health_red"})
        )
        .await,
        Err(ToolError::NotFound(_))
    ));

    // A customer may draft their own follow-up; b2c templates fill the plan name.
    let own = tool
        .call(
            &ctx(Identity::customer("C-1001")),
            json!({"purpose": "post_measurement"}),
        )
        .await
        .unwrap();
    assert_eq!(
        own.display,
        "山田 花子様、スタンダードプランでの測定が完了しました。レポートはマイページからご確認ください。"
    );
}
on_both_engines!(followup, super::followups);

#[tokio::test]
async fn registry_holds_every_canonical_tool() {
    let db = common::sqlite().await;
    let tools = registry(ToolDeps {
        store: db.store.clone(),
        calendar: BookingCalendar::default(),
        templates: templates(),
        followup_link: Some("https://example.jp/mypage".into()),
    })
    .unwrap();
    let names: Vec<&str> = tools.names().collect();
    for name in [
        "recommend_plan",
        "check_availability",
        "book_measurement",
        "cancel_booking",
        "lookup_health",
        "list_at_risk_accounts",
        "recommend_upsell",
        "generate_followup",
        "escalate_to_human",
        "segment_customers",
    ] {
        assert!(names.contains(&name), "{name} is missing");
    }
    // Every schema is an object schema the agent's validator accepts.
    for spec in tools.specs() {
        assert_eq!(spec.parameters["type"], json!("object"), "{}", spec.name);
        assert!(spec.parameters["properties"].is_object());
    }
    let escalate = tools.get("escalate_to_human").unwrap();
    let args = json!({"reason": "legal", "summary": "訴訟を検討されています"});
    kizuna_agent::tool::validate_arguments(&escalate.parameters(), &args).unwrap();
    let out = escalate
        .call(&ctx(Identity::anonymous("v")), args)
        .await
        .unwrap();
    assert_eq!(
        out.data,
        json!({"escalate": true, "reason": "legal", "summary": "訴訟を検討されています"})
    );
}
