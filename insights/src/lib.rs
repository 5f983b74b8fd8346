//! Voice of the customer (docs/insights.md): what customers talked about in a period and
//! what the team should act on.
//!
//! - **Topics**: the customers' messages, embedded with the knowledge base's e5 model (the
//!   `query: ` side, as retrieval and the classifier heads read them) and cached per message
//!   in `message_embeddings`, clustered by [`cluster::topics`] (deterministic k-medoids, k by
//!   silhouette); each topic has its medoid as the representative message, a count and
//!   examples.
//! - **Escalations** by reason per day and per week.
//! - **Sentiment** per day, from the sentiment model's reading stored with each message.
//! - **Unanswered questions**: messages whose turn found no knowledge close enough (best
//!   retrieval score below the threshold) and got no composed or FAQ answer, or whose reply
//!   was a fallback or did not help; paraphrases grouped and ranked by how often they were
//!   asked.
//!
//! Entry point: [`build_report`].

pub mod cluster;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use kizuna_knowledge::Embedder;
use kizuna_store::{InsightMessage, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use cluster::Distances;

#[derive(Debug, thiserror::Error)]
pub enum InsightError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("embedding failed: {0}")]
    Embed(#[from] kizuna_knowledge::EmbedError),
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T> = std::result::Result<T, InsightError>;

/// The report. Dates are JST calendar days (`YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightReport {
    /// Start of the period (RFC 3339, JST).
    pub from: String,
    /// End of the period (exclusive; RFC 3339, JST).
    pub to: String,
    /// Customers' and visitors' messages in the period.
    pub customer_messages: usize,
    pub topics: Topics,
    pub escalations: Escalations,
    /// One entry per day of the period, days without messages included.
    pub sentiment: Vec<SentimentDay>,
    /// Most asked first.
    pub unanswered: Vec<UnansweredQuestion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topics {
    /// The embedding model (`None` when the knowledge base, and so the model, is off: then
    /// there are no topics).
    pub model: Option<String>,
    /// Messages clustered (the most recent [`MAX_CLUSTERED`] of the period).
    pub clustered: usize,
    /// Messages embedded by this run (the others came from the cache).
    pub embedded_now: usize,
    /// Mean silhouette of the chosen k (`None` under 3 messages).
    pub silhouette: Option<f32>,
    /// Largest first.
    pub topics: Vec<Topic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    pub count: usize,
    /// Share of the clustered messages (0–1).
    pub share: f32,
    /// The medoid: the message closest to all others of the topic.
    pub representative: String,
    /// Up to [`EXAMPLES`] other messages of the topic, the closest to the medoid first.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalations {
    pub total: usize,
    /// Most frequent first.
    pub by_reason: Vec<ReasonCount>,
    /// Every day of the period.
    pub by_day: Vec<PeriodReasons>,
    /// Weeks (Monday to Sunday) that overlap the period, keyed by their Monday.
    pub by_week: Vec<PeriodReasons>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodReasons {
    /// The day, or the week's Monday.
    pub period: String,
    pub total: usize,
    pub reasons: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentDay {
    pub date: String,
    /// Messages of the day with a sentiment reading.
    pub messages: usize,
    pub anger: usize,
    pub anxious: usize,
    pub neutral: usize,
    pub positive: usize,
    /// (anger + anxious) / messages; `None` on a day without readings.
    pub negative_share: Option<f32>,
    /// Mean of P(positive) − P(anger) − P(anxious), in [−1, 1]; `None` without readings.
    pub mean: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnansweredQuestion {
    /// How many messages asked it (paraphrases included).
    pub count: usize,
    /// The medoid of the paraphrases.
    pub representative: String,
    /// Up to [`EXAMPLES`] other wordings.
    pub examples: Vec<String>,
    /// The best retrieval score any of them got (`None` when none was searched).
    pub best_score: Option<f32>,
    /// Why they count: `low_score`, `fallback`, `unhelpful`.
    pub signals: Vec<String>,
    /// When it was last asked (RFC 3339, JST).
    pub last_asked: String,
}

/// Report settings; [`ReportOptions::since`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub from_ms: i64,
    pub to_ms: i64,
    /// A turn whose best retrieval score is below this found nothing to answer from (the
    /// retrieval context threshold, `knowledge.retrieval.threshold`).
    pub low_score: f32,
    /// Largest k tried for the topics.
    pub max_topics: usize,
    /// At most this many unanswered questions.
    pub max_unanswered: usize,
}

impl ReportOptions {
    pub fn since(since: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            from_ms: since.timestamp_millis(),
            to_ms: now.timestamp_millis(),
            low_score: 0.87,
            max_topics: 8,
            max_unanswered: 20,
        }
    }
}

/// Messages clustered at most (the most recent): the distance matrix is n², about 16 MB
/// and a few seconds of CPU at this size.
pub const MAX_CLUSTERED: usize = 2000;
/// Examples shown per topic or question.
pub const EXAMPLES: usize = 3;
/// Messages embedded per model call.
const EMBED_BATCH: usize = 32;

/// Intents that are not questions (greetings, yes/no, stop/resume, "a person please"): never
/// counted as unanswered.
const NOT_QUESTIONS: [&str; 6] = [
    "greeting",
    "affirm",
    "deny",
    "opt_out",
    "opt_in",
    "human_request",
];

fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("valid offset")
}

fn day_of(ms: i64) -> NaiveDate {
    jst()
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

fn rfc3339(ms: i64) -> String {
    jst()
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// The report for `since ..now` with the default settings. Without an embedder there are no
/// topics and unanswered questions are grouped by identical text only.
pub async fn build_report(
    store: &Store,
    embedder: Option<Arc<dyn Embedder>>,
    since: DateTime<Utc>,
) -> Result<InsightReport> {
    build_report_with(store, embedder, &ReportOptions::since(since, Utc::now())).await
}

pub async fn build_report_with(
    store: &Store,
    embedder: Option<Arc<dyn Embedder>>,
    options: &ReportOptions,
) -> Result<InsightReport> {
    let messages = store
        .insight_messages(options.from_ms, options.to_ms)
        .await?;
    let escalations = store
        .escalation_events(options.from_ms, options.to_ms)
        .await?;
    let days = days_of(options.from_ms, options.to_ms);

    let vectors = match &embedder {
        Some(e) => Some(embeddings(store, e.clone(), &messages, options.from_ms).await?),
        None => None,
    };
    let embedded_now = vectors.as_ref().map_or(0, |(_, n)| *n);
    let vectors = vectors.map(|(v, _)| v);

    // Clustering is CPU-bound (n² distances): off the async workers.
    let (topics, unanswered) = {
        let messages = messages.clone();
        let options = options.clone();
        tokio::task::spawn_blocking(move || {
            let topics = topics_of(&messages, vectors.as_ref(), options.max_topics);
            let unanswered = unanswered_of(&messages, vectors.as_ref(), &options);
            (topics, unanswered)
        })
        .await
        .map_err(|e| InsightError::Task(e.to_string()))?
    };
    let (clustered, silhouette, topics) = topics;
    Ok(InsightReport {
        from: rfc3339(options.from_ms),
        to: rfc3339(options.to_ms),
        customer_messages: messages.len(),
        topics: Topics {
            model: embedder.as_ref().map(|e| e.model_id().to_string()),
            clustered,
            embedded_now,
            silhouette,
            topics,
        },
        escalations: escalations_of(&escalations, &days),
        sentiment: sentiment_of(&messages, &days),
        unanswered,
    })
}

/// Every JST day that overlaps `[from_ms, to_ms)`.
fn days_of(from_ms: i64, to_ms: i64) -> Vec<NaiveDate> {
    let first = day_of(from_ms);
    let last = day_of((to_ms - 1).max(from_ms));
    first
        .iter_days()
        .take_while(|d| *d <= last)
        .take(3700)
        .collect()
}

/// Each message's embedding by id: from the cache, the rest embedded now and cached.
/// Returns the vectors and how many were embedded now.
async fn embeddings(
    store: &Store,
    embedder: Arc<dyn Embedder>,
    messages: &[InsightMessage],
    from_ms: i64,
) -> Result<(HashMap<String, Vec<f32>>, usize)> {
    let model = embedder.model_id().to_string();
    let mut cached = store.message_embeddings(&model, from_ms).await?;
    let missing: Vec<(String, String)> = messages
        .iter()
        .filter(|m| !cached.contains_key(&m.id))
        .map(|m| (m.id.clone(), m.content.clone()))
        .collect();
    let count = missing.len();
    for batch in missing.chunks(EMBED_BATCH * 8) {
        let batch = batch.to_vec();
        let e = embedder.clone();
        let embedded = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Vec<f32>)>> {
            let mut out = Vec::with_capacity(batch.len());
            for part in batch.chunks(EMBED_BATCH) {
                let texts: Vec<&str> = part.iter().map(|(_, t)| t.as_str()).collect();
                let vectors = e.embed_queries(&texts)?;
                out.extend(part.iter().map(|(id, _)| id.clone()).zip(vectors));
            }
            Ok(out)
        })
        .await
        .map_err(|e| InsightError::Task(e.to_string()))??;
        store
            .store_message_embeddings(&model, &embedded, Utc::now().timestamp_millis())
            .await?;
        cached.extend(embedded);
    }
    if count > 0 {
        tracing::info!(embedded = count, model = %model, "message embeddings cached");
    }
    Ok((cached, count))
}

type TopicsOut = (usize, Option<f32>, Vec<Topic>);

fn topics_of(
    messages: &[InsightMessage],
    vectors: Option<&HashMap<String, Vec<f32>>>,
    max_topics: usize,
) -> TopicsOut {
    let Some(vectors) = vectors else {
        return (0, None, Vec::new());
    };
    let start = messages.len().saturating_sub(MAX_CLUSTERED);
    let chosen: Vec<&InsightMessage> = messages[start..]
        .iter()
        .filter(|m| vectors.contains_key(&m.id))
        .collect();
    let points: Vec<Vec<f32>> = chosen.iter().map(|m| vectors[&m.id].clone()).collect();
    let dist = Distances::new(&points);
    let clustering = cluster::topics(&dist, max_topics);
    let n = chosen.len().max(1) as f32;
    let topics = clustering
        .clusters
        .iter()
        .map(|c| Topic {
            count: c.members.len(),
            share: c.members.len() as f32 / n,
            representative: chosen[c.medoid].content.clone(),
            examples: examples(&dist, c, |i| chosen[i].content.as_str()),
        })
        .collect();
    (chosen.len(), clustering.silhouette, topics)
}

/// Other distinct texts of a cluster, the closest to its medoid first.
fn examples<'a>(
    dist: &Distances,
    cluster: &cluster::Cluster,
    text: impl Fn(usize) -> &'a str,
) -> Vec<String> {
    let mut others: Vec<usize> = cluster
        .members
        .iter()
        .copied()
        .filter(|&i| i != cluster.medoid)
        .collect();
    others.sort_by(|&a, &b| {
        dist.get(cluster.medoid, a)
            .total_cmp(&dist.get(cluster.medoid, b))
            .then(a.cmp(&b))
    });
    let mut out: Vec<String> = Vec::new();
    let representative = text(cluster.medoid);
    for i in others {
        let t = text(i);
        if t != representative && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
        if out.len() == EXAMPLES {
            break;
        }
    }
    out
}

fn escalations_of(events: &[kizuna_store::EscalationEvent], days: &[NaiveDate]) -> Escalations {
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_day: BTreeMap<NaiveDate, BTreeMap<String, usize>> =
        days.iter().map(|d| (*d, BTreeMap::new())).collect();
    let monday = |d: NaiveDate| d - Duration::days(d.weekday().num_days_from_monday() as i64);
    let mut by_week: BTreeMap<NaiveDate, BTreeMap<String, usize>> =
        days.iter().map(|d| (monday(*d), BTreeMap::new())).collect();
    for e in events {
        let day = day_of(e.created_at);
        *by_reason.entry(e.reason.clone()).or_default() += 1;
        *by_day
            .entry(day)
            .or_default()
            .entry(e.reason.clone())
            .or_default() += 1;
        *by_week
            .entry(monday(day))
            .or_default()
            .entry(e.reason.clone())
            .or_default() += 1;
    }
    let periods = |map: BTreeMap<NaiveDate, BTreeMap<String, usize>>| {
        map.into_iter()
            .map(|(d, reasons)| PeriodReasons {
                period: d.to_string(),
                total: reasons.values().sum(),
                reasons,
            })
            .collect()
    };
    let mut by_reason: Vec<ReasonCount> = by_reason
        .into_iter()
        .map(|(reason, count)| ReasonCount { reason, count })
        .collect();
    by_reason.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    Escalations {
        total: events.len(),
        by_reason,
        by_day: periods(by_day),
        by_week: periods(by_week),
    }
}

/// The sentiment model's reading stored with a message (agent's `SentimentReading`).
#[derive(Deserialize)]
struct Reading {
    label: String,
    /// anger, anxious, neutral, positive.
    probabilities: [f32; 4],
}

fn sentiment_of(messages: &[InsightMessage], days: &[NaiveDate]) -> Vec<SentimentDay> {
    let mut by_day: BTreeMap<NaiveDate, SentimentDay> = days
        .iter()
        .map(|d| {
            (
                *d,
                SentimentDay {
                    date: d.to_string(),
                    messages: 0,
                    anger: 0,
                    anxious: 0,
                    neutral: 0,
                    positive: 0,
                    negative_share: None,
                    mean: None,
                },
            )
        })
        .collect();
    let mut sums: BTreeMap<NaiveDate, f32> = BTreeMap::new();
    for m in messages {
        let Some(reading) = m
            .metadata
            .get("sentiment")
            .and_then(|s| serde_json::from_value::<Reading>(s.clone()).ok())
        else {
            continue;
        };
        let day = day_of(m.created_at);
        let Some(entry) = by_day.get_mut(&day) else {
            continue;
        };
        entry.messages += 1;
        match reading.label.as_str() {
            "anger" => entry.anger += 1,
            "anxious" => entry.anxious += 1,
            "positive" => entry.positive += 1,
            _ => entry.neutral += 1,
        }
        let [anger, anxious, _, positive] = reading.probabilities;
        *sums.entry(day).or_default() += positive - anger - anxious;
    }
    by_day
        .into_iter()
        .map(|(day, mut entry)| {
            if entry.messages > 0 {
                let n = entry.messages as f32;
                entry.negative_share = Some((entry.anger + entry.anxious) as f32 / n);
                entry.mean = Some(sums.get(&day).copied().unwrap_or(0.0) / n);
            }
            entry
        })
        .collect()
}

/// Why a message counts as unanswered, if it does.
fn unanswered_signals(m: &InsightMessage, low_score: f32) -> Vec<&'static str> {
    let intent = m
        .metadata
        .get("intent")
        .and_then(|i| i.get("label"))
        .and_then(Value::as_str);
    if intent.is_some_and(|i| NOT_QUESTIONS.contains(&i)) || m.content.chars().count() < 4 {
        return Vec::new();
    }
    let mut signals = Vec::new();
    let reply = m.reply_metadata.as_ref();
    let score = best_score(m);
    // A reply composed from tools (prices, the calendar, the account) or quoted from the FAQ
    // answered without needing the knowledge: a low score there is no gap.
    let answered_otherwise = reply.is_some_and(|r| {
        r.get("model").and_then(Value::as_str) == Some("composed")
            || r.get("direct_answer").is_some_and(|d| !d.is_null())
    });
    if score.is_some_and(|s| s < low_score) && !answered_otherwise {
        signals.push("low_score");
    }
    if let Some(reply) = reply {
        if reply
            .get("fallback")
            .and_then(Value::as_str)
            .is_some_and(|f| f != "added_tool_facts")
        {
            signals.push("fallback");
        }
        if reply.get("unhelpful") == Some(&Value::Bool(true)) {
            signals.push("unhelpful");
        }
    }
    signals
}

fn best_score(m: &InsightMessage) -> Option<f32> {
    m.metadata
        .get("retrieval")
        .and_then(|r| r.get("best_score"))
        .and_then(Value::as_f64)
        .map(|s| s as f32)
}

fn unanswered_of(
    messages: &[InsightMessage],
    vectors: Option<&HashMap<String, Vec<f32>>>,
    options: &ReportOptions,
) -> Vec<UnansweredQuestion> {
    let flagged: Vec<(&InsightMessage, Vec<&'static str>)> = messages
        .iter()
        .map(|m| (m, unanswered_signals(m, options.low_score)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let start = flagged.len().saturating_sub(MAX_CLUSTERED);
    let flagged = &flagged[start..];
    // Paraphrases by embedding; without vectors, identical texts only.
    let groups: Vec<(usize, Vec<usize>)> = match vectors {
        Some(v) if flagged.iter().all(|(m, _)| v.contains_key(&m.id)) => {
            let points: Vec<Vec<f32>> = flagged.iter().map(|(m, _)| v[&m.id].clone()).collect();
            let dist = Distances::new(&points);
            cluster::paraphrase_groups(&dist)
                .clusters
                .into_iter()
                .map(|c| (c.medoid, c.members))
                .collect()
        }
        _ => {
            let mut by_text: Vec<(usize, Vec<usize>)> = Vec::new();
            for (i, (m, _)) in flagged.iter().enumerate() {
                match by_text
                    .iter_mut()
                    .find(|(first, _)| flagged[*first].0.content == m.content)
                {
                    Some((_, members)) => members.push(i),
                    None => by_text.push((i, vec![i])),
                }
            }
            by_text.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
            by_text
        }
    };
    let mut questions: Vec<UnansweredQuestion> = groups
        .into_iter()
        .map(|(medoid, members)| {
            let representative = flagged[medoid].0.content.clone();
            let mut examples: Vec<String> = Vec::new();
            for &i in members.iter().rev() {
                let t = &flagged[i].0.content;
                if *t != representative && !examples.contains(t) && examples.len() < EXAMPLES {
                    examples.push(t.clone());
                }
            }
            let mut signals: Vec<String> = Vec::new();
            for &i in &members {
                for s in &flagged[i].1 {
                    if !signals.iter().any(|x| x == s) {
                        signals.push(s.to_string());
                    }
                }
            }
            signals.sort();
            UnansweredQuestion {
                count: members.len(),
                representative,
                examples,
                best_score: members
                    .iter()
                    .filter_map(|&i| best_score(flagged[i].0))
                    .reduce(f32::max),
                signals,
                last_asked: rfc3339(
                    members
                        .iter()
                        .map(|&i| flagged[i].0.created_at)
                        .max()
                        .unwrap_or(0),
                ),
            }
        })
        .collect();
    // Most asked first; then the most recently asked.
    questions.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_asked.cmp(&a.last_asked)));
    questions.truncate(options.max_unanswered);
    questions
}

#[cfg(test)]
mod tests;
