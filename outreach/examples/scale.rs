//! Evaluates the triggers over 100,000 generated customers and prints the time taken and the
//! process's peak resident memory (VmHWM), then the first run's health-state write (one row
//! per B2B customer, batched in one transaction) into a temporary SQLite store, and a second
//! evaluation against the stored states.
//!
//! `cargo run --release -p kizuna-outreach --example scale [customers]`

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate};
use kizuna_outreach::{
    evaluate, health_changes, load_health_states, save_health_states, Candidate, HealthState,
    Trigger,
};
use kizuna_store::Store;
use kizuna_tools::crm::{Customer, CustomerKind};

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn generate(count: usize, today: NaiveDate) -> Vec<Customer> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..count)
        .map(|i| {
            let b2b = i % 3 == 0;
            let kind = if b2b {
                CustomerKind::B2b
            } else {
                CustomerKind::B2c
            };
            let mut c = Customer::new(format!("X-{i:06}"), kind, format!("顧客{i}"));
            c.customer_since = Some(today - Duration::days(rng.next(1000) as i64));
            c.last_login = Some(today - Duration::days(rng.next(90) as i64));
            c.nps = Some(rng.next(11) as f64);
            c.payment_overdue_days = Some(if rng.next(10) == 0 {
                rng.next(40) as i64
            } else {
                0
            });
            c.opted_out = rng.next(20) == 0;
            if b2b {
                let quota = [10, 20, 40, 80][rng.next(4) as usize];
                c.monthly_measurements = Some(quota);
                c.measurements_30d = Some(rng.next(quota as u64 + 1) as i64);
                c.mrr_jpy = Some(quota * 4_000);
                c.contract_end = Some(today + Duration::days(rng.next(400) as i64));
                c.report_view_rate = Some(rng.next(101) as f64 / 100.0);
                c.feature_adoption = Some(rng.next(101) as f64 / 100.0);
                c.csat = Some(1.0 + rng.next(41) as f64 / 10.0);
                c.escalations_30d = Some(rng.next(3) as i64);
            }
            c
        })
        .collect()
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn per_trigger(candidates: &[Candidate]) -> std::collections::BTreeMap<&'static str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for c in candidates {
        *counts.entry(c.trigger.as_str()).or_insert(0usize) += 1;
    }
    counts
}

fn print_peak(label: &str) {
    match peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM) {label}: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: unavailable (no /proc/self/status)"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let today = NaiveDate::from_ymd_opt(2026, 11, 21).expect("valid date");
    let now: DateTime<FixedOffset> =
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00+09:00").expect("valid time");
    let started = Instant::now();
    let customers = generate(count, today);
    let generated = started.elapsed();
    println!("customers: {count} (generated in {generated:?})");

    // First run: nothing stored yet, every red account counts as turned red today.
    let no_history: HashMap<String, HealthState> = HashMap::new();
    let started = Instant::now();
    let candidates = evaluate(&customers, &[], &[], today, &Trigger::ALL, &no_history);
    let changes = health_changes(&customers, today, &no_history);
    let evaluated = started.elapsed();
    println!(
        "evaluate (first run): {} candidates and {} health states in {:?} ({:.2} µs per customer)",
        candidates.len(),
        changes.len(),
        evaluated,
        evaluated.as_secs_f64() * 1e6 / count as f64
    );
    for (trigger, n) in per_trigger(&candidates) {
        println!("  {trigger}: {n}");
    }
    print_peak("after evaluation");

    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("scale.db").display()
    );
    let store = Store::connect(&url).await.expect("temporary store");
    let started = Instant::now();
    let written = save_health_states(&store, &changes, now)
        .await
        .expect("store health states");
    let write = started.elapsed();
    println!(
        "first-run health-state write: {written} rows in {write:?} (one transaction, batched; SQLite, synchronous=FULL)"
    );

    // The next day: the stored states are loaded and nothing changed.
    let tomorrow = today + Duration::days(1);
    let started = Instant::now();
    let stored = load_health_states(&store)
        .await
        .expect("load health states");
    let loaded = started.elapsed();
    let started = Instant::now();
    let candidates = evaluate(&customers, &[], &[], tomorrow, &Trigger::ALL, &stored);
    let changes = health_changes(&customers, tomorrow, &stored);
    let evaluated = started.elapsed();
    println!(
        "next run: {} states loaded in {loaded:?}; evaluate: {} candidates, {} changed states in {evaluated:?} ({:.2} µs per customer)",
        stored.len(),
        candidates.len(),
        changes.len(),
        evaluated.as_secs_f64() * 1e6 / count as f64
    );
    print_peak("at the end");
}
