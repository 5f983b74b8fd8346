//! Campaign measurement: what happened to each send, and rates per campaign and variant.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, FixedOffset};
use kizuna_store::{OutreachEventCount, OutreachEventInsert, Store};
use serde::Serialize;

use crate::OutreachError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Delivered,
    Opened,
    Replied,
    Converted,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Delivered,
        EventKind::Opened,
        EventKind::Replied,
        EventKind::Converted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Delivered => "delivered",
            EventKind::Opened => "opened",
            EventKind::Replied => "replied",
            EventKind::Converted => "converted",
        }
    }

    pub fn parse(value: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == value)
    }
}

/// Records that `kind` happened to send `send_id`. Each kind counts once per send: returns
/// false when it was already recorded, and an error for a send that does not exist.
pub async fn record_event(
    store: &Store,
    send_id: &str,
    kind: EventKind,
    at: DateTime<FixedOffset>,
) -> Result<bool, OutreachError> {
    let outcome = store
        .record_outreach_event(send_id, kind.as_str(), at.timestamp_millis())
        .await?;
    match outcome {
        OutreachEventInsert::Recorded => Ok(true),
        OutreachEventInsert::AlreadyRecorded => Ok(false),
        OutreachEventInsert::UnknownSend => Err(OutreachError::UnknownSend(send_id.to_string())),
    }
}

/// Event counts of one campaign variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VariantStats {
    pub delivered: i64,
    pub opened: i64,
    pub replied: i64,
    pub converted: i64,
}

impl VariantStats {
    fn rate(&self, count: i64) -> Option<f64> {
        (self.delivered > 0).then(|| count as f64 / self.delivered as f64)
    }

    pub fn open_rate(&self) -> Option<f64> {
        self.rate(self.opened)
    }

    pub fn reply_rate(&self) -> Option<f64> {
        self.rate(self.replied)
    }

    pub fn conversion_rate(&self) -> Option<f64> {
        self.rate(self.converted)
    }
}

/// Per campaign (= trigger) and variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CampaignReport {
    pub rows: BTreeMap<(String, String), VariantStats>,
}

impl CampaignReport {
    pub fn get(&self, campaign_id: &str, variant: &str) -> Option<&VariantStats> {
        self.rows
            .get(&(campaign_id.to_string(), variant.to_string()))
    }
}

/// Event counts per campaign and variant, over events recorded in `[from, to)` (all when
/// `None`).
pub async fn campaign_report(
    store: &Store,
    from: Option<DateTime<FixedOffset>>,
    to: Option<DateTime<FixedOffset>>,
) -> Result<CampaignReport, OutreachError> {
    let rows = store
        .outreach_event_counts(
            from.map_or(i64::MIN, |t| t.timestamp_millis()),
            to.map_or(i64::MAX, |t| t.timestamp_millis()),
        )
        .await?;
    let mut report = CampaignReport::default();
    for row in rows {
        let OutreachEventCount {
            campaign_id: campaign,
            variant,
            kind,
            count: n,
        } = row;
        let stats = report.rows.entry((campaign, variant)).or_default();
        match EventKind::parse(&kind) {
            Some(EventKind::Delivered) => stats.delivered += n,
            Some(EventKind::Opened) => stats.opened += n,
            Some(EventKind::Replied) => stats.replied += n,
            Some(EventKind::Converted) => stats.converted += n,
            None => tracing::warn!(kind, "unknown outreach event kind ignored"),
        }
    }
    Ok(report)
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

impl fmt::Display for CampaignReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:<7} {:>9} {:>7} {:>7} {:>9}",
            "campaign", "variant", "delivered", "opened", "replied", "converted"
        )?;
        for ((campaign, variant), s) in &self.rows {
            writeln!(
                f,
                "{:<24} {:<7} {:>9} {:>7} {:>7} {:>9}",
                campaign,
                variant,
                s.delivered,
                percent(s.open_rate()),
                percent(s.reply_rate()),
                percent(s.conversion_rate()),
            )?;
        }
        Ok(())
    }
}
