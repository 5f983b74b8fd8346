//! The engine over `demo/customers.csv` in a temporary SQLite store, with a fixed clock.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, FixedOffset, NaiveDate};
use kizuna_store::Store;
use kizuna_tools::booking::{Reminder, ReminderKind};
use kizuna_tools::crm::{import_customers, Customer, CustomerKind, Format};
use kizuna_tools::followup::{MessageTemplate, StaticTemplates, TemplateSource, MAX_MESSAGE_CHARS};

use crate::*;

/// Records what it is given; `live` says whether the customer's widget is connected.
#[derive(Default)]
struct RecordingDelivery {
    live: bool,
    messages: Mutex<Vec<OutboundMessage>>,
    tasks: Mutex<Vec<StaffTask>>,
}

impl RecordingDelivery {
    fn messages(&self) -> Vec<OutboundMessage> {
        self.messages.lock().expect("lock").clone()
    }
    fn tasks(&self) -> Vec<StaffTask> {
        self.tasks.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Delivery for RecordingDelivery {
    async fn deliver(&self, message: &OutboundMessage) -> Result<DeliveryOutcome, String> {
        self.messages.lock().expect("lock").push(message.clone());
        Ok(DeliveryOutcome { live: self.live })
    }
    async fn notify_staff(&self, task: &StaffTask) -> Result<(), String> {
        self.tasks.lock().expect("lock").push(task.clone());
        Ok(())
    }
}

fn at(rfc3339: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(rfc3339).expect("valid time")
}

/// The knowledge base's real templates.
fn templates() -> Arc<dyn TemplateSource> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../knowledge/content/templates"
    );
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("templates dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read template file");
        let list: Vec<MessageTemplate> = serde_yaml::from_str(&text).expect("parse templates");
        all.extend(list);
    }
    Arc::new(StaticTemplates::new(all))
}

fn config() -> OutreachConfig {
    OutreachConfig {
        link: Some("https://zenbu.example.jp/s".into()),
        ..OutreachConfig::default()
    }
}

async fn demo_store(dir: &tempfile::TempDir) -> (Store, String) {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("kizuna.db").display()
    );
    let store = Store::connect(&url).await.expect("connect");
    let csv = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../demo/customers.csv"
    ))
    .expect("demo csv");
    import_customers(&store, &csv, Format::Csv)
        .await
        .expect("import");
    (store, url)
}

const MORNING: &str = "2026-11-21T10:00:00+09:00";

#[tokio::test]
async fn demo_accounts_get_the_right_triggers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = demo_store(&dir).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery {
        live: true,
        ..Default::default()
    };
    let report = engine
        .run_once(&store, at(MORNING), templates(), &delivery, false)
        .await
        .expect("run");
    println!("{report}");

    // B-2001: usage 6 of 20 → usage drop, delivered (80,000 yen: no approval).
    assert!(matches!(
        report.outcome("B-2001", Trigger::UsageDrop),
        Some(Outcome::Delivered { live: true, .. })
    ));
    // B-2002: 35 days overdue → the 21-day step, a human task; 120,000 yen → the rest awaits approval.
    assert!(matches!(
        report.outcome("B-2002", Trigger::PaymentOverdue21),
        Some(Outcome::HumanTask { send_id: Some(_) })
    ));
    assert!(report.outcome("B-2002", Trigger::PaymentOverdue7).is_none());
    for trigger in [
        Trigger::HealthRed,
        Trigger::LowNps,
        Trigger::Renewal90dAtRisk,
    ] {
        assert!(
            matches!(
                report.outcome("B-2002", trigger),
                Some(Outcome::AwaitingApproval { send_id: Some(_) })
            ),
            "{trigger}"
        );
    }
    // B-2004: 14 days overdue and NPS 5: both delivered, the CSM alerted about the NPS.
    assert!(matches!(
        report.outcome("B-2004", Trigger::PaymentOverdue14),
        Some(Outcome::Delivered { .. })
    ));
    assert!(matches!(
        report.outcome("B-2004", Trigger::LowNps),
        Some(Outcome::Delivered { .. })
    ));
    assert!(delivery
        .tasks()
        .iter()
        .any(|t| t.customer_id == "B-2004" && t.kind == StaffTaskKind::CsmAlert));
    // B-2005: red and 21 days overdue, but opted out: nothing at all.
    assert!(report.entries_for("B-2005").count() > 0);
    assert!(report
        .entries_for("B-2005")
        .all(|e| e.outcome == Outcome::Skipped(SkipReason::OptedOut)));
    assert!(delivery
        .messages()
        .iter()
        .all(|m| m.customer_id != "B-2005"));
    // B-2006: 7 days overdue, 160,000 yen → the first step awaits approval.
    assert!(matches!(
        report.outcome("B-2006", Trigger::PaymentOverdue7),
        Some(Outcome::AwaitingApproval { .. })
    ));
    // B-2003: green, well used, renews in 2027-09: nothing.
    assert_eq!(report.entries_for("B-2003").count(), 0);

    // Opted-out customers never receive anything; messages fit and name the customer.
    let opted_out = ["C-1002", "B-2005"];
    for m in delivery.messages() {
        assert!(!opted_out.contains(&m.customer_id.as_str()));
        assert!(m.text.chars().count() <= MAX_MESSAGE_CHARS, "{}", m.text);
        assert!(!m.text.contains("{{"), "{}", m.text);
        assert_eq!(m.campaign_id, m.trigger.as_str());
        assert_eq!(m.variant, variant_for(&m.customer_id, &m.campaign_id));
    }
    let overdue = delivery
        .messages()
        .into_iter()
        .find(|m| m.customer_id == "B-2004" && m.trigger == Trigger::PaymentOverdue14)
        .expect("B-2004 payment message");
    assert!(
        overdue.text.contains("ひかりハウジング株式会社"),
        "{}",
        overdue.text
    );
    // 14 days before 2026-11-21, the invoice's due date.
    assert!(overdue.text.contains("2026年11月7日"), "{}", overdue.text);
    // Approvals wait for a person and are listed for them.
    let pending = pending_approvals(&store).await.expect("pending");
    assert!(pending.iter().any(|p| p.customer_id == "B-2006"));
    assert!(delivery
        .messages()
        .iter()
        .all(|m| m.customer_id != "B-2006"));
}

#[tokio::test]
async fn sends_once_across_runs_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = demo_store(&dir).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    let first = engine
        .run_once(&store, at(MORNING), templates(), &delivery, false)
        .await
        .expect("first run");
    let sent = delivery.messages().len();
    assert!(sent > 0);
    assert!(first
        .entries
        .iter()
        .all(|e| !matches!(e.outcome, Outcome::Delivered { live: true, .. })));

    // Same engine, an hour later: nothing new.
    let later = at("2026-11-21T11:00:00+09:00");
    let second = engine
        .run_once(&store, later, templates(), &delivery, false)
        .await
        .expect("second run");
    assert_eq!(delivery.messages().len(), sent, "{second}");
    assert_eq!(second.delivered().count(), 0);

    // A fresh engine and connection over the same file (a restart, or another replica).
    let store2 = Store::connect(&url).await.expect("reconnect");
    let engine2 = OutreachEngine::new(config()).expect("engine");
    let delivery2 = RecordingDelivery::default();
    let third = engine2
        .run_once(&store2, later, templates(), &delivery2, false)
        .await
        .expect("third run");
    assert!(delivery2.messages().is_empty(), "{third}");
    assert!(third
        .entries
        .iter()
        .any(|e| e.outcome == Outcome::Skipped(SkipReason::AlreadySent)));
    // The same cause never gets two rows.
    let rows: i64 = sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) AS n FROM outreach_sends")
            .fetch_one(store2.pool())
            .await
            .expect("count"),
        "n",
    );
    let claimed = first
        .entries
        .iter()
        .filter(|e| !matches!(e.outcome, Outcome::Skipped(_)))
        .count() as i64;
    assert_eq!(rows, claimed);
}

#[tokio::test]
async fn quiet_hours_defer_everything_to_the_morning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = demo_store(&dir).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    let night = engine
        .run_once(
            &store,
            at("2026-11-21T23:00:00+09:00"),
            templates(),
            &delivery,
            false,
        )
        .await
        .expect("night run");
    assert!(delivery.messages().is_empty());
    let deferred: Vec<_> = night
        .entries
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Skipped(SkipReason::QuietHours { until }) => {
                Some(((e.customer_id.clone(), e.trigger), *until))
            }
            _ => None,
        })
        .collect();
    assert!(!deferred.is_empty());
    assert!(deferred
        .iter()
        .all(|(_, u)| *u == at("2026-11-22T09:00:00+09:00")));
    // Approvals and human tasks reach people at night; nothing reaches a customer.
    assert!(night
        .entries
        .iter()
        .any(|e| matches!(e.outcome, Outcome::HumanTask { .. })));
    // The next morning the deferred ones go out (within the frequency cap).
    let morning = engine
        .run_once(
            &store,
            at("2026-11-22T09:00:00+09:00"),
            templates(),
            &delivery,
            false,
        )
        .await
        .expect("morning run");
    assert!(morning.delivered().count() > 0);
    for ((customer, trigger), _) in &deferred {
        let outcome = morning
            .outcome(customer, *trigger)
            .expect("evaluated again");
        assert!(
            matches!(
                outcome,
                Outcome::Delivered { .. } | Outcome::Skipped(SkipReason::Capped)
            ),
            "{customer} {trigger}: {outcome:?}"
        );
    }
    assert_eq!(delivery.messages().len(), morning.delivered().count());
}

#[tokio::test]
async fn frequency_cap_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = demo_store(&dir).await;
    let mut cfg = config();
    cfg.frequency_cap.max_sends = 1;
    let engine = OutreachEngine::new(cfg).expect("engine");
    let delivery = RecordingDelivery::default();
    let report = engine
        .run_once(&store, at(MORNING), templates(), &delivery, false)
        .await
        .expect("run");
    // B-2004 has two (payment 14 days, NPS 5): the more urgent goes, the other waits.
    assert!(matches!(
        report.outcome("B-2004", Trigger::PaymentOverdue14),
        Some(Outcome::Delivered { .. })
    ));
    assert_eq!(
        report.outcome("B-2004", Trigger::LowNps),
        Some(&Outcome::Skipped(SkipReason::Capped))
    );
    let mut per_customer = std::collections::HashMap::new();
    for m in delivery.messages() {
        *per_customer.entry(m.customer_id).or_insert(0) += 1;
    }
    assert!(per_customer.values().all(|n| *n <= 1), "{per_customer:?}");
    // Three days later the window still holds the first send.
    let again = engine
        .run_once(
            &store,
            at(MORNING) + Duration::days(3),
            templates(),
            &delivery,
            false,
        )
        .await
        .expect("run");
    assert_eq!(
        again.outcome("B-2004", Trigger::LowNps),
        Some(&Outcome::Skipped(SkipReason::Capped))
    );
    // After the 7-day window it may go.
    let week = engine
        .run_once(
            &store,
            at(MORNING) + Duration::days(8),
            templates(),
            &delivery,
            false,
        )
        .await
        .expect("run");
    assert!(matches!(
        week.outcome("B-2004", Trigger::LowNps),
        Some(Outcome::Delivered { .. })
    ));
}

#[tokio::test]
async fn dry_run_writes_nothing_and_explains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = demo_store(&dir).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    let preview = engine
        .run_once(&store, at(MORNING), templates(), &delivery, true)
        .await
        .expect("dry run");
    assert!(delivery.messages().is_empty());
    assert!(delivery.tasks().is_empty());
    assert!(pending_approvals(&store).await.expect("pending").is_empty());
    assert!(preview.delivered().count() > 0);
    let text = preview.to_string();
    assert!(text.contains("(dry run)"));
    assert!(text.contains("B-2005 health_red"), "{text}");
    assert!(text.contains("opted out"));
    assert!(text.contains("awaiting approval"));
    // The real run then sends exactly what the preview listed.
    let real = engine
        .run_once(&store, at(MORNING), templates(), &delivery, false)
        .await
        .expect("run");
    assert_eq!(real.delivered().count(), preview.delivered().count());
}

#[tokio::test]
async fn approval_then_events_and_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = demo_store(&dir).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery {
        live: true,
        ..Default::default()
    };
    let now = at(MORNING);
    engine
        .run_once(&store, now, templates(), &delivery, false)
        .await
        .expect("run");
    let b2006 = pending_approvals(&store)
        .await
        .expect("pending")
        .into_iter()
        .find(|p| p.customer_id == "B-2006")
        .expect("B-2006 awaits approval");
    let outcome = approve_and_deliver(&store, &b2006.send_id, &delivery, now)
        .await
        .expect("approve");
    assert_eq!(outcome, Some(DeliveryOutcome { live: true }));
    // A second approval does not send again.
    assert_eq!(
        approve_and_deliver(&store, &b2006.send_id, &delivery, now)
            .await
            .expect("approve again"),
        None
    );
    assert_eq!(
        delivery
            .messages()
            .iter()
            .filter(|m| m.customer_id == "B-2006")
            .count(),
        1
    );

    let sent = delivery.messages();
    let usage = sent
        .iter()
        .find(|m| m.customer_id == "B-2001")
        .expect("B-2001 usage drop");
    assert!(record_event(&store, &usage.send_id, EventKind::Opened, now)
        .await
        .expect("open"));
    assert!(
        record_event(&store, &usage.send_id, EventKind::Replied, now)
            .await
            .expect("reply")
    );
    // Counted once.
    assert!(
        !record_event(&store, &usage.send_id, EventKind::Opened, now)
            .await
            .expect("open")
    );
    assert!(record_event(&store, "no-such-send", EventKind::Opened, now)
        .await
        .is_err());

    let report = campaign_report(&store, None, None).await.expect("report");
    let mut expected = std::collections::BTreeMap::<(String, String), i64>::new();
    for m in &sent {
        *expected
            .entry((m.campaign_id.clone(), m.variant.clone()))
            .or_default() += 1;
    }
    for ((campaign, variant), n) in &expected {
        let stats = report.get(campaign, variant).expect("row");
        assert_eq!(stats.delivered, *n, "{campaign} {variant}");
    }
    let stats = report.get("usage_drop", &usage.variant).expect("usage row");
    assert_eq!(stats.opened, 1);
    assert_eq!(stats.replied, 1);
    assert_eq!(stats.converted, 0);
    assert_eq!(stats.open_rate(), Some(1.0 / stats.delivered as f64));
    let text = report.to_string();
    assert!(text.contains("usage_drop"), "{text}");
    assert!(text.contains("payment_overdue_7"), "{text}");
}

fn b2b(id: &str) -> Customer {
    let mut c = Customer::new(id, CustomerKind::B2b, format!("{id}株式会社"));
    c.monthly_measurements = Some(10);
    c.measurements_30d = Some(9);
    c.mrr_jpy = Some(40_000);
    c.last_login = Some(NaiveDate::from_ymd_opt(2026, 11, 20).expect("date"));
    c.report_view_rate = Some(0.9);
    c.feature_adoption = Some(0.8);
    c.csat = Some(4.8);
    c.escalations_30d = Some(0);
    c.payment_overdue_days = Some(0);
    c
}

#[test]
fn evaluate_onboarding_renewal_and_reminders() {
    let today = NaiveDate::from_ymd_opt(2026, 11, 21).expect("date");
    let mut new = b2b("B-9001");
    new.customer_since = Some(today - Duration::days(3));
    let mut day2 = b2b("B-9002");
    day2.customer_since = Some(today - Duration::days(2));
    let mut old = b2b("B-9003");
    old.customer_since = Some(today - Duration::days(8));
    let mut renewing = b2b("B-9004");
    renewing.contract_end = Some(today + Duration::days(90));
    let mut far = b2b("B-9005");
    far.contract_end = Some(today + Duration::days(91));
    let reminder = Reminder {
        id: "R-1".into(),
        booking_id: "BK-1".into(),
        customer_id: "C-9".into(),
        kind: ReminderKind::D1,
        due_at: at("2026-11-21T10:00:00+09:00"),
        status: "pending".into(),
    };
    let customers = [new, day2, old, renewing, far];
    let found = evaluate(&customers, &[reminder], today, &Trigger::ALL);
    let of = |id: &str| -> Vec<Trigger> {
        found
            .iter()
            .filter(|c| c.customer_id == id)
            .map(|c| c.trigger)
            .collect()
    };
    assert_eq!(of("B-9001"), vec![Trigger::OnboardingDay3]);
    // A missed day catches up with the latest step reached.
    assert_eq!(of("B-9002"), vec![Trigger::OnboardingDay1]);
    assert!(of("B-9003").is_empty());
    assert_eq!(of("B-9004"), vec![Trigger::Renewal90dHealthy]);
    assert!(of("B-9005").is_empty());
    let r = found
        .iter()
        .find(|c| c.customer_id == "C-9")
        .expect("reminder");
    assert_eq!(r.trigger, Trigger::BookingReminderD1);
    assert_eq!(r.cause_key, "reminder:R-1");
    assert_eq!(r.reminder_id.as_deref(), Some("R-1"));

    // Disabled triggers do not fire.
    let only_renewal = evaluate(&customers, &[], today, &[Trigger::Renewal90dHealthy]);
    assert_eq!(only_renewal.len(), 1);
}

#[test]
fn evaluate_payment_steps_and_cause_keys() {
    let today = NaiveDate::from_ymd_opt(2026, 11, 21).expect("date");
    let step = |days: i64| {
        let mut c = b2b("B-1");
        c.payment_overdue_days = Some(days);
        evaluate(&[c], &[], today, &Trigger::ALL)
            .into_iter()
            .find(|c| c.trigger.as_str().starts_with("payment_overdue"))
    };
    assert!(step(6).is_none());
    assert_eq!(step(7).expect("7").trigger, Trigger::PaymentOverdue7);
    assert_eq!(step(13).expect("13").trigger, Trigger::PaymentOverdue7);
    assert_eq!(step(14).expect("14").trigger, Trigger::PaymentOverdue14);
    let last = step(21).expect("21");
    assert_eq!(last.trigger, Trigger::PaymentOverdue21);
    assert!(last.human_task);
    assert!(!step(14).expect("14").human_task);
    assert_eq!(last.cause_key, "overdue_since:2026-10-31");
    // The same overdue seen a day later has the same cause.
    let mut c = b2b("B-1");
    c.payment_overdue_days = Some(22);
    let next_day = evaluate(&[c], &[], today + Duration::days(1), &Trigger::ALL);
    assert_eq!(next_day[0].cause_key, "overdue_since:2026-10-31");
}

#[test]
fn config_defaults_and_validation() {
    let cfg: OutreachConfig = toml::from_str("").expect("empty config");
    assert_eq!(cfg.frequency_cap.max_sends, 2);
    assert_eq!(cfg.frequency_cap.window_days, 7);
    assert_eq!(cfg.approval_mrr_jpy, 100_000);
    assert_eq!(cfg.quiet_hours.time_zone, "Asia/Tokyo");
    assert_eq!(cfg.enabled_triggers.len(), Trigger::ALL.len());
    let cfg: OutreachConfig = toml::from_str(
        "approval_mrr_jpy = 50000\nenabled_triggers = [\"payment_overdue_7\"]\n[quiet_hours]\nstart = \"22:00:00\"\nend = \"08:00:00\"\ntime_zone = \"+09:00\"",
    )
    .expect("config");
    assert_eq!(cfg.enabled_triggers, vec![Trigger::PaymentOverdue7]);
    assert!(cfg.validate().is_ok());
    assert!(toml::from_str::<OutreachConfig>("frequency = 3").is_err());
    assert!(toml::from_str::<OutreachConfig>("enabled_triggers = [\"spam\"]").is_err());
    let bad = OutreachConfig {
        quiet_hours: QuietHours {
            time_zone: "Mars/Olympus".into(),
            ..QuietHours::default()
        },
        ..OutreachConfig::default()
    };
    assert!(OutreachEngine::new(bad).is_err());
}

#[test]
fn quiet_hours_boundaries() {
    let q = QuietHours::default();
    let zone = q.zone().expect("zone");
    assert_eq!(
        q.deferred_until(zone, at("2026-11-21T20:59:00+09:00")),
        None
    );
    assert_eq!(
        q.deferred_until(zone, at("2026-11-21T21:00:00+09:00")),
        Some(at("2026-11-22T09:00:00+09:00"))
    );
    // 01:00 JST is 16:00 UTC the day before.
    assert_eq!(
        q.deferred_until(zone, at("2026-11-21T16:00:00+00:00")),
        Some(at("2026-11-22T09:00:00+09:00"))
    );
    assert_eq!(
        q.deferred_until(zone, at("2026-11-22T09:00:00+09:00")),
        None
    );
}

#[test]
fn variants_are_stable_and_split() {
    assert_eq!(
        variant_for("B-2001", "usage_drop"),
        variant_for("B-2001", "usage_drop")
    );
    let b = (0..1000)
        .filter(|i| variant_for(&format!("C-{i}"), "low_nps") == "B")
        .count();
    assert!((400..600).contains(&b), "{b}");
}

/// The same claim-once behaviour on PostgreSQL, when a test database is given. It empties the
/// outreach tables of that database.
#[tokio::test]
async fn postgres_sends_once() {
    let Ok(url) = std::env::var("KIZUNA_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set KIZUNA_TEST_POSTGRES_URL to run the PostgreSQL path");
        return;
    };
    let store = Store::connect(&url)
        .await
        .expect("connect to KIZUNA_TEST_POSTGRES_URL");
    for clean in ["DELETE FROM outreach_events", "DELETE FROM outreach_sends"] {
        sqlx::query(clean)
            .execute(store.pool())
            .await
            .expect("clean");
    }
    let csv = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../demo/customers.csv"
    ))
    .expect("demo csv");
    import_customers(&store, &csv, Format::Csv)
        .await
        .expect("import");
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    let first = engine
        .run_once(&store, at(MORNING), templates(), &delivery, false)
        .await
        .expect("first run");
    assert!(first.delivered().count() > 0);
    assert!(matches!(
        first.outcome("B-2002", Trigger::PaymentOverdue21),
        Some(Outcome::HumanTask { .. })
    ));
    let sent = delivery.messages().len();
    let other = Store::connect(&url).await.expect("second connection");
    let second = engine
        .run_once(&other, at(MORNING), templates(), &delivery, false)
        .await
        .expect("second run");
    assert_eq!(delivery.messages().len(), sent, "{second}");
    let usage = delivery
        .messages()
        .into_iter()
        .find(|m| m.customer_id == "B-2001")
        .expect("usage drop");
    assert!(
        record_event(&store, &usage.send_id, EventKind::Converted, at(MORNING))
            .await
            .expect("event")
    );
    let report = campaign_report(&store, None, None).await.expect("report");
    assert_eq!(
        report
            .get("usage_drop", &usage.variant)
            .expect("row")
            .converted,
        1
    );
}
