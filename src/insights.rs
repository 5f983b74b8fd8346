//! `kizuna insights`: the voice-of-the-customer report (docs/insights.md) on the command line.

use std::path::PathBuf;

use clap::Args;
use kizuna_insights::{InsightReport, ReportOptions};

#[derive(Debug, Args)]
pub struct InsightsArgs {
    /// The period: the last N days up to now.
    #[arg(long, env = "KIZUNA_INSIGHTS_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub days: u32,
    /// Print the report as one JSON object (the `GET /api/insights` body).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub serve: crate::config::ServeArgs,
}

pub async fn run(config: Option<PathBuf>, args: InsightsArgs) -> anyhow::Result<()> {
    let settings = crate::settings(config, &args.serve)?;
    let store = crate::data::open_store(&settings).await?;
    // Topics need the embedding model; without it the rest of the report still stands.
    let embedder = if settings.knowledge.enabled {
        let s = settings.clone();
        match tokio::task::spawn_blocking(move || crate::wiring::load_embedder(&s)).await? {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("[insights] no embedding model ({e:#}): no topics");
                None
            }
        }
    } else {
        None
    };
    let report = kizuna_insights::build_report_with(
        &store,
        embedder,
        &options(&settings, args.days, chrono::Utc::now()),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The report's settings for the last `days` days: the low-score bar is the retrieval
/// threshold in force.
pub fn options(
    settings: &crate::config::Settings,
    days: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> ReportOptions {
    let mut options = ReportOptions::since(now - chrono::Duration::days(days.into()), now);
    options.low_score = settings.knowledge.retrieval.threshold;
    options
}

/// Messages shown in a table cell: one line, at most `max` characters.
fn cell(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    }
}

fn render(r: &InsightReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "お客様の声 / Voice of the customer  {} – {}",
        &r.from[..10.min(r.from.len())],
        &r.to[..10.min(r.to.len())]
    );
    let _ = writeln!(
        out,
        "customer messages: {}, escalations: {}\n",
        r.customer_messages, r.escalations.total
    );

    let _ = writeln!(out, "■ 話題 / Topics");
    match &r.topics.model {
        None => {
            let _ = writeln!(out, "  (no embedding model: knowledge.enabled is off)");
        }
        Some(model) if r.topics.topics.is_empty() => {
            let _ = writeln!(out, "  (no messages; model {model})");
        }
        Some(model) => {
            let _ = writeln!(
                out,
                "  {} messages clustered ({} embedded now, model {model}, silhouette {})",
                r.topics.clustered,
                r.topics.embedded_now,
                r.topics
                    .silhouette
                    .map_or("—".to_string(), |s| format!("{s:.2}"))
            );
            let _ = writeln!(
                out,
                "  {:>5} {:>6}  representative message / examples",
                "count", "share"
            );
            for t in &r.topics.topics {
                let _ = writeln!(
                    out,
                    "  {:>5} {:>5.1}%  {}",
                    t.count,
                    100.0 * t.share,
                    cell(&t.representative, 60)
                );
                for e in &t.examples {
                    let _ = writeln!(out, "  {:>13}– {}", "", cell(e, 58));
                }
            }
        }
    }

    let _ = writeln!(out, "\n■ エスカレーション / Escalations by reason");
    if r.escalations.by_reason.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for c in &r.escalations.by_reason {
        let _ = writeln!(out, "  {:>5}  {}", c.count, c.reason);
    }
    if r.escalations.total > 0 {
        let _ = writeln!(out, "  per week (Monday):");
        for w in &r.escalations.by_week {
            let reasons: Vec<String> = w.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                out,
                "  {}  {:>4}  {}",
                w.period,
                w.total,
                reasons.join(", ")
            );
        }
    }

    let _ = writeln!(out, "\n■ 感情の推移 / Sentiment per day");
    let _ = writeln!(
        out,
        "  date        msgs  anger anxious neutral positive  negative  mean"
    );
    let mut any = false;
    for d in r.sentiment.iter().filter(|d| d.messages > 0) {
        any = true;
        let _ = writeln!(
            out,
            "  {}  {:>4}  {:>5} {:>7} {:>7} {:>8}  {:>7.0}%  {:+.2}",
            d.date,
            d.messages,
            d.anger,
            d.anxious,
            d.neutral,
            d.positive,
            100.0 * d.negative_share.unwrap_or(0.0),
            d.mean.unwrap_or(0.0)
        );
    }
    if !any {
        let _ = writeln!(out, "  (no sentiment readings)");
    }

    let _ = writeln!(out, "\n■ 未回答の質問 / Top unanswered questions");
    if r.unanswered.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (i, q) in r.unanswered.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>2}. ×{}  {}  [{}; best score {}]",
            i + 1,
            q.count,
            cell(&q.representative, 60),
            q.signals.join(", "),
            q.best_score.map_or("—".to_string(), |s| format!("{s:.2}"))
        );
        for e in &q.examples {
            let _ = writeln!(out, "        – {}", cell(e, 60));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cells_are_one_line_and_short() {
        assert_eq!(super::cell("料金は\nいくら", 20), "料金は いくら");
        assert_eq!(super::cell("あいうえおかきくけこ", 5), "あいうえ…");
    }
}
