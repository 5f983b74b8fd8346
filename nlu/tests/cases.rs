//! The table-driven cases of `nlu/tests/cases/`, written against `nlu/DATETIME.md`. Every
//! failure is printed (text, expected, got) before the test fails, with the pass count.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Weekday};
use kizuna_nlu::accounts::AccountDirectory;
use kizuna_nlu::plans::plans_mentioned;
use kizuna_nlu::when::{parse_when, DaySet, TimeSpec, When};
use serde::Deserialize;

const DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Days as a case writes them: a list of dates, or `"FROM..TO"` / `"FROM.."`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum DaysCase {
    List(Vec<NaiveDate>),
    Range(String),
}

#[derive(Debug, Clone, Deserialize)]
struct ExclusionCase {
    days: Option<DaysCase>,
    weekdays: Option<Vec<String>>,
    time: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct DatetimeCase {
    text: String,
    now: String,
    days: Option<DaysCase>,
    weekdays: Option<Vec<String>>,
    time: Option<String>,
    #[serde(default)]
    exclude: Vec<ExclusionCase>,
}

#[derive(Debug, Clone, Deserialize)]
struct EntityCase {
    text: String,
    plans: Option<Vec<String>>,
    accounts: Option<Vec<String>>,
}

/// Days compared after expanding: a list equals a range with the same dates; an open range
/// is its first day.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Days {
    Dates(BTreeSet<NaiveDate>),
    From(NaiveDate),
}

fn expand_case(d: &DaysCase) -> Days {
    match d {
        DaysCase::List(v) => Days::Dates(v.iter().copied().collect()),
        DaysCase::Range(s) => {
            let (from, to) = s
                .split_once("..")
                .unwrap_or_else(|| panic!("bad range {s}"));
            let from: NaiveDate = from.trim().parse().expect("from date");
            if to.trim().is_empty() {
                return Days::From(from);
            }
            let to: NaiveDate = to.trim().parse().expect("to date");
            Days::Dates(from.iter_days().take_while(|d| *d <= to).collect())
        }
    }
}

fn expand_got(d: &DaySet) -> Days {
    match d.dates() {
        Some(v) => Days::Dates(v.into_iter().collect()),
        None => match d {
            DaySet::Range { from, .. } => Days::From(*from),
            DaySet::List(_) => unreachable!("a list always has dates"),
        },
    }
}

fn weekday(s: &str) -> Weekday {
    s.parse().unwrap_or_else(|_| panic!("bad weekday {s}"))
}

fn weekdays(v: &[String]) -> BTreeSet<u32> {
    v.iter()
        .map(|s| weekday(s).num_days_from_monday())
        .collect()
}

fn got_weekdays(v: &[Weekday]) -> BTreeSet<u32> {
    v.iter().map(|w| w.num_days_from_monday()).collect()
}

fn parse_time(s: &str) -> TimeSpec {
    let hm = |t: &str| {
        let (h, m) = t
            .trim()
            .split_once(':')
            .unwrap_or_else(|| panic!("bad time {t}"));
        h.parse::<u32>().expect("hour") * 60 + m.parse::<u32>().expect("minute")
    };
    match s.split_once('-') {
        Some((a, b)) => TimeSpec::Window {
            from: hm(a),
            to: hm(b),
        },
        None => TimeSpec::At(hm(s)),
    }
}

/// One side of a comparison: days, weekdays and time as sets and values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    days: Option<Days>,
    weekdays: Option<BTreeSet<u32>>,
    time: Option<TimeSpec>,
}

fn expected_part(
    days: &Option<DaysCase>,
    wds: &Option<Vec<String>>,
    time: &Option<String>,
) -> Part {
    Part {
        days: days.as_ref().map(expand_case),
        weekdays: wds.as_deref().map(weekdays),
        time: time.as_deref().map(parse_time),
    }
}

fn got_part(days: &Option<DaySet>, wds: &Option<Vec<Weekday>>, time: &Option<TimeSpec>) -> Part {
    Part {
        days: days.as_ref().map(expand_got),
        weekdays: wds.as_deref().map(got_weekdays),
        time: *time,
    }
}

/// Exclusions compared as multisets (the order they are said in does not matter).
fn same_exclusions(expected: &[Part], got: &[Part]) -> bool {
    if expected.len() != got.len() {
        return false;
    }
    let mut left: Vec<&Part> = got.iter().collect();
    for e in expected {
        match left.iter().position(|g| *g == e) {
            Some(i) => {
                left.remove(i);
            }
            None => return false,
        }
    }
    true
}

fn show(when: &When) -> String {
    let days = when.days.as_ref().map(|d| match d {
        DaySet::List(v) => format!(
            "[{}]",
            v.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DaySet::Range { from, to } => {
            format!("{from}..{}", to.map(|t| t.to_string()).unwrap_or_default())
        }
    });
    serde_json::json!({
        "days": days,
        "weekdays": when.weekdays.as_ref().map(|w| w.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
        "time": when.time.map(|t| t.to_string()),
        "exclude": when.exclude.iter().map(|x| serde_json::json!({
            "days": x.days.as_ref().map(|d| format!("{d:?}")),
            "weekdays": x.weekdays.as_ref().map(|w| w.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
            "time": x.time.map(|t| t.to_string()),
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = format!("{DIR}/tests/cases/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn datetime_cases() {
    let cases: Vec<DatetimeCase> = load("datetime.yaml");
    let mut failures = Vec::new();
    for case in &cases {
        let now = DateTime::parse_from_rfc3339(&case.now).expect("now is RFC 3339");
        let when = parse_when(&case.text, now);
        let expected = expected_part(&case.days, &case.weekdays, &case.time);
        let got = got_part(&when.days, &when.weekdays, &when.time);
        let expected_ex: Vec<Part> = case
            .exclude
            .iter()
            .map(|x| expected_part(&x.days, &x.weekdays, &x.time))
            .collect();
        let got_ex: Vec<Part> = when
            .exclude
            .iter()
            .map(|x| got_part(&x.days, &x.weekdays, &x.time))
            .collect();
        if expected != got || !same_exclusions(&expected_ex, &got_ex) {
            failures.push(format!(
                "  {} (now {})\n    expected: days {:?} weekdays {:?} time {:?} exclude {:?}\n    got:      {}",
                case.text,
                case.now,
                case.days,
                case.weekdays,
                case.time,
                case.exclude,
                show(&when)
            ));
        }
    }
    let passed = cases.len() - failures.len();
    println!("datetime.yaml: {passed}/{} passed", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} datetime cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn directory() -> AccountDirectory {
    let path = format!("{DIR}/../demo/customers.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect("column");
    let (id, name) = (col("id"), col("name"));
    AccountDirectory::new(lines.filter(|l| !l.trim().is_empty()).map(|l| {
        let cells: Vec<&str> = l.split(',').collect();
        (cells[id].to_string(), cells[name].to_string())
    }))
}

#[test]
fn entity_cases() {
    let cases: Vec<EntityCase> = load("entities.yaml");
    let dir = directory();
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(expected) = &case.plans {
            let got: Vec<String> = plans_mentioned(&case.text)
                .iter()
                .map(|p| p.id().to_string())
                .collect();
            if &got != expected {
                failures.push(format!(
                    "  {}\n    plans expected {expected:?}, got {got:?}",
                    case.text
                ));
            }
        }
        if let Some(expected) = &case.accounts {
            let got = dir.resolve(&case.text);
            if &got != expected {
                failures.push(format!(
                    "  {}\n    accounts expected {expected:?}, got {got:?}",
                    case.text
                ));
            }
        }
    }
    let failed_cases = cases
        .iter()
        .filter(|c| {
            failures
                .iter()
                .any(|f| f.starts_with(&format!("  {}\n", c.text)))
        })
        .count();
    println!(
        "entities.yaml: {}/{} passed",
        cases.len() - failed_cases,
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{failed_cases} of {} entity cases failed:\n{}",
        cases.len(),
        failures.join("\n")
    );
}
