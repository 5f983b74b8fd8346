//! Segmentation of 10,000 customers drawn from five planted personas: the clustering must
//! find them (no segment mixes personas), pick k in 5..=7 and be deterministic.

use chrono::{Duration, NaiveDate};
use kizuna_tools::segments::SegmentError;
use kizuna_tools::{segment_customers, Customer, CustomerKind, SegmentOptions};

/// A small deterministic generator (64-bit LCG), enough for test data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low + 1) as u64) as i64
    }
}

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
}

/// (persona, customer) pairs.
fn planted(n: usize) -> Vec<(usize, Customer)> {
    let mut rng = Lcg(42);
    (0..n)
        .map(|i| {
            let persona = i % 5;
            let id = format!("X-{i:05}");
            let mut c = match persona {
                // Loyal companies: active, heavy use, high fee.
                0 => {
                    let mut c = Customer::new(id, CustomerKind::B2b, "ロイヤル管理");
                    c.last_login = Some(as_of() - Duration::days(rng.range(0, 5)));
                    c.measurements_30d = Some(rng.range(30, 60));
                    c.mrr_jpy = Some(rng.range(120, 160) * 1_000);
                    c
                }
                // Dormant companies: high fee, no recent use.
                1 => {
                    let mut c = Customer::new(id, CustomerKind::B2b, "休眠管理");
                    c.last_login = Some(as_of() - Duration::days(rng.range(90, 240)));
                    c.measurements_30d = Some(rng.range(0, 1));
                    c.mrr_jpy = Some(rng.range(80, 160) * 1_000);
                    c
                }
                // New residents, just measured.
                2 => {
                    let mut c = Customer::new(id, CustomerKind::B2c, "新規");
                    c.last_login = Some(as_of() - Duration::days(rng.range(0, 6)));
                    c.measurements_30d = Some(1);
                    c.plan = Some("premium".into());
                    c
                }
                // Residents from long ago.
                3 => {
                    let mut c = Customer::new(id, CustomerKind::B2c, "過去");
                    c.customer_since = Some(as_of() - Duration::days(rng.range(400, 700)));
                    c.measurements_30d = Some(0);
                    c.plan = Some("light".into());
                    c
                }
                // Small companies with moderate use.
                _ => {
                    let mut c = Customer::new(id, CustomerKind::B2b, "小規模管理");
                    c.last_login = Some(as_of() - Duration::days(rng.range(20, 40)));
                    c.measurements_30d = Some(rng.range(4, 8));
                    c.mrr_jpy = Some(rng.range(35, 45) * 1_000);
                    c
                }
            };
            c.opted_out = false;
            (persona, c)
        })
        .collect()
}

#[test]
fn ten_thousand_customers_are_segmented_sanely() {
    let data = planted(10_000);
    let customers: Vec<Customer> = data.iter().map(|(_, c)| c.clone()).collect();
    let report = segment_customers(&customers, as_of(), &SegmentOptions::default()).unwrap();

    assert!((5..=7).contains(&report.k), "k = {}", report.k);
    assert_eq!(report.segments.len(), report.k);
    assert_eq!(report.candidates.len(), 3);
    assert_eq!(report.assignments.len(), 10_000);
    assert_eq!(
        report.segments.iter().map(|s| s.size).sum::<usize>(),
        10_000
    );
    assert!(report.segments.iter().all(|s| s.size > 0));
    assert!(report.silhouette > 0.5, "silhouette {}", report.silhouette);

    // No segment mixes personas, and every persona leads at least one segment.
    let mut led = [false; 5];
    for segment in &report.segments {
        let mut counts = [0usize; 5];
        for ((persona, _), number) in data.iter().zip(&report.assignments) {
            if *number == segment.number {
                counts[*persona] += 1;
            }
        }
        let (top, n) = counts.iter().enumerate().max_by_key(|(_, n)| **n).unwrap();
        assert!(
            *n as f64 >= 0.95 * segment.size as f64,
            "segment {} mixes personas: {counts:?}",
            segment.number
        );
        led[top] = true;
    }
    assert_eq!(led, [true; 5]);

    // Profiles follow the data: the loyal companies' segment is active and high-paying,
    // the long-ago residents' is dormant.
    let segment_of = |persona: usize| {
        let number = data
            .iter()
            .zip(&report.assignments)
            .find(|((p, _), _)| *p == persona)
            .map(|(_, n)| *n)
            .unwrap();
        report.segments.iter().find(|s| s.number == number).unwrap()
    };
    let loyal = segment_of(0);
    assert_eq!(loyal.typical_kind, CustomerKind::B2b);
    assert!(loyal.mean_r > 4.0 && loyal.mean_m > 4.0 && loyal.mean_f > 4.0);
    assert!(loyal.label.starts_with("優良顧客"), "{}", loyal.label);
    let old = segment_of(3);
    assert_eq!(old.typical_kind, CustomerKind::B2c);
    assert_eq!(old.typical_plan.as_deref(), Some("light"));
    assert!(old.mean_r < 2.0);
    assert!(old.label.starts_with("休眠顧客"), "{}", old.label);

    // Deterministic: the same input gives the same segments.
    let again = segment_customers(&customers, as_of(), &SegmentOptions::default()).unwrap();
    assert_eq!(again.assignments, report.assignments);
    assert_eq!(again.segments, report.segments);

    let text = report.to_string();
    assert!(text.starts_with("顧客セグメント（2026年11月21日時点、10000件"));
    assert!(text.contains("優良顧客"));
}

#[test]
fn a_fixed_k_and_too_few_customers() {
    let customers: Vec<Customer> = planted(500).into_iter().map(|(_, c)| c).collect();
    let report = segment_customers(
        &customers,
        as_of(),
        &SegmentOptions {
            k: Some(6),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.k, 6);
    assert_eq!(report.candidates.len(), 1);
    assert!(matches!(
        segment_customers(
            &customers,
            as_of(),
            &SegmentOptions {
                k: Some(4),
                ..Default::default()
            }
        ),
        Err(SegmentError::BadK(4))
    ));
    assert!(matches!(
        segment_customers(&customers[..13], as_of(), &SegmentOptions::default()),
        Err(SegmentError::TooFew {
            needed: 14,
            found: 13
        })
    ));
}
