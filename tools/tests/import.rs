//! CRM import against a real store: upserts, all-or-nothing rejection, type round trips,
//! and the demo dataset.

mod common;

use chrono::NaiveDate;
use kizuna_store::Store;
use kizuna_tools::crm::{count_customers, parse_customers};
use kizuna_tools::health::health_score;
use kizuna_tools::{
    get_customer, import_customers, list_customers, CustomerFilter, CustomerKind, Format,
    HealthStatus, ImportError, ImportReport,
};

const HEADER: &str = "id,kind,name,email,phone,plan,monthly_measurements,mrr_jpy,contract_end,customer_since,measurements_30d,last_login,report_view_rate,feature_adoption,csat,nps,escalations_30d,payment_overdue_days,opted_out,crm_owner";

fn csv(rows: &[&str]) -> Vec<u8> {
    let mut text = format!("{HEADER}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text.into_bytes()
}

const B1: &str = "B-1,b2b,\"サンプル管理株式会社, 本社\",b1@example.jp,03-0000-0001,ビジネス20,20,80000,2027-01-31,2025-04-01,14,2026-11-18,0.75,0.5,4.25,8,1,3,false,担当A";
const C1: &str = "C-1,b2c,山田 花子,c1@example.com,,Premium,,,,2026-10-01,1,,,,,,0,0,TRUE,";

/// (line, column) of every bad cell an import reported; panics unless it was refused as invalid.
fn bad_cells(err: &ImportError) -> Vec<(u64, &str)> {
    let ImportError::Invalid(errors) = err else {
        panic!("expected Invalid, got {err}");
    };
    errors
        .iter()
        .map(|e| (e.line, e.column.as_deref().unwrap_or("")))
        .collect()
}

async fn upserts_and_round_trips(store: &Store) {
    let report = import_customers(store, &csv(&[B1, C1]), Format::Csv)
        .await
        .unwrap();
    assert_eq!(
        report,
        ImportReport {
            inserted: 2,
            updated: 0
        }
    );

    // Every type survives the database exactly as parsed.
    let parsed = parse_customers(&csv(&[B1, C1]), Format::Csv).unwrap();
    for expected in &parsed {
        let stored = get_customer(store, &expected.id).await.unwrap().unwrap();
        assert_eq!(&stored, expected);
    }
    let b1 = &parsed[0];
    assert_eq!(b1.name, "サンプル管理株式会社, 本社");
    assert_eq!(b1.csat, Some(4.25));
    assert_eq!(b1.feature_adoption, Some(0.5));
    assert_eq!(b1.contract_end, NaiveDate::from_ymd_opt(2027, 1, 31));
    assert_eq!(parsed[1].plan.as_deref(), Some("premium"));
    assert!(parsed[1].opted_out);

    // Re-importing an id updates it; a new id is inserted.
    let changed = B1.replace(",14,2026-11-18,", ",4,2026-11-01,");
    let c2 = "C-2,b2c,佐藤 健太,,,light,,,,,,,,,,,,,,";
    let report = import_customers(store, &csv(&[&changed, c2]), Format::Csv)
        .await
        .unwrap();
    assert_eq!(
        report,
        ImportReport {
            inserted: 1,
            updated: 1
        }
    );
    let b1 = get_customer(store, "B-1").await.unwrap().unwrap();
    assert_eq!(b1.measurements_30d, Some(4));
    assert_eq!(b1.last_login, NaiveDate::from_ymd_opt(2026, 11, 1));
    assert_eq!(count_customers(store).await.unwrap(), 3);

    // JSON Lines with the same keys.
    let jsonl = "{\"id\":\"B-9\",\"kind\":\"b2b\",\"name\":\"JSON管理\",\"monthly_measurements\":10,\"measurements_30d\":10,\"opted_out\":false}\n";
    let report = import_customers(store, jsonl.as_bytes(), Format::sniff(jsonl.as_bytes()))
        .await
        .unwrap();
    assert_eq!(report.inserted, 1);

    // Filters.
    let b2b = list_customers(
        store,
        &CustomerFilter {
            kind: Some(CustomerKind::B2b),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        b2b.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["B-1", "B-9"]
    );
    let renewing = list_customers(
        store,
        &CustomerFilter {
            contract_end_until: NaiveDate::from_ymd_opt(2027, 2, 1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(renewing.len(), 1);
    let opted_out = list_customers(
        store,
        &CustomerFilter {
            opted_out: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(opted_out[0].id, "C-1");
    let limited = list_customers(
        store,
        &CustomerFilter {
            limit: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(limited.len(), 2);
}
on_both_engines!(upserts, super::upserts_and_round_trips);

async fn bad_rows_write_nothing(store: &Store) {
    import_customers(store, &csv(&[B1, C1]), Format::Csv)
        .await
        .unwrap();
    let before = list_customers(store, &CustomerFilter::default())
        .await
        .unwrap();

    // Line 2 would update B-1 and line 4 insert C-3, but lines 3 and 5 are bad.
    let update = B1.replace(",14,2026-11-18,", ",0,2026-11-01,");
    let bad_csat = "C-2,b2c,佐藤 健太,,,light,,,,,,,,,6,,,,,";
    let good = "C-3,b2c,鈴木 美咲,,,standard,,,,,,,,,,,,,,";
    let bad_many = "B-2,b2c,,x@,,gold,,,2026-02-30,,,,1.5,,,11,,-3,yes,";
    let file = csv(&[&update, bad_csat, good, bad_many]);
    let err = import_customers(store, &file, Format::Csv)
        .await
        .unwrap_err();
    let found = bad_cells(&err);
    assert_eq!(
        found,
        [
            (3, "csat"),
            (5, "name"),
            (5, "email"),
            (5, "plan"),
            (5, "contract_end"),
            (5, "report_view_rate"),
            (5, "nps"),
            (5, "payment_overdue_days"),
            (5, "opted_out"),
        ]
    );
    let text = err.to_string();
    assert!(text.contains("line 3, column csat"), "{text}");
    assert!(text.contains("line 5, column plan"), "{text}");

    // Nothing changed: no update of B-1, no insert of C-3.
    let after = list_customers(store, &CustomerFilter::default())
        .await
        .unwrap();
    assert_eq!(before, after);
    assert!(get_customer(store, "C-3").await.unwrap().is_none());

    // JSON Lines errors carry their line numbers too.
    let jsonl = "{\"id\":\"C-5\",\"kind\":\"b2c\",\"name\":\"x\"}\n{\"id\":\"C-6\",\"kind\":\"b2c\",\"name\":\"y\",\"last_login\":\"2026/11/01\"}\n";
    let err = import_customers(store, jsonl.as_bytes(), Format::JsonLines)
        .await
        .unwrap_err();
    let ImportError::Invalid(errors) = err else {
        panic!("expected Invalid");
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 2);
    assert_eq!(errors[0].column.as_deref(), Some("last_login"));
    assert!(get_customer(store, "C-5").await.unwrap().is_none());
}
on_both_engines!(rejection, super::bad_rows_write_nothing);

async fn demo_dataset_covers_every_status(store: &Store) {
    let report = import_customers(store, &common::demo_csv(), Format::Csv)
        .await
        .unwrap();
    assert_eq!(report.inserted, 200);
    let as_of = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
    let customers = list_customers(store, &CustomerFilter::default())
        .await
        .unwrap();
    let statuses: Vec<HealthStatus> = customers
        .iter()
        .filter_map(|c| health_score(c, as_of).ok())
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses.len(), 60);
    for status in [HealthStatus::Red, HealthStatus::Yellow, HealthStatus::Green] {
        assert!(statuses.contains(&status), "no {status:?} account");
    }
    // The documented anchors (demo/README.md).
    let score = |id: &str| {
        let c = customers.iter().find(|c| c.id == id).unwrap();
        let r = health_score(c, as_of).unwrap();
        (r.total, r.status)
    };
    assert_eq!(score("B-2001"), (45.5, HealthStatus::Yellow));
    assert_eq!(score("B-2002"), (7.5, HealthStatus::Red));
    assert_eq!(score("B-2003"), (88.0, HealthStatus::Green));
    assert_eq!(score("B-2004"), (58.0, HealthStatus::Yellow));
    assert_eq!(score("B-2005"), (21.0, HealthStatus::Red));
    assert_eq!(score("B-2006"), (82.0, HealthStatus::Green));
    for days in [7, 14, 21, 35] {
        assert!(
            customers
                .iter()
                .any(|c| c.payment_overdue_days == Some(days)),
            "no account {days} days overdue"
        );
    }
    assert!(customers.iter().any(|c| c.opted_out));
    // The demo file has no time_zone column: everyone uses the configured zone.
    assert!(customers.iter().all(|c| c.time_zone.is_none()));
    assert!(customers.iter().any(|c| c.nps.is_some_and(|n| n <= 6.0)));
    // Re-importing the same file updates every row and inserts none.
    let again = import_customers(store, &common::demo_csv(), Format::Csv)
        .await
        .unwrap();
    assert_eq!(
        again,
        ImportReport {
            inserted: 0,
            updated: 200
        }
    );
}
on_both_engines!(demo, super::demo_dataset_covers_every_status);

/// `time_zone` is an optional column beyond the spec: present, it is validated and stored;
/// empty, the customer uses the configured zone.
async fn time_zone_column(store: &Store) {
    let file = "id,kind,name,time_zone,crm_owner\n\
        B-1,b2b,ロンドン管理,Europe/London,担当A\n\
        C-1,b2c,Smith,America/Los_Angeles,\n\
        C-2,b2c,山田 花子,,\n\
        C-3,b2c,佐藤 健太, +09:00 ,\n";
    let report = import_customers(store, file.as_bytes(), Format::Csv)
        .await
        .unwrap();
    assert_eq!(report.inserted, 4);
    let zone = |c: Option<kizuna_tools::Customer>| c.unwrap().time_zone;
    assert_eq!(
        zone(get_customer(store, "B-1").await.unwrap()).as_deref(),
        Some("Europe/London")
    );
    assert_eq!(
        zone(get_customer(store, "C-1").await.unwrap()).as_deref(),
        Some("America/Los_Angeles")
    );
    assert_eq!(zone(get_customer(store, "C-2").await.unwrap()), None);
    assert_eq!(
        zone(get_customer(store, "C-3").await.unwrap()).as_deref(),
        Some("+09:00")
    );
    for customer in parse_customers(file.as_bytes(), Format::Csv).unwrap() {
        let stored = get_customer(store, &customer.id).await.unwrap().unwrap();
        assert_eq!(stored, customer);
    }

    // Re-importing changes or clears the zone; JSON Lines take the same key.
    let jsonl = "{\"id\":\"B-1\",\"kind\":\"b2b\",\"name\":\"ロンドン管理\",\"time_zone\":\"Asia/Tokyo\"}\n\
        {\"id\":\"C-1\",\"kind\":\"b2c\",\"name\":\"Smith\",\"time_zone\":null}\n";
    let report = import_customers(store, jsonl.as_bytes(), Format::JsonLines)
        .await
        .unwrap();
    assert_eq!(report.updated, 2);
    assert_eq!(
        zone(get_customer(store, "B-1").await.unwrap()).as_deref(),
        Some("Asia/Tokyo")
    );
    assert_eq!(zone(get_customer(store, "C-1").await.unwrap()), None);

    // A bad zone is a row error with its line and column, and nothing is written.
    let bad = "id,kind,name,time_zone\n\
        C-1,b2c,Smith,America/Los_Angeles\n\
        C-4,b2c,x,Mars/Olympus\n\
        C-5,b2c,y,+25:00\n\
        C-6,b2c,z,JST\n";
    let err = import_customers(store, bad.as_bytes(), Format::Csv)
        .await
        .unwrap_err();
    let found = bad_cells(&err);
    assert_eq!(
        found,
        [(3, "time_zone"), (4, "time_zone"), (5, "time_zone")]
    );
    let text = err.to_string();
    assert!(text.contains("line 3, column time_zone"), "{text}");
    assert!(text.contains("Mars/Olympus"), "{text}");
    assert_eq!(zone(get_customer(store, "C-1").await.unwrap()), None);
    assert!(get_customer(store, "C-4").await.unwrap().is_none());
}
on_both_engines!(time_zone, super::time_zone_column);
