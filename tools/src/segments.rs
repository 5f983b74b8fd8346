//! Customer segmentation (seed 002): RFM quintile scores, then k-means on standardised
//! RFM features, k chosen in 5..=7 by silhouette, with a profile per segment.
//!
//! RFM from the CRM columns (as of a given date):
//! - **Recency**: days since `last_login`, else since `customer_since`; capped at 730 days,
//!   and 730 when neither is known. Fewer days is better.
//! - **Frequency**: `measurements_30d` (0 when missing).
//! - **Monetary**: b2b `mrr_jpy`; b2c the plan's price (ライト 8,800円, スタンダード
//!   12,800円, プレミアム 24,800円); 0 when unknown.
//!
//! Scores are quintiles 1..=5 (5 best): a value's score is `1 + ⌊5 × (values worse than
//! it) / n⌋`, so ties share a score. Clustering uses `ln(1 + x)` of the three raw values,
//! z-scored. k-means++ seeding comes from a fixed-seed generator and the best of three
//! restarts (lowest inertia) is kept, so the same data always gives the same segments. The
//! silhouette is computed for up to 2,000 evenly spaced customers against all customers.

use std::fmt;

use async_trait::async_trait;
use chrono::NaiveDate;
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use kizuna_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access;
use crate::accounts::{as_of, long_date};
use crate::crm::{list_customers, Customer, CustomerFilter, CustomerKind};
use crate::plans::{self, yen};

pub const MAX_RECENCY_DAYS: i64 = 730;
pub const K_RANGE: std::ops::RangeInclusive<usize> = 5..=7;
const DEFAULT_SEED: u64 = 0x5EED_2026;
const RESTARTS: u64 = 3;
const MAX_ITERATIONS: usize = 100;
const SILHOUETTE_SAMPLE: usize = 2_000;

/// One customer's RFM values and scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rfm {
    pub customer_id: String,
    pub recency_days: i64,
    pub frequency: i64,
    pub monetary_jpy: i64,
    pub r: u8,
    pub f: u8,
    pub m: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentProfile {
    /// 1-based, largest segment first.
    pub number: usize,
    pub label: String,
    pub suggested_action: String,
    pub size: usize,
    pub share: f64,
    pub mean_r: f64,
    pub mean_f: f64,
    pub mean_m: f64,
    pub mean_recency_days: f64,
    pub mean_frequency: f64,
    pub mean_monetary_jpy: f64,
    pub b2b_share: f64,
    pub typical_kind: CustomerKind,
    /// The most common plan (ties: alphabetical), if any customer has one.
    pub typical_plan: Option<String>,
    /// Up to five member ids, for a look at who is in it.
    pub example_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentReport {
    pub as_of: NaiveDate,
    pub customers: usize,
    pub k: usize,
    pub silhouette: f64,
    /// Silhouette of every k tried.
    pub candidates: Vec<(usize, f64)>,
    pub segments: Vec<SegmentProfile>,
    pub rfm: Vec<Rfm>,
    /// Segment number (1-based, as in `segments`) of each customer, in input order.
    pub assignments: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentOptions {
    /// A fixed k in 5..=7, or `None` to choose by silhouette.
    pub k: Option<usize>,
    pub seed: u64,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            k: None,
            seed: DEFAULT_SEED,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("segmentation needs at least {needed} customers; there are {found}")]
    TooFew { needed: usize, found: usize },
    #[error("k must be 5, 6 or 7, not {0}")]
    BadK(usize),
}

/// RFM values and quintile scores of every customer, in input order.
pub fn rfm_scores(customers: &[Customer], as_of: NaiveDate) -> Vec<Rfm> {
    let raw: Vec<(i64, i64, i64)> = customers
        .iter()
        .map(|c| {
            let recency = c
                .last_login
                .or(c.customer_since)
                .map(|d| (as_of - d).num_days().clamp(0, MAX_RECENCY_DAYS))
                .unwrap_or(MAX_RECENCY_DAYS);
            let frequency = c.measurements_30d.unwrap_or(0);
            let monetary = match c.kind {
                CustomerKind::B2b => c.mrr_jpy.unwrap_or(0),
                CustomerKind::B2c => c
                    .plan
                    .as_deref()
                    .and_then(plans::by_id)
                    .map_or(0, |p| p.price_jpy as i64),
            };
            (recency, frequency, monetary)
        })
        .collect();
    // Recency: fewer days is better, so score on the negated value.
    let r = quintiles(&raw.iter().map(|v| -v.0).collect::<Vec<_>>());
    let f = quintiles(&raw.iter().map(|v| v.1).collect::<Vec<_>>());
    let m = quintiles(&raw.iter().map(|v| v.2).collect::<Vec<_>>());
    customers
        .iter()
        .enumerate()
        .map(|(i, c)| Rfm {
            customer_id: c.id.clone(),
            recency_days: raw[i].0,
            frequency: raw[i].1,
            monetary_jpy: raw[i].2,
            r: r[i],
            f: f[i],
            m: m[i],
        })
        .collect()
}

/// Quintile score 1..=5 of each value (higher value, higher score; ties share a score).
fn quintiles(values: &[i64]) -> Vec<u8> {
    let n = values.len();
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    values
        .iter()
        .map(|v| {
            let below = sorted.partition_point(|x| x < v);
            (1 + (5 * below) / n.max(1)).min(5) as u8
        })
        .collect()
}

/// Segments `customers` as of `as_of`.
pub fn segment_customers(
    customers: &[Customer],
    as_of: NaiveDate,
    options: &SegmentOptions,
) -> Result<SegmentReport, SegmentError> {
    let ks: Vec<usize> = match options.k {
        Some(k) if K_RANGE.contains(&k) => vec![k],
        Some(k) => return Err(SegmentError::BadK(k)),
        None => K_RANGE.collect(),
    };
    let needed = 2 * K_RANGE.end();
    if customers.len() < needed {
        return Err(SegmentError::TooFew {
            needed,
            found: customers.len(),
        });
    }
    let rfm = rfm_scores(customers, as_of);
    let points = standardise(
        &rfm.iter()
            .map(|x| {
                [
                    (x.recency_days as f64).ln_1p(),
                    (x.frequency.max(0) as f64).ln_1p(),
                    (x.monetary_jpy.max(0) as f64).ln_1p(),
                ]
            })
            .collect::<Vec<_>>(),
    );

    let mut best: Option<(usize, f64, Vec<usize>)> = None;
    let mut candidates = Vec::new();
    for k in ks {
        let labels = kmeans(&points, k, options.seed);
        let score = silhouette(&points, &labels, k);
        candidates.push((k, score));
        if best.as_ref().is_none_or(|(_, s, _)| score > *s) {
            best = Some((k, score, labels));
        }
    }
    let (k, score, labels) = best.expect("at least one k is tried");
    let (segments, assignments) = profiles(customers, &rfm, &labels, k);
    Ok(SegmentReport {
        as_of,
        customers: customers.len(),
        k: segments.len(),
        silhouette: score,
        candidates,
        segments,
        rfm,
        assignments,
    })
}

type Point = [f64; 3];

fn standardise(raw: &[Point]) -> Vec<Point> {
    let n = raw.len() as f64;
    let mut mean = [0.0; 3];
    for p in raw {
        for d in 0..3 {
            mean[d] += p[d] / n;
        }
    }
    let mut sd = [0.0; 3];
    for p in raw {
        for d in 0..3 {
            sd[d] += (p[d] - mean[d]).powi(2) / n;
        }
    }
    let sd = sd.map(f64::sqrt);
    raw.iter()
        .map(|p| {
            let mut z = [0.0; 3];
            for d in 0..3 {
                z[d] = if sd[d] > 1e-12 {
                    (p[d] - mean[d]) / sd[d]
                } else {
                    0.0
                };
            }
            z
        })
        .collect()
}

fn distance2(a: &Point, b: &Point) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// SplitMix64: a tiny, well-mixed generator; all we need is reproducible seeding.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// k-means++ seeding.
fn seed_centroids(points: &[Point], k: usize, rng: &mut SplitMix64) -> Vec<Point> {
    let first = (rng.next_u64() % points.len() as u64) as usize;
    let mut centroids = vec![points[first]];
    let mut nearest: Vec<f64> = points
        .iter()
        .map(|p| distance2(p, &points[first]))
        .collect();
    while centroids.len() < k {
        let total: f64 = nearest.iter().sum();
        let chosen = if total <= 0.0 {
            // Every point coincides with a centroid: any point will do.
            (rng.next_u64() % points.len() as u64) as usize
        } else {
            let mut target = rng.next_f64() * total;
            let mut index = points.len() - 1;
            for (i, d) in nearest.iter().enumerate() {
                if target < *d {
                    index = i;
                    break;
                }
                target -= d;
            }
            index
        };
        let c = points[chosen];
        for (d, p) in nearest.iter_mut().zip(points) {
            *d = d.min(distance2(p, &c));
        }
        centroids.push(c);
    }
    centroids
}

/// Lloyd's algorithm from k-means++ seeds; the best of [`RESTARTS`] runs by inertia.
fn kmeans(points: &[Point], k: usize, seed: u64) -> Vec<usize> {
    let mut best: Option<(f64, Vec<usize>)> = None;
    for restart in 0..RESTARTS {
        let mut rng = SplitMix64(seed ^ (restart.wrapping_mul(0x9E37_79B9) + k as u64));
        let (inertia, labels) = lloyd(points, seed_centroids(points, k, &mut rng));
        if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
            best = Some((inertia, labels));
        }
    }
    best.map(|(_, labels)| labels).unwrap_or_default()
}

fn lloyd(points: &[Point], mut centroids: Vec<Point>) -> (f64, Vec<usize>) {
    let k = centroids.len();
    let mut labels = vec![usize::MAX; points.len()];
    for _ in 0..MAX_ITERATIONS {
        let mut changed = false;
        for (label, p) in labels.iter_mut().zip(points) {
            let nearest = nearest_centroid(p, &centroids);
            if *label != nearest {
                *label = nearest;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![[0.0; 3]; k];
        let mut counts = vec![0usize; k];
        for (label, p) in labels.iter().zip(points) {
            counts[*label] += 1;
            for d in 0..3 {
                sums[*label][d] += p[d];
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                centroids[c] = sums[c].map(|s| s / counts[c] as f64);
            } else {
                // An empty cluster takes the point farthest from its centroid.
                let far = points
                    .iter()
                    .enumerate()
                    .max_by(|(i, a), (j, b)| {
                        distance2(a, &centroids[labels[*i]])
                            .total_cmp(&distance2(b, &centroids[labels[*j]]))
                    })
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                centroids[c] = points[far];
                labels[far] = c;
            }
        }
    }
    let inertia = labels
        .iter()
        .zip(points)
        .map(|(l, p)| distance2(p, &centroids[*l]))
        .sum();
    (inertia, labels)
}

fn nearest_centroid(p: &Point, centroids: &[Point]) -> usize {
    let mut best = 0;
    let mut best_d = f64::INFINITY;
    for (i, c) in centroids.iter().enumerate() {
        let d = distance2(p, c);
        if d < best_d {
            best_d = d;
            best = i;
        }
    }
    best
}

/// Mean silhouette of an evenly spaced sample, distances to every point.
fn silhouette(points: &[Point], labels: &[usize], k: usize) -> f64 {
    let n = points.len();
    let step = n.div_ceil(SILHOUETTE_SAMPLE).max(1);
    let mut counts = vec![0usize; k];
    for l in labels {
        counts[*l] += 1;
    }
    let mut total = 0.0;
    let mut sampled = 0usize;
    let mut sums = vec![0.0; k];
    for i in (0..n).step_by(step) {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for (j, q) in points.iter().enumerate() {
            if i != j {
                sums[labels[j]] += distance2(&points[i], q).sqrt();
            }
        }
        let own = labels[i];
        sampled += 1;
        if counts[own] <= 1 {
            continue; // a singleton's silhouette is 0
        }
        let a = sums[own] / (counts[own] - 1) as f64;
        let b = (0..k)
            .filter(|c| *c != own && counts[*c] > 0)
            .map(|c| sums[c] / counts[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() && a.max(b) > 0.0 {
            total += (b - a) / a.max(b);
        }
    }
    if sampled == 0 {
        0.0
    } else {
        total / sampled as f64
    }
}

fn profiles(
    customers: &[Customer],
    rfm: &[Rfm],
    labels: &[usize],
    k: usize,
) -> (Vec<SegmentProfile>, Vec<usize>) {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, l) in labels.iter().enumerate() {
        members[*l].push(i);
    }
    // Largest first; ties by the smallest member index, for a stable order.
    let mut order: Vec<usize> = (0..k).filter(|c| !members[*c].is_empty()).collect();
    order.sort_by_key(|c| (std::cmp::Reverse(members[*c].len()), members[*c][0]));
    let mut number_of = vec![0usize; k];
    let n = customers.len() as f64;
    let mut segments: Vec<SegmentProfile> = Vec::new();
    for (pos, c) in order.iter().enumerate() {
        number_of[*c] = pos + 1;
        let idx = &members[*c];
        let size = idx.len() as f64;
        let mean = |f: &dyn Fn(&Rfm) -> f64| idx.iter().map(|i| f(&rfm[*i])).sum::<f64>() / size;
        let b2b = idx
            .iter()
            .filter(|i| customers[**i].kind == CustomerKind::B2b)
            .count() as f64
            / size;
        let mut plans: Vec<&str> = idx
            .iter()
            .filter_map(|i| customers[*i].plan.as_deref())
            .collect();
        plans.sort_unstable();
        let typical_plan = mode(&plans).map(str::to_string);
        let (mean_r, mean_f, mean_m) = (
            mean(&|x| x.r as f64),
            mean(&|x| x.f as f64),
            mean(&|x| x.m as f64),
        );
        let (label, action) = label_for(mean_r, mean_f, mean_m);
        segments.push(SegmentProfile {
            number: pos + 1,
            label: label.to_string(),
            suggested_action: action.to_string(),
            size: idx.len(),
            share: size / n,
            mean_r,
            mean_f,
            mean_m,
            mean_recency_days: mean(&|x| x.recency_days as f64),
            mean_frequency: mean(&|x| x.frequency as f64),
            mean_monetary_jpy: mean(&|x| x.monetary_jpy as f64),
            b2b_share: b2b,
            typical_kind: if b2b >= 0.5 {
                CustomerKind::B2b
            } else {
                CustomerKind::B2c
            },
            typical_plan,
            example_ids: idx
                .iter()
                .take(5)
                .map(|i| customers[*i].id.clone())
                .collect(),
        });
    }
    // Two segments with the same profile label are told apart by a number.
    for i in 0..segments.len() {
        let same = segments[..i]
            .iter()
            .filter(|s| s.label.starts_with(&segments[i].label))
            .count();
        if same > 0 {
            segments[i].label = format!("{}（{}）", segments[i].label, same + 1);
        }
    }
    let assignments = labels.iter().map(|l| number_of[*l]).collect();
    (segments, assignments)
}

/// The most frequent value of a sorted slice (ties: the first).
fn mode<'a>(sorted: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    let mut i = 0;
    while i < sorted.len() {
        let run = sorted[i..].iter().take_while(|v| **v == sorted[i]).count();
        if best.is_none_or(|(_, n)| run > n) {
            best = Some((sorted[i], run));
        }
        i += run;
    }
    best.map(|(v, _)| v)
}

/// A Japanese name and next step from the segment's mean R, F and M scores (1..=5).
fn label_for(r: f64, f: f64, m: f64) -> (&'static str, &'static str) {
    let high = |x: f64| x >= 3.5;
    let low = |x: f64| x <= 2.5;
    if high(r) && high(f) && high(m) {
        (
            "優良顧客",
            "上位プランや対象物件の追加のご提案と、ご紹介プログラムのご案内",
        )
    } else if high(r) && high(f) {
        ("活発な利用層", "活用事例を共有し、上位プランをご提案")
    } else if high(r) && high(m) {
        (
            "高単価・利用少なめ層",
            "活用促進のご案内で契約件数の消化を支援",
        )
    } else if low(r) && high(m) {
        (
            "離反リスクのある高単価顧客",
            "CSMによる個別フォローとリテンション施策",
        )
    } else if low(r) && low(f) {
        ("休眠顧客", "再活性化キャンペーン（利用再開のご案内）")
    } else if high(r) {
        (
            "新規・ライト層",
            "オンボーディングのご案内と測定後の仲裁サービスのご紹介",
        )
    } else if high(m) {
        (
            "高単価・要フォロー層",
            "担当CSMによる定期的な活用状況のヒアリング",
        )
    } else {
        ("標準層", "定期的な活用情報の配信")
    }
}

impl fmt::Display for SegmentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "顧客セグメント（{}時点、{}件、{}セグメント、シルエット係数 {:.2}）",
            long_date(self.as_of),
            self.customers,
            self.k,
            self.silhouette
        )?;
        for s in &self.segments {
            let kind = match s.typical_kind {
                CustomerKind::B2b => "法人中心",
                CustomerKind::B2c => "個人中心",
            };
            let plan = s
                .typical_plan
                .as_deref()
                .map(|p| {
                    plans::by_id(p).map_or_else(|| p.to_string(), |plan| plan.name.to_string())
                })
                .unwrap_or_else(|| "なし".to_string());
            writeln!(
                f,
                "{}. {} — {}件（{:.1}%）",
                s.number,
                s.label,
                s.size,
                s.share * 100.0
            )?;
            writeln!(
                f,
                "   平均RFM R{:.1} F{:.1} M{:.1}／最終利用 {:.0}日前・直近30日の測定 {:.1}件・金額 {}",
                s.mean_r,
                s.mean_f,
                s.mean_m,
                s.mean_recency_days,
                s.mean_frequency,
                yen(s.mean_monetary_jpy.round().clamp(0.0, u32::MAX as f64) as u32)
            )?;
            writeln!(
                f,
                "   構成: {kind}（法人 {:.0}%）、主なプラン {plan}",
                s.b2b_share * 100.0
            )?;
            writeln!(f, "   推奨施策: {}", s.suggested_action)?;
        }
        write!(
            f,
            "R=最終ログインからの日数、F=直近30日の測定件数、M=法人は月額・個人はプラン料金（各5段階）"
        )
    }
}

/// `segment_customers` (managers only).
pub struct SegmentCustomers {
    store: Store,
}

impl SegmentCustomers {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Args {
    k: Option<i64>,
}

#[async_trait]
impl Tool for SegmentCustomers {
    fn name(&self) -> &str {
        "segment_customers"
    }

    fn description(&self) -> &str {
        "管理者向け: 顧客をRFM分析とクラスタリングで5〜7のセグメントに分け、各セグメントの特徴と推奨施策を示す"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "k": {"type": "integer", "description": "number of segments (5, 6 or 7); chosen automatically when omitted"}
            }
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    fn audience(&self) -> Audience {
        Audience::Managers
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        access::require_manager(ctx)?;
        let args: Args =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let options = SegmentOptions {
            k: args.k.map(|k| k.clamp(0, 1_000) as usize),
            ..Default::default()
        };
        let customers = list_customers(&self.store, &CustomerFilter::default())
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let date = as_of(ctx);
        // Clustering is CPU work; keep it off the async workers.
        let report =
            tokio::task::spawn_blocking(move || segment_customers(&customers, date, &options))
                .await
                .map_err(|e| ToolError::Failed(e.to_string()))?
                .map_err(|e| match e {
                    SegmentError::BadK(_) => ToolError::InvalidArguments(e.to_string()),
                    SegmentError::TooFew { .. } => ToolError::Failed(e.to_string()),
                })?;
        Ok(ToolOutput {
            data: json!({
                "as_of": report.as_of.to_string(),
                "customers": report.customers,
                "k": report.k,
                "silhouette": report.silhouette,
                "candidates": report.candidates,
                "segments": report.segments,
            }),
            display: report.to_string(),
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quintiles_split_evenly_and_share_ties() {
        let values: Vec<i64> = (0..10).collect();
        assert_eq!(quintiles(&values), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        assert_eq!(quintiles(&[7, 7, 7, 7]), [1, 1, 1, 1]);
        assert_eq!(quintiles(&[0, 0, 0, 10]), [1, 1, 1, 4]);
    }

    #[test]
    fn rfm_definitions() {
        let as_of = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let mut b = Customer::new("B-1", CustomerKind::B2b, "x");
        b.mrr_jpy = Some(150_000);
        b.measurements_30d = Some(20);
        b.last_login = NaiveDate::from_ymd_opt(2026, 11, 20);
        let mut c = Customer::new("C-1", CustomerKind::B2c, "y");
        c.plan = Some("premium".into());
        c.customer_since = NaiveDate::from_ymd_opt(2026, 10, 22);
        let nobody = Customer::new("C-2", CustomerKind::B2c, "z");
        let rfm = rfm_scores(&[b, c, nobody], as_of);
        assert_eq!(
            (rfm[0].recency_days, rfm[0].frequency, rfm[0].monetary_jpy),
            (1, 20, 150_000)
        );
        assert_eq!((rfm[1].recency_days, rfm[1].monetary_jpy), (30, 24_800));
        assert_eq!((rfm[2].recency_days, rfm[2].monetary_jpy), (730, 0));
        assert!(rfm[0].r > rfm[1].r && rfm[1].r > rfm[2].r);
        assert!(rfm[0].m > rfm[1].m && rfm[1].m > rfm[2].m);
    }

    #[test]
    fn kmeans_separates_obvious_groups() {
        let mut points = Vec::new();
        for g in 0..5 {
            for i in 0..40 {
                let jitter = (i as f64 * 0.37).sin() * 0.1;
                points.push([g as f64 * 10.0 + jitter, jitter, -(g as f64) * 5.0]);
            }
        }
        let labels = kmeans(&points, 5, 1);
        for g in 0..5 {
            let first = labels[g * 40];
            assert!(labels[g * 40..(g + 1) * 40].iter().all(|l| *l == first));
        }
        let mut distinct: Vec<usize> = (0..5).map(|g| labels[g * 40]).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5);
        assert!(silhouette(&points, &labels, 5) > 0.9);
    }

    #[test]
    fn mode_and_labels() {
        assert_eq!(mode(&["a", "b", "b", "c"]), Some("b"));
        assert_eq!(mode(&["a", "b"]), Some("a"));
        assert_eq!(mode(&[]), None);
        assert_eq!(label_for(4.5, 4.5, 4.5).0, "優良顧客");
        assert_eq!(label_for(1.5, 1.5, 1.5).0, "休眠顧客");
        assert_eq!(label_for(1.5, 3.0, 4.5).0, "離反リスクのある高単価顧客");
    }
}
