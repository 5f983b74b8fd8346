//! *When* a customer wants a measurement: the days, weekdays and times they name, and the ones
//! they rule out, following the conventions of `nlu/DATETIME.md`.
//!
//! The grammar reads in four steps:
//! 1. **tokens**: every rule's matches are collected and the leftmost-longest ones kept, so a
//!    longer reading always beats a part of it (「3時間」 is a duration, never 「3時」; 「10時」
//!    is never read as 「0時」; 「明後日」 is not 「明日」). Numbers that are not dates or times
//!    (10年, 2回, 1ヶ月, 12,800円, B-2003, BK-1234, phone numbers) are consumed by "null" rules.
//! 2. **resolution**: month/day without a year and bare day numbers become dates relative to
//!    `now` (or to the date just named in the same sentence: 「28日から3日まで」).
//! 3. **phrases**: ranges (「10時から13時」「1日〜3日」 "from … to …"), open ends (「以降」「から」
//!    "after"), 「まで」 "by"/"until" and 「より前」 "before" are folded into their operand.
//! 4. **negation**: 「以外」「は無理」… take the phrases before them, "except" / "other than" the
//!    ones after, "not" whichever side names something; each becomes an [`Exclusion`], and the
//!    rest is what was asked for.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Timelike, Weekday};
use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

use crate::text::{char_at, char_before, is_hiragana, normalize};

/// Minutes in a day; windows may run past it for 深夜 (`nlu/DATETIME.md`: 22:00–29:00).
const DAY: u32 = 24 * 60;

/// Everything a message says about when.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct When {
    /// The days asked for; `None` when no day was named.
    pub days: Option<DaySet>,
    /// A weekday filter (「土曜」「平日」 alone); `None` when none applies. A weekday that picks
    /// out days of a named period (「来週の土曜」) is folded into `days` instead.
    pub weekdays: Option<Vec<Weekday>>,
    /// The time of day asked for.
    pub time: Option<TimeSpec>,
    /// What was ruled out (「以外」「は無理」 "except" …).
    pub exclude: Vec<Exclusion>,
}

/// A set of days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DaySet {
    /// These dates.
    List(Vec<NaiveDate>),
    /// From `from` to `to`, both inclusive; open-ended when `to` is `None` (「25日以降」).
    Range {
        from: NaiveDate,
        to: Option<NaiveDate>,
    },
}

/// A time of day, in minutes after midnight (JST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSpec {
    /// An exact start time.
    At(u32),
    /// Any start in `from..to` (end exclusive); `to` may exceed 1440 for 深夜 (to 05:00 the
    /// next day).
    Window { from: u32, to: u32 },
}

/// Something the customer ruled out: a slot is excluded when its day matches `days` and
/// `weekdays` (any day when neither is given) and its time matches `time` (any time when
/// `None`), as `nlu/DATETIME.md` ("Not") has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exclusion {
    pub days: Option<DaySet>,
    pub weekdays: Option<Vec<Weekday>>,
    pub time: Option<TimeSpec>,
}

impl DaySet {
    /// Whether `date` is one of the days.
    pub fn contains(&self, date: NaiveDate) -> bool {
        match self {
            DaySet::List(dates) => dates.contains(&date),
            DaySet::Range { from, to } => date >= *from && to.is_none_or(|to| date <= to),
        }
    }

    /// Every date, in order; `None` for an open-ended range.
    pub fn dates(&self) -> Option<Vec<NaiveDate>> {
        match self {
            DaySet::List(dates) => {
                let set: BTreeSet<NaiveDate> = dates.iter().copied().collect();
                Some(set.into_iter().collect())
            }
            DaySet::Range { from, to: Some(to) } => Some(span(*from, *to)),
            DaySet::Range { to: None, .. } => None,
        }
    }
}

impl TimeSpec {
    /// Whether a start at `minute` (after midnight of the day in question, possibly past 1440
    /// for the small hours of the next day) fits.
    pub fn matches(&self, minute: u32) -> bool {
        match *self {
            TimeSpec::At(at) => minute == at,
            TimeSpec::Window { from, to } => minute >= from && minute < to,
        }
    }

    fn end(&self) -> u32 {
        match *self {
            TimeSpec::At(at) => at,
            TimeSpec::Window { to, .. } => to,
        }
    }
}

/// `HH:MM` for an exact time, `HH:MM-HH:MM` for a window (`nlu/DATETIME.md`, Times).
impl fmt::Display for TimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        match *self {
            TimeSpec::At(at) => write!(f, "{}", hm(at)),
            TimeSpec::Window { from, to } => write!(f, "{}-{}", hm(from), hm(to)),
        }
    }
}

/// Whether a day/weekday/time triple covers a slot on `date` at `minute`. A time that runs
/// past midnight (深夜, 22:00–29:00) also covers the small hours after the day it names.
fn covers(
    days: &Option<DaySet>,
    weekdays: &Option<Vec<Weekday>>,
    time: &Option<TimeSpec>,
    date: NaiveDate,
    minute: u32,
) -> bool {
    let day_ok = |d: NaiveDate| {
        days.as_ref().is_none_or(|s| s.contains(d))
            && weekdays.as_ref().is_none_or(|w| w.contains(&d.weekday()))
    };
    let same_day = day_ok(date) && time.is_none_or(|t| t.matches(minute));
    let night_before =
        time.is_some_and(|t| t.matches(minute + DAY)) && date.pred_opt().is_some_and(day_ok);
    same_day || night_before
}

fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("valid offset")
}

impl When {
    /// Nothing said about when.
    pub fn is_empty(&self) -> bool {
        self.days.is_none()
            && self.weekdays.is_none()
            && self.time.is_none()
            && self.exclude.is_empty()
    }

    /// A single day and an exact time: the concrete slot the customer named. `None` when the
    /// day or the time is not exact, when the slot is already past at `now`, or when the
    /// customer ruled it out in the same message.
    pub fn exact(&self, now: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        let Some(TimeSpec::At(at)) = self.time else {
            return None;
        };
        let dates = self.days.as_ref()?.dates()?;
        let [date] = dates.as_slice() else {
            return None;
        };
        if self
            .weekdays
            .as_ref()
            .is_some_and(|w| !w.contains(&date.weekday()))
        {
            return None;
        }
        let naive = date.and_hms_opt(0, 0, 0)? + Duration::minutes(i64::from(at));
        let slot = jst().from_local_datetime(&naive).single()?;
        (slot > now && self.accepts(slot)).then_some(slot)
    }

    /// Whether a slot (JST) satisfies everything said, exclusions included.
    pub fn accepts(&self, slot: DateTime<FixedOffset>) -> bool {
        let local = slot.with_timezone(&jst());
        let date = local.date_naive();
        let minute = local.hour() * 60 + local.minute();
        covers(&self.days, &self.weekdays, &self.time, date, minute)
            && !self
                .exclude
                .iter()
                .any(|x| covers(&x.days, &x.weekdays, &x.time, date, minute))
    }
}

// ---------------------------------------------------------------------------------------------
// Calendar helpers

fn span(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut d = from;
    // A year at most: nobody books further ahead, and a bad range must not run away.
    while d <= to && out.len() < 400 {
        out.push(d);
        d = match d.succ_opt() {
            Some(next) => next,
            None => break,
        };
    }
    out
}

fn monday_of(d: NaiveDate) -> NaiveDate {
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

fn month_start(year: i32, month: u32, offset: u32) -> Option<NaiveDate> {
    let index = year * 12 + month as i32 - 1 + offset as i32;
    NaiveDate::from_ymd_opt(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
}

fn month_end(first: NaiveDate) -> NaiveDate {
    month_start(first.year(), first.month(), 1)
        .and_then(|n| n.pred_opt())
        .unwrap_or(first)
}

/// The first date on or after `from` whose day of the month is `day`: a bare day number is in
/// this month when it has not passed, else next month (`nlu/DATETIME.md`, Days).
fn next_day_number(from: NaiveDate, day: u32) -> Option<NaiveDate> {
    (0..14)
        .filter_map(|k| month_start(from.year(), from.month(), k))
        .filter_map(|first| NaiveDate::from_ymd_opt(first.year(), first.month(), day))
        .find(|d| *d >= from)
}

/// The next occurrence of a month/day on or after `from` (2月29日 waits for a leap year).
fn next_month_day(from: NaiveDate, month: u32, day: u32) -> Option<NaiveDate> {
    (0..9)
        .filter_map(|k| NaiveDate::from_ymd_opt(from.year() + k, month, day))
        .find(|d| *d >= from)
}

/// The first `wd` strictly after `today` (次の土曜, next Saturday), or on or after it.
fn next_weekday(today: NaiveDate, wd: Weekday, strictly: bool) -> NaiveDate {
    let start = if strictly {
        today + Duration::days(1)
    } else {
        today
    };
    let ahead = (7 + wd.num_days_from_monday() - start.weekday().num_days_from_monday()) % 7;
    start + Duration::days(i64::from(ahead))
}

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];
const WORKDAYS: [Weekday; 5] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
];
const WEEKEND: [Weekday; 2] = [Weekday::Sat, Weekday::Sun];

fn kanji_weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "月" => Weekday::Mon,
        "火" => Weekday::Tue,
        "水" => Weekday::Wed,
        "木" => Weekday::Thu,
        "金" => Weekday::Fri,
        "土" => Weekday::Sat,
        "日" => Weekday::Sun,
        _ => return None,
    })
}

fn english_weekday(s: &str) -> Option<Weekday> {
    let w = match s.get(..3)? {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    };
    Some(w)
}

fn english_month(s: &str) -> Option<u32> {
    let m = match s.get(..3)? {
        "jan" => 1,
        "feb" => 2,
        "mar" => 3,
        "apr" => 4,
        "may" => 5,
        "jun" => 6,
        "jul" => 7,
        "aug" => 8,
        "sep" => 9,
        "oct" => 10,
        "nov" => 11,
        "dec" => 12,
        _ => return None,
    };
    Some(m)
}

fn english_number(s: &str) -> Option<u32> {
    Some(match s {
        "a" | "an" | "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        _ => s.parse().ok()?,
    })
}

// ---------------------------------------------------------------------------------------------
// Times of day (`nlu/DATETIME.md`, Times)

/// A named part of the day: its window, and where 「まで」 after it ends.
#[derive(Clone, Copy)]
struct Part {
    from: u32,
    to: u32,
    until: u32,
}

const MORNING: Part = Part {
    from: 360,
    to: 720,
    until: 720,
};
const NOON: Part = Part {
    from: 660,
    to: 840,
    until: 720,
};
const DAYTIME: Part = Part {
    from: 540,
    to: 1020,
    until: 540,
};
const AFTERNOON: Part = Part {
    from: 720,
    to: 1080,
    until: 720,
};
const EVENING: Part = Part {
    from: 960,
    to: 1140,
    until: 960,
};
const NIGHT: Part = Part {
    from: 1080,
    to: DAY,
    until: 1080,
};
const LATE: Part = Part {
    from: 1320,
    to: DAY + 300,
    until: 1320,
};

fn part_tok(p: Part) -> Tok {
    Tok::Time(TimeTok {
        spec: TimeSpec::Window {
            from: p.from,
            to: p.to,
        },
        next_day: false,
        bare: false,
        until: p.until,
    })
}

fn at_tok(minute: u32, next_day: bool, bare: bool) -> Tok {
    let minute = if minute >= DAY { minute - DAY } else { minute };
    Tok::Time(TimeTok {
        spec: TimeSpec::At(minute),
        next_day,
        bare,
        until: minute,
    })
}

/// A bare hour: 1–6 is the afternoon (「3時」 is 15:00), 7–12 as written, 0 and 13–24 as
/// written (`nlu/DATETIME.md`: "a bare hour 1–6 … afternoon: 13:00–18:00").
fn bare_hour(h: u32) -> u32 {
    if (1..=6).contains(&h) {
        h + 12
    } else {
        h
    }
}

/// An hour after a part of the day: 夜7時 is 19:00, 深夜1時 is 01:00 of the next day.
/// Returns (hour, next day).
fn hour_after_part(part: &str, h: u32) -> (u32, bool) {
    match part {
        "午前" | "朝" => (if h == 12 { 0 } else { h }, false),
        "午後" | "昼" | "お昼" | "夕方" | "夕" => (if h < 12 { h + 12 } else { h }, false),
        "夜" | "晩" => match h {
            0..=4 => (h, true),
            5..=11 => (h + 12, false),
            12 | 24 => (0, true),
            _ => (h, false),
        },
        // 深夜 / 夜中
        _ => match h {
            0..=5 => (h, true),
            6..=11 => (h + 12, false),
            12 | 24 => (0, true),
            _ => (h, false),
        },
    }
}

fn am_pm(h: u32, marker: &str) -> u32 {
    if marker.starts_with('p') {
        if h < 12 {
            h + 12
        } else {
            h
        }
    } else if h == 12 {
        0
    } else {
        h
    }
}

fn minutes_of(c: &Captures, group: usize) -> u32 {
    c.get(group)
        .and_then(|m| m.as_str().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// A day expression before it is resolved against `now` and the sentence.
#[derive(Debug, Clone)]
enum DayTok {
    Dates(Vec<NaiveDate>),
    /// Month and day, year optional (11月25日, 11/25, Nov 25).
    MonthDay {
        year: Option<i32>,
        month: u32,
        day: u32,
    },
    /// A day number alone (25日, the 25th).
    Bare(u32),
    /// Weekdays of a given week (来週の土曜: `Some(monday)`) or the coming ones (次の土曜: `None`).
    Qual {
        monday: Option<NaiveDate>,
        wds: Vec<Weekday>,
    },
}

#[derive(Debug, Clone, Copy)]
struct TimeTok {
    spec: TimeSpec,
    /// 深夜1時 of a day D is D+1 01:00.
    next_day: bool,
    /// An hour said without 午前/午後/am/pm, for the end of 「夜7時から9時」.
    bare: bool,
    /// Where 「まで」 after this ends.
    until: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    /// Japanese: the phrases before (「25日以外」「土曜は無理」).
    Before,
    /// English "except", "other than": the phrases after.
    After,
    /// English "not", "can't": after when something follows, else before.
    Either,
}

#[derive(Debug, Clone)]
enum Tok {
    Day(DayTok),
    /// Weekdays; `note` for 「(土)」, which only annotates a date right before it.
    Wd {
        wds: Vec<Weekday>,
        note: bool,
    },
    Time(TimeTok),
    /// から: a range with what follows, or open-ended.
    Kara,
    /// 〜, -, to, through: a range.
    Sep,
    /// まで / までに.
    Made,
    /// 以降 / 以後 / 過ぎ.
    Ikou,
    /// より前.
    Mae,
    /// English prefixes.
    From,
    After,
    Until,
    Before,
    Between,
    /// A negation; `wa` when it needs a topic particle in its scope (仕事: 「1日は…仕事」).
    Neg {
        side: Side,
        wa: bool,
    },
    /// Consumes text that is not a date or a time (10年, 3時間, 12,800円, B-2003).
    Null,
}

struct Ctx<'a> {
    today: NaiveDate,
    text: &'a str,
}

type Handler = fn(&Captures, &Ctx) -> Option<Vec<Tok>>;

struct Rule {
    re: Regex,
    f: Handler,
}

fn days(d: Vec<NaiveDate>) -> Option<Vec<Tok>> {
    Some(vec![Tok::Day(DayTok::Dates(d))])
}

fn one_day(d: NaiveDate) -> Option<Vec<Tok>> {
    days(vec![d])
}

fn range_days(from: NaiveDate, to: NaiveDate) -> Option<Vec<Tok>> {
    let v = span(from, to);
    (!v.is_empty()).then(|| vec![Tok::Day(DayTok::Dates(v))])
}

fn this_weekend(today: NaiveDate) -> Option<Vec<Tok>> {
    let sat = monday_of(today) + Duration::days(5);
    range_days(sat.max(today), sat + Duration::days(1))
}

fn week_monday(today: NaiveDate, word: &str) -> NaiveDate {
    let weeks = match word {
        "今週" | "this week" => 0,
        "来週" | "next week" => 1,
        _ => 2,
    };
    monday_of(today) + Duration::days(7 * weeks)
}

fn period(today: NaiveDate, word: &str) -> Option<Vec<Tok>> {
    let this_month = month_start(today.year(), today.month(), 0)?;
    let next_month = month_start(today.year(), today.month(), 1)?;
    let monday = monday_of(today);
    match word {
        "今日" | "本日" | "きょう" | "today" => one_day(today),
        "明日" | "あした" | "あす" | "tomorrow" => one_day(today + Duration::days(1)),
        "明後日" | "あさって" | "the day after tomorrow" | "day after tomorrow" => {
            one_day(today + Duration::days(2))
        }
        "明々後日" | "明明後日" | "しあさって" => one_day(today + Duration::days(3)),
        "今週" | "this week" => range_days(today, monday + Duration::days(6)),
        "来週" | "next week" => {
            range_days(monday + Duration::days(7), monday + Duration::days(13))
        }
        "再来週" | "さ来週" | "the week after next" | "week after next" => {
            range_days(monday + Duration::days(14), monday + Duration::days(20))
        }
        "今週末" | "週末" | "this weekend" | "weekend" | "the weekend" => this_weekend(today),
        "来週末" | "next weekend" => {
            range_days(monday + Duration::days(12), monday + Duration::days(13))
        }
        "今月" | "this month" => range_days(today, month_end(this_month)),
        "来月" | "next month" => range_days(next_month, month_end(next_month)),
        "月末"
        | "今月末"
        | "end of the month"
        | "end of this month"
        | "end of month"
        | "the end of the month"
        | "the end of this month" => {
            let d25 = this_month + Duration::days(24);
            range_days(d25.max(today), month_end(this_month))
        }
        "来月末" | "end of next month" | "the end of next month" => {
            range_days(next_month + Duration::days(24), month_end(next_month))
        }
        "来月頭"
        | "来月初め"
        | "来月はじめ"
        | "来月初旬"
        | "early next month"
        | "beginning of next month"
        | "the beginning of next month"
        | "start of next month"
        | "the start of next month" => range_days(next_month, next_month + Duration::days(6)),
        _ => None,
    }
}

/// The rules, in no particular order: the leftmost-longest match wins. Within one rule the
/// regex takes the first alternative that matches, so longer words come first ("next weekend"
/// before "next week", which the ASCII boundary check would then reject).
fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = |re: &str, f: Handler| Rule {
            re: Regex::new(re).expect("valid regex"),
            f,
        };
        vec![
            // ---- not dates or times
            r(
                r"\d+(?:時間|日間|日前|日以内|日目|日おき|日ごと|日毎|週間|週目|ヶ月|ケ月|か月|カ月|ヵ月|箇月|年|回|人|階|分|件|歳|才|円|万|千|%|度|枚|部屋|戸|棟|号|番|秒|泊)",
                |_, _| Some(vec![Tok::Null]),
            ),
            r(r"\d+日\d+回|[一1]日中|毎(?:朝|晩|夜|日|週|月|年|回)", |_, _| {
                Some(vec![Tok::Null])
            }),
            r(r"\d{1,3}(?:,\d{3})+|\d{2,4}-\d{2,4}-\d{3,4}|\d{5,}", |_, _| {
                Some(vec![Tok::Null])
            }),
            r(r"[a-z]{1,8}[-ー]\d+|[a-z]\d{3,}", |_, _| Some(vec![Tok::Null])),
            // ---- days (Japanese)
            r(r"(\d{4})年(\d{1,2})月(\d{1,2})日|(\d{4})[/\-](\d{1,2})[/\-](\d{1,2})", |c, _| {
                let (y, m, d) = if c.get(1).is_some() { (1, 2, 3) } else { (4, 5, 6) };
                Some(vec![Tok::Day(DayTok::MonthDay {
                    year: Some(minutes_of(c, y) as i32),
                    month: minutes_of(c, m),
                    day: minutes_of(c, d),
                })])
            }),
            r(r"(\d{1,2})月(\d{1,2})日|(\d{1,2})/(\d{1,2})", |c, ctx| {
                let (m, d) = if c.get(1).is_some() { (1, 2) } else { (3, 4) };
                let end = c.get(0)?.end();
                if c.get(3).is_some()
                    && char_at(ctx.text, end).is_some_and(|ch| ch.is_ascii_digit() || ch == '/')
                {
                    return None;
                }
                let (month, day) = (minutes_of(c, m), minutes_of(c, d));
                ((1..=12).contains(&month) && (1..=31).contains(&day)).then(|| {
                    vec![Tok::Day(DayTok::MonthDay {
                        year: None,
                        month,
                        day,
                    })]
                })
            }),
            r(r"(\d{1,2})月(\d{1,2})日?\s*[~\-]\s*(\d{1,2})日", |c, _| {
                // 「12月1〜3日」: one month, two days.
                let month = minutes_of(c, 1);
                let (a, b) = (minutes_of(c, 2), minutes_of(c, 3));
                Some(vec![
                    Tok::Day(DayTok::MonthDay { year: None, month, day: a }),
                    Tok::Sep,
                    Tok::Day(DayTok::Bare(b)),
                ])
            }),
            r(r"(\d{1,2})日", |c, _| {
                let d = minutes_of(c, 1);
                (1..=31).contains(&d).then(|| vec![Tok::Day(DayTok::Bare(d))])
            }),
            r(r"(\d{1,2})月(?:の)?(上旬|中旬|下旬|末|頭|初め|初旬|中)?", |c, ctx| {
                let month = minutes_of(c, 1);
                if !(1..=12).contains(&month) {
                    return None;
                }
                let today = ctx.today;
                let first = (0..13)
                    .filter_map(|k| month_start(today.year(), today.month(), k))
                    .find(|f| f.month() == month)?;
                let last = month_end(first);
                let (from, to) = match c.get(2).map(|m| m.as_str()) {
                    Some("上旬") => (first, first + Duration::days(9)),
                    Some("中旬") => (first + Duration::days(10), first + Duration::days(19)),
                    Some("下旬") => (first + Duration::days(20), last),
                    Some("末") => (first + Duration::days(24), last),
                    Some("頭" | "初め" | "初旬") => (first, first + Duration::days(6)),
                    _ => (first, last),
                };
                range_days(from.max(today), to)
            }),
            r(r"(\d+)日後", |c, ctx| {
                let n = minutes_of(c, 1);
                (n <= 400).then_some(())?;
                one_day(ctx.today + Duration::days(i64::from(n)))
            }),
            r(r"(\d+)週間?後", |c, ctx| {
                let n = minutes_of(c, 1);
                (n <= 60).then_some(())?;
                one_day(ctx.today + Duration::days(7 * i64::from(n)))
            }),
            r(
                r"(今日|本日|きょう|明日|あした|あす|明後日|あさって|明々後日|明明後日|しあさって)(?:中)?",
                |c, ctx| {
                    let word = c.get(1)?.as_str();
                    // 「あす」 inside a hiragana word is not tomorrow.
                    if word == "あす" && char_before(ctx.text, c.get(0)?.start()).is_some_and(is_hiragana)
                    {
                        return None;
                    }
                    period(ctx.today, word)
                },
            ),
            r(r"今夜|今晩|今朝", |c, ctx| {
                let part = if c.get(0)?.as_str() == "今朝" { MORNING } else { NIGHT };
                let mut v = one_day(ctx.today)?;
                v.push(part_tok(part));
                Some(v)
            }),
            r(
                r"(今週末|来週末|週末|再来週|さ来週|今週|来週|来月末|今月末|月末|来月頭|来月初め|来月はじめ|来月初旬|今月|来月)(?:中|内)?",
                |c, ctx| period(ctx.today, c.get(1)?.as_str()),
            ),
            r(
                r"(今週|来週|再来週|さ来週)(?:の)?\s*(?:([月火水木金土日])曜日?|(平日)|(土日))",
                |c, ctx| {
                    let monday = week_monday(ctx.today, c.get(1)?.as_str());
                    let wds: Vec<Weekday> = if c.get(3).is_some() {
                        WORKDAYS.to_vec()
                    } else if c.get(4).is_some() {
                        WEEKEND.to_vec()
                    } else {
                        vec![kanji_weekday(c.get(2)?.as_str())?]
                    };
                    if c.get(2).is_none() {
                        // 来週の平日 / 来週の土日: those days of the week, from today on.
                        let dates: Vec<NaiveDate> = wds
                            .iter()
                            .map(|w| monday + Duration::days(i64::from(w.num_days_from_monday())))
                            .filter(|d| *d >= ctx.today)
                            .collect();
                        return (!dates.is_empty()).then(|| vec![Tok::Day(DayTok::Dates(dates))]);
                    }
                    Some(vec![Tok::Day(DayTok::Qual {
                        monday: Some(monday),
                        wds,
                    })])
                },
            ),
            r(r"(?:次|今度)の?\s*([月火水木金土日])曜日?", |c, _| {
                Some(vec![Tok::Day(DayTok::Qual {
                    monday: None,
                    wds: vec![kanji_weekday(c.get(1)?.as_str())?],
                })])
            }),
            r(r"(今月|来月|再来月)の?\s*(\d{1,2})日", |c, ctx| {
                let offset = match c.get(1)?.as_str() {
                    "今月" => 0,
                    "来月" => 1,
                    _ => 2,
                };
                let first = month_start(ctx.today.year(), ctx.today.month(), offset)?;
                one_day(NaiveDate::from_ymd_opt(
                    first.year(),
                    first.month(),
                    minutes_of(c, 2),
                )?)
            }),
            r(r"([月火水木金土日])曜日?", |c, _| {
                Some(vec![Tok::Wd {
                    wds: vec![kanji_weekday(c.get(1)?.as_str())?],
                    note: false,
                }])
            }),
            r(r"[月火水木金土日](?:・[月火水木金土日])+(?:曜日?)?", |c, ctx| {
                // 「月・水・金」; not after a number (「12月・1月」).
                if char_before(ctx.text, c.get(0)?.start()).is_some_and(|ch| ch.is_ascii_digit()) {
                    return None;
                }
                let wds = c
                    .get(0)?
                    .as_str()
                    .split('・')
                    .map(|w| kanji_weekday(&w.chars().take(1).collect::<String>()))
                    .collect::<Option<Vec<_>>>()?;
                Some(vec![Tok::Wd { wds, note: false }])
            }),
            r(r"\(([月火水木金土日])(?:曜日?)?\)", |c, _| {
                Some(vec![Tok::Wd {
                    wds: vec![kanji_weekday(c.get(1)?.as_str())?],
                    note: true,
                }])
            }),
            r(r"土日(?:祝日?)?|平日", |c, _| {
                let wds = if c.get(0)?.as_str() == "平日" {
                    WORKDAYS.to_vec()
                } else {
                    WEEKEND.to_vec()
                };
                Some(vec![Tok::Wd { wds, note: false }])
            }),
            // ---- times (Japanese)
            r(
                r"(午前|午後|朝|お昼|昼|夕方|夕|夜中|深夜|夜|晩)の?\s*(\d{1,2})(?:時(?:(半)|(\d{1,2})分)?|:(\d{2}))",
                |c, _| {
                    let h = minutes_of(c, 2);
                    if h > 24 {
                        return None;
                    }
                    let m = if c.get(3).is_some() {
                        30
                    } else {
                        minutes_of(c, 4) + minutes_of(c, 5)
                    };
                    let (h, next) = hour_after_part(c.get(1)?.as_str(), h);
                    (m < 60).then(|| vec![at_tok(h * 60 + m, next, false)])
                },
            ),
            r(r"(\d{1,2})時(?:(半)|(\d{1,2})分)?|(\d{1,2}):(\d{2})", |c, ctx| {
                let (h, m) = if c.get(1).is_some() {
                    let m = if c.get(2).is_some() { 30 } else { minutes_of(c, 3) };
                    (minutes_of(c, 1), m)
                } else {
                    if char_at(ctx.text, c.get(0)?.end()).is_some_and(|ch| ch.is_ascii_digit()) {
                        return None;
                    }
                    (minutes_of(c, 4), minutes_of(c, 5))
                };
                (h <= 24 && m < 60).then(|| {
                    let bare = (1..=12).contains(&h);
                    let h = bare_hour(h);
                    vec![at_tok(h * 60 + m, h == 24, bare)]
                })
            }),
            r(r"(\d{1,2})(?:時)?(半)?\s*[~\-]\s*(\d{1,2})時(半)?", |c, _| {
                let (a, b) = (minutes_of(c, 1), minutes_of(c, 3));
                if a > 24 || b > 24 {
                    return None;
                }
                let from = bare_hour(a) * 60 + if c.get(2).is_some() { 30 } else { 0 };
                let mut to = bare_hour(b) * 60 + if c.get(4).is_some() { 30 } else { 0 };
                if to <= from {
                    to += 12 * 60;
                }
                Some(vec![Tok::Time(TimeTok {
                    spec: TimeSpec::Window { from, to },
                    next_day: false,
                    bare: false,
                    until: from,
                })])
            }),
            r(r"正午", |_, _| Some(vec![at_tok(720, false, false)])),
            r(
                r"午前中?|早朝|朝方?|お昼過ぎ|お昼すぎ|お昼|昼過ぎ|昼すぎ|昼頃|昼ごろ|昼間?|日中|午後|夕方|夕刻|夜間|夜中|深夜|夜遅く|夜|晩",
                |c, ctx| {
                    let word = c.get(0)?.as_str();
                    // 朝日 is a name (朝日住宅管理), not the morning.
                    if word.starts_with('朝') && ctx.text[c.get(0)?.end()..].starts_with('日') {
                        return None;
                    }
                    let part = match word {
                        "午前" | "午前中" | "早朝" | "朝" | "朝方" => MORNING,
                        "お昼" | "昼" | "昼間" | "昼頃" | "昼ごろ" => NOON,
                        "日中" => DAYTIME,
                        "午後" | "昼過ぎ" | "昼すぎ" | "お昼過ぎ" | "お昼すぎ" => AFTERNOON,
                        "夕方" | "夕刻" => EVENING,
                        "夜" | "晩" | "夜間" => NIGHT,
                        _ => LATE,
                    };
                    Some(vec![part_tok(part)])
                },
            ),
            // ---- connectors (Japanese)
            r(r"から", |_, _| Some(vec![Tok::Kara])),
            r(r"[~\-]", |_, _| Some(vec![Tok::Sep])),
            r(r"まで(?:に|で|の)?", |_, _| Some(vec![Tok::Made])),
            r(r"以降|以後|過ぎ|すぎ", |_, _| Some(vec![Tok::Ikou])),
            r(r"より前|前まで|前に", |_, _| Some(vec![Tok::Mae])),
            // ---- negation (Japanese): `nlu/DATETIME.md`, Not
            r(
                r"以外|除いて|除く|避け|じゃなくて|じゃなく|ではなく|でなく|都合が悪|都合悪|都合がつかな|都合つかな|都合がつきませ|都合が合わな|予定が(?:ある|あり|入)|用事が(?:ある|あり)|不在|留守",
                |c, ctx| {
                    let end = c.get(0)?.end();
                    // 「土曜じゃなくてもいい」 does not rule Saturday out.
                    if c.get(0)?.as_str().contains("なく") && ctx.text[end..].starts_with('も') {
                        return None;
                    }
                    Some(vec![Tok::Neg {
                        side: Side::Before,
                        wa: false,
                    }])
                },
            ),
            r(
                r"無理|むり|ダメ|だめ|駄目|空いていな|空いてな|空いていませ|空いてませ|あいていな|あいてな|あいていませ|あいてませ|できな|できませ|出来な|出来ませ|難し|むずかし|厳し|きびし",
                |c, ctx| {
                    // A question (「土曜は無理ですか」「空いてないですか」) asks; it rules nothing out.
                    let rest = &ctx.text[c.get(0)?.end()..];
                    let rest = rest.trim_start_matches(['い', 'く', 'ん', 'の']);
                    let asks = ["ですか", "でしょうか", "か?", "か。", "かな", "ですかね"]
                        .iter()
                        .any(|q| rest.starts_with(q))
                        || rest == "か";
                    // 「無理なら午後」「難しければ」 are conditions, not refusals.
                    let rest = rest.trim_start_matches(['だ', 'で', 'な', 'い']);
                    let cond = ["ら", "ったら", "ければ", "かったら", "あれば", "場合"]
                        .iter()
                        .any(|w| rest.starts_with(w));
                    (!asks && !cond).then(|| {
                        vec![Tok::Neg {
                            side: Side::Before,
                            wa: false,
                        }]
                    })
                },
            ),
            r(r"仕事", |c, ctx| {
                // 「仕事が終わる19時以降」「仕事が休みの土曜」 are when they are free.
                let rest = &ctx.text[c.get(0)?.end()..];
                let rest = rest.trim_start_matches(['が', 'は', 'も', 'の']);
                let free = ["終", "おわ", "休", "やす", "ない", "無", "なし", "明け", "後", "あと", "帰り", "以外"]
                    .iter()
                    .any(|w| rest.starts_with(w));
                (!free).then(|| {
                    vec![Tok::Neg {
                        side: Side::Before,
                        wa: true,
                    }]
                })
            }),
            // ---- English days
            r(
                r"the day after tomorrow|day after tomorrow|today|tomorrow|the week after next|week after next|this weekend|next weekend|the weekend|this week|next week|this month|next month|(?:the )?end of (?:the |this |next )?month|(?:the )?(?:beginning|start) of next month|early next month",
                |c, ctx| {
                    let w = c.get(0)?.as_str();
                    let w = match w {
                        "end of month" | "the end of month" => "end of the month",
                        "the end of next month" => "end of next month",
                        _ => w,
                    };
                    period(ctx.today, w)
                },
            ),
            r(r"tonight|this (morning|afternoon|evening)", |c, ctx| {
                let part = match c.get(1).map(|m| m.as_str()) {
                    Some("morning") => MORNING,
                    Some("afternoon") => AFTERNOON,
                    _ => NIGHT,
                };
                let mut v = one_day(ctx.today)?;
                v.push(part_tok(part));
                Some(v)
            }),
            r(r"weekends?|weekdays?", |c, ctx| {
                let w = c.get(0)?.as_str();
                match w {
                    "weekend" => this_weekend(ctx.today),
                    "weekends" => Some(vec![Tok::Wd {
                        wds: WEEKEND.to_vec(),
                        note: false,
                    }]),
                    _ => Some(vec![Tok::Wd {
                        wds: WORKDAYS.to_vec(),
                        note: false,
                    }]),
                }
            }),
            r(r"in (\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten) (days?|weeks?)", |c, ctx| {
                let n = english_number(c.get(1)?.as_str())?;
                let per = if c.get(2)?.as_str().starts_with('w') { 7 } else { 1 };
                (n <= 400).then_some(())?;
                one_day(ctx.today + Duration::days(i64::from(n * per)))
            }),
            r(
                r"(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?\s*(\d{1,2})(?:st|nd|rd|th)?(?:,?\s*(\d{4}))?",
                |c, _| {
                    Some(vec![Tok::Day(DayTok::MonthDay {
                        year: c.get(3).and_then(|y| y.as_str().parse().ok()),
                        month: english_month(c.get(1)?.as_str())?,
                        day: minutes_of(c, 2),
                    })])
                },
            ),
            r(
                r"(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?\s*(\d{1,2})(?:st|nd|rd|th)?\s*(?:-|~|to|through|thru|until|till)\s*(\d{1,2})(?:st|nd|rd|th)?",
                |c, _| {
                    // "Dec 1-3", "December 1st to 3rd": one month, two days.
                    let month = english_month(c.get(1)?.as_str())?;
                    Some(vec![
                        Tok::Day(DayTok::MonthDay { year: None, month, day: minutes_of(c, 2) }),
                        Tok::Sep,
                        Tok::Day(DayTok::Bare(minutes_of(c, 3))),
                    ])
                },
            ),
            r(
                r"(?:the\s+)?(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)",
                |c, _| {
                    Some(vec![Tok::Day(DayTok::MonthDay {
                        year: None,
                        month: english_month(c.get(2)?.as_str())?,
                        day: minutes_of(c, 1),
                    })])
                },
            ),
            r(r"(?:the\s+)?(\d{1,2})(st|nd|rd|th)", |c, _| {
                let d = minutes_of(c, 1);
                (1..=31).contains(&d).then(|| vec![Tok::Day(DayTok::Bare(d))])
            }),
            r(
                r"(next|this coming|coming|this)\s+(monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tues|tue|wed|thurs|thur|thu|fri|sat|sun)",
                |c, ctx| {
                    let wd = english_weekday(c.get(2)?.as_str())?;
                    let monday = (c.get(1)?.as_str() == "this").then(|| monday_of(ctx.today));
                    Some(vec![Tok::Day(DayTok::Qual {
                        monday,
                        wds: vec![wd],
                    })])
                },
            ),
            r(
                r"(monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tues|tue|wed|thurs|thur|thu|fri|sat|sun)s?",
                |c, _| {
                    Some(vec![Tok::Wd {
                        wds: vec![english_weekday(c.get(1)?.as_str())?],
                        note: false,
                    }])
                },
            ),
            // ---- English times
            r(
                r"(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(a\.m\.?|am|p\.m\.?|pm)",
                |c, _| {
                    let h = minutes_of(c, 1);
                    let m = minutes_of(c, 2);
                    (h <= 12 && m < 60)
                        .then(|| vec![at_tok(am_pm(h, c.get(3).map_or("", |x| x.as_str())) * 60 + m, false, false)])
                },
            ),
            r(r"at\s+(\d{1,2})(?::(\d{2}))?(?:\s*o'clock)?|(\d{1,2})\s*o'clock", |c, _| {
                let h = minutes_of(c, 1) + minutes_of(c, 3);
                let m = minutes_of(c, 2);
                (h <= 24 && m < 60).then(|| {
                    let bare = (1..=12).contains(&h);
                    vec![at_tok(bare_hour(h) * 60 + m, false, bare)]
                })
            }),
            r(
                r"(?:between|from)\s+(\d{1,2})(?::(\d{2}))?\s*(a\.m\.?|am|p\.m\.?|pm)?\s+(?:and|to|till|until|-)\s+(\d{1,2})(?::(\d{2}))?\s*(a\.m\.?|am|p\.m\.?|pm)?",
                |c, _| {
                    let (a, b) = (minutes_of(c, 1), minutes_of(c, 4));
                    if a > 24 || b > 24 {
                        return None;
                    }
                    let hour = |h: u32, marker: Option<regex::Match>| match marker {
                        Some(x) => am_pm(h, x.as_str()),
                        None => bare_hour(h),
                    };
                    let from = hour(a, c.get(3)) * 60 + minutes_of(c, 2);
                    let mut to = hour(b, c.get(6)) * 60 + minutes_of(c, 5);
                    if to <= from {
                        to += 12 * 60;
                    }
                    Some(vec![Tok::Time(TimeTok {
                        spec: TimeSpec::Window { from, to },
                        next_day: false,
                        bare: false,
                        until: from,
                    })])
                },
            ),
            r(r"(?:at\s+)?(?:noon|midday)", |_, _| Some(vec![at_tok(720, false, false)])),
            r(
                r"(?:in the |at )?(?:early evenings?|late at night|late night|late-night|around noon|lunch ?time|daytime|during the day|mornings?|afternoons?|evenings?|nights?)",
                |c, _| {
                    let w = c.get(0)?.as_str();
                    let w = w.trim_start_matches("in the ").trim_start_matches("at ");
                    let part = match w.trim_end_matches('s') {
                        "early evening" => EVENING,
                        "late at night" | "late night" | "late-night" => LATE,
                        "around noon" | "lunchtime" | "lunch time" => NOON,
                        "daytime" | "during the day" => DAYTIME,
                        "morning" => MORNING,
                        "afternoon" => AFTERNOON,
                        _ => NIGHT,
                    };
                    Some(vec![part_tok(part)])
                },
            ),
            // ---- English connectors
            r(r"from|starting(?: from)?", |_, _| Some(vec![Tok::From])),
            r(r"after", |_, _| Some(vec![Tok::After])),
            r(r"until|till|by|no later than", |_, _| Some(vec![Tok::Until])),
            r(r"before|earlier than", |_, _| Some(vec![Tok::Before])),
            r(r"between", |_, _| Some(vec![Tok::Between])),
            r(r"to|through|thru", |_, _| Some(vec![Tok::Sep])),
            // ---- English negation
            r(r"except(?: for)?|excluding|other than|apart from|besides|anything but", |_, _| {
                Some(vec![Tok::Neg {
                    side: Side::After,
                    wa: false,
                }])
            }),
            // "I work from 13:00 on the 1st, any other time please": what came before is out.
            r(
                r"(?:any|some|a|at an?)\s*other times?|another (?:time|day)|a different (?:time|day)",
                |_, _| {
                    Some(vec![Tok::Neg {
                        side: Side::Before,
                        wa: false,
                    }])
                },
            ),
            r(r"i(?:'m| am)? (?:work|working|at work)", |_, _| {
                Some(vec![Tok::Neg {
                    side: Side::After,
                    wa: false,
                }])
            }),
            r(r"not|cannot|[a-z]+n't|busy|unavailable|no good", |c, ctx| {
                // "not sure" hedges; it rules nothing out.
                let rest = ctx.text[c.get(0)?.end()..].trim_start();
                (!rest.starts_with("sure")).then(|| {
                    vec![Tok::Neg {
                        side: Side::Either,
                        wa: false,
                    }]
                })
            }),
        ]
    })
}

/// A token with its byte span in the normalised text.
#[derive(Debug, Clone)]
struct Spanned {
    start: usize,
    end: usize,
    tok: Tok,
}

/// ASCII boundaries by hand: Japanese runs straight into numbers and words (「25日の」「B-2003は」),
/// where `\b` would not help, and 「0時」 must not be found inside 「10時」 nor 「800日」 inside
/// 「12,800日」.
fn bounded(text: &str, start: usize, end: usize) -> bool {
    let first = char_at(text, start).unwrap_or(' ');
    let last = char_before(text, end).unwrap_or(' ');
    if first.is_ascii_alphanumeric() {
        match char_before(text, start) {
            Some(c) if c.is_ascii_alphanumeric() => return false,
            Some(c @ ('-' | '/' | ':' | ',' | '.')) if first.is_ascii_digit() => {
                let before = char_before(text, start - c.len_utf8());
                if before.is_some_and(|b| b.is_ascii_alphanumeric()) {
                    return false;
                }
            }
            _ => {}
        }
    }
    if last.is_ascii_alphanumeric() && char_at(text, end).is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return false;
    }
    true
}

fn tokenize(text: &str, today: NaiveDate) -> Vec<Spanned> {
    let ctx = Ctx { today, text };
    // (start, end, rule index, tokens)
    let mut cands: Vec<(usize, usize, usize, Vec<Tok>)> = Vec::new();
    for (i, rule) in rules().iter().enumerate() {
        let mut pos = 0;
        while pos <= text.len() {
            let Some(c) = rule.re.captures_at(text, pos) else {
                break;
            };
            let m = c.get(0).expect("group 0");
            if m.end() > m.start() && bounded(text, m.start(), m.end()) {
                if let Some(toks) = (rule.f)(&c, &ctx) {
                    cands.push((m.start(), m.end(), i, toks));
                }
            }
            // Every start position, so that a rejected match does not hide a later one.
            pos = m.start() + char_at(text, m.start()).map_or(1, char::len_utf8);
        }
    }
    cands.sort_by_key(|(s, e, i, _)| (*s, std::cmp::Reverse(*e), *i));
    let mut out = Vec::new();
    let mut last_end = 0;
    for (start, end, _, toks) in cands {
        if start < last_end {
            continue;
        }
        last_end = end;
        out.extend(toks.into_iter().map(|tok| Spanned { start, end, tok }));
    }
    out.retain(|s| !matches!(s.tok, Tok::Null));
    out
}

// ---------------------------------------------------------------------------------------------
// Gaps between phrases

/// A sentence end or a conjunction that turns to something else.
fn gap_hard(gap: &str) -> bool {
    gap.contains(['。', '.', '!', '?', '\n'])
        || ["けど", "けれど", "しかし"].iter().any(|w| gap.contains(w))
        || gap
            .split(|c: char| !c.is_ascii_alphabetic())
            .any(|w| matches!(w, "but" | "however" | "though" | "although" | "because"))
}

const FILLERS: &[&str] = &[
    "または",
    "もしくは",
    "あるいは",
    "それか",
    "あたり",
    "辺り",
    "ごろ",
    "頃",
    "くらい",
    "ぐらい",
    "なら",
    "の",
    "は",
    "が",
    "に",
    "で",
    "と",
    "か",
    "や",
    "も",
    "、",
    ",",
    "・",
    "/",
];

const ENGLISH_FILLERS: &[&str] = &[
    "or",
    "and",
    "on",
    "at",
    "in",
    "the",
    "of",
    "around",
    "about",
    "for",
    "any",
    "anytime",
    "time",
    "day",
    "maybe",
    "preferably",
    "ideally",
    "sometime",
    "please",
];

/// Whether two phrases with `gap` between them belong together (「来週の」「土曜か日曜」
/// "Tuesdays in the morning"); with `comma` false a comma ends the phrase.
fn gap_join(gap: &str, comma: bool) -> bool {
    if !comma && gap.contains([',', '、']) {
        return false;
    }
    let mut rest: String = gap.chars().filter(|c| !c.is_whitespace()).collect();
    'strip: while !rest.is_empty() {
        for w in FILLERS.iter().chain(ENGLISH_FILLERS) {
            if let Some(r) = rest.strip_prefix(w) {
                rest = r.to_string();
                continue 'strip;
            }
        }
        return false;
    }
    true
}

/// Whether `gap` offers an alternative or a list (「明日か明後日」「25日と26日」 "Mon or Tue").
fn gap_union(gap: &str) -> bool {
    ["か", "と", "や", "、", ",", "・", "/", "または", "もしくは"]
        .iter()
        .any(|w| gap.contains(w))
        || gap
            .split(|c: char| !c.is_ascii_alphabetic())
            .any(|w| matches!(w, "or" | "and"))
}

fn tight(gap: &str) -> bool {
    gap.trim().is_empty()
}

// ---------------------------------------------------------------------------------------------
// Resolution and phrases

/// Day values once resolved: a set of dates, or an open-ended range.
#[derive(Debug, Clone, PartialEq)]
enum DayVals {
    Set(BTreeSet<NaiveDate>),
    From(NaiveDate),
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Days(DayVals),
    Wds(Vec<Weekday>),
    Time(TimeSpec, bool),
}

#[derive(Debug, Clone)]
enum ElemKind {
    Item(Item),
    Neg { side: Side, wa: bool },
}

#[derive(Debug, Clone)]
struct Elem {
    start: usize,
    end: usize,
    kind: ElemKind,
}

fn qual_dates(today: NaiveDate, monday: Option<NaiveDate>, wds: &[Weekday]) -> Vec<NaiveDate> {
    wds.iter()
        .map(|w| match monday {
            Some(m) => m + Duration::days(i64::from(w.num_days_from_monday())),
            None => next_weekday(today, *w, true),
        })
        .collect()
}

/// Month/day without a year and bare day numbers become dates: the next occurrence on or after
/// today, or on or after the date just named in the same sentence (「28日から3日まで」 is
/// 28 Nov – 3 Dec). A weekday right after 「来週の土曜か」 is of the same week; 「(土)」 right
/// after a date only annotates it.
fn resolve(text: &str, toks: Vec<Spanned>, today: NaiveDate) -> Vec<Spanned> {
    let mut out: Vec<Spanned> = Vec::new();
    let mut anchor: Option<NaiveDate> = None;
    let mut last_qual: Option<Option<NaiveDate>> = None;
    for mut t in toks {
        if let Some(prev) = out.last() {
            if gap_hard(&text[prev.end.min(t.start)..t.start]) {
                anchor = None;
                last_qual = None;
            }
        }
        let prev_end = out.last().map(|p| p.end);
        let prev_is_day = out.last().is_some_and(|p| matches!(p.tok, Tok::Day(_)));
        match &t.tok {
            Tok::Day(DayTok::MonthDay { year, month, day }) => {
                let from = anchor.unwrap_or(today);
                let date = match year {
                    Some(y) => NaiveDate::from_ymd_opt(*y, *month, *day),
                    None => next_month_day(from, *month, *day),
                };
                let Some(date) = date else { continue };
                anchor = Some(date);
                t.tok = Tok::Day(DayTok::Dates(vec![date]));
            }
            Tok::Day(DayTok::Bare(day)) => {
                let Some(date) = next_day_number(anchor.unwrap_or(today), *day) else {
                    continue;
                };
                anchor = Some(date);
                t.tok = Tok::Day(DayTok::Dates(vec![date]));
            }
            Tok::Day(DayTok::Qual { monday, wds }) => {
                last_qual = Some(*monday);
                t.tok = Tok::Day(DayTok::Dates(qual_dates(today, *monday, wds)));
            }
            Tok::Wd { note: true, .. }
                if prev_is_day && prev_end.is_some_and(|e| tight(&text[e..t.start])) =>
            {
                continue;
            }
            Tok::Wd { wds, .. } => {
                let joined = prev_end.is_some_and(|e| {
                    let gap = &text[e..t.start];
                    gap_union(gap) && gap_join(gap, true)
                });
                if let (Some(monday), true) = (last_qual, joined) {
                    t.tok = Tok::Day(DayTok::Dates(qual_dates(today, monday, wds)));
                }
            }
            _ => {}
        }
        // 「来週の土曜か日曜」「来週の土曜の午前か日曜の午後」: the week carries over a run of
        // day and time phrases, not past a connector or a negation.
        if !matches!(t.tok, Tok::Day(_) | Tok::Wd { .. } | Tok::Time(_)) {
            last_qual = None;
        }
        out.push(t);
    }
    out
}

fn item_of(tok: &Tok) -> Option<Item> {
    match tok {
        Tok::Day(DayTok::Dates(d)) => Some(Item::Days(DayVals::Set(d.iter().copied().collect()))),
        Tok::Wd { wds, .. } => Some(Item::Wds(wds.clone())),
        Tok::Time(t) => Some(Item::Time(t.spec, t.next_day)),
        _ => None,
    }
}

fn time_of(tok: &Tok) -> Option<TimeTok> {
    match tok {
        Tok::Time(t) => Some(*t),
        _ => None,
    }
}

fn first_last(v: &DayVals) -> (NaiveDate, Option<NaiveDate>) {
    match v {
        DayVals::Set(s) => (
            *s.iter().next().expect("non-empty"),
            s.iter().next_back().copied(),
        ),
        DayVals::From(d) => (*d, None),
    }
}

/// The days a weekday phrase stands for when it bounds a range (「金曜まで」): the next one.
fn wd_days(today: NaiveDate, wds: &[Weekday]) -> DayVals {
    DayVals::Set(wds.iter().map(|w| next_weekday(today, *w, false)).collect())
}

fn as_days(today: NaiveDate, item: &Item) -> Option<DayVals> {
    match item {
        Item::Days(d) => Some(d.clone()),
        Item::Wds(w) => Some(wd_days(today, w)),
        Item::Time(..) => None,
    }
}

/// 「X以降」 "after X": days from X on; times from X to midnight (`nlu/DATETIME.md`).
fn since(today: NaiveDate, item: Item, tt: Option<TimeTok>) -> Item {
    match item {
        Item::Time(spec, next) => {
            let from = match spec {
                TimeSpec::At(a) => a,
                TimeSpec::Window { from, .. } => from,
            };
            let to = tt.map_or(spec.end(), |t| t.spec.end()).max(DAY);
            Item::Time(TimeSpec::Window { from, to }, next)
        }
        other => match as_days(today, &other) {
            Some(d) => Item::Days(DayVals::From(first_last(&d).0)),
            None => other,
        },
    }
}

/// 「Xまで」 "by X": days from today to X; times from midnight to X.
fn until(today: NaiveDate, item: Item, tt: Option<TimeTok>, before: bool) -> Item {
    match item {
        Item::Time(spec, next) => {
            let to = match (spec, before) {
                (TimeSpec::At(a), _) => a,
                (TimeSpec::Window { from, .. }, true) => from,
                (TimeSpec::Window { .. }, false) => tt.map_or(spec.end(), |t| t.until),
            };
            Item::Time(TimeSpec::Window { from: 0, to }, next)
        }
        other => match as_days(today, &other) {
            Some(d) => {
                let (first, last) = first_last(&d);
                let to = if before {
                    first.pred_opt().unwrap_or(first)
                } else {
                    last.unwrap_or(first)
                };
                if to < today {
                    return Item::Days(d);
                }
                Item::Days(DayVals::Set(span(today, to).into_iter().collect()))
            }
            None => other,
        },
    }
}

/// 「XからYまで」「X〜Y」 "from X to Y", "between X and Y": X's start to Y's end.
fn range(today: NaiveDate, x: &Item, y: &Item, ty: Option<TimeTok>) -> Option<Item> {
    match (x, y) {
        (Item::Time(a, next), Item::Time(b, _)) => {
            let from = match *a {
                TimeSpec::At(m) => m,
                TimeSpec::Window { from, .. } => from,
            };
            let mut to = b.end();
            // 「夜7時から9時」: an end said without 午前/午後 follows the start.
            if ty.is_some_and(|t| t.bare) && to <= from && to + 720 > from {
                to += 720;
            }
            if to <= from {
                to += DAY;
            }
            Some(Item::Time(TimeSpec::Window { from, to }, *next))
        }
        (Item::Wds(a), Item::Wds(b)) => {
            let (s, e) = (
                a.first()?.num_days_from_monday(),
                b.last()?.num_days_from_monday(),
            );
            (s <= e).then(|| Item::Wds(WEEKDAYS[s as usize..=e as usize].to_vec()))
        }
        (Item::Time(..), _) | (_, Item::Time(..)) => None,
        _ => {
            let (from, _) = first_last(&as_days(today, x)?);
            let yd = match y {
                Item::Wds(w) => {
                    DayVals::Set(w.iter().map(|wd| next_weekday(from, *wd, false)).collect())
                }
                _ => as_days(today, y)?,
            };
            let (_, to) = first_last(&yd);
            let to = to?;
            (to >= from).then(|| Item::Days(DayVals::Set(span(from, to).into_iter().collect())))
        }
    }
}

fn same_kind(a: &Item, b: &Item) -> bool {
    matches!(
        (a, b),
        (Item::Time(..), Item::Time(..))
            | (Item::Days(_) | Item::Wds(_), Item::Days(_) | Item::Wds(_))
    )
}

/// Folds connectors into the phrases they bound (step 3 of the module docs).
fn phrases(text: &str, toks: &[Spanned], today: NaiveDate) -> Vec<Elem> {
    let mut out = Vec::new();
    let gap = |a: usize, b: usize| &text[toks[a].end.min(toks[b].start)..toks[b].start];
    let is = |k: usize, f: fn(&Tok) -> bool| k < toks.len() && f(&toks[k].tok);
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        match &t.tok {
            Tok::Neg { side, wa } => {
                out.push(Elem {
                    start: t.start,
                    end: t.end,
                    kind: ElemKind::Neg {
                        side: *side,
                        wa: *wa,
                    },
                });
                i += 1;
            }
            Tok::From | Tok::After | Tok::Until | Tok::Before | Tok::Between
                if i + 1 < toks.len()
                    && item_of(&toks[i + 1].tok).is_some()
                    && gap_join(gap(i, i + 1), false) =>
            {
                let x = item_of(&toks[i + 1].tok).expect("checked");
                let tx = time_of(&toks[i + 1].tok);
                let mut end_idx = i + 1;
                let item = match &t.tok {
                    Tok::From | Tok::Between => {
                        let y = (i + 3 < toks.len()
                            && (is(i + 2, |t| matches!(t, Tok::Sep | Tok::Until))
                                || matches!(t.tok, Tok::Between))
                            && tight(gap(i + 1, i + 2)))
                        .then_some(())
                        .and_then(|_| {
                            // "between X and Y": no token between; "from X to Y": Sep.
                            let k = if is(i + 2, |t| matches!(t, Tok::Sep | Tok::Until)) {
                                i + 3
                            } else {
                                i + 2
                            };
                            let y = item_of(&toks[k].tok)?;
                            let g = gap(k - 1, k);
                            let ok = if k == i + 2 {
                                g.split_whitespace().collect::<Vec<_>>() == ["and"]
                            } else {
                                gap_join(g, false)
                            };
                            (ok && same_kind(&x, &y)).then_some((k, y))
                        })
                        .or_else(|| {
                            // "between X and Y" where Y follows directly.
                            if !matches!(t.tok, Tok::Between) || i + 2 >= toks.len() {
                                return None;
                            }
                            let y = item_of(&toks[i + 2].tok)?;
                            let g = gap(i + 1, i + 2);
                            (g.split_whitespace().collect::<Vec<_>>() == ["and"]
                                && same_kind(&x, &y))
                            .then_some((i + 2, y))
                        });
                        match y {
                            Some((k, y)) => {
                                end_idx = k;
                                range(today, &x, &y, time_of(&toks[k].tok)).unwrap_or(x)
                            }
                            None if matches!(t.tok, Tok::From) => since(today, x, tx),
                            None => x,
                        }
                    }
                    Tok::After => since(today, x, tx),
                    Tok::Until => until(today, x, tx, false),
                    _ => until(today, x, tx, true),
                };
                out.push(Elem {
                    start: t.start,
                    end: toks[end_idx].end,
                    kind: ElemKind::Item(item),
                });
                i = end_idx + 1;
            }
            tok => {
                let Some(x) = item_of(tok) else {
                    i += 1;
                    continue;
                };
                let tx = time_of(tok);
                let next_tight = |k: usize| k < toks.len() && tight(gap(k - 1, k));
                let mut end_idx = i;
                let mut item = x.clone();
                if next_tight(i + 1) && is(i + 1, |t| matches!(t, Tok::Kara | Tok::Sep)) {
                    let y = (next_tight(i + 2))
                        .then(|| item_of(&toks[i + 2].tok))
                        .flatten()
                        .filter(|y| same_kind(&x, y));
                    match y {
                        Some(y) => {
                            if let Some(r) = range(today, &x, &y, time_of(&toks[i + 2].tok)) {
                                item = r;
                                end_idx = i + 2;
                                if next_tight(i + 3) && is(i + 3, |t| matches!(t, Tok::Made)) {
                                    end_idx = i + 3;
                                }
                            }
                        }
                        // 「13時から」, and 「13時〜」 with nothing after it.
                        None if matches!(toks[i + 1].tok, Tok::Kara)
                            || text[toks[i + 1].start..toks[i + 1].end] == *"~" =>
                        {
                            item = since(today, x, tx);
                            end_idx = i + 1;
                        }
                        None => {}
                    }
                } else if next_tight(i + 1) && is(i + 1, |t| matches!(t, Tok::Ikou)) {
                    item = since(today, x, tx);
                    end_idx = i + 1;
                } else if next_tight(i + 1) && is(i + 1, |t| matches!(t, Tok::Made)) {
                    item = until(today, x, tx, false);
                    end_idx = i + 1;
                } else if next_tight(i + 1) && is(i + 1, |t| matches!(t, Tok::Mae)) {
                    item = until(today, x, tx, true);
                    end_idx = i + 1;
                }
                out.push(Elem {
                    start: t.start,
                    end: toks[end_idx].end,
                    kind: ElemKind::Item(item),
                });
                i = end_idx + 1;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Negation scope and frames

/// Which exclusion each phrase belongs to (`None`: asked for), step 4 of the module docs.
fn scopes(text: &str, elems: &[Elem]) -> Vec<Option<usize>> {
    let mut group: Vec<Option<usize>> = vec![None; elems.len()];
    let mut groups = 0;
    let is_item = |k: usize| matches!(elems[k].kind, ElemKind::Item(_));
    for i in 0..elems.len() {
        let ElemKind::Neg { side, wa } = elems[i].kind else {
            continue;
        };
        let backward = |group: &Vec<Option<usize>>| {
            let mut scope = Vec::new();
            let mut boundary = elems[i].start;
            let mut j = i;
            while j > 0 {
                j -= 1;
                if !is_item(j) || group[j].is_some() {
                    break;
                }
                let gap = &text[elems[j].end.min(boundary)..boundary];
                let ok = if scope.is_empty() {
                    !gap_hard(gap)
                } else {
                    gap_join(gap, true)
                };
                if !ok {
                    break;
                }
                scope.push(j);
                boundary = elems[j].start;
            }
            scope
        };
        let forward = |group: &Vec<Option<usize>>, strict: bool| {
            let mut scope = Vec::new();
            let mut boundary = elems[i].end;
            for j in i + 1..elems.len() {
                if !is_item(j) || group[j].is_some() {
                    break;
                }
                let gap = &text[boundary.min(elems[j].start)..elems[j].start];
                let ok = if scope.is_empty() {
                    !gap_hard(gap)
                        && (!strict || (!gap.contains([',', '、']) && gap.chars().count() <= 24))
                } else {
                    gap_join(gap, false)
                };
                if !ok {
                    break;
                }
                scope.push(j);
                boundary = elems[j].end;
            }
            scope
        };
        let scope = match side {
            Side::Before => backward(&group),
            Side::After => forward(&group, false),
            Side::Either => {
                let f = forward(&group, true);
                if f.is_empty() {
                    backward(&group)
                } else {
                    f
                }
            }
        };
        let Some(&first) = scope.iter().min() else {
            continue;
        };
        // 「1日は13時から仕事」 rules the 1st out; 「19時以降なら仕事も」 does not.
        if wa && !text[elems[first].start..elems[i].start].contains(['は', 'も']) {
            continue;
        }
        for k in scope {
            group[k] = Some(groups);
        }
        groups += 1;
    }
    group
}

/// What one group of phrases (the request, or one exclusion) amounts to.
#[derive(Default)]
struct Frame {
    days: Option<DayVals>,
    days_end: usize,
    wds: Option<Vec<Weekday>>,
    time: Option<(TimeSpec, bool)>,
    time_end: usize,
}

fn intersect_days(a: &DayVals, b: &DayVals) -> DayVals {
    match (a, b) {
        (DayVals::Set(x), DayVals::Set(y)) => DayVals::Set(x.intersection(y).copied().collect()),
        (DayVals::Set(s), DayVals::From(f)) | (DayVals::From(f), DayVals::Set(s)) => {
            DayVals::Set(s.iter().copied().filter(|d| d >= f).collect())
        }
        (DayVals::From(x), DayVals::From(y)) => DayVals::From(*x.max(y)),
    }
}

fn union_days(a: &DayVals, b: &DayVals) -> DayVals {
    match (a, b) {
        (DayVals::Set(x), DayVals::Set(y)) => DayVals::Set(x.union(y).copied().collect()),
        (DayVals::Set(s), DayVals::From(f)) | (DayVals::From(f), DayVals::Set(s)) => {
            DayVals::From(s.iter().next().map_or(*f, |d| *d.min(f)))
        }
        (DayVals::From(x), DayVals::From(y)) => DayVals::From(*x.min(y)),
    }
}

fn is_empty_days(d: &DayVals) -> bool {
    matches!(d, DayVals::Set(s) if s.is_empty())
}

fn bounds(t: TimeSpec) -> (u32, u32) {
    match t {
        TimeSpec::At(a) => (a, a + 1),
        TimeSpec::Window { from, to } => (from, to),
    }
}

impl Frame {
    fn add(&mut self, text: &str, elem: &Elem, item: &Item) {
        match item {
            Item::Days(d) => {
                self.days = Some(match &self.days {
                    None => d.clone(),
                    Some(prev) => {
                        let gap = &text[self.days_end.min(elem.start)..elem.start];
                        if gap_union(gap) {
                            union_days(prev, d)
                        } else {
                            // 「今月の25日以降」: both hold; if they cannot, keep the narrower.
                            let both = intersect_days(prev, d);
                            if is_empty_days(&both) {
                                d.clone()
                            } else {
                                both
                            }
                        }
                    }
                });
                self.days_end = elem.end;
            }
            Item::Wds(w) => {
                let mut all = self.wds.take().unwrap_or_default();
                for wd in w {
                    if !all.contains(wd) {
                        all.push(*wd);
                    }
                }
                all.sort_by_key(|w| w.num_days_from_monday());
                self.wds = Some(all);
            }
            Item::Time(t, next) => {
                self.time = Some(match self.time {
                    None => (*t, *next),
                    Some((prev, prev_next)) => {
                        let gap = &text[self.time_end.min(elem.start)..elem.start];
                        let (a0, a1) = bounds(prev);
                        let (b0, b1) = bounds(*t);
                        if gap_union(gap) {
                            // 「午前か午後」: one window when they touch, else the first said.
                            if a0.max(b0) <= a1.min(b1) {
                                (
                                    TimeSpec::Window {
                                        from: a0.min(b0),
                                        to: a1.max(b1),
                                    },
                                    false,
                                )
                            } else {
                                (prev, prev_next)
                            }
                        } else {
                            match (prev, *t) {
                                (TimeSpec::At(_), _) => (prev, prev_next),
                                (_, TimeSpec::At(_)) => (*t, *next),
                                _ if a0.max(b0) < a1.min(b1) => (
                                    TimeSpec::Window {
                                        from: a0.max(b0),
                                        to: a1.min(b1),
                                    },
                                    false,
                                ),
                                _ => (*t, *next),
                            }
                        }
                    }
                });
                self.time_end = elem.end;
            }
        }
    }

    /// The frame as the public fields: weekdays that pick days out of named days become those
    /// days (来週の平日 → Mon–Fri of next week); 深夜1時 of D moves to D+1 01:00.
    fn finish(self) -> (Option<DaySet>, Option<Vec<Weekday>>, Option<TimeSpec>) {
        let mut days = self.days;
        let mut wds = self.wds;
        if let (Some(DayVals::Set(set)), Some(w)) = (&days, &wds) {
            let picked: BTreeSet<NaiveDate> = set
                .iter()
                .copied()
                .filter(|d| w.contains(&d.weekday()))
                .collect();
            if !picked.is_empty() {
                days = Some(DayVals::Set(picked));
                wds = None;
            }
        }
        let (time, next_day) = match self.time {
            Some((t, n)) => (Some(t), n),
            None => (None, false),
        };
        if next_day {
            days = days.map(|d| match d {
                DayVals::Set(s) => DayVals::Set(s.iter().filter_map(|d| d.succ_opt()).collect()),
                DayVals::From(f) => DayVals::From(f.succ_opt().unwrap_or(f)),
            });
            wds = wds.map(|w| w.iter().map(|d| d.succ()).collect());
        }
        let days = days.map(|d| match d {
            DayVals::From(f) => DaySet::Range { from: f, to: None },
            DayVals::Set(s) => {
                let v: Vec<NaiveDate> = s.into_iter().collect();
                let contiguous = v.windows(2).all(|w| w[0].succ_opt() == Some(w[1]));
                if v.len() >= 3 && contiguous {
                    DaySet::Range {
                        from: v[0],
                        to: v.last().copied(),
                    }
                } else {
                    DaySet::List(v)
                }
            }
        });
        (days, wds, time)
    }
}

/// Reads what `text` says about when, relative to `now` (read in JST), following
/// `nlu/DATETIME.md`. Never invents: what was not said stays `None`.
pub fn parse_when(text: &str, now: DateTime<FixedOffset>) -> When {
    let today = now.with_timezone(&jst()).date_naive();
    let text = normalize(text);
    let toks = resolve(&text, tokenize(&text, today), today);
    let elems = phrases(&text, &toks, today);
    let group = scopes(&text, &elems);

    let ngroups = group.iter().flatten().max().map_or(0, |g| g + 1);
    let mut asked = Frame::default();
    let mut excluded: Vec<Frame> = (0..ngroups).map(|_| Frame::default()).collect();
    for (elem, g) in elems.iter().zip(&group) {
        let ElemKind::Item(item) = &elem.kind else {
            continue;
        };
        match g {
            None => asked.add(&text, elem, item),
            Some(k) => excluded[*k].add(&text, elem, item),
        }
    }
    let (days, weekdays, time) = asked.finish();
    let exclude = excluded
        .into_iter()
        .map(Frame::finish)
        .filter(|(d, w, t)| d.is_some() || w.is_some() || t.is_some())
        .map(|(days, weekdays, time)| Exclusion {
            days,
            weekdays,
            time,
        })
        .collect();
    When {
        days,
        weekdays,
        time,
        exclude,
    }
}

/// The start a customer asked for with an open window 「10時から」「19時以降」 "from 10 am":
/// the clock time the window opens at, when the message names one (「夜から」 names a part of
/// the day, not a start). A visit starts at a time, so 「土曜の朝10時からお願いできますか」 asks
/// for 10:00 first; the window still says what else would do.
pub fn requested_start(text: &str, now: DateTime<FixedOffset>) -> Option<u32> {
    static OPEN_END: OnceLock<Regex> = OnceLock::new();
    let when = parse_when(text, now);
    let Some(TimeSpec::Window { from, to }) = when.time else {
        return None;
    };
    if to < DAY {
        return None;
    }
    let open_end = OPEN_END.get_or_init(|| {
        Regex::new(r"(?i)から|以降|以後|過ぎ|すぎ|[〜~～]|\bfrom\b|\bafter\b|\bonwards?\b")
            .expect("valid regex")
    });
    let normalized = normalize(text);
    if !open_end.is_match(&normalized) {
        return None;
    }
    // Without its open end the same words name one clock time: that time was the start.
    let closed = open_end.replace_all(&normalized, " ");
    (parse_when(&closed, now).time == Some(TimeSpec::At(from))).then_some(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thursday 19 November 2026, 15:00 JST.
    fn now() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-19T15:00:00+09:00").expect("valid")
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("valid date")
    }

    fn slot(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("valid")
    }

    fn read(text: &str) -> When {
        parse_when(text, now())
    }

    #[test]
    fn numbers_that_are_not_dates_or_times() {
        for text in [
            "10年住んでいます",
            "2回注意しました",
            "3時間くらい続くんです",
            "1ヶ月前から",
            "12,800円です",
            "B-2003の状況",
            "予約番号BK-1234",
            "2日前から",
            "03-1234-5678",
            "1日2回",
        ] {
            assert!(read(text).is_empty(), "{text}: {:?}", read(text));
        }
    }

    #[test]
    fn an_hour_is_never_found_inside_a_longer_one() {
        assert_eq!(read("10時で").time, Some(TimeSpec::At(600)));
        assert_eq!(
            read("20時以降").time,
            Some(TimeSpec::Window {
                from: 1200,
                to: DAY
            })
        );
    }

    #[test]
    fn bare_hours_one_to_six_are_afternoon() {
        assert_eq!(read("3時に").time, Some(TimeSpec::At(900)));
        assert_eq!(read("7時に").time, Some(TimeSpec::At(420)));
        assert_eq!(
            read("2時から4時").time,
            Some(TimeSpec::Window { from: 840, to: 960 })
        );
        // The end of 「夜7時から9時」 follows the start.
        assert_eq!(
            read("夜7時から9時").time,
            Some(TimeSpec::Window {
                from: 1140,
                to: 1260
            })
        );
    }

    #[test]
    fn late_night_hour_is_the_next_day() {
        let w = read("25日の深夜1時");
        assert_eq!(w.days, Some(DaySet::List(vec![d("2026-11-26")])));
        assert_eq!(w.time, Some(TimeSpec::At(60)));
        assert_eq!(
            read("深夜").time,
            Some(TimeSpec::Window {
                from: 1320,
                to: 1740
            })
        );
    }

    #[test]
    fn bare_day_numbers_this_month_or_next() {
        assert_eq!(read("25日").days, Some(DaySet::List(vec![d("2026-11-25")])));
        assert_eq!(read("19日").days, Some(DaySet::List(vec![d("2026-11-19")])));
        assert_eq!(read("15日").days, Some(DaySet::List(vec![d("2026-12-15")])));
        // The second day follows the first in the same sentence.
        let range = read("28日から3日まで").days.and_then(|d| d.dates());
        assert_eq!(range.as_ref().map(|r| r[0]), Some(d("2026-11-28")));
        assert_eq!(
            range.as_ref().and_then(|r| r.last().copied()),
            Some(d("2026-12-03"))
        );
    }

    #[test]
    fn weeks_and_weekdays() {
        assert_eq!(
            read("来週の土曜").days,
            Some(DaySet::List(vec![d("2026-11-28")]))
        );
        assert_eq!(read("来週の土曜").weekdays, None);
        assert_eq!(
            read("次の土曜").days,
            Some(DaySet::List(vec![d("2026-11-21")]))
        );
        assert_eq!(read("土曜").weekdays, Some(vec![Weekday::Sat]));
        assert_eq!(
            read("来週の土曜か日曜").days,
            Some(DaySet::List(vec![d("2026-11-28"), d("2026-11-29")]))
        );
        // 「(土)」 after a date annotates it.
        let w = read("11/28(土)");
        assert_eq!(
            (w.days, w.weekdays),
            (Some(DaySet::List(vec![d("2026-11-28")])), None)
        );
    }

    #[test]
    fn negation_scopes() {
        let w = read("1日は13時から仕事なので、それ以外で");
        assert_eq!((&w.days, &w.weekdays, &w.time), (&None, &None, &None));
        assert_eq!(
            w.exclude,
            vec![Exclusion {
                days: Some(DaySet::List(vec![d("2026-12-01")])),
                weekdays: None,
                time: Some(TimeSpec::Window { from: 780, to: DAY }),
            }]
        );
        let w = read("午前じゃなくて午後がいいです");
        assert_eq!(
            w.time,
            Some(TimeSpec::Window {
                from: 720,
                to: 1080
            })
        );
        assert_eq!(w.exclude.len(), 1);
        // Questions and conditions rule nothing out; a free evening after work is not work.
        assert!(read("土曜は無理ですか？").exclude.is_empty());
        assert!(read("できれば午前中、無理なら午後").exclude.is_empty());
        assert!(read("19時以降なら仕事も終わってます").exclude.is_empty());
        assert!(read("土曜じゃなくてもいいです").exclude.is_empty());
        // English: "except" takes what follows, "not" whichever side names something.
        assert_eq!(read("any day except the 1st").exclude.len(), 1);
        // Issue 13: this booked the 1st at 13:00.
        let work = read("I work from 13:00 on the 1st, any other time please");
        assert_eq!(work.exclude.len(), 1, "{work:?}");
        assert!(work.days.is_none() && work.time.is_none(), "{work:?}");
        let w = read("Saturday doesn't work, Sunday is fine");
        assert_eq!(w.weekdays, Some(vec![Weekday::Sun]));
        assert_eq!(w.exclude[0].weekdays, Some(vec![Weekday::Sat]));
    }

    #[test]
    fn english() {
        let w = read("next Saturday morning");
        assert_eq!(w.days, Some(DaySet::List(vec![d("2026-11-21")])));
        assert_eq!(w.time, Some(TimeSpec::Window { from: 360, to: 720 }));
        let w = read("tomorrow at 7 p.m.");
        assert_eq!(w.time, Some(TimeSpec::At(1140)));
        assert_eq!(
            read("Dec 1").days,
            Some(DaySet::List(vec![d("2026-12-01")]))
        );
        assert_eq!(
            read("between 10 and 1").time,
            Some(TimeSpec::Window { from: 600, to: 780 })
        );
        assert_eq!(
            read("next weekend")
                .days
                .and_then(|d| d.dates())
                .map(|v| v.len()),
            Some(2)
        );
    }

    #[test]
    fn accepts_checks_days_times_and_exclusions() {
        let w = read("来週の平日の夜、ただし水曜は無理");
        assert!(w.accepts(slot("2026-11-23T19:00:00+09:00")));
        assert!(!w.accepts(slot("2026-11-23T10:00:00+09:00")));
        assert!(
            !w.accepts(slot("2026-11-25T19:00:00+09:00")),
            "Wednesday is excluded"
        );
        assert!(
            !w.accepts(slot("2026-11-28T19:00:00+09:00")),
            "Saturday is not a weekday"
        );

        let w = read("1日は13時から仕事なので、それ以外で");
        assert!(w.accepts(slot("2026-12-01T10:00:00+09:00")));
        assert!(!w.accepts(slot("2026-12-01T14:00:00+09:00")));
        assert!(w.accepts(slot("2026-12-02T14:00:00+09:00")));

        // 深夜 of Friday runs into Saturday's small hours.
        let w = read("金曜の深夜");
        assert!(w.accepts(slot("2026-11-21T02:00:00+09:00")));
        assert!(!w.accepts(slot("2026-11-20T02:00:00+09:00")));
        // A slot given in another offset is read in JST.
        assert!(read("25日の10時").accepts(slot("2026-11-25T01:00:00+00:00")));
    }

    #[test]
    fn exact_is_one_day_and_one_time() {
        assert_eq!(
            read("25日の夜7時でお願いします").exact(now()),
            Some(slot("2026-11-25T19:00:00+09:00"))
        );
        assert_eq!(
            read("25日の深夜1時").exact(now()),
            Some(slot("2026-11-26T01:00:00+09:00"))
        );
        assert_eq!(read("25日の夜").exact(now()), None);
        assert_eq!(read("土曜の10時").exact(now()), None);
        assert_eq!(read("13時").exact(now()), None);
        // Already past.
        assert_eq!(read("今日の9時").exact(now()), None);
    }

    #[test]
    fn requested_start_is_the_clock_time_an_open_window_opens_at() {
        assert_eq!(
            requested_start("土曜の朝10時からお願いできますか", now()),
            Some(600)
        );
        assert_eq!(
            requested_start("来週の月曜、夕方4時からってイケる？", now()),
            Some(960)
        );
        assert_eq!(requested_start("25日の19時以降なら", now()), Some(1140));
        assert_eq!(requested_start("on the 25th from 1 pm", now()), Some(780));
        // A part of the day, a closed range or a plain time is no open start.
        assert_eq!(requested_start("25日の夜から", now()), None);
        assert_eq!(requested_start("25日の10時から13時", now()), None);
        assert_eq!(requested_start("25日の10時", now()), None);
        // An excluded time is not asked for.
        assert_eq!(
            requested_start("1日は13時から仕事なので、それ以外で", now()),
            None
        );
    }

    #[test]
    fn time_spec_display() {
        assert_eq!(TimeSpec::At(1170).to_string(), "19:30");
        assert_eq!(
            TimeSpec::Window {
                from: 1320,
                to: 1740
            }
            .to_string(),
            "22:00-29:00"
        );
    }
}
