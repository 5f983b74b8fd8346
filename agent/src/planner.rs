//! Deterministic tool planning from what the customer said.
//!
//! A 1.5B local model picks tools unreliably, so clear intents are recognised by rules and
//! their tools run before the model writes a word; the model then only phrases the answer.
//! A stronger model may still call further tools itself.

use std::sync::OnceLock;

pub mod intents;

use chrono::{DateTime, FixedOffset};

use crate::identity::{Identity, Role};

use regex::Regex;
use serde_json::{json, Map, Value};

/// Facts about the customer's noise problem gathered from every user message so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NoiseFacts {
    pub noise_type: Option<&'static str>,
    pub time_of_day: Option<&'static str>,
    pub duration_months: Option<u32>,
    pub negotiation_attempts: Option<u32>,
    pub wants_legal_evidence: bool,
    pub wants_mediation: bool,
}

impl NoiseFacts {
    pub fn from_messages<'a>(messages: impl IntoIterator<Item = &'a str>) -> Self {
        let mut facts = Self::default();
        for text in messages {
            facts.absorb(text);
        }
        facts
    }

    fn absorb(&mut self, text: &str) {
        if let Some(kind) = first_match(text, NOISE_TYPES) {
            self.noise_type = Some(kind);
        }
        if let Some(time) = first_match(text, TIMES_OF_DAY) {
            self.time_of_day = Some(time);
        }
        if let Some(months) = duration_months(text) {
            self.duration_months = Some(months);
        }
        if let Some(n) = negotiation_attempts(text) {
            self.negotiation_attempts = Some(self.negotiation_attempts.unwrap_or(0).max(n));
        }
        if ["証拠", "法的", "裁判で使", "記録を残"]
            .iter()
            .any(|w| text.contains(w))
        {
            self.wants_legal_evidence = true;
        }
        if ["仲裁", "話し合い", "直接言いにく", "間に入って"]
            .iter()
            .any(|w| text.contains(w))
        {
            self.wants_mediation = true;
        }
    }

    /// Arguments for `recommend_plan`.
    pub fn plan_arguments(&self) -> Value {
        let mut args = Map::new();
        if let Some(v) = self.noise_type {
            args.insert("noise_type".into(), json!(v));
        }
        if let Some(v) = self.time_of_day {
            args.insert("time_of_day".into(), json!(v));
        }
        if let Some(v) = self.duration_months {
            args.insert("duration_months".into(), json!(v));
        }
        if let Some(v) = self.negotiation_attempts {
            args.insert("negotiation_attempts".into(), json!(v));
        }
        if self.wants_legal_evidence {
            args.insert("wants_legal_evidence".into(), json!(true));
        }
        if self.wants_mediation {
            args.insert("wants_mediation".into(), json!(true));
        }
        Value::Object(args)
    }
}

/// Keyword → value tables; the first table entry found in the text wins.
const NOISE_TYPES: &[(&str, &[&str])] = &[
    (
        "footsteps",
        &[
            "足音",
            "歩く音",
            "走る音",
            "走り回",
            "ドンドン",
            "ドスドス",
            "飛び跳ね",
        ],
    ),
    (
        "voices",
        &["話し声", "声が", "叫び", "笑い声", "騒ぎ声", "怒鳴"],
    ),
    (
        "music",
        &["音楽", "楽器", "ピアノ", "ギター", "テレビ", "ドラム", "歌"],
    ),
    ("pets", &["犬", "猫", "ペット", "鳴き声"]),
    ("construction", &["工事", "ドリル", "解体"]),
    (
        "low_frequency",
        &[
            "低周波",
            "振動",
            "ブーン",
            "室外機",
            "機械音",
            "エアコン",
            "換気扇",
        ],
    ),
];

const TIMES_OF_DAY: &[(&str, &[&str])] = &[
    (
        "late_night",
        &[
            "深夜",
            "夜中",
            "23時",
            "２３時",
            "24時",
            "0時",
            "1時",
            "2時",
            "3時",
            "明け方",
        ],
    ),
    ("night", &["夜", "夕方", "晩"]),
    ("morning", &["早朝", "朝"]),
    ("daytime", &["日中", "昼"]),
];

fn first_match(text: &str, table: &[(&'static str, &[&str])]) -> Option<&'static str> {
    table
        .iter()
        .find(|(_, words)| words.iter().any(|w| text.contains(w)))
        .map(|(value, _)| *value)
}

fn duration_months(text: &str) -> Option<u32> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"([0-9０-９]+|一|二|三|四|五|六|半)\s*(ヶ月|か月|カ月|ヵ月|ケ月|年|週間)")
            .expect("valid regex")
    });
    let caps = re.captures(text)?;
    let n: f32 = match &caps[1] {
        "一" => 1.0,
        "二" => 2.0,
        "三" => 3.0,
        "四" => 4.0,
        "五" => 5.0,
        "六" => 6.0,
        "半" => 0.5,
        digits => to_ascii_digits(digits).parse().ok()?,
    };
    let months = match &caps[2] {
        "年" => n * 12.0,
        "週間" => n / 4.0,
        _ => n,
    };
    Some(months.round().max(if months > 0.0 { 1.0 } else { 0.0 }) as u32)
}

fn negotiation_attempts(text: &str) -> Option<u32> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"([0-9０-９]+)\s*回").expect("valid regex"));
    let talked = [
        "管理会社",
        "大家",
        "注意し",
        "苦情を",
        "手紙",
        "話し合",
        "伝えた",
        "言った",
        "交渉",
    ]
    .iter()
    .any(|w| text.contains(w));
    if !talked {
        return None;
    }
    if let Some(caps) = re.captures(text) {
        return to_ascii_digits(&caps[1]).parse().ok();
    }
    if ["何度も", "何回も", "再三", "繰り返し"]
        .iter()
        .any(|w| text.contains(w))
    {
        return Some(3);
    }
    Some(1)
}

fn to_ascii_digits(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// A tool call decided by rules.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCall {
    pub name: &'static str,
    pub arguments: Value,
}

const PLAN_WORDS: &[&str] = &[
    "プラン",
    "おすすめ",
    "お勧め",
    "オススメ",
    "どれがいい",
    "料金",
    "費用",
    "いくら",
    "値段",
    "価格",
    "測定したい",
    "測りたい",
    "測定をお願い",
    "測定してほしい",
];
const AVAILABILITY_WORDS: &[&str] = &[
    "空き",
    "空いて",
    "空いてる",
    "予約",
    "日程",
    "候補日",
    "いつ来",
    "来てもら",
    "訪問",
    "いつ測",
    "最短",
];

/// Who asks and when: role-specific intents and dates depend on it.
pub struct PlanContext<'a> {
    pub identity: &'a Identity,
    pub now: DateTime<FixedOffset>,
}

/// Tools to run for this message, given everything the caller said before it.
pub fn plan_for(
    ctx: &PlanContext<'_>,
    previous_user_messages: &[&str],
    message: &str,
    available: &dyn Fn(&str) -> bool,
) -> Vec<PlannedCall> {
    if ctx.identity.role == Role::Manager {
        let calls = intents::manager_calls(message, available);
        if !calls.is_empty() {
            return calls;
        }
    }
    if !intents::foreign_ids(ctx.identity, message).is_empty() {
        // Someone else's account: no tool runs; the engine refuses.
        return Vec::new();
    }
    if ctx.identity.role == Role::Customer {
        if let Some(call) =
            intents::booking_call(previous_user_messages, message, ctx.now, available)
        {
            return vec![call];
        }
        if let Some(call) = intents::cancel_call(message, available) {
            return vec![call];
        }
        let calls = intents::customer_calls(message, available);
        if !calls.is_empty() {
            return calls;
        }
    }
    plan(previous_user_messages, message, available)
}

/// Tools for the noise problem (plans, slots), given everything the customer said before it.
pub fn plan(
    previous_user_messages: &[&str],
    message: &str,
    available: &dyn Fn(&str) -> bool,
) -> Vec<PlannedCall> {
    let facts = NoiseFacts::from_messages(previous_user_messages.iter().copied().chain([message]));
    let mut calls = Vec::new();
    let asks_plan = PLAN_WORDS.iter().any(|w| message.contains(w));
    let asks_slots = AVAILABILITY_WORDS.iter().any(|w| message.contains(w));
    if asks_plan && available("recommend_plan") {
        calls.push(PlannedCall {
            name: "recommend_plan",
            arguments: facts.plan_arguments(),
        });
    }
    if asks_slots && available("check_availability") {
        let mut args = Map::new();
        if let Some(time) = facts.time_of_day {
            let preferred = if matches!(time, "late_night" | "night") {
                "evening"
            } else {
                "daytime"
            };
            args.insert("preferred_time".into(), json!(preferred));
        }
        calls.push(PlannedCall {
            name: "check_availability",
            arguments: Value::Object(args),
        });
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn seed_dialogue_facts() {
        // Seed 003 §5.1: 足音, one month, after 23:00.
        let facts =
            NoiseFacts::from_messages(["上の階の足音がうるさい", "1ヶ月前から", "深夜23時以降"]);
        assert_eq!(facts.noise_type, Some("footsteps"));
        assert_eq!(facts.time_of_day, Some("late_night"));
        assert_eq!(facts.duration_months, Some(1));
        assert_eq!(facts.negotiation_attempts, None);
    }

    #[test]
    fn durations_and_attempts() {
        assert_eq!(duration_months("半年ほど前から"), Some(6));
        assert_eq!(duration_months("一ヶ月くらい"), Some(1));
        assert_eq!(duration_months("２年続いています"), Some(24));
        assert_eq!(duration_months("3週間"), Some(1));
        assert_eq!(negotiation_attempts("管理会社に3回相談しました"), Some(3));
        assert_eq!(negotiation_attempts("何度も注意しても変わらない"), Some(3));
        assert_eq!(negotiation_attempts("管理会社に伝えた"), Some(1));
        assert_eq!(negotiation_attempts("3回目です"), None);
    }

    #[test]
    fn plan_intent_runs_recommend_plan_with_facts() {
        let calls = plan(
            &["上の階の足音が深夜にひどい"],
            "どのプランがおすすめですか？",
            &all,
        );
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "recommend_plan");
        assert_eq!(calls[0].arguments["noise_type"], "footsteps");
        assert_eq!(calls[0].arguments["time_of_day"], "late_night");
    }

    #[test]
    fn availability_intent_prefers_evening_for_night_noise() {
        let calls = plan(&["夜にうるさい"], "空いている日程を教えてください", &all);
        assert_eq!(
            calls,
            vec![PlannedCall {
                name: "check_availability",
                arguments: json!({"preferred_time": "evening"})
            }]
        );
    }

    #[test]
    fn problem_descriptions_alone_call_nothing() {
        assert!(plan(&[], "上の階の足音がうるさくて眠れない", &all).is_empty());
        assert!(plan(&[], "プランを教えて", &|n| n != "recommend_plan").is_empty());
    }
}
