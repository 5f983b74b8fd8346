//! Facts about the customer's noise problem, gathered from everything they said: the
//! arguments of `recommend_plan` (seed 003 §5.1). The noise types form a closed vocabulary,
//! so a table is the grammar here; hours are read by the time grammar of `nlu/DATETIME.md`,
//! never by matching digits (「10時」 contains 「0時」).

use std::sync::OnceLock;

use chrono::{DateTime, FixedOffset};
use kizuna_nlu::when::{parse_when, TimeSpec};
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
    pub fn from_messages<'a>(
        messages: impl IntoIterator<Item = &'a str>,
        now: DateTime<FixedOffset>,
    ) -> Self {
        let mut facts = Self::default();
        for text in messages {
            facts.absorb(text, now);
        }
        facts
    }

    fn absorb(&mut self, text: &str, now: DateTime<FixedOffset>) {
        if let Some(kind) = first_match(text, NOISE_TYPES) {
            self.noise_type = Some(kind);
        }
        if let Some(time) = time_of_day(text, now) {
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

/// Words for a time of day; hours (「23時」「夜11時」) go through the time grammar.
const TIMES_OF_DAY: &[(&str, &[&str])] = &[
    (
        "late_night",
        &["深夜", "夜中", "夜遅く", "明け方", "真夜中"],
    ),
    ("night", &["夜", "夕方", "晩"]),
    ("morning", &["早朝", "朝"]),
    ("daytime", &["日中", "昼"]),
];

/// When the noise happens: the words above, else an hour the time grammar reads.
fn time_of_day(text: &str, now: DateTime<FixedOffset>) -> Option<&'static str> {
    if let Some(time) = first_match(text, TIMES_OF_DAY) {
        return Some(time);
    }
    let minutes = match parse_when(text, now).time? {
        TimeSpec::At(m) => m,
        TimeSpec::Window { from, .. } => from,
    } % (24 * 60);
    Some(match minutes / 60 {
        22..=23 | 0..=4 => "late_night",
        17..=21 => "night",
        5..=9 => "morning",
        _ => "daytime",
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00+09:00").unwrap()
    }

    #[test]
    fn seed_dialogue_facts() {
        // Seed 003 §5.1: 足音, one month, after 23:00.
        let facts = NoiseFacts::from_messages(
            ["上の階の足音がうるさい", "1ヶ月前から", "23時以降がひどい"],
            now(),
        );
        assert_eq!(facts.noise_type, Some("footsteps"));
        assert_eq!(facts.time_of_day, Some("late_night"));
        assert_eq!(facts.duration_months, Some(1));
        assert_eq!(facts.negotiation_attempts, None);
    }

    #[test]
    fn hours_are_read_by_the_time_grammar() {
        // 「10時」 contains 「0時」 and 「12時」 contains 「2時」: neither is late at night.
        let tod = |t: &str| NoiseFacts::from_messages([t], now()).time_of_day;
        assert_eq!(tod("毎朝10時ごろから音がします"), Some("morning"));
        assert_eq!(tod("10時から始まります"), Some("daytime"));
        assert_eq!(tod("12時過ぎに響きます"), Some("daytime"));
        assert_eq!(tod("夜の11時ごろ"), Some("night"));
        assert_eq!(tod("23時を過ぎても続きます"), Some("late_night"));
        assert_eq!(tod("ずっとうるさい"), None);
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
    fn plan_arguments_carry_the_facts() {
        let facts = NoiseFacts::from_messages(["上の階の足音が深夜にひどい"], now());
        let args = facts.plan_arguments();
        assert_eq!(args["noise_type"], "footsteps");
        assert_eq!(args["time_of_day"], "late_night");
    }
}
