//! `check_availability`: real measurement slots from the business calendar and the bookings
//! already made, three candidates proposed (seed 003 §5.1: 候補日時を3つ提示).

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveTime, TimeZone, Weekday};
use kizuna_agent::clock::jst;
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use kizuna_nlu::when::When;
use kizuna_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// When measurements can start and how many can run at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BookingCalendar {
    /// Visit start times (JST), "HH:MM". Evening slots exist because night noise must be
    /// measured when it happens.
    pub slot_times: Vec<String>,
    /// Days visits are made, e.g. ["mon", …, "sat"].
    pub open_days: Vec<String>,
    /// Staff available per slot.
    pub capacity_per_slot: u32,
    /// How far ahead slots are offered.
    pub horizon_days: u32,
    /// Earliest start relative to now.
    pub min_lead_hours: u32,
}

impl Default for BookingCalendar {
    fn default() -> Self {
        Self {
            slot_times: ["10:00", "13:00", "16:00", "19:00", "21:00"]
                .map(String::from)
                .to_vec(),
            open_days: ["mon", "tue", "wed", "thu", "fri", "sat"]
                .map(String::from)
                .to_vec(),
            capacity_per_slot: 2,
            horizon_days: 14,
            min_lead_hours: 24,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("bad slot time {0:?}: use HH:MM")]
    SlotTime(String),
    #[error("bad day {0:?}: use mon, tue, wed, thu, fri, sat or sun")]
    Day(String),
    #[error("capacity_per_slot and horizon_days must be at least 1")]
    Zero,
}

impl BookingCalendar {
    pub fn validate(&self) -> Result<(), CalendarError> {
        self.times()?;
        self.days()?;
        if self.capacity_per_slot == 0 || self.horizon_days == 0 {
            return Err(CalendarError::Zero);
        }
        Ok(())
    }

    /// Whether `start` is a slot this calendar offers at `now`: an open day at one of the
    /// slot times (JST), no earlier than the lead time and within the booking horizon (the
    /// same window `check_availability` proposes from).
    pub fn check_slot(
        &self,
        start: DateTime<FixedOffset>,
        now: DateTime<FixedOffset>,
    ) -> Result<(), SlotProblem> {
        let tz = jst();
        let start = start.with_timezone(&tz);
        let now = now.with_timezone(&tz);
        let times = self.times().map_err(|_| SlotProblem::NotOffered)?;
        let days = self.days().map_err(|_| SlotProblem::NotOffered)?;
        if start <= now {
            return Err(SlotProblem::Past);
        }
        if !days.contains(&start.weekday()) {
            return Err(SlotProblem::ClosedDay {
                weekday: start.weekday(),
            });
        }
        if !times.contains(&start.time()) {
            return Err(SlotProblem::NotOffered);
        }
        if start < now + Duration::hours(self.min_lead_hours as i64) {
            return Err(SlotProblem::TooSoon {
                min_lead_hours: self.min_lead_hours,
            });
        }
        let last_date = now.date_naive() + Duration::days(self.horizon_days as i64);
        if start.date_naive() > last_date {
            return Err(SlotProblem::TooFar {
                horizon_days: self.horizon_days,
            });
        }
        Ok(())
    }

    pub(crate) fn times(&self) -> Result<Vec<NaiveTime>, CalendarError> {
        let mut times = self
            .slot_times
            .iter()
            .map(|t| {
                NaiveTime::parse_from_str(t, "%H:%M")
                    .map_err(|_| CalendarError::SlotTime(t.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        times.sort();
        Ok(times)
    }

    pub(crate) fn days(&self) -> Result<Vec<Weekday>, CalendarError> {
        self.open_days
            .iter()
            .map(|d| {
                d.parse::<Weekday>()
                    .map_err(|_| CalendarError::Day(d.clone()))
            })
            .collect()
    }
}

/// 「月〜土」 for Monday to Saturday, else the days joined with ・.
fn open_days_label(days: &[Weekday]) -> String {
    const NAMES: [&str; 7] = ["月", "火", "水", "木", "金", "土", "日"];
    let mut idx: Vec<usize> = days
        .iter()
        .map(|d| d.num_days_from_monday() as usize)
        .collect();
    idx.sort_unstable();
    idx.dedup();
    let consecutive = idx.windows(2).all(|w| w[1] == w[0] + 1);
    match (idx.first(), idx.last()) {
        (Some(&a), Some(&b)) if consecutive && b > a + 1 => format!("{}〜{}", NAMES[a], NAMES[b]),
        _ => idx.iter().map(|&i| NAMES[i]).collect::<Vec<_>>().join("・"),
    }
}

/// Why a requested start time cannot be booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotProblem {
    #[error("the time has already passed")]
    Past,
    #[error("no measurement starts at that time")]
    NotOffered,
    #[error("no measurements on {weekday}")]
    ClosedDay { weekday: Weekday },
    #[error("bookings need at least {min_lead_hours} hours' notice")]
    TooSoon { min_lead_hours: u32 },
    #[error("bookings open only {horizon_days} days ahead")]
    TooFar { horizon_days: u32 },
}

impl SlotProblem {
    /// A polite Japanese explanation for the customer.
    pub fn message_ja(&self) -> String {
        match self {
            SlotProblem::Past => "ご指定の日時はすでに過ぎています。".to_string(),
            SlotProblem::NotOffered => {
                "ご指定の日時は測定の受付枠ではありません。空き日時をお調べしてご案内します。"
                    .to_string()
            }
            SlotProblem::ClosedDay { weekday } => {
                let name = ["月", "火", "水", "木", "金", "土", "日"]
                    [weekday.num_days_from_monday() as usize];
                format!("{name}曜日は測定をお休みしています。ほかの曜日の空き日時をご案内します。")
            }
            SlotProblem::TooSoon { min_lead_hours } => {
                format!("ご予約は{min_lead_hours}時間以上先の日時から承っております。")
            }
            SlotProblem::TooFar { horizon_days } => {
                format!("ご予約は{horizon_days}日先までの日時で承っております。")
            }
        }
    }
}

pub struct CheckAvailability {
    store: Store,
    calendar: BookingCalendar,
}

impl CheckAvailability {
    pub fn new(store: Store, calendar: BookingCalendar) -> Result<Self, CalendarError> {
        calendar.validate()?;
        Ok(Self { store, calendar })
    }
}

#[derive(Debug, Default, Deserialize)]
struct Args {
    preferred_time: Option<String>,
    from_date: Option<String>,
    when: Option<When>,
}

const WEEKDAY_JA: [&str; 7] = ["月", "火", "水", "木", "金", "土", "日"];

/// `11月23日(月) 19:00`, in JST.
pub fn slot_label(start: DateTime<FixedOffset>) -> String {
    let start = start.with_timezone(&jst());
    format!(
        "{} {}",
        date_label(start.date_naive()),
        start.format("%H:%M")
    )
}

/// `11月23日(月)`.
pub fn date_label(date: NaiveDate) -> String {
    format!(
        "{}月{}日({})",
        date.month(),
        date.day(),
        WEEKDAY_JA[date.weekday().num_days_from_monday() as usize]
    )
}

#[async_trait]
impl Tool for CheckAvailability {
    fn name(&self) -> &str {
        "check_availability"
    }

    fn description(&self) -> &str {
        "騒音測定の訪問予約の空き日時を調べ、候補を3つ提示する"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "preferred_time": {"type": "string", "enum": ["daytime", "evening", "any"]},
                "from_date": {"type": "string", "description": "YYYY-MM-DD; earliest date wanted"},
                "when": {"type": "object", "description": "what the customer said about days and times, as read by the nlu date grammar (days, weekdays, time, exclude)"}
            }
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    fn audience(&self) -> Audience {
        Audience::Everyone
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let args: Args =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let tz = jst();
        let now = ctx.now.with_timezone(&tz);
        let earliest = now + Duration::hours(self.calendar.min_lead_hours as i64);
        let from_date = match &args.from_date {
            Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                ToolError::InvalidArguments(format!("from_date {d:?} is not YYYY-MM-DD"))
            })?,
            None => earliest.date_naive(),
        };
        let times = self
            .calendar
            .times()
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let days = self
            .calendar
            .days()
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let evening_from = NaiveTime::from_hms_opt(17, 0, 0).expect("valid time");
        let preferred = |t: &NaiveTime| match args.preferred_time.as_deref() {
            Some("evening") => *t >= evening_from,
            Some("daytime") => *t < evening_from,
            _ => true,
        };
        // What the customer said (「来週の土曜の午前」「1日の13時以降は無理」) decides; the
        // noise's time of day is only a preference when they said nothing about the time.
        let said = args.when.as_ref().filter(|w| !w.is_empty());
        let fits = |start: &DateTime<FixedOffset>| match said {
            Some(when) => when.accepts(*start),
            None => true,
        };
        let wanted = |t: &NaiveTime| said.is_some_and(|w| w.time.is_some()) || preferred(t);

        let start_date = from_date.max(earliest.date_naive());
        let end_date = now.date_naive() + Duration::days(self.calendar.horizon_days as i64 + 1);
        let window_start = tz
            .from_local_datetime(&start_date.and_time(NaiveTime::MIN))
            .single()
            .expect("JST has no gaps");
        let window_end = tz
            .from_local_datetime(&end_date.and_time(NaiveTime::MIN))
            .single()
            .expect("JST has no gaps");
        let booked = self
            .store
            .booked_slots(window_start.timestamp(), window_end.timestamp())
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;

        // The first three free slots from `start_date` that `fits` and whose time is `wanted`.
        let search = |fits: &dyn Fn(&DateTime<FixedOffset>) -> bool,
                      wanted: &dyn Fn(&NaiveTime) -> bool| {
            let mut candidates = Vec::new();
            let mut date = start_date;
            while date < end_date && candidates.len() < 3 {
                if days.contains(&date.weekday()) {
                    for time in times.iter().filter(|t| wanted(t)) {
                        let start = tz
                            .from_local_datetime(&date.and_time(*time))
                            .single()
                            .expect("JST has no gaps");
                        if start < earliest || !fits(&start) {
                            continue;
                        }
                        let taken = booked
                            .iter()
                            .find(|(s, _)| *s == start.timestamp())
                            .map(|(_, n)| *n)
                            .unwrap_or(0);
                        let remaining = self.calendar.capacity_per_slot as i64 - taken;
                        if remaining > 0 {
                            candidates.push((start, remaining));
                            if candidates.len() == 3 {
                                break;
                            }
                        }
                    }
                }
                date += Duration::days(1);
            }
            candidates
        };
        let mut candidates = search(&fits, &wanted);
        let mut lead = "ご案内できる候補日時です。".to_string();
        let matched_request = !candidates.is_empty() || said.is_none();
        if candidates.is_empty() && said.is_some() {
            // Nothing fits what was asked (a closed day, too soon, a time we do not start at,
            // all taken): say why in general terms and offer the nearest slots instead, the
            // same time of day first.
            let time_only = said
                .and_then(|w| w.time)
                .map(|time| kizuna_nlu::when::When {
                    time: Some(time),
                    ..Default::default()
                });
            let same_time = |start: &DateTime<FixedOffset>| {
                time_only.as_ref().is_some_and(|w| w.accepts(*start))
            };
            candidates = search(&same_time, &|_| true);
            if candidates.is_empty() {
                candidates = search(&|_| true, &preferred);
            }
            if candidates.is_empty() {
                candidates = search(&|_| true, &|_| true);
            }
            lead = format!(
                "申し訳ありません。ご希望の条件に合う空き枠はありませんでした（測定は{}の{}開始、ご予約は{}時間以上先から{}日先まで承っています）。近い候補日時です。",
                open_days_label(&days),
                times.iter().map(|t| t.format("%H:%M").to_string()).collect::<Vec<_>>().join("・"),
                self.calendar.min_lead_hours,
                self.calendar.horizon_days
            );
        }

        if candidates.is_empty() {
            return Ok(ToolOutput {
                data: json!({"candidates": []}),
                display: format!("申し訳ありません。{}日先までご案内できる空きがありません。担当者から別の日程をご連絡します。", self.calendar.horizon_days),
                must_quote: vec![],
                effects: Vec::new(),
            });
        }
        let labels: Vec<String> = candidates
            .iter()
            .map(|(start, _)| format!("{}〜", slot_label(*start)))
            .collect();
        let display = format!(
            "{lead}\n{}\nご希望の日時をお知らせいただければご予約を承ります。",
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{}. {l}", i + 1))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let data = json!({
            "candidates": candidates.iter().zip(&labels).map(|((start, remaining), label)| json!({
                "slot_id": start.to_rfc3339(),
                "start": start.to_rfc3339(),
                "label": label,
                "remaining": remaining,
            })).collect::<Vec<_>>(),
            "matched_request": matched_request,
        });
        Ok(ToolOutput {
            data,
            display,
            must_quote: labels.clone(),
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use kizuna_agent::identity::Identity;

    async fn tool(calendar: BookingCalendar) -> (CheckAvailability, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("a.db").display()
        ))
        .await
        .unwrap();
        (CheckAvailability::new(store, calendar).unwrap(), dir)
    }

    fn ctx(now: &str) -> ToolContext {
        ToolContext {
            identity: Identity::anonymous("v"),
            conversation_id: "c".into(),
            now: DateTime::parse_from_rfc3339(now).unwrap(),
        }
    }

    #[tokio::test]
    async fn three_candidates_respect_lead_time_days_and_preference() {
        let (tool, _dir) = tool(BookingCalendar::default()).await;
        // Saturday 2026-11-21 10:00 JST: the 24 h lead time starts Sunday 10:00, and Sunday is closed.
        let out = tool
            .call(
                &ctx("2026-11-21T10:00:00+09:00"),
                json!({"preferred_time": "evening"}),
            )
            .await
            .unwrap();
        let starts: Vec<&str> = out.data["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["start"].as_str().unwrap())
            .collect();
        assert_eq!(
            starts,
            [
                "2026-11-23T19:00:00+09:00",
                "2026-11-23T21:00:00+09:00",
                "2026-11-24T19:00:00+09:00"
            ]
        );
        assert!(out.display.contains("11月23日(月) 19:00〜"));
    }

    #[tokio::test]
    async fn full_slots_are_skipped() {
        let (tool, _dir) = tool(BookingCalendar {
            capacity_per_slot: 1,
            ..Default::default()
        })
        .await;
        let slot = DateTime::parse_from_rfc3339("2026-11-23T10:00:00+09:00")
            .unwrap()
            .timestamp();
        sqlx::query("INSERT INTO bookings (id, customer_id, slot_start, plan, status, created_at) VALUES ('b1', 'C-1', $1, 'standard', 'booked', 0)")
            .bind(slot)
            .execute(tool.store.pool())
            .await
            .unwrap();
        let out = tool
            .call(
                &ctx("2026-11-21T10:00:00+09:00"),
                json!({"preferred_time": "daytime"}),
            )
            .await
            .unwrap();
        let first = out.data["candidates"][0]["start"].as_str().unwrap();
        assert_eq!(first, "2026-11-23T13:00:00+09:00");
    }

    #[tokio::test]
    async fn no_open_day_means_no_candidates_and_a_human_follow_up() {
        let cal = BookingCalendar {
            open_days: vec!["sun".into()],
            horizon_days: 1,
            ..Default::default()
        };
        let (tool, _dir) = tool(cal).await;
        let out = tool
            .call(&ctx("2026-11-23T10:00:00+09:00"), json!({}))
            .await
            .unwrap();
        assert_eq!(out.data["candidates"], json!([]));
        assert!(out.display.contains("担当者"));
    }

    #[test]
    fn slot_checks_at_their_boundaries() {
        let cal = BookingCalendar::default();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap();
        // Monday 10:00; the lead time ends exactly at Tuesday 10:00.
        let now = at("2026-11-23T10:00:00+09:00");
        assert_eq!(cal.check_slot(at("2026-11-24T10:00:00+09:00"), now), Ok(()));
        assert_eq!(
            cal.check_slot(at("2026-11-23T21:00:00+09:00"), now),
            Err(SlotProblem::TooSoon { min_lead_hours: 24 })
        );
        // The horizon's last day (14 days ahead) is in, the day after is out.
        assert_eq!(cal.check_slot(at("2026-12-07T21:00:00+09:00"), now), Ok(()));
        assert_eq!(
            cal.check_slot(at("2026-12-08T10:00:00+09:00"), now),
            Err(SlotProblem::TooFar { horizon_days: 14 })
        );
        // Same instant written in UTC is the same slot.
        assert_eq!(cal.check_slot(at("2026-11-24T01:00:00Z"), now), Ok(()));
        assert_eq!(
            cal.check_slot(at("2026-11-24T10:15:00+09:00"), now),
            Err(SlotProblem::NotOffered)
        );
        assert_eq!(
            cal.check_slot(at("2026-11-29T10:00:00+09:00"), now),
            Err(SlotProblem::ClosedDay {
                weekday: Weekday::Sun
            })
        );
        assert_eq!(
            cal.check_slot(at("2026-11-23T10:00:00+09:00"), now),
            Err(SlotProblem::Past)
        );
        assert!(SlotProblem::TooSoon { min_lead_hours: 24 }
            .message_ja()
            .contains("24時間"));
    }

    #[test]
    fn bad_calendars_are_rejected() {
        assert!(BookingCalendar {
            slot_times: vec!["25:00".into()],
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(BookingCalendar {
            open_days: vec!["funday".into()],
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(BookingCalendar {
            capacity_per_slot: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
