//! Rules for the account and booking tools: managers' questions about accounts, a customer
//! naming a slot to book or a booking to cancel, and ids that belong to someone else.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone};
use regex::Regex;
use serde_json::{json, Map, Value};
use unicode_normalization::UnicodeNormalization;

use super::PlannedCall;
use crate::identity::{Identity, Role};

fn customer_id_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Account ids as CRM exports them: letters, a hyphen, digits (C-1001, B-2003, CUST-00042).
    RE.get_or_init(|| Regex::new(r"[A-Z][A-Z0-9]{0,7}-\d{2,}").expect("valid regex"))
}

/// Account ids mentioned in a text (NFKC-normalised, so full-width ids count too). Booking
/// numbers (`BK-…`) are not accounts.
pub fn mentioned_ids(text: &str) -> Vec<String> {
    let text: String = text.nfkc().collect::<String>().to_uppercase();
    // ASCII boundaries checked by hand: Japanese text runs straight into ids (「B-2003は」),
    // where a Unicode word boundary would not match.
    let mut ids: Vec<String> = customer_id_re()
        .find_iter(&text)
        .filter(|m| {
            let before = text[..m.start()].chars().next_back();
            !before.is_some_and(|c| c.is_ascii_alphanumeric())
        })
        .map(|m| m.as_str().to_string())
        .filter(|id| !id.starts_with("BK-"))
        .collect();
    ids.dedup();
    ids
}

/// Ids in `text` that a customer or visitor may not see: every account id but their own.
pub fn foreign_ids(identity: &Identity, text: &str) -> Vec<String> {
    if identity.role == Role::Manager {
        return Vec::new();
    }
    let own = identity.customer_id.as_deref().map(str::to_uppercase);
    mentioned_ids(text)
        .into_iter()
        .filter(|id| Some(id.as_str()) != own.as_deref())
        .collect()
}

fn has_any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

const AT_RISK_WORDS: &[&str] = &[
    "リスク",
    "危な",
    "チャーン",
    "解約しそう",
    "離脱",
    "要注意",
    "イエロー",
    "レッド",
    "yellow",
    "red",
    "赤",
    "黄",
];
const UPSELL_WORDS: &[&str] = &[
    "アップセル",
    "追加提案",
    "アップグレード",
    "拡大",
    "提案できる",
    "クロスセル",
];
const FOLLOWUP_WORDS: &[&str] = &[
    "フォローアップ",
    "フォローのメッセージ",
    "メッセージを作",
    "文面",
];
const SEGMENT_WORDS: &[&str] = &["セグメント", "顧客層", "クラスタ", "RFM"];

/// Calls for a manager's question about accounts.
pub fn manager_calls(message: &str, available: &dyn Fn(&str) -> bool) -> Vec<PlannedCall> {
    let text: String = message.nfkc().collect::<String>();
    let lower = text.to_lowercase();
    let ids = mentioned_ids(&text);
    let mut calls = Vec::new();
    if has_any(&text, SEGMENT_WORDS) && available("segment_customers") {
        calls.push(PlannedCall {
            name: "segment_customers",
            arguments: json!({}),
        });
        return calls;
    }
    if let Some(id) = ids.first() {
        if has_any(&text, UPSELL_WORDS) && available("recommend_upsell") {
            calls.push(PlannedCall {
                name: "recommend_upsell",
                arguments: json!({"customer_id": id}),
            });
        } else if has_any(&text, FOLLOWUP_WORDS) && available("generate_followup") {
            calls.push(PlannedCall {
                name: "generate_followup",
                arguments: json!({"customer_id": id, "purpose": followup_purpose(&text)}),
            });
        } else if available("lookup_health") {
            calls.push(PlannedCall {
                name: "lookup_health",
                arguments: json!({"customer_id": id}),
            });
        }
        return calls;
    }
    let renewal = renewal_days(&text);
    if (has_any(&lower, AT_RISK_WORDS) || renewal.is_some()) && available("list_at_risk_accounts") {
        let mut args = Map::new();
        let red = has_any(&lower, &["レッド", "red", "赤"]);
        let yellow = has_any(&lower, &["イエロー", "yellow", "黄"]);
        let status = match (red, yellow) {
            (true, false) => "red",
            (false, true) => "yellow",
            _ => "any",
        };
        args.insert("status".into(), json!(status));
        if let Some(days) = renewal {
            args.insert("renewal_within_days".into(), json!(days));
        }
        args.insert("limit".into(), json!(20));
        calls.push(PlannedCall {
            name: "list_at_risk_accounts",
            arguments: Value::Object(args),
        });
    }
    calls
}

fn followup_purpose(text: &str) -> &'static str {
    if has_any(text, &["更新", "契約"]) {
        "renewal_90d"
    } else if has_any(text, &["支払", "未払", "請求"]) {
        "payment_overdue"
    } else if has_any(text, &["NPS", "アンケート", "満足"]) {
        "low_nps"
    } else if has_any(text, &["利用", "使って"]) {
        "usage_drop"
    } else {
        "health_red"
    }
}

/// "90日以内に更新", "3ヶ月以内に契約が切れる" → days; "更新" alone → 90 (the renewal window
/// of seed 003 §5.3).
fn renewal_days(text: &str) -> Option<u32> {
    if !has_any(text, &["更新", "契約終了", "契約が切れ", "満了", "renewal"]) {
        return None;
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    let re =
        RE.get_or_init(|| Regex::new(r"(\d+)\s*(日|ヶ月|か月|カ月|ケ月)").expect("valid regex"));
    match re.captures(text) {
        Some(c) => {
            let n: u32 = c[1].parse().ok()?;
            Some(if &c[2] == "日" { n } else { n * 30 })
        }
        None => Some(90),
    }
}

/// Calls for a customer's questions about their own account.
pub fn customer_calls(message: &str, available: &dyn Fn(&str) -> bool) -> Vec<PlannedCall> {
    let text: String = message.nfkc().collect::<String>();
    let mut calls = Vec::new();
    let about_account = has_any(
        &text,
        &[
            "利用状況",
            "ヘルススコア",
            "アカウントの状態",
            "契約状況",
            "うちの状況",
        ],
    );
    if about_account && available("lookup_health") {
        calls.push(PlannedCall {
            name: "lookup_health",
            arguments: json!({}),
        });
    }
    if has_any(
        &text,
        &[
            "アップグレード",
            "追加できるサービス",
            "他にどんなサービス",
            "おすすめのオプション",
        ],
    ) && available("recommend_upsell")
    {
        calls.push(PlannedCall {
            name: "recommend_upsell",
            arguments: json!({}),
        });
    }
    calls
}

/// A booking request naming a slot: 「11月25日の13時で予約したいです」.
pub fn booking_call(
    previous_user_messages: &[&str],
    message: &str,
    now: DateTime<FixedOffset>,
    available: &dyn Fn(&str) -> bool,
) -> Option<PlannedCall> {
    if !available("book_measurement") {
        return None;
    }
    let text: String = message.nfkc().collect::<String>();
    if !has_any(
        &text,
        &[
            "予約",
            "お願いします",
            "でお願い",
            "にします",
            "で申し込",
            "申し込み",
        ],
    ) {
        return None;
    }
    if has_any(&text, &["キャンセル", "取り消", "変更", "空き", "空いて"]) {
        return None;
    }
    let start = slot_start(&text, now)?;
    let mentioned_plan = |t: &str| {
        if t.contains("ライト") {
            Some("light")
        } else if t.contains("プレミアム") {
            Some("premium")
        } else if t.contains("スタンダード") {
            Some("standard")
        } else {
            None
        }
    };
    // The plan named now, else the last one named earlier, else スタンダード (the seeds'
    // default recommendation for a typical case).
    let plan = mentioned_plan(&text)
        .or_else(|| {
            previous_user_messages
                .iter()
                .rev()
                .find_map(|m| mentioned_plan(m))
        })
        .unwrap_or("standard");
    let mut args = json!({"slot_start": start.to_rfc3339(), "plan": plan});
    if text.contains("仲裁") {
        args["mediation"] = json!(true);
    }
    Some(PlannedCall {
        name: "book_measurement",
        arguments: args,
    })
}

/// A cancellation naming its booking: 「予約BK-1234をキャンセルしてください」.
pub fn cancel_call(message: &str, available: &dyn Fn(&str) -> bool) -> Option<PlannedCall> {
    if !available("cancel_booking") {
        return None;
    }
    let text: String = message.nfkc().collect::<String>().to_uppercase();
    if !has_any(&text, &["キャンセル", "取り消"]) {
        return None;
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"BK-[A-Z0-9-]+").expect("valid regex"));
    let id = re.find(&text)?.as_str().to_string();
    Some(PlannedCall {
        name: "cancel_booking",
        arguments: json!({"booking_id": id}),
    })
}

/// The slot a message names, in JST: a date (11月25日, 11/25, 25日) and an hour (13時,
/// 13:00, 午後1時). The year is the next occurrence of that date from `now`.
pub fn slot_start(text: &str, now: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
    static DATE: OnceLock<Regex> = OnceLock::new();
    static DAY: OnceLock<Regex> = OnceLock::new();
    static TIME: OnceLock<Regex> = OnceLock::new();
    let date_re = DATE.get_or_init(|| {
        Regex::new(r"(\d{1,2})\s*(?:月|/)\s*(\d{1,2})\s*日?").expect("valid regex")
    });
    let day_re = DAY.get_or_init(|| Regex::new(r"(\d{1,2})\s*日").expect("valid regex"));
    let time_re = TIME
        .get_or_init(|| Regex::new(r"(午前|午後)?\s*(\d{1,2})\s*(?:時|:00)").expect("valid regex"));
    let today = now.date_naive();
    let (date_match, month, day) = if let Some(c) = date_re.captures(text) {
        (
            c.get(0)?,
            c[1].parse::<u32>().ok()?,
            c[2].parse::<u32>().ok()?,
        )
    } else {
        let c = day_re.captures(text)?;
        let day = c[1].parse::<u32>().ok()?;
        let month = if day >= today.day() {
            today.month()
        } else {
            today.month() % 12 + 1
        };
        (c.get(0)?, month, day)
    };
    // The hour comes after the date, so the date's own digits are never read as one.
    let c = time_re.captures(&text[date_match.end()..])?;
    let mut hour: u32 = c[2].parse().ok()?;
    if c.get(1).map(|m| m.as_str()) == Some("午後") && hour < 12 {
        hour += 12;
    }
    if hour > 23 {
        return None;
    }
    let mut date = NaiveDate::from_ymd_opt(today.year(), month, day)?;
    if date < today {
        date = NaiveDate::from_ymd_opt(today.year() + 1, month, day)?;
    }
    now.timezone()
        .from_local_datetime(&date.and_hms_opt(hour, 0, 0)?)
        .single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &str) -> bool {
        true
    }

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00+09:00").unwrap()
    }

    #[test]
    fn slots_are_read_in_the_usual_forms() {
        let at = |s: &str| slot_start(&s.nfkc().collect::<String>(), now()).map(|d| d.to_rfc3339());
        assert_eq!(
            at("11月25日の13時で予約したいです").as_deref(),
            Some("2026-11-25T13:00:00+09:00")
        );
        assert_eq!(
            at("１１月２５日　１９時").as_deref(),
            Some("2026-11-25T19:00:00+09:00")
        );
        assert_eq!(
            at("11/26 10:00でお願いします").as_deref(),
            Some("2026-11-26T10:00:00+09:00")
        );
        assert_eq!(
            at("28日の午後4時").as_deref(),
            Some("2026-11-28T16:00:00+09:00")
        );
        // A day before today's date is next month; a month before this one is next year.
        assert_eq!(
            at("3日の10時").as_deref(),
            Some("2026-12-03T10:00:00+09:00")
        );
        assert_eq!(
            at("1月5日 10時").as_deref(),
            Some("2027-01-05T10:00:00+09:00")
        );
        assert_eq!(at("来週のどこかで"), None);
        assert_eq!(at("11月25日"), None);
    }

    #[test]
    fn booking_needs_a_slot_and_an_intent() {
        let call = booking_call(
            &["プレミアムにしようかな"],
            "11月25日の13時で予約したいです",
            now(),
            &all,
        )
        .unwrap();
        assert_eq!(call.arguments["plan"], "premium");
        assert_eq!(call.arguments["slot_start"], "2026-11-25T13:00:00+09:00");
        assert!(booking_call(&[], "11月25日の13時は空いていますか", now(), &all).is_none());
        assert!(booking_call(&[], "11月25日の13時の予約をキャンセルしたい", now(), &all).is_none());
    }

    #[test]
    fn manager_questions_map_to_account_tools() {
        let c = manager_calls("今月リスクのあるアカウントは？", &all);
        assert_eq!(c[0].name, "list_at_risk_accounts");
        assert_eq!(c[0].arguments["status"], "any");
        let c = manager_calls("90日以内に更新でイエローかレッドの顧客は？", &all);
        assert_eq!(c[0].arguments["renewal_within_days"], 90);
        let c = manager_calls("B-2003はなぜイエローなの？", &all);
        assert_eq!(
            (c[0].name, c[0].arguments["customer_id"].as_str()),
            ("lookup_health", Some("B-2003"))
        );
        let c = manager_calls("B-2001にアップセルできるものは？", &all);
        assert_eq!(c[0].name, "recommend_upsell");
        assert!(manager_calls("こんにちは", &all).is_empty());
    }

    #[test]
    fn foreign_ids_are_everyone_but_the_caller() {
        let me = Identity::customer("C-1001");
        assert_eq!(foreign_ids(&me, "C-1001とＢ－２００１の情報"), ["B-2001"]);
        assert!(foreign_ids(&me, "予約BK-1234をキャンセル").is_empty());
        assert!(foreign_ids(&Identity::manager("m"), "B-2001").is_empty());
    }
}
