//! Retrieval evaluation against a labelled question set, and threshold calibration.
//!
//! Set format (`evals/retrieval/*.yaml`): a YAML list of
//! `{q: 質問, expected: [doc ids], audience: b2c|b2b (optional)}`. `expected: []` marks an
//! off-topic question that should retrieve nothing above the threshold.
//!
//! - Recall@k: share of on-topic questions with an expected document among the first k
//!   distinct documents; MRR: mean of 1/rank of the first expected document (0 when it is not
//!   among the first [`RANKED_DOCUMENTS`]).
//! - Calibration: the top-k hits of every question in the configured mode, each labelled
//!   relevant (an expected document) or not (any other document, every hit of an off-topic
//!   question). For each threshold on the dense cosine, precision is the share of kept hits
//!   that are relevant and recall the share of relevant hits kept; the threshold with the best
//!   F1 is chosen (the lowest one on ties). Question-level figures are reported alongside:
//!   on-topic questions that keep a relevant hit (question recall), off-topic questions left
//!   with no hit, and a question-level F1 whose precision is the share of questions keeping
//!   any hit that are on-topic and keep a relevant one. Hit-level F1 counts every unlabelled
//!   neighbour in the top k as a false positive, so it picks a strict threshold; the
//!   question-level optimum is the one that keeps answers available and is reported too.
//! - Direct answers: how many questions the FAQ shortcut would answer, and how many rightly.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::document::{Audience, DocumentKind};
use crate::error::{KnowledgeError, Result};
use crate::index::SearchFilter;
use crate::kb::{KnowledgeBase, RetrievalMode, SearchOptions};

/// Distinct documents ranked per question for recall and MRR.
pub const RANKED_DOCUMENTS: usize = 10;
/// Chunks fetched to rank that many distinct documents.
const CANDIDATE_CHUNKS: usize = 30;
/// The design card's threshold, reported for comparison.
pub const DESIGN_THRESHOLD: f32 = 0.75;
/// Direct answers should be right at least this often.
pub const DIRECT_ANSWER_TARGET_PRECISION: f32 = 0.95;

/// One labelled question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalQuestion {
    pub q: String,
    #[serde(default)]
    pub expected: Vec<String>,
    #[serde(default)]
    pub audience: Option<Audience>,
}

impl EvalQuestion {
    pub fn is_off_topic(&self) -> bool {
        self.expected.is_empty()
    }

    /// The question's audience, and the kinds the knowledge base searches.
    fn filter(&self, kinds: &[DocumentKind]) -> SearchFilter {
        SearchFilter {
            kinds: kinds.to_vec(),
            audiences: self.audience.map(Audience::visible_to).unwrap_or_default(),
            ..SearchFilter::default()
        }
    }

    fn is_expected(&self, doc_id: &str) -> bool {
        self.expected.iter().any(|e| e == doc_id)
    }
}

/// Loads a set from a YAML file or every `*.yaml`/`*.yml` file of a directory.
pub fn load_eval_set(path: &Path) -> Result<Vec<EvalQuestion>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| KnowledgeError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut questions = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| KnowledgeError::io(&file, e))?;
        let mut items: Vec<EvalQuestion> =
            serde_yaml::from_str(&text).map_err(|e| KnowledgeError::EvalSet {
                path: file.clone(),
                message: e.to_string(),
            })?;
        if let Some(empty) = items.iter().position(|q| q.q.trim().is_empty()) {
            return Err(KnowledgeError::EvalSet {
                path: file,
                message: format!("question {} is empty", empty + 1),
            });
        }
        questions.append(&mut items);
    }
    if questions.is_empty() {
        return Err(KnowledgeError::EvalSet {
            path: path.to_path_buf(),
            message: "no questions".into(),
        });
    }
    Ok(questions)
}

/// Recall and MRR of one mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeMetrics {
    pub mode: RetrievalMode,
    pub questions: usize,
    pub recall_at_1: f32,
    pub recall_at_5: f32,
    pub mrr: f32,
}

/// Precision and recall of keeping hits at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdMetrics {
    pub threshold: f32,
    /// Kept hits that are relevant.
    pub precision: f32,
    /// Relevant hits kept.
    pub recall: f32,
    pub f1: f32,
    /// On-topic questions that keep at least one relevant hit.
    pub answerable_kept: f32,
    /// Off-topic questions left with no hit.
    pub off_topic_rejected: f32,
    /// F1 of "the question keeps a relevant hit" over questions keeping any hit.
    pub question_f1: f32,
}

/// The chosen threshold and the design card's, side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub mode: RetrievalMode,
    pub top_k: usize,
    /// Best hit-level F1.
    pub chosen: ThresholdMetrics,
    /// Best question-level F1.
    pub question_level: ThresholdMetrics,
    pub design: ThresholdMetrics,
    /// Figures from 0.80 to 0.95 in steps of 0.01.
    pub sweep: Vec<ThresholdMetrics>,
    /// Cosine range seen among relevant hits and among other hits (min, median, max).
    pub relevant_scores: (f32, f32, f32),
    pub other_scores: (f32, f32, f32),
}

/// The FAQ shortcut on the set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirectAnswerMetrics {
    pub threshold: f32,
    pub margin: f32,
    /// Questions answered directly at the configured settings.
    pub answered: usize,
    pub correct: usize,
    /// The lowest threshold (same margin) whose direct answers reach
    /// [`DIRECT_ANSWER_TARGET_PRECISION`], and how many questions it answers.
    pub suggested_threshold: Option<f32>,
    pub suggested_answered: usize,
    /// The lower bar used when the intent model reads the message as a FAQ question
    /// (`faq_answer_threshold`, `faq_answer_margin`): answered and right at the configured
    /// settings, and per threshold of a sweep (threshold, answered, right).
    pub faq_intent_threshold: f32,
    pub faq_intent_answered: usize,
    pub faq_intent_correct: usize,
    pub faq_intent_sweep: Vec<(f32, usize, usize)>,
}

/// A question whose expected document was not in the top 5 (configured mode).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Miss {
    pub q: String,
    pub expected: Vec<String>,
    pub retrieved: Vec<String>,
}

/// Everything [`evaluate`] measures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub questions: usize,
    pub off_topic: usize,
    pub modes: Vec<ModeMetrics>,
    pub calibration: Calibration,
    pub direct: DirectAnswerMetrics,
    pub misses: Vec<Miss>,
}

/// A question's ranked distinct documents with the best cosine of each.
struct Ranked {
    docs: Vec<(String, f32, DocumentKind)>,
}

async fn rank(kb: &KnowledgeBase, question: &EvalQuestion, mode: RetrievalMode) -> Result<Ranked> {
    let hits = kb
        .search_with(
            &question.q,
            &SearchOptions {
                mode,
                limit: CANDIDATE_CHUNKS,
                filter: question.filter(&kb.config().kinds),
                threshold: None,
            },
        )
        .await?;
    let mut seen = HashSet::new();
    let mut docs: Vec<(String, f32, DocumentKind)> = Vec::new();
    for hit in hits {
        if seen.insert(hit.doc_id.clone()) {
            docs.push((hit.doc_id, hit.score, hit.kind));
        } else if let Some(entry) = docs.iter_mut().find(|d| d.0 == hit.doc_id) {
            entry.1 = entry.1.max(hit.score);
        }
    }
    docs.truncate(RANKED_DOCUMENTS);
    Ok(Ranked { docs })
}

fn modes_available(kb: &KnowledgeBase) -> Vec<RetrievalMode> {
    if kb.sparse().is_some() {
        RetrievalMode::ALL.to_vec()
    } else {
        vec![RetrievalMode::Dense]
    }
}

/// Recall@1, recall@5 and MRR per mode, the calibrated threshold, direct-answer figures.
pub async fn evaluate(kb: &KnowledgeBase, set: &[EvalQuestion]) -> Result<EvalReport> {
    let on_topic: Vec<&EvalQuestion> = set.iter().filter(|q| !q.is_off_topic()).collect();
    let mut modes = Vec::new();
    let mut misses = Vec::new();
    for mode in modes_available(kb) {
        let (mut at1, mut at5, mut rr) = (0usize, 0usize, 0f32);
        for question in &on_topic {
            let ranked = rank(kb, question, mode).await?;
            let first = ranked
                .docs
                .iter()
                .position(|(id, _, _)| question.is_expected(id));
            if first == Some(0) {
                at1 += 1;
            }
            if first.is_some_and(|r| r < 5) {
                at5 += 1;
            } else if mode == kb.config().mode {
                misses.push(Miss {
                    q: question.q.clone(),
                    expected: question.expected.clone(),
                    retrieved: ranked.docs.iter().take(5).map(|d| d.0.clone()).collect(),
                });
            }
            rr += first.map(|r| 1.0 / (r as f32 + 1.0)).unwrap_or(0.0);
        }
        let n = on_topic.len().max(1) as f32;
        modes.push(ModeMetrics {
            mode,
            questions: on_topic.len(),
            recall_at_1: at1 as f32 / n,
            recall_at_5: at5 as f32 / n,
            mrr: rr / n,
        });
    }
    let calibration = calibrate(kb, set).await?;
    let direct = direct_answer_metrics(kb, set).await?;
    Ok(EvalReport {
        questions: set.len(),
        off_topic: set.len() - on_topic.len(),
        modes,
        calibration,
        direct,
        misses,
    })
}

/// One labelled hit.
struct LabelledHit {
    question: usize,
    score: f32,
    relevant: bool,
}

/// Picks the similarity threshold with the best hit-level F1 over the configured mode's
/// top-k hits (see the module documentation).
pub async fn calibrate(kb: &KnowledgeBase, set: &[EvalQuestion]) -> Result<Calibration> {
    let mode = if kb.sparse().is_some() {
        kb.config().mode
    } else {
        RetrievalMode::Dense
    };
    let top_k = kb.config().top_k;
    let mut hits = Vec::new();
    for (i, question) in set.iter().enumerate() {
        let ranked = rank(kb, question, mode).await?;
        for (doc_id, score, _) in ranked.docs.into_iter().take(top_k) {
            hits.push(LabelledHit {
                question: i,
                score,
                relevant: question.is_expected(&doc_id),
            });
        }
    }
    let mut candidates: Vec<f32> = hits.iter().map(|h| h.score).collect();
    candidates.extend((0..=200).map(|i| i as f32 / 200.0));
    candidates.sort_by(f32::total_cmp);
    candidates.dedup();
    let mut best: Option<ThresholdMetrics> = None;
    let mut best_question: Option<ThresholdMetrics> = None;
    for &threshold in &candidates {
        let metrics = threshold_metrics(set, &hits, threshold);
        // Strictly better only: ties keep the lower threshold (more recall).
        if best_question
            .as_ref()
            .is_none_or(|b| metrics.question_f1 > b.question_f1 + 1e-6)
        {
            best_question = Some(metrics.clone());
        }
        if best.as_ref().is_none_or(|b| metrics.f1 > b.f1 + 1e-6) {
            best = Some(metrics);
        }
    }
    let chosen = best.unwrap_or_else(|| threshold_metrics(set, &hits, DESIGN_THRESHOLD));
    let question_level =
        best_question.unwrap_or_else(|| threshold_metrics(set, &hits, DESIGN_THRESHOLD));
    let sweep = (80..=95)
        .map(|i| threshold_metrics(set, &hits, i as f32 / 100.0))
        .collect();
    let scores = |relevant: bool| {
        let mut s: Vec<f32> = hits
            .iter()
            .filter(|h| h.relevant == relevant)
            .map(|h| h.score)
            .collect();
        s.sort_by(f32::total_cmp);
        match (s.first(), s.get(s.len() / 2), s.last()) {
            (Some(&min), Some(&median), Some(&max)) => (min, median, max),
            _ => (0.0, 0.0, 0.0),
        }
    };
    Ok(Calibration {
        mode,
        top_k,
        design: threshold_metrics(set, &hits, DESIGN_THRESHOLD),
        chosen,
        question_level,
        sweep,
        relevant_scores: scores(true),
        other_scores: scores(false),
    })
}

fn threshold_metrics(
    set: &[EvalQuestion],
    hits: &[LabelledHit],
    threshold: f32,
) -> ThresholdMetrics {
    let kept = |h: &&LabelledHit| h.score >= threshold;
    let relevant_total = hits.iter().filter(|h| h.relevant).count();
    let kept_total = hits.iter().filter(kept).count();
    let relevant_kept = hits.iter().filter(kept).filter(|h| h.relevant).count();
    let precision = ratio(relevant_kept, kept_total, 1.0);
    let recall = ratio(relevant_kept, relevant_total, 0.0);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let on_topic: Vec<usize> = (0..set.len()).filter(|&i| !set[i].is_off_topic()).collect();
    let off_topic: Vec<usize> = (0..set.len()).filter(|&i| set[i].is_off_topic()).collect();
    let answerable = on_topic
        .iter()
        .filter(|&&i| {
            hits.iter()
                .any(|h| h.question == i && h.relevant && h.score >= threshold)
        })
        .count();
    let rejected = off_topic
        .iter()
        .filter(|&&i| !hits.iter().any(|h| h.question == i && h.score >= threshold))
        .count();
    let keeping_any = (0..set.len())
        .filter(|&i| hits.iter().any(|h| h.question == i && h.score >= threshold))
        .count();
    let question_precision = ratio(answerable, keeping_any, 1.0);
    let question_recall = ratio(answerable, on_topic.len(), 0.0);
    let question_f1 = if question_precision + question_recall > 0.0 {
        2.0 * question_precision * question_recall / (question_precision + question_recall)
    } else {
        0.0
    };
    ThresholdMetrics {
        threshold,
        precision,
        recall,
        f1,
        answerable_kept: ratio(answerable, on_topic.len(), 0.0),
        off_topic_rejected: ratio(rejected, off_topic.len(), 1.0),
        question_f1,
    }
}

fn ratio(part: usize, whole: usize, if_empty: f32) -> f32 {
    if whole == 0 {
        if_empty
    } else {
        part as f32 / whole as f32
    }
}

/// Direct answers at the configured threshold and margin, and the lowest threshold that
/// reaches the target precision.
async fn direct_answer_metrics(
    kb: &KnowledgeBase,
    set: &[EvalQuestion],
) -> Result<DirectAnswerMetrics> {
    let config = kb.config();
    // (best FAQ score, lead over the next FAQ, right?)
    let mut candidates = Vec::new();
    for question in set {
        let hits = kb
            .search_with(
                &question.q,
                &SearchOptions {
                    mode: RetrievalMode::Dense,
                    limit: 2,
                    filter: SearchFilter {
                        ..question.filter(&[DocumentKind::Faq])
                    },
                    threshold: None,
                },
            )
            .await?;
        if let Some(best) = hits.first() {
            let margin = best.score - hits.get(1).map(|h| h.score).unwrap_or(0.0);
            candidates.push((best.score, margin, question.is_expected(&best.doc_id)));
        }
    }
    let answered_with = |threshold: f32, margin: f32| {
        let answered: Vec<bool> = candidates
            .iter()
            .filter(|(s, m, _)| *s >= threshold && *m >= margin)
            .map(|(_, _, right)| *right)
            .collect();
        (answered.len(), answered.iter().filter(|r| **r).count())
    };
    let answered_at = |threshold: f32| answered_with(threshold, config.direct_answer_margin);
    let (faq_intent_answered, faq_intent_correct) =
        answered_with(config.faq_answer_threshold, config.faq_answer_margin);
    let faq_intent_sweep = (0..=10)
        .map(|i| {
            let t = 0.85 + 0.01 * i as f32;
            let (n, right) = answered_with(t, config.faq_answer_margin);
            (t, n, right)
        })
        .collect();
    let (answered, correct) = answered_at(config.direct_answer_threshold);
    let mut thresholds: Vec<f32> = candidates.iter().map(|c| c.0).collect();
    thresholds.sort_by(f32::total_cmp);
    let suggested = thresholds.into_iter().find(|&t| {
        let (n, right) = answered_at(t);
        n > 0 && right as f32 / n as f32 >= DIRECT_ANSWER_TARGET_PRECISION
    });
    Ok(DirectAnswerMetrics {
        threshold: config.direct_answer_threshold,
        margin: config.direct_answer_margin,
        answered,
        correct,
        suggested_threshold: suggested,
        suggested_answered: suggested.map(|t| answered_at(t).0).unwrap_or(0),
        faq_intent_threshold: config.faq_answer_threshold,
        faq_intent_answered,
        faq_intent_correct,
        faq_intent_sweep,
    })
}

impl fmt::Display for ThresholdMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>9.3} {:>9.3} {:>7.3} {:>6.3} {:>15.3} {:>18.3} {:>11.3}",
            self.threshold,
            self.precision,
            self.recall,
            self.f1,
            self.answerable_kept,
            self.off_topic_rejected,
            self.question_f1
        )
    }
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Threshold calibration ({} mode, top {} hits, cosine):",
            self.mode, self.top_k
        )?;
        writeln!(
            f,
            "  {:<9} {:>9} {:>9} {:>7} {:>6} {:>15} {:>18} {:>11}",
            "",
            "threshold",
            "precision",
            "recall",
            "F1",
            "answerable kept",
            "off-topic rejected",
            "question F1"
        )?;
        writeln!(f, "  {:<9} {}", "hit F1", self.chosen)?;
        writeln!(f, "  {:<9} {}", "qst F1", self.question_level)?;
        writeln!(f, "  {:<9} {}", "design", self.design)?;
        for row in &self.sweep {
            writeln!(f, "  {:<9} {}", "", row)?;
        }
        writeln!(
            f,
            "  relevant hits: min {:.3} / median {:.3} / max {:.3}; other hits: min {:.3} / median {:.3} / max {:.3}",
            self.relevant_scores.0,
            self.relevant_scores.1,
            self.relevant_scores.2,
            self.other_scores.0,
            self.other_scores.1,
            self.other_scores.2
        )
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Retrieval evaluation: {} questions ({} off-topic)",
            self.questions, self.off_topic
        )?;
        writeln!(
            f,
            "  {:<7} {:>9} {:>9} {:>7}",
            "mode", "recall@1", "recall@5", "MRR"
        )?;
        for m in &self.modes {
            writeln!(
                f,
                "  {:<7} {:>9.3} {:>9.3} {:>7.3}",
                m.mode.as_str(),
                m.recall_at_1,
                m.recall_at_5,
                m.mrr
            )?;
        }
        write!(f, "{}", self.calibration)?;
        let d = &self.direct;
        writeln!(
            f,
            "Direct FAQ answers at cosine ≥ {:.3}, lead ≥ {:.3}: {} answered, {} right",
            d.threshold, d.margin, d.answered, d.correct
        )?;
        match d.suggested_threshold {
            Some(t) => writeln!(
                f,
                "  lowest threshold with ≥ {:.0}% right: {:.3} ({} answered)",
                DIRECT_ANSWER_TARGET_PRECISION * 100.0,
                t,
                d.suggested_answered
            )?,
            None => writeln!(
                f,
                "  no threshold reaches {:.0}% right answers",
                DIRECT_ANSWER_TARGET_PRECISION * 100.0
            )?,
        }
        writeln!(
            f,
            "FAQ answers for questions the intent model reads as FAQ, at cosine ≥ {:.3}: {} answered, {} right (of {} questions, off-topic included)",
            d.faq_intent_threshold, d.faq_intent_answered, d.faq_intent_correct, self.questions
        )?;
        writeln!(f, "  threshold answered right precision")?;
        for (t, n, right) in &d.faq_intent_sweep {
            writeln!(
                f,
                "  {t:>9.3} {n:>8} {right:>5} {:>9.3}",
                if *n == 0 {
                    0.0
                } else {
                    *right as f32 / *n as f32
                }
            )?;
        }
        if !self.misses.is_empty() {
            writeln!(f, "Not in the top 5 ({} questions):", self.misses.len())?;
            for miss in &self.misses {
                writeln!(
                    f,
                    "  {} — expected {:?}, got {:?}",
                    miss.q, miss.expected, miss.retrieved
                )?;
            }
        }
        Ok(())
    }
}
