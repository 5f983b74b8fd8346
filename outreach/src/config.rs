//! Engine settings (`[outreach]` in the server's TOML).

use std::str::FromStr;

use chrono::{DateTime, Duration, FixedOffset, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};

use crate::trigger::Trigger;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown time zone {0:?}: use an IANA name (Asia/Tokyo) or an offset (+09:00)")]
    TimeZone(String),
    #[error("frequency cap window must be at least one day")]
    EmptyWindow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutreachConfig {
    pub frequency_cap: FrequencyCap,
    pub quiet_hours: QuietHours,
    /// Accounts with `mrr_jpy` at or above this go to a person for approval first.
    pub approval_mrr_jpy: i64,
    /// Triggers that may fire; all by default.
    pub enabled_triggers: Vec<Trigger>,
    /// Template channel preferred for messages (`chat` fits the widget), others as fallback.
    pub channel: String,
    /// Fills the templates' `{{link}}` (booking page, invoice page, …).
    pub link: Option<String>,
    /// A trigger that already sent to a customer within these days does not send again, even
    /// for a new cause (CRM figures that are not refreshed daily would otherwise look like a
    /// new cause every day).
    pub cooldown_days: i64,
    /// A delivered send counts as converted when its goal is reached within these days of
    /// sending (payment cleared, contract renewed, booking made, …); 0 measures nothing.
    pub conversion_window_days: i64,
}

impl Default for OutreachConfig {
    fn default() -> Self {
        Self {
            frequency_cap: FrequencyCap::default(),
            quiet_hours: QuietHours::default(),
            approval_mrr_jpy: 100_000,
            enabled_triggers: Trigger::ALL.to_vec(),
            channel: "chat".into(),
            link: None,
            cooldown_days: 30,
            conversion_window_days: 30,
        }
    }
}

impl OutreachConfig {
    /// Checks what serde cannot: the time zone and the window.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.quiet_hours.zone()?;
        if self.frequency_cap.window_days < 1 {
            return Err(ConfigError::EmptyWindow);
        }
        Ok(())
    }

    pub fn is_enabled(&self, trigger: Trigger) -> bool {
        self.enabled_triggers.contains(&trigger)
    }
}

/// At most `max_sends` proactive messages per customer in any `window_days` days.
/// Onboarding steps and booking reminders are service messages the customer expects: they
/// neither count nor are held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrequencyCap {
    pub max_sends: u32,
    pub window_days: i64,
}

impl Default for FrequencyCap {
    fn default() -> Self {
        Self {
            max_sends: 2,
            window_days: 7,
        }
    }
}

/// Nothing is delivered between `start` and `end`, local time in the customer's zone (the
/// CRM's optional `time_zone` column) or else in `time_zone`; deliveries wait for the next
/// allowed time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
    /// IANA name (`Asia/Tokyo`) or fixed offset (`+09:00`): for customers without a zone of
    /// their own, and for the dates triggers count days in.
    pub time_zone: String,
}

impl Default for QuietHours {
    fn default() -> Self {
        Self {
            start: NaiveTime::from_hms_opt(21, 0, 0).expect("valid time"),
            end: NaiveTime::from_hms_opt(9, 0, 0).expect("valid time"),
            time_zone: "Asia/Tokyo".into(),
        }
    }
}

/// A parsed time zone.
#[derive(Debug, Clone, Copy)]
pub enum Zone {
    Named(chrono_tz::Tz),
    Fixed(FixedOffset),
}

impl Zone {
    pub fn parse(name: &str) -> Result<Zone, ConfigError> {
        let name = name.trim();
        if let Ok(offset) = FixedOffset::from_str(name) {
            return Ok(Zone::Fixed(offset));
        }
        chrono_tz::Tz::from_str(name)
            .map(Zone::Named)
            .map_err(|_| ConfigError::TimeZone(name.to_string()))
    }

    /// `instant` in this zone, as a fixed offset.
    pub fn local(self, instant: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        match self {
            Zone::Named(tz) => instant.with_timezone(&tz).fixed_offset(),
            Zone::Fixed(offset) => instant.with_timezone(&offset),
        }
    }

    fn at(self, date: chrono::NaiveDate, time: NaiveTime) -> Option<DateTime<FixedOffset>> {
        let naive = date.and_time(time);
        match self {
            Zone::Named(tz) => tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.fixed_offset()),
            Zone::Fixed(offset) => offset.from_local_datetime(&naive).earliest(),
        }
    }
}

impl QuietHours {
    pub fn zone(&self) -> Result<Zone, ConfigError> {
        Zone::parse(&self.time_zone)
    }

    /// When `now` falls in the quiet hours: the next allowed time. `None`: sending is allowed.
    pub fn deferred_until(
        &self,
        zone: Zone,
        now: DateTime<FixedOffset>,
    ) -> Option<DateTime<FixedOffset>> {
        if self.start == self.end {
            return None;
        }
        let local = zone.local(now);
        let time = local.time();
        let quiet = if self.start < self.end {
            time >= self.start && time < self.end
        } else {
            // Wraps midnight, e.g. 21:00–09:00.
            time >= self.start || time < self.end
        };
        if !quiet {
            return None;
        }
        let date = local.date_naive();
        let end_date = if time >= self.end {
            date + Duration::days(1)
        } else {
            date
        };
        zone.at(end_date, self.end)
            .or_else(|| Some(now + Duration::hours(1)))
    }
}
