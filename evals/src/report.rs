//! Scoring and reports: per turn, per transcript, per expectation kind; pass^k over trials;
//! JSON for CI and a Markdown summary for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::normalize;
use crate::runner::TurnOutcome;
use crate::transcript::{Expect, Transcript};

/// One checked expectation.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `escalation`, `tools`, `retrieval`, `reply`, `leak` (every reply is scanned for
    /// internal text, whatever the transcript expects) or `run`.
    pub kind: &'static str,
    /// The expectation key, e.g. `tools_called`.
    pub key: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TurnResult {
    pub turn: usize,
    pub passed: bool,
    pub checks: Vec<Check>,
    pub outcome: TurnOutcome,
    /// For escalation precision/recall: (expected, observed) when `escalate` was given.
    #[serde(skip)]
    pub escalation_pair: Option<(bool, bool)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrialResult {
    pub passed: bool,
    pub error: Option<String>,
    pub turns: Vec<TurnResult>,
}

impl TrialResult {
    pub fn new(turns: Vec<TurnResult>) -> Self {
        Self {
            passed: turns.iter().all(|t| t.passed),
            error: None,
            turns,
        }
    }

    pub fn failed_to_start(error: String) -> Self {
        Self {
            passed: false,
            error: Some(error),
            turns: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TranscriptResult {
    pub id: String,
    pub path: String,
    /// pass^k: every trial passed.
    pub passed: bool,
    pub trials: Vec<TrialResult>,
    pub load_error: Option<String>,
}

impl TranscriptResult {
    pub fn new(t: &Transcript, trials: Vec<TrialResult>) -> Self {
        Self {
            id: t.id.clone(),
            path: t.path.display().to_string(),
            passed: !trials.is_empty() && trials.iter().all(|r| r.passed),
            trials,
            load_error: None,
        }
    }

    pub fn load_error(error: String) -> Self {
        Self {
            id: String::new(),
            path: String::new(),
            passed: false,
            trials: Vec::new(),
            load_error: Some(error),
        }
    }
}

fn contains(haystack: &str, needle: &str) -> bool {
    normalize(haystack).contains(&normalize(needle))
}

/// Scores one turn's outcome against its expectations. A turn that could not be run
/// (timeout, transport failure) fails every check it has: nothing was observed, so an
/// `escalate: false` must not pass by default.
pub fn score_turn(turn: usize, expect: &Expect, outcome: TurnOutcome) -> TurnResult {
    let mut checks = Vec::new();
    let failed_run = outcome.error.clone();
    let mut check = |kind, key, passed: bool, detail: String| {
        let (passed, detail) = match &failed_run {
            Some(error) if kind != "run" => (false, format!("{detail} (turn failed: {error})")),
            _ => (passed, detail),
        };
        checks.push(Check {
            kind,
            key,
            passed,
            detail,
        })
    };
    if let Some(error) = &outcome.error {
        check("run", "run", false, error.clone());
    }
    if !outcome.reply.trim().is_empty() || outcome.error.is_none() {
        let leak = kizuna_agent::validate::leaks(&outcome.reply);
        check(
            "leak",
            "leak",
            leak.is_none(),
            match leak {
                Some(v) => format!("{}: {}", v.kind.as_str(), v.evidence),
                None => "clean".into(),
            },
        );
    }
    if let Some(want) = expect.escalate {
        check(
            "escalation",
            "escalate",
            outcome.escalated == want,
            format!("expected {want}, got {}", outcome.escalated),
        );
    }
    if let Some(want) = expect.handed_over {
        check(
            "escalation",
            "handed_over",
            outcome.handed_over == want,
            format!("expected {want}, got {}", outcome.handed_over),
        );
    }
    if let Some(reason) = &expect.escalation_reason {
        let got = outcome.escalation_reason.as_deref();
        check(
            "escalation",
            "escalation_reason",
            got == Some(reason.as_str()),
            format!("expected {reason}, got {}", got.unwrap_or("none")),
        );
    }
    for tool in &expect.tools_called {
        check(
            "tools",
            "tools_called",
            outcome.tools.contains(tool),
            format!("{tool} (called: {:?})", outcome.tools),
        );
    }
    for tool in &expect.tools_not_called {
        check(
            "tools",
            "tools_not_called",
            !outcome.attempted_tools.contains(tool),
            format!("{tool} (called: {:?})", outcome.attempted_tools),
        );
    }
    for doc in &expect.retrieved {
        check(
            "retrieval",
            "retrieved",
            outcome.sources.contains(doc),
            format!("{doc} (retrieved: {:?})", outcome.sources),
        );
    }
    let reply = &outcome.reply;
    for s in &expect.reply_contains {
        check("reply", "reply_contains", contains(reply, s), s.clone());
    }
    if !expect.reply_contains_any.is_empty() {
        check(
            "reply",
            "reply_contains_any",
            expect.reply_contains_any.iter().any(|s| contains(reply, s)),
            expect.reply_contains_any.join(" | "),
        );
    }
    for s in &expect.reply_not_contains {
        check(
            "reply",
            "reply_not_contains",
            !contains(reply, s),
            s.clone(),
        );
    }
    for id in &expect.mentions_customers {
        check(
            "reply",
            "mentions_customers",
            contains(reply, id),
            id.clone(),
        );
    }
    for id in &expect.not_mentions_customers {
        check(
            "reply",
            "not_mentions_customers",
            !contains(reply, id),
            id.clone(),
        );
    }
    TurnResult {
        turn,
        passed: checks.iter().all(|c| c.passed),
        escalation_pair: expect
            .escalate
            .filter(|_| outcome.error.is_none())
            .map(|want| (want, outcome.escalated)),
        checks,
        outcome,
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rate {
    pub passed: usize,
    pub total: usize,
    pub rate: f64,
}

impl Rate {
    fn add(&mut self, passed: bool) {
        self.total += 1;
        self.passed += passed as usize;
        self.rate = self.passed as f64 / self.total as f64;
    }
}

/// A minimum rate a report must reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub kind: String,
    pub min: f64,
}

impl std::str::FromStr for Gate {
    type Err = String;
    /// `KIND` (1.0) or `KIND=MIN_RATE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, min) = match s.split_once('=') {
            Some((kind, rate)) => (
                kind.trim(),
                rate.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("bad gate rate in {s:?}"))?,
            ),
            None => (s.trim(), 1.0),
        };
        if kind.is_empty() || !(0.0..=1.0).contains(&min) {
            return Err(format!(
                "bad gate {s:?}: use KIND or KIND=RATE with 0 ≤ RATE ≤ 1"
            ));
        }
        Ok(Self {
            kind: kind.to_string(),
            min,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EscalationStats {
    pub true_positive: usize,
    pub false_positive: usize,
    pub false_negative: usize,
    pub true_negative: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub transcripts: Rate,
    pub turns: Rate,
    /// Per expectation kind (escalation, tools, retrieval, reply, run), over all trials.
    pub kinds: BTreeMap<String, Rate>,
    /// Per expectation key (escalate, tools_called, …).
    pub keys: BTreeMap<String, Rate>,
    pub escalation: EscalationStats,
    pub latency_ms_p50: u64,
    pub latency_ms_p95: u64,
    pub latency_ms_max: u64,
    /// Time to the first text the customer could read, over turns that showed text.
    pub first_text_ms_p50: u64,
    pub first_text_ms_p95: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub trials: usize,
    pub passed: bool,
    pub totals: Totals,
    pub transcripts: Vec<TranscriptResult>,
}

impl Report {
    pub fn new(target: String, trials: usize, transcripts: Vec<TranscriptResult>) -> Self {
        let mut totals = Totals {
            transcripts: Rate::default(),
            turns: Rate::default(),
            kinds: BTreeMap::new(),
            keys: BTreeMap::new(),
            escalation: EscalationStats::default(),
            latency_ms_p50: 0,
            latency_ms_p95: 0,
            latency_ms_max: 0,
            first_text_ms_p50: 0,
            first_text_ms_p95: 0,
        };
        let mut latencies = Vec::new();
        let mut first_text = Vec::new();
        for t in &transcripts {
            totals.transcripts.add(t.passed);
            for trial in &t.trials {
                for turn in &trial.turns {
                    totals.turns.add(turn.passed);
                    if turn.outcome.error.is_none() {
                        latencies.push(turn.outcome.latency_ms);
                        if turn.outcome.first_text_ms > 0 {
                            first_text.push(turn.outcome.first_text_ms);
                        }
                    }
                    for c in &turn.checks {
                        totals
                            .kinds
                            .entry(c.kind.to_string())
                            .or_default()
                            .add(c.passed);
                        totals
                            .keys
                            .entry(c.key.to_string())
                            .or_default()
                            .add(c.passed);
                    }
                    let e = &mut totals.escalation;
                    match turn.escalation_pair {
                        Some((true, true)) => e.true_positive += 1,
                        Some((false, true)) => e.false_positive += 1,
                        Some((true, false)) => e.false_negative += 1,
                        Some((false, false)) => e.true_negative += 1,
                        None => {}
                    }
                }
            }
        }
        let e = &mut totals.escalation;
        let predicted = e.true_positive + e.false_positive;
        let actual = e.true_positive + e.false_negative;
        e.precision = (predicted > 0).then(|| e.true_positive as f64 / predicted as f64);
        e.recall = (actual > 0).then(|| e.true_positive as f64 / actual as f64);
        latencies.sort_unstable();
        first_text.sort_unstable();
        let pct = |values: &[u64], p: f64| -> u64 {
            if values.is_empty() {
                return 0;
            }
            let i = ((values.len() as f64 - 1.0) * p).round() as usize;
            values[i]
        };
        totals.latency_ms_p50 = pct(&latencies, 0.5);
        totals.latency_ms_p95 = pct(&latencies, 0.95);
        totals.latency_ms_max = latencies.last().copied().unwrap_or(0);
        totals.first_text_ms_p50 = pct(&first_text, 0.5);
        totals.first_text_ms_p95 = pct(&first_text, 0.95);
        Self {
            target,
            trials,
            passed: !transcripts.is_empty() && transcripts.iter().all(|t| t.passed),
            totals,
            transcripts,
        }
    }

    /// The gates that fail, as readable lines. A gate is `KIND` (rate 1.0) or `KIND=MIN`;
    /// besides the check kinds (escalation, tools, retrieval, reply, leak, run) it may name
    /// `escalation_precision`, `escalation_recall` and `transcripts`. A gate whose figure
    /// the report does not have fails: a set without such checks cannot pass it silently.
    pub fn failed_gates(&self, gates: &[Gate]) -> Vec<String> {
        let t = &self.totals;
        let mut failing = Vec::new();
        for gate in gates {
            let figure = match gate.kind.as_str() {
                "escalation_precision" => t.escalation.precision.map(|v| (v, String::new())),
                "escalation_recall" => t.escalation.recall.map(|v| (v, String::new())),
                "transcripts" => Some((
                    t.transcripts.rate,
                    format!(" {}/{}", t.transcripts.passed, t.transcripts.total),
                )),
                kind => t
                    .kinds
                    .get(kind)
                    .map(|r| (r.rate, format!(" {}/{}", r.passed, r.total))),
            };
            match figure {
                None => failing.push(format!("{}: not measured by this set", gate.kind)),
                Some((value, counts)) if value + 1e-9 < gate.min => failing.push(format!(
                    "{}{counts} ({:.1}% < {:.1}%)",
                    gate.kind,
                    value * 100.0,
                    gate.min * 100.0
                )),
                Some(_) => {}
            }
        }
        failing
    }

    /// A Markdown summary: totals, per kind, failures with what was expected and observed.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let t = &self.totals;
        let pass_label = if self.trials > 1 {
            format!("pass^{}", self.trials)
        } else {
            "pass".into()
        };
        let _ = writeln!(
            out,
            "# Evaluation ({}, {} trial(s))\n",
            self.target, self.trials
        );
        let _ = writeln!(
            out,
            "| measure | passed | total | rate |\n| --- | --- | --- | --- |"
        );
        let _ = writeln!(
            out,
            "| transcripts ({pass_label}) | {} | {} | {:.1}% |",
            t.transcripts.passed,
            t.transcripts.total,
            t.transcripts.rate * 100.0
        );
        let _ = writeln!(
            out,
            "| turns | {} | {} | {:.1}% |",
            t.turns.passed,
            t.turns.total,
            t.turns.rate * 100.0
        );
        for (kind, r) in &t.kinds {
            let _ = writeln!(
                out,
                "| {kind} checks | {} | {} | {:.1}% |",
                r.passed,
                r.total,
                r.rate * 100.0
            );
        }
        for (key, r) in &t.keys {
            let _ = writeln!(
                out,
                "| · {key} | {} | {} | {:.1}% |",
                r.passed,
                r.total,
                r.rate * 100.0
            );
        }
        let e = &t.escalation;
        let fmt = |v: Option<f64>| {
            v.map(|v| format!("{:.3}", v))
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            out,
            "\nEscalation: precision {} recall {} (TP {}, FP {}, FN {}, TN {})",
            fmt(e.precision),
            fmt(e.recall),
            e.true_positive,
            e.false_positive,
            e.false_negative,
            e.true_negative
        );
        let _ = writeln!(
            out,
            "Latency per turn (to the final reply): p50 {} ms, p95 {} ms, max {} ms",
            t.latency_ms_p50, t.latency_ms_p95, t.latency_ms_max
        );
        let _ = writeln!(
            out,
            "Time to first text: p50 {} ms, p95 {} ms",
            t.first_text_ms_p50, t.first_text_ms_p95
        );
        let failures: Vec<&TranscriptResult> =
            self.transcripts.iter().filter(|r| !r.passed).collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "\n## Failures\n");
        }
        for r in failures {
            if let Some(e) = &r.load_error {
                let _ = writeln!(out, "- load error: {e}");
                continue;
            }
            let _ = writeln!(out, "- **{}** ({})", r.id, r.path);
            for (n, trial) in r.trials.iter().enumerate() {
                if let Some(e) = &trial.error {
                    let _ = writeln!(out, "  - trial {}: {e}", n + 1);
                }
                for turn in trial.turns.iter().filter(|t| !t.passed) {
                    for c in turn.checks.iter().filter(|c| !c.passed) {
                        let _ = writeln!(
                            out,
                            "  - trial {} turn {}: {} — {}",
                            n + 1,
                            turn.turn,
                            c.key,
                            c.detail
                        );
                    }
                    let reply: String = turn.outcome.reply.chars().take(120).collect();
                    let _ = writeln!(out, "    reply: {reply}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(reply: &str) -> TurnOutcome {
        TurnOutcome {
            reply: reply.into(),
            ..TurnOutcome::default()
        }
    }

    #[test]
    fn every_expectation_kind_is_scored() {
        let expect: Expect = serde_yaml::from_str(
            "escalate: false\ntools_called: [recommend_plan]\nreply_contains: ['12,800円']\nnot_mentions_customers: [C-1002]",
        )
        .unwrap();
        let mut o = outcome("スタンダードプランは12800円です");
        o.tools = vec!["recommend_plan".into()];
        let r = score_turn(1, &expect, o.clone());
        assert!(r.passed, "{:?}", r.checks);
        // Four expectations plus the leak scan every reply gets.
        assert_eq!(r.checks.len(), 5);
        assert_eq!(r.checks.iter().filter(|c| c.kind == "leak").count(), 1);

        o.reply = "C-1002様の情報です。12,800円".into();
        o.tools.clear();
        let r = score_turn(1, &expect, o);
        let failed: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.key)
            .collect();
        assert_eq!(failed, ["tools_called", "not_mentions_customers"]);
    }

    #[test]
    fn pass_k_needs_every_trial_and_escalation_rates_are_computed() {
        let yes: Expect = serde_yaml::from_str("escalate: true").unwrap();
        let mut escalated = outcome("担当者におつなぎします");
        escalated.escalated = true;
        let pass = TrialResult::new(vec![score_turn(1, &yes, escalated)]);
        let fail = TrialResult::new(vec![score_turn(1, &yes, outcome("はい"))]);
        let t = Transcript {
            id: "t".into(),
            title: None,
            now: None,
            fixtures: None,
            actor: serde_yaml::from_str("role: anonymous").unwrap(),
            turns: vec![],
            path: "t.yaml".into(),
        };
        let report = Report::new(
            "test".into(),
            2,
            vec![TranscriptResult::new(&t, vec![pass, fail])],
        );
        assert!(!report.passed);
        assert_eq!(report.totals.escalation.true_positive, 1);
        assert_eq!(report.totals.escalation.false_negative, 1);
        assert_eq!(report.totals.escalation.recall, Some(0.5));
        assert_eq!(report.totals.escalation.precision, Some(1.0));
        assert!(report.markdown().contains("pass^2"));
    }
}
