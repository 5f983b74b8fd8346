//! Times the segmentation of 10,000 customers: import into a SQLite file, load, segment.
//!
//!     cargo run --release -p kizuna-tools --example segment_bench [-- COUNT]

use std::time::Instant;

use chrono::{Duration, NaiveDate};
use kizuna_store::Store;
use kizuna_tools::{
    import_customers, list_customers, segment_customers, CustomerFilter, Format, SegmentOptions,
};

/// A 64-bit LCG: reproducible synthetic data without extra dependencies.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn synthetic_csv(count: usize, as_of: NaiveDate) -> String {
    let mut rng = Lcg(7);
    let mut out = String::from(
        "id,kind,name,plan,monthly_measurements,mrr_jpy,customer_since,measurements_30d,last_login\n",
    );
    let plans = [
        ("ビジネス10", 10, 40_000),
        ("ビジネス20", 20, 80_000),
        ("ビジネス40", 40, 120_000),
    ];
    for i in 0..count {
        let login = as_of - Duration::days(rng.below(400) as i64);
        let since = login - Duration::days(rng.below(700) as i64);
        if rng.below(10) < 7 {
            let plan = ["light", "standard", "premium"][rng.below(3) as usize];
            out.push_str(&format!(
                "C-{i},b2c,顧客{i},{plan},,,{since},{},{login}\n",
                rng.below(2)
            ));
        } else {
            let (plan, quota, mrr) = plans[rng.below(3) as usize];
            out.push_str(&format!(
                "B-{i},b2b,管理会社{i},{plan},{quota},{mrr},{since},{},{login}\n",
                rng.below(quota * 3 / 2)
            ));
        }
    }
    out
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 21).ok_or("bad date")?;
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    ))
    .await?;
    let csv = synthetic_csv(count, as_of);

    let started = Instant::now();
    let report = import_customers(&store, csv.as_bytes(), Format::Csv).await?;
    let imported = started.elapsed();

    let started = Instant::now();
    let customers = list_customers(&store, &CustomerFilter::default()).await?;
    let loaded = started.elapsed();

    let started = Instant::now();
    let segments = segment_customers(&customers, as_of, &SegmentOptions::default())?;
    let segmented = started.elapsed();

    println!("{segments}");
    println!();
    println!(
        "{} customers: import {:.0} ms ({} inserted), load {:.0} ms, segmentation {:.0} ms (k={}, silhouette {:.2}, tried {:?})",
        customers.len(),
        imported.as_secs_f64() * 1e3,
        report.inserted,
        loaded.as_secs_f64() * 1e3,
        segmented.as_secs_f64() * 1e3,
        segments.k,
        segments.silhouette,
        segments.candidates.iter().map(|(k, _)| *k).collect::<Vec<_>>()
    );
    Ok(())
}
