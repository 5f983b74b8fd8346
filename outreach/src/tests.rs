//! The engine over `demo/customers.csv` in a temporary SQLite store, with a fixed clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, FixedOffset, NaiveDate};
use kizuna_store::Store;
use kizuna_tools::booking::{Reminder, ReminderKind};
use kizuna_tools::crm::{import_customers, Customer, CustomerKind, Format};
use kizuna_tools::followup::{TemplateCatalog, TemplateSource, MAX_MESSAGE_CHARS};

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

/// The knowledge base's real templates, loaded as production loads them.
fn templates() -> Arc<dyn TemplateSource> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../knowledge/content");
    Arc::new(TemplateCatalog::load_content(std::path::Path::new(dir)).expect("templates"))
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
    // Health turns are judged but not stored, and no conversion is measured.
    assert!(preview
        .entries
        .iter()
        .any(|e| e.trigger == Trigger::HealthRed && e.cause_key == "red_since:2026-11-21"));
    assert_eq!(preview.conversions, 0);
    let states = "SELECT COUNT(*) AS n FROM customer_health_state";
    assert_eq!(count(&store, states).await, 0);
    // The real run then sends exactly what the preview listed.
    let real = engine
        .run_once(&store, at(MORNING), templates(), &delivery, false)
        .await
        .expect("run");
    assert_eq!(real.delivered().count(), preview.delivered().count());
    // It stores one health state per B2B account of the demo data.
    let b2b_accounts = count(
        &store,
        "SELECT COUNT(*) AS n FROM customers WHERE kind = 'b2b'",
    )
    .await;
    assert!(b2b_accounts > 0);
    assert_eq!(count(&store, states).await, b2b_accounts);
    let stored = load_health_states(&store).await.expect("load");
    assert_eq!(
        stored.get("B-2002").map(|s| s.status),
        Some(kizuna_tools::health::HealthStatus::Red)
    );
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
    let outcome = approve_and_deliver(
        &store,
        &b2006.send_id,
        &delivery,
        &ChannelsConfig::default(),
        now,
    )
    .await
    .expect("approve");
    assert_eq!(outcome, Some(DeliveryOutcome { live: true }));
    // A second approval does not send again.
    assert_eq!(
        approve_and_deliver(
            &store,
            &b2006.send_id,
            &delivery,
            &ChannelsConfig::default(),
            now
        )
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

fn no_history() -> HashMap<String, HealthState> {
    HashMap::new()
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
    let found = evaluate(
        &customers,
        &[reminder],
        &[],
        today,
        &Trigger::ALL,
        &no_history(),
    );
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
    let only_renewal = evaluate(
        &customers,
        &[],
        &[],
        today,
        &[Trigger::Renewal90dHealthy],
        &no_history(),
    );
    assert_eq!(only_renewal.len(), 1);
}

#[test]
fn evaluate_payment_steps_and_cause_keys() {
    let today = NaiveDate::from_ymd_opt(2026, 11, 21).expect("date");
    let step = |days: i64| {
        let mut c = b2b("B-1");
        c.payment_overdue_days = Some(days);
        evaluate(&[c], &[], &[], today, &Trigger::ALL, &no_history())
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
    let next_day = evaluate(
        &[c],
        &[],
        &[],
        today + Duration::days(1),
        &Trigger::ALL,
        &no_history(),
    );
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
        // CI sets KIZUNA_REQUIRE_POSTGRES (.ci/run): there a missing server fails, never skips.
        assert!(
            std::env::var_os("KIZUNA_REQUIRE_POSTGRES").is_none(),
            "KIZUNA_REQUIRE_POSTGRES is set but no PostgreSQL (KIZUNA_TEST_POSTGRES_URL) was started"
        );
        eprintln!("skipped: set KIZUNA_TEST_POSTGRES_URL to run the PostgreSQL path");
        return;
    };
    let store = Store::connect(&url)
        .await
        .expect("connect to KIZUNA_TEST_POSTGRES_URL");
    for clean in [
        "DELETE FROM outreach_events",
        "DELETE FROM outreach_attempts",
        "DELETE FROM outreach_sends",
        "DELETE FROM customer_health_state",
    ] {
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
    // The health states went in through the batched upsert, one per B2B account.
    let b2b_accounts = count(
        &store,
        "SELECT COUNT(*) AS n FROM customers WHERE kind = 'b2b'",
    )
    .await;
    let states = load_health_states(&store).await.expect("health states");
    assert_eq!(states.len() as i64, b2b_accounts);
    assert_eq!(
        states.get("B-2002").map(|s| s.status),
        Some(kizuna_tools::health::HealthStatus::Red)
    );
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
    // Measured conversions on PostgreSQL: B-2004 pays, its payment reminder converts.
    sqlx::query("UPDATE customers SET payment_overdue_days = 0 WHERE id = 'B-2004'")
        .execute(store.pool())
        .await
        .expect("payment cleared");
    let next_day = engine
        .run_once(&store, day(1), templates(), &delivery, false)
        .await
        .expect("next-day run");
    assert_eq!(next_day.conversions, 1, "{next_day}");
    let payment = sent_for(&delivery, "B-2004", Trigger::PaymentOverdue14);
    assert_eq!(converted(&store, &payment[0].send_id).await, 1);
}

// ---- Health turns and conversions -------------------------------------------------------

/// `MORNING` plus `n` days: local date 2026-11-21 + n.
fn day(n: i64) -> DateTime<FixedOffset> {
    at(MORNING) + Duration::days(n)
}

fn date_of(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 21).expect("date") + Duration::days(n)
}

async fn empty_store(dir: &tempfile::TempDir) -> Store {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("kizuna.db").display()
    );
    Store::connect(&url).await.expect("connect")
}

/// Upserts `customers` through the CRM import, as a CRM refresh would.
async fn put(store: &Store, customers: &[Customer]) {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let mut csv = String::from(
        "id,kind,name,email,phone,plan,monthly_measurements,mrr_jpy,contract_end,customer_since,\
         measurements_30d,last_login,report_view_rate,feature_adoption,csat,nps,escalations_30d,\
         payment_overdue_days,opted_out,time_zone\n",
    );
    for c in customers {
        let fields = [
            c.id.clone(),
            c.kind.as_str().to_string(),
            c.name.clone(),
            opt(c.email.clone()),
            opt(c.phone.clone()),
            opt(c.plan.clone()),
            opt(c.monthly_measurements.map(|v| v.to_string())),
            opt(c.mrr_jpy.map(|v| v.to_string())),
            opt(c.contract_end.map(|v| v.to_string())),
            opt(c.customer_since.map(|v| v.to_string())),
            opt(c.measurements_30d.map(|v| v.to_string())),
            opt(c.last_login.map(|v| v.to_string())),
            opt(c.report_view_rate.map(|v| v.to_string())),
            opt(c.feature_adoption.map(|v| v.to_string())),
            opt(c.csat.map(|v| v.to_string())),
            opt(c.nps.map(|v| v.to_string())),
            opt(c.escalations_30d.map(|v| v.to_string())),
            opt(c.payment_overdue_days.map(|v| v.to_string())),
            c.opted_out.to_string(),
            opt(c.time_zone.clone()),
        ];
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    import_customers(store, csv.as_bytes(), Format::Csv)
        .await
        .expect("import");
}

/// A B2B account in good health (total 88) on local day `n`, with nothing else to say.
fn green(id: &str, n: i64) -> Customer {
    let mut c = b2b(id);
    c.plan = Some("ビジネス10".into());
    c.nps = Some(9.0);
    c.contract_end = Some(NaiveDate::from_ymd_opt(2028, 3, 31).expect("date"));
    c.customer_since = Some(NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"));
    c.last_login = Some(date_of(n));
    c
}

/// The same account in red health (total 35): half the quota used (no usage drop), no
/// logins or reports, poor support scores, nothing overdue.
fn red(id: &str) -> Customer {
    let mut c = green(id, 0);
    c.measurements_30d = Some(5);
    c.last_login = None;
    c.report_view_rate = Some(0.0);
    c.feature_adoption = Some(0.0);
    c.csat = Some(2.0);
    c.escalations_30d = Some(2);
    c
}

async fn health_row(store: &Store, id: &str) -> Option<(String, String)> {
    store
        .health_states()
        .await
        .expect("health state")
        .into_iter()
        .find(|row| row.customer_id == id)
        .map(|row| (row.status, row.since))
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::Row::get(
        &sqlx::query(sql)
            .fetch_one(store.pool())
            .await
            .expect("count"),
        "n",
    )
}

async fn converted(store: &Store, send_id: &str) -> i64 {
    sqlx::Row::get(
        &sqlx::query(
            "SELECT COUNT(*) AS n FROM outreach_events WHERE send_id = $1 AND kind = 'converted'",
        )
        .bind(send_id)
        .fetch_one(store.pool())
        .await
        .expect("count"),
        "n",
    )
}

fn entry<'a>(report: &'a RunReport, id: &str, trigger: Trigger) -> Option<&'a RunEntry> {
    report
        .entries
        .iter()
        .find(|e| e.customer_id == id && e.trigger == trigger)
}

fn sent_for(delivery: &RecordingDelivery, id: &str, trigger: Trigger) -> Vec<OutboundMessage> {
    delivery
        .messages()
        .into_iter()
        .filter(|m| m.customer_id == id && m.trigger == trigger)
        .collect()
}

#[test]
fn evaluate_names_the_day_the_red_turn_began() {
    let today = date_of(0);
    let customer = red("B-1");
    let health_red = |history: &HashMap<String, HealthState>| {
        evaluate(
            std::slice::from_ref(&customer),
            &[],
            &[],
            today,
            &Trigger::ALL,
            history,
        )
        .into_iter()
        .filter(|c| c.trigger == Trigger::HealthRed)
        .map(|c| c.cause_key)
        .collect::<Vec<_>>()
    };
    // First seen red: the turn is today (when it really began is unknown).
    assert_eq!(health_red(&no_history()), vec!["red_since:2026-11-21"]);
    // Already red since the 3rd: the same cause as then.
    let mut history = no_history();
    let since = NaiveDate::from_ymd_opt(2026, 11, 3).expect("date");
    history.insert(
        "B-1".into(),
        HealthState {
            status: kizuna_tools::health::HealthStatus::Red,
            since,
        },
    );
    assert_eq!(health_red(&history), vec!["red_since:2026-11-03"]);
    assert!(health_changes(std::slice::from_ref(&customer), today, &history).is_empty());
    // Yellow before: a new turn today, and a state to store.
    history.get_mut("B-1").expect("state").status = kizuna_tools::health::HealthStatus::Yellow;
    assert_eq!(health_red(&history), vec!["red_since:2026-11-21"]);
    let changes = health_changes(std::slice::from_ref(&customer), today, &history);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].state.since, today);
    // Green customers raise nothing.
    assert!(evaluate(&[green("B-2", 0)], &[], &[], today, &Trigger::ALL, &history).is_empty());
}

#[tokio::test]
async fn health_red_sends_once_per_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    let run = |n: i64| engine.run_once(&store, day(n), templates(), &delivery, false);
    let id = "B-3001";

    put(&store, &[green(id, 0)]).await;
    let report = run(0).await.expect("run");
    assert!(entry(&report, id, Trigger::HealthRed).is_none(), "{report}");
    assert_eq!(
        health_row(&store, id).await,
        Some(("green".into(), "2026-11-21".into()))
    );

    // Turns red on day 1: one message, however many runs follow while it stays red.
    put(&store, &[red(id)]).await;
    for n in [1, 1, 2, 5] {
        let report = run(n).await.expect("run");
        let e = entry(&report, id, Trigger::HealthRed).expect("health_red evaluated");
        assert_eq!(e.cause_key, "red_since:2026-11-22");
        if n > 1 {
            assert_eq!(e.outcome, Outcome::Skipped(SkipReason::AlreadySent));
        }
    }
    let first = sent_for(&delivery, id, Trigger::HealthRed);
    assert_eq!(first.len(), 1);
    assert_eq!(
        health_row(&store, id).await,
        Some(("red".into(), "2026-11-22".into()))
    );
    assert_eq!(converted(&store, &first[0].send_id).await, 0);

    // Green again on day 10: the red send converted.
    put(&store, &[green(id, 10)]).await;
    let report = run(10).await.expect("run");
    assert_eq!(report.conversions, 1, "{report}");
    assert!(report.to_string().contains("conversions 1"), "{report}");
    assert_eq!(converted(&store, &first[0].send_id).await, 1);
    assert_eq!(
        health_row(&store, id).await,
        Some(("green".into(), "2026-12-01".into()))
    );

    // Red again on day 15: a new turn, but within the 30-day cooldown.
    put(&store, &[red(id)]).await;
    let report = run(15).await.expect("run");
    let e = entry(&report, id, Trigger::HealthRed).expect("health_red evaluated");
    assert_eq!(e.cause_key, "red_since:2026-12-06");
    assert_eq!(e.outcome, Outcome::Skipped(SkipReason::Cooldown));

    // Green on day 20, red on day 40, after the cooldown: sent again, with the new turn.
    put(&store, &[green(id, 20)]).await;
    run(20).await.expect("run");
    put(&store, &[red(id)]).await;
    let report = run(40).await.expect("run");
    let e = entry(&report, id, Trigger::HealthRed).expect("health_red evaluated");
    assert_eq!(e.cause_key, "red_since:2026-12-31");
    assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{report}");
    assert_eq!(sent_for(&delivery, id, Trigger::HealthRed).len(), 2);
    run(41).await.expect("run");
    assert_eq!(sent_for(&delivery, id, Trigger::HealthRed).len(), 2);
}

#[tokio::test]
async fn first_seen_red_sends_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    put(&store, &[red("B-3002")]).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    for n in 0..3 {
        let report = engine
            .run_once(&store, day(n), templates(), &delivery, false)
            .await
            .expect("run");
        let e = entry(&report, "B-3002", Trigger::HealthRed).expect("health_red");
        assert_eq!(e.cause_key, "red_since:2026-11-21");
    }
    assert_eq!(sent_for(&delivery, "B-3002", Trigger::HealthRed).len(), 1);
    assert_eq!(
        health_row(&store, "B-3002").await,
        Some(("red".into(), "2026-11-21".into()))
    );
}

/// A turn first seen in quiet hours is stored at once, and its message still goes out in the
/// morning: the cause stays while the customer stays red.
#[tokio::test]
async fn red_turn_seen_at_night_is_sent_in_the_morning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    put(&store, &[red("B-3003")]).await;
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
    assert!(matches!(
        night.outcome("B-3003", Trigger::HealthRed),
        Some(Outcome::Skipped(SkipReason::QuietHours { .. }))
    ));
    assert_eq!(
        health_row(&store, "B-3003").await,
        Some(("red".into(), "2026-11-21".into()))
    );
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
    let e = entry(&morning, "B-3003", Trigger::HealthRed).expect("health_red");
    assert_eq!(e.cause_key, "red_since:2026-11-21");
    assert!(matches!(e.outcome, Outcome::Delivered { .. }));
}

fn in_zone(mut customer: Customer, zone: &str) -> Customer {
    customer.time_zone = Some(zone.into());
    customer
}

/// Quiet hours follow the customer's own zone (the CRM's optional `time_zone` column); the
/// configured zone (Asia/Tokyo) serves the others and any stored zone that does not parse.
#[tokio::test]
async fn quiet_hours_in_the_customers_time_zone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    put(
        &store,
        &[
            in_zone(red("B-4001"), "Europe/London"),
            red("B-4002"),
            in_zone(red("B-4003"), "+00:00"),
            red("B-4004"),
        ],
    )
    .await;
    // Written around the import, which would refuse it.
    sqlx::query("UPDATE customers SET time_zone = 'Mars/Olympus' WHERE id = 'B-4004'")
        .execute(store.pool())
        .await
        .expect("corrupt zone");
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    // 22:00 in Tokyo, 13:00 in London (GMT in November).
    let report = engine
        .run_once(
            &store,
            at("2026-11-21T22:00:00+09:00"),
            templates(),
            &delivery,
            false,
        )
        .await
        .expect("run");
    for id in ["B-4001", "B-4003"] {
        assert!(
            matches!(
                report.outcome(id, Trigger::HealthRed),
                Some(Outcome::Delivered { .. })
            ),
            "{id}: {:?}",
            report.outcome(id, Trigger::HealthRed)
        );
        assert_eq!(sent_for(&delivery, id, Trigger::HealthRed).len(), 1);
    }
    for id in ["B-4002", "B-4004"] {
        match report.outcome(id, Trigger::HealthRed) {
            Some(Outcome::Skipped(SkipReason::QuietHours { until })) => {
                assert_eq!(*until, at("2026-11-22T09:00:00+09:00"), "{id}");
            }
            other => panic!("{id}: expected quiet hours, got {other:?}"),
        }
        assert!(sent_for(&delivery, id, Trigger::HealthRed).is_empty());
    }
}

#[tokio::test]
async fn quiet_hours_in_los_angeles() {
    let run = |now: &'static str| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = empty_store(&dir).await;
        put(
            &store,
            &[in_zone(red("B-5001"), "America/Los_Angeles"), red("B-5002")],
        )
        .await;
        let engine = OutreachEngine::new(config()).expect("engine");
        let delivery = RecordingDelivery::default();
        engine
            .run_once(&store, at(now), templates(), &delivery, false)
            .await
            .expect("run")
    };
    // 10:00 JST is 17:00 of the previous day in Los Angeles (PST): both are delivered, and
    // the trigger's date is still the configured zone's (Tokyo's 2026-11-21).
    let morning = run("2026-11-21T10:00:00+09:00").await;
    for id in ["B-5001", "B-5002"] {
        let e = entry(&morning, id, Trigger::HealthRed).expect("health_red");
        assert!(matches!(e.outcome, Outcome::Delivered { .. }), "{id}");
        assert_eq!(e.cause_key, "red_since:2026-11-21");
    }
    // 15:00 JST is 22:00 in Los Angeles: that customer waits for 09:00 there, which is 02:00
    // JST the next day; the Tokyo customer is delivered.
    let afternoon = run("2026-11-21T15:00:00+09:00").await;
    match afternoon.outcome("B-5001", Trigger::HealthRed) {
        Some(Outcome::Skipped(SkipReason::QuietHours { until })) => {
            assert_eq!(*until, at("2026-11-21T09:00:00-08:00"));
            assert_eq!(*until, at("2026-11-22T02:00:00+09:00"));
            assert_eq!(until.offset().local_minus_utc(), -8 * 3600);
        }
        other => panic!("expected quiet hours, got {other:?}"),
    }
    assert!(matches!(
        afternoon.outcome("B-5002", Trigger::HealthRed),
        Some(Outcome::Delivered { .. })
    ));
}

#[tokio::test]
async fn health_states_are_written_in_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    let today = date_of(0);
    let changes: Vec<HealthChange> = (0..1_234)
        .map(|i| HealthChange {
            customer_id: format!("B-{i:05}"),
            state: HealthState {
                status: kizuna_tools::health::HealthStatus::Green,
                since: today,
            },
        })
        .collect();
    assert_eq!(
        save_health_states(&store, &changes, day(0))
            .await
            .expect("save"),
        1_234
    );
    // Same colour again: nothing rewritten, the first `since` kept.
    let later: Vec<HealthChange> = changes
        .iter()
        .map(|c| HealthChange {
            state: HealthState {
                since: date_of(5),
                ..c.state
            },
            ..c.clone()
        })
        .collect();
    assert_eq!(
        save_health_states(&store, &later, day(5))
            .await
            .expect("save"),
        0
    );
    let stored = load_health_states(&store).await.expect("load");
    assert_eq!(stored.len(), 1_234);
    assert!(stored.values().all(|s| s.since == today));
}

#[tokio::test]
async fn conversions_follow_outcomes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    let mut overdue = green("B-3101", 0);
    overdue.payment_overdue_days = Some(10);
    let mut renewing = green("B-3102", 0);
    renewing.contract_end = Some(date_of(60));
    let mut idle = green("B-3103", 0);
    idle.measurements_30d = Some(2);
    put(&store, &[overdue.clone(), renewing.clone(), idle.clone()]).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    let report = engine
        .run_once(&store, day(0), templates(), &delivery, false)
        .await
        .expect("run");
    assert_eq!(report.conversions, 0);
    let payment = sent_for(&delivery, "B-3101", Trigger::PaymentOverdue7);
    let renewal = sent_for(&delivery, "B-3102", Trigger::Renewal90dHealthy);
    let usage = sent_for(&delivery, "B-3103", Trigger::UsageDrop);
    assert_eq!(
        (payment.len(), renewal.len(), usage.len()),
        (1, 1, 1),
        "{report}"
    );

    // Nothing changed yet: nothing converts.
    let report = engine
        .run_once(&store, day(1), templates(), &delivery, false)
        .await
        .expect("run");
    assert_eq!(report.conversions, 0);

    // The payment clears and the contract is extended; usage stays low.
    overdue.payment_overdue_days = Some(0);
    renewing.contract_end = Some(date_of(60 + 365));
    idle.last_login = Some(date_of(3));
    put(&store, &[overdue, renewing, idle]).await;
    let report = engine
        .run_once(&store, day(3), templates(), &delivery, false)
        .await
        .expect("run");
    assert_eq!(report.conversions, 2, "{report}");
    assert_eq!(converted(&store, &payment[0].send_id).await, 1);
    assert_eq!(converted(&store, &renewal[0].send_id).await, 1);
    assert_eq!(converted(&store, &usage[0].send_id).await, 0);

    // Recorded once: later runs find nothing new.
    let report = engine
        .run_once(&store, day(4), templates(), &delivery, false)
        .await
        .expect("run");
    assert_eq!(report.conversions, 0);
    assert_eq!(converted(&store, &payment[0].send_id).await, 1);
    let stats = campaign_report(&store, None, None).await.expect("report");
    let payment_stats = stats
        .get("payment_overdue_7", &payment[0].variant)
        .expect("payment row");
    assert_eq!(payment_stats.converted, 1);
}

#[tokio::test]
async fn no_conversion_outside_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    let mut overdue = green("B-3201", 0);
    overdue.payment_overdue_days = Some(10);
    put(&store, &[overdue.clone()]).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    assert_eq!(engine.config().conversion_window_days, 30);
    let delivery = RecordingDelivery::default();
    engine
        .run_once(&store, day(0), templates(), &delivery, false)
        .await
        .expect("run");
    let payment = sent_for(&delivery, "B-3201", Trigger::PaymentOverdue7);
    assert_eq!(payment.len(), 1);
    // Paid 31 days after the reminder: not counted as its conversion.
    overdue.payment_overdue_days = Some(0);
    overdue.last_login = Some(date_of(31));
    put(&store, &[overdue]).await;
    let report = engine
        .run_once(&store, day(31), templates(), &delivery, false)
        .await
        .expect("run");
    assert_eq!(report.conversions, 0);
    assert_eq!(converted(&store, &payment[0].send_id).await, 0);
}

async fn insert_booking(
    store: &Store,
    id: &str,
    customer: &str,
    slot: DateTime<FixedOffset>,
    seat: i64,
    created: DateTime<FixedOffset>,
) {
    sqlx::query(
        "INSERT INTO bookings (id, customer_id, slot_start, plan, status, created_at, seat,
            price_jpy, mediation, notes, updated_at)
         VALUES ($1, $2, $3, 'standard', 'booked', $4, $5, 30000, 0, NULL, $4)",
    )
    .bind(id)
    .bind(customer)
    .bind(slot.timestamp())
    .bind(created.timestamp_millis())
    .bind(seat)
    .execute(store.pool())
    .await
    .expect("insert booking");
}

#[tokio::test]
async fn onboarding_converts_on_a_booking_made_after_the_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    let mut new = green("B-3301", 0);
    new.customer_since = Some(date_of(0));
    put(&store, &[new]).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    engine
        .run_once(&store, day(0), templates(), &delivery, false)
        .await
        .expect("run");
    let day0 = sent_for(&delivery, "B-3301", Trigger::OnboardingDay0);
    assert_eq!(day0.len(), 1);
    insert_booking(
        &store,
        "BK-3301",
        "B-3301",
        day(10),
        1,
        day(0) + Duration::hours(2),
    )
    .await;
    let report = engine
        .run_once(&store, day(1), templates(), &delivery, false)
        .await
        .expect("run");
    // Day 0's message led to the booking; day 1's was sent after it and did not.
    let day1 = sent_for(&delivery, "B-3301", Trigger::OnboardingDay1);
    assert_eq!(day1.len(), 1);
    assert_eq!(report.conversions, 1, "{report}");
    assert_eq!(converted(&store, &day0[0].send_id).await, 1);
    assert_eq!(converted(&store, &day1[0].send_id).await, 0);
}

#[tokio::test]
async fn booking_reminder_converts_when_the_booking_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    let mut kept = Customer::new("C-3401", CustomerKind::B2c, "山田 一郎");
    kept.plan = Some("standard".into());
    let mut dropped = Customer::new("C-3402", CustomerKind::B2c, "山田 二郎");
    dropped.plan = Some("standard".into());
    put(&store, &[kept, dropped]).await;
    // Both measure tomorrow at 14:00; their D-1 reminders are due now.
    let slot = at("2026-11-22T14:00:00+09:00");
    for (n, customer) in [(1, "C-3401"), (2, "C-3402")] {
        let booking = format!("BK-340{n}");
        insert_booking(&store, &booking, customer, slot, n, day(-5)).await;
        sqlx::query(
            "INSERT INTO booking_reminders (id, booking_id, customer_id, kind, due_at, status, created_at)
             VALUES ($1, $2, $3, 'd1', $4, 'pending', $5)",
        )
        .bind(format!("RM-340{n}"))
        .bind(&booking)
        .bind(customer)
        .bind(day(0).timestamp())
        .bind(day(-5).timestamp_millis())
        .execute(store.pool())
        .await
        .expect("insert reminder");
    }
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    engine
        .run_once(&store, day(0), templates(), &delivery, false)
        .await
        .expect("run");
    let reminders: Vec<_> = delivery
        .messages()
        .into_iter()
        .filter(|m| m.trigger == Trigger::BookingReminderD1)
        .collect();
    assert_eq!(reminders.len(), 2);
    sqlx::query("UPDATE bookings SET status = 'cancelled' WHERE id = 'BK-3402'")
        .execute(store.pool())
        .await
        .expect("cancel");
    // Before the slot starts nothing is judged.
    let before = engine
        .run_once(
            &store,
            at("2026-11-22T13:00:00+09:00"),
            templates(),
            &delivery,
            false,
        )
        .await
        .expect("run");
    assert_eq!(before.conversions, 0);
    let after = engine
        .run_once(
            &store,
            at("2026-11-22T15:00:00+09:00"),
            templates(),
            &delivery,
            false,
        )
        .await
        .expect("run");
    assert_eq!(after.conversions, 1, "{after}");
    for m in reminders {
        let expected = i64::from(m.customer_id == "C-3401");
        assert_eq!(
            converted(&store, &m.send_id).await,
            expected,
            "{}",
            m.customer_id
        );
    }
}

#[tokio::test]
async fn delivered_messages_are_queued_on_extra_channels_when_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = demo_store(&dir).await;
    let channels: ChannelsConfig = toml::from_str(
        r#"
        [email]
        smtp_url = "smtp://127.0.0.1:2525"
        from = "ZENBU <support@zenbu.example.jp>"
        [webhook]
        url = "http://127.0.0.1:9/sms"
        "#,
    )
    .expect("channels");
    let engine = OutreachEngine::new(config())
        .expect("engine")
        .with_channels(channels.clone());
    // The customer's widget is not connected: the chat keeps it for the next visit and the
    // extra channels carry it now.
    let delivery = RecordingDelivery::default();
    let report = engine
        .run_once(&store, at(MORNING), templates(), &delivery, false)
        .await
        .expect("run");
    let delivered: Vec<&RunEntry> = report.delivered().collect();
    assert!(!delivered.is_empty());
    let rows = sqlx::query_scalar::<_, String>(
        "SELECT id FROM outbox WHERE kind = 'outreach_message' ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .expect("outbox");
    let customers = kizuna_tools::crm::list_customers(&store, &Default::default())
        .await
        .expect("customers");
    let by_id: HashMap<&str, &Customer> = customers.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut expected = Vec::new();
    for entry in &delivered {
        let Outcome::Delivered { send_id, .. } = &entry.outcome else {
            unreachable!()
        };
        let customer = by_id[entry.customer_id.as_str()];
        if customer
            .email
            .as_deref()
            .is_some_and(|e| !e.trim().is_empty())
        {
            expected.push(format!("outreach:{send_id}:email"));
        }
        if customer
            .phone
            .as_deref()
            .is_some_and(|p| !p.trim().is_empty())
        {
            expected.push(format!("outreach:{send_id}:webhook"));
        }
    }
    expected.sort();
    assert!(!expected.is_empty(), "demo customers have addresses");
    assert_eq!(rows, expected);

    // An approved send goes out on the channels too; a live customer gets only the chat
    // under the default `offline` policy.
    let approvals = pending_approvals(&store).await.expect("approvals");
    let first = approvals
        .first()
        .expect("an important account awaits approval");
    let live = RecordingDelivery {
        live: true,
        ..Default::default()
    };
    approve_and_deliver(&store, &first.send_id, &live, &channels, at(MORNING))
        .await
        .expect("approve")
        .expect("was awaiting approval");
    let queued_for_approved: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE id LIKE $1")
            .bind(format!("outreach:{}:%", first.send_id))
            .fetch_one(store.pool())
            .await
            .expect("count");
    assert_eq!(queued_for_approved, 0);
}

// ---- Onboarding reminders (seed 003 §5.1) ------------------------------------------------

/// A B2B account that signed on local day `n`, with nothing else to say.
fn onboarding(id: &str, n: i64) -> Customer {
    let mut c = green(id, n);
    c.customer_since = Some(date_of(n));
    c
}

fn unopened_step(customer_id: &str, step: Trigger, sent_on: NaiveDate) -> UnopenedStep {
    UnopenedStep {
        send_id: format!("S-{customer_id}-{step}"),
        customer_id: customer_id.to_string(),
        step,
        sent_on,
    }
}

#[test]
fn evaluate_unopened_content_reminders() {
    let today = date_of(0);
    let reminders_for = |customer: &Customer, steps: &[UnopenedStep]| -> Vec<Candidate> {
        evaluate(
            std::slice::from_ref(customer),
            &[],
            steps,
            today,
            &Trigger::ALL,
            &no_history(),
        )
        .into_iter()
        .filter(|c| c.trigger == Trigger::OnboardingContentUnopened)
        .collect()
    };
    // Day 4: Day 1's video two days unseen is due, Day 3's (sent yesterday) not yet, and the
    // Day 0 welcome has nothing to watch.
    let new = onboarding("B-5001", -4);
    let steps = [
        unopened_step("B-5001", Trigger::OnboardingDay3, date_of(-1)),
        unopened_step("B-5001", Trigger::OnboardingDay1, date_of(-2)),
        unopened_step("B-5001", Trigger::OnboardingDay0, date_of(-4)),
        unopened_step("B-5999", Trigger::OnboardingDay1, date_of(-3)),
    ];
    let found = reminders_for(&new, &steps);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].cause_key, "unopened:S-B-5001-onboarding_day1");
    assert_eq!(found[0].unopened_step, Some(Trigger::OnboardingDay1));
    assert_eq!(found[0].template_purpose, "onboarding_video_unwatched");
    assert!(Trigger::OnboardingContentUnopened.is_service());
    // Onboarding ends on day 14: a step still unseen on day 15 is left alone.
    let day7 = [unopened_step(
        "B-5002",
        Trigger::OnboardingDay7,
        date_of(-7),
    )];
    assert_eq!(reminders_for(&onboarding("B-5002", -14), &day7).len(), 1);
    assert!(reminders_for(&onboarding("B-5002", -15), &day7).is_empty());
    // B2C customers have no onboarding journey.
    let mut b2c = Customer::new("C-5003", CustomerKind::B2c, "山田 三郎");
    b2c.customer_since = Some(date_of(-4));
    let c_steps = [unopened_step(
        "C-5003",
        Trigger::OnboardingDay1,
        date_of(-3),
    )];
    assert!(reminders_for(&b2c, &c_steps).is_empty());
}

#[test]
fn evaluate_first_measurement_nudge_window() {
    let today = date_of(0);
    let nudge = |days_since: i64, measured: Option<i64>| -> Vec<Candidate> {
        let mut c = onboarding("B-5101", -days_since);
        c.measurements_30d = measured;
        evaluate(&[c], &[], &[], today, &Trigger::ALL, &no_history())
    };
    let key = |candidates: &[Candidate]| {
        candidates
            .iter()
            .find(|c| c.trigger == Trigger::OnboardingFirstMeasurementPending)
            .map(|c| c.cause_key.clone())
    };
    let since = |d: i64| date_of(-d);
    assert_eq!(key(&nudge(14, Some(0))), None);
    assert_eq!(
        key(&nudge(15, Some(0))),
        Some(format!("since:{}:day15", since(15)))
    );
    // Every 3 days while nothing is measured: days 15–17 share a cause, 18 is the next.
    assert_eq!(
        key(&nudge(17, Some(0))),
        Some(format!("since:{}:day15", since(17)))
    );
    assert_eq!(
        key(&nudge(18, Some(0))),
        Some(format!("since:{}:day18", since(18)))
    );
    assert_eq!(
        key(&nudge(30, Some(0))),
        Some(format!("since:{}:day30", since(30)))
    );
    assert_eq!(key(&nudge(31, Some(0))), None);
    // A measurement done, or an unknown count: no nudge.
    assert_eq!(key(&nudge(20, Some(1))), None);
    assert_eq!(key(&nudge(20, None)), None);
    // The nudge replaces the usage drop it implies; after day 30 the usage drop is back.
    let in_window = nudge(20, Some(0));
    assert!(in_window.iter().all(|c| c.trigger != Trigger::UsageDrop));
    assert!(nudge(31, Some(0))
        .iter()
        .any(|c| c.trigger == Trigger::UsageDrop));
    let nudge_trigger = Trigger::OnboardingFirstMeasurementPending;
    assert!(!nudge_trigger.is_service());
    assert_eq!(
        Trigger::parse("onboarding_first_measurement_pending"),
        Some(nudge_trigger)
    );
    assert_eq!(
        Trigger::parse("onboarding_video_unwatched"),
        Some(Trigger::OnboardingContentUnopened)
    );
}

#[tokio::test]
async fn unopened_onboarding_step_is_reminded_once_after_two_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    put(&store, &[onboarding("B-5201", 0), onboarding("B-5202", 0)]).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    for n in [0, 1] {
        engine
            .run_once(&store, day(n), templates(), &delivery, false)
            .await
            .expect("run");
    }
    let day1 = sent_for(&delivery, "B-5201", Trigger::OnboardingDay1);
    assert_eq!(day1.len(), 1);
    // B-5202's widget showed its Day 1 message.
    let seen = sent_for(&delivery, "B-5202", Trigger::OnboardingDay1);
    assert!(
        record_event(&store, &seen[0].send_id, EventKind::Opened, day(1))
            .await
            .expect("opened")
    );

    // One day later: too early.
    let report = engine
        .run_once(&store, day(2), templates(), &delivery, false)
        .await
        .expect("run");
    assert!(entry(&report, "B-5201", Trigger::OnboardingContentUnopened).is_none());

    // Two days later: a dry run shows the reminder and writes nothing.
    let sends_before = count(&store, "SELECT COUNT(*) AS n FROM outreach_sends").await;
    let messages_before = delivery.messages().len();
    let dry = engine
        .run_once(&store, day(3), templates(), &delivery, true)
        .await
        .expect("dry run");
    assert_eq!(
        entry(&dry, "B-5201", Trigger::OnboardingContentUnopened).map(|e| &e.outcome),
        Some(&Outcome::WouldSend),
        "{dry}"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) AS n FROM outreach_sends").await,
        sends_before
    );
    assert_eq!(delivery.messages().len(), messages_before);

    // The real run sends it, next to Day 3's step; the opened step and the Day 0 welcome
    // get none.
    let report = engine
        .run_once(&store, day(3), templates(), &delivery, false)
        .await
        .expect("run");
    let reminders = sent_for(&delivery, "B-5201", Trigger::OnboardingContentUnopened);
    assert_eq!(reminders.len(), 1, "{report}");
    let reminded = entry(&report, "B-5201", Trigger::OnboardingContentUnopened).expect("entry");
    assert_eq!(reminded.cause_key, format!("unopened:{}", day1[0].send_id));
    let text = &reminders[0].text;
    assert!(text.contains("「ZENBUの使い方」"), "{text}");
    assert!(text.contains("B-5201株式会社"), "{text}");
    assert!(!text.contains("{{"), "{text}");
    assert_eq!(
        sent_for(&delivery, "B-5201", Trigger::OnboardingDay3).len(),
        1
    );
    assert!(sent_for(&delivery, "B-5202", Trigger::OnboardingContentUnopened).is_empty());

    // Later runs do not repeat it; Day 3's video is reminded of on day 5, once.
    for n in [3, 4, 5, 6] {
        engine
            .run_once(
                &store,
                day(n) + Duration::hours(1),
                templates(),
                &delivery,
                false,
            )
            .await
            .expect("run");
    }
    let reminders = sent_for(&delivery, "B-5201", Trigger::OnboardingContentUnopened);
    let causes: Vec<String> = {
        let mut rows: Vec<String> = sqlx::query_scalar(
            "SELECT cause_key FROM outreach_sends
             WHERE customer_id = 'B-5201' AND trigger_slug = 'onboarding_video_unwatched'",
        )
        .fetch_all(store.pool())
        .await
        .expect("causes");
        rows.sort();
        rows
    };
    let day3 = sent_for(&delivery, "B-5201", Trigger::OnboardingDay3);
    let mut expected = vec![
        format!("unopened:{}", day1[0].send_id),
        format!("unopened:{}", day3[0].send_id),
    ];
    expected.sort();
    assert_eq!(causes, expected);
    assert_eq!(reminders.len(), 2);
    assert!(reminders[1].text.contains("「初回測定の依頼方法」"));
}

#[tokio::test]
async fn first_measurement_nudge_every_three_days_within_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = empty_store(&dir).await;
    let mut idle = onboarding("B-5301", -15);
    idle.measurements_30d = Some(0);
    let mut measured = onboarding("B-5302", -15);
    measured.measurements_30d = Some(1);
    put(&store, &[idle.clone(), measured]).await;
    let engine = OutreachEngine::new(config()).expect("engine");
    let delivery = RecordingDelivery::default();
    let report = engine
        .run_once(&store, day(0), templates(), &delivery, false)
        .await
        .expect("run");
    let nudges = sent_for(
        &delivery,
        "B-5301",
        Trigger::OnboardingFirstMeasurementPending,
    );
    assert_eq!(nudges.len(), 1, "{report}");
    assert!(
        nudges[0].text.contains("ご契約から15日"),
        "{}",
        nudges[0].text
    );
    assert!(
        nudges[0].text.contains("B-5301株式会社"),
        "{}",
        nudges[0].text
    );
    assert!(entry(
        &report,
        "B-5302",
        Trigger::OnboardingFirstMeasurementPending
    )
    .is_none());

    // Same slot the next day: already sent.
    let report = engine
        .run_once(&store, day(1), templates(), &delivery, false)
        .await
        .expect("run");
    assert_eq!(
        entry(
            &report,
            "B-5301",
            Trigger::OnboardingFirstMeasurementPending
        )
        .map(|e| &e.outcome),
        Some(&Outcome::Skipped(SkipReason::AlreadySent))
    );

    // Day 18: a new slot. It counts toward the cap (one send already in the window)...
    let strict = OutreachEngine::new(OutreachConfig {
        frequency_cap: FrequencyCap {
            max_sends: 1,
            window_days: 7,
        },
        ..config()
    })
    .expect("engine");
    let capped = strict
        .run_once(&store, day(3), templates(), &delivery, true)
        .await
        .expect("dry run");
    assert_eq!(
        entry(
            &capped,
            "B-5301",
            Trigger::OnboardingFirstMeasurementPending
        )
        .map(|e| &e.outcome),
        Some(&Outcome::Skipped(SkipReason::Capped))
    );
    // ...but the 30-day cooldown does not stop the 3-day cadence.
    engine
        .run_once(&store, day(3), templates(), &delivery, false)
        .await
        .expect("run");
    let nudges = sent_for(
        &delivery,
        "B-5301",
        Trigger::OnboardingFirstMeasurementPending,
    );
    assert_eq!(nudges.len(), 2);
    assert!(
        nudges[1].text.contains("ご契約から18日"),
        "{}",
        nudges[1].text
    );

    // Measured now: the nudge stops and the earlier ones count as converted.
    idle.measurements_30d = Some(1);
    put(&store, &[idle]).await;
    let report = engine
        .run_once(&store, day(6), templates(), &delivery, false)
        .await
        .expect("run");
    assert!(entry(
        &report,
        "B-5301",
        Trigger::OnboardingFirstMeasurementPending
    )
    .is_none());
    assert_eq!(converted(&store, &nudges[0].send_id).await, 1);
    // Past day 30 nothing more, even unmeasured.
    let mut late = onboarding("B-5303", -31);
    late.measurements_30d = Some(0);
    put(&store, &[late]).await;
    let report = engine
        .run_once(&store, day(6), templates(), &delivery, true)
        .await
        .expect("dry run");
    assert!(entry(
        &report,
        "B-5303",
        Trigger::OnboardingFirstMeasurementPending
    )
    .is_none());
}
