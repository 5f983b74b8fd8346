//! When a conversation must go to a human (seed 003 §6.1 Level 4, §6.2).
//!
//! The seed hands a conversation to a CSM when it is not resolved after three round trips,
//! when the customer is emotional (anger, anxiety), for complex legal consultations, for
//! cancellation and refund requests and for complaints. [`EscalationPolicy`] combines three
//! kinds of signal for each customer message:
//!
//! * rules on the customer's own words ([`rule_reason`]): legal action or advice, refund or
//!   cancellation, complaints (a concrete failure of ours), an explicit request for a person,
//!   and anger at us spelled out in words (「二度と使わない」「最悪の会社」), which escalates as
//!   `negative_sentiment` even without a sentiment model;
//! * the sentiment readings of this and the earlier customer messages (thresholds and a trend);
//! * what the conversation loop knows: how many earlier bot replies did not help, and whether
//!   the model called `escalate_to_human`.
//!
//! Rules run on NFKC-normalised text with katakana folded to hiragana and ASCII lower-cased,
//! so 「ｷｬﾝｾﾙ」, 「キャンセル」 and 「きゃんせる」 read alike. They are written to stay quiet on
//! customers describing their noise problem (「足音がうるさくて眠れない」 is not anger at us)
//! and on pre-sales questions that merely mention legal words (「レポートは裁判の証拠になりますか」).

use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::intent::Intent;
use crate::sentiment::{SentimentLabel, SentimentReading};

/// Why a conversation was handed to a person. Names are those of shared/spec/transcripts.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    Legal,
    NegativeSentiment,
    RefundOrCancel,
    Complaint,
    Unresolved,
    CustomerRequest,
}

impl EscalationReason {
    /// Every reason, most important first: when several apply, the first one is recorded.
    /// Legal matters carry the most risk; money and contract requests need a person who can
    /// act on them; a complaint needs an apology from a person before a handover request is
    /// merely routed; lack of progress (observed over turns) before sentiment, the weakest,
    /// inferred signal.
    pub const BY_PRIORITY: [EscalationReason; 6] = [
        EscalationReason::Legal,
        EscalationReason::RefundOrCancel,
        EscalationReason::Complaint,
        EscalationReason::CustomerRequest,
        EscalationReason::Unresolved,
        EscalationReason::NegativeSentiment,
    ];

    /// The snake_case name used in transcripts, tool arguments and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationReason::Legal => "legal",
            EscalationReason::NegativeSentiment => "negative_sentiment",
            EscalationReason::RefundOrCancel => "refund_or_cancel",
            EscalationReason::Complaint => "complaint",
            EscalationReason::Unresolved => "unresolved",
            EscalationReason::CustomerRequest => "customer_request",
        }
    }

    /// Position in [`Self::BY_PRIORITY`]; lower is more important.
    pub fn priority(self) -> usize {
        Self::BY_PRIORITY
            .iter()
            .position(|r| *r == self)
            .unwrap_or(Self::BY_PRIORITY.len())
    }
}

impl fmt::Display for EscalationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EscalationReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EscalationReason::BY_PRIORITY
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown escalation reason {s:?} (legal, refund_or_cancel, complaint, \
                     customer_request, negative_sentiment, unresolved)"
                )
            })
    }
}

/// Thresholds of the policy; the binary reads them from `[escalation]` in its TOML file.
/// Every field has a default, so an empty table (or none) gives the behaviour described here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationConfig {
    /// One message whose anger probability reaches this escalates (`negative_sentiment`).
    pub anger_threshold: f32,
    /// The anger threshold for a message with no target (it names nothing of ours outside
    /// quoted speech, nor the neighbour: a terse question) or around a concrete question:
    /// such heat is rarely anger at us, so it takes a near-certain reading. The higher of
    /// this and `anger_threshold` applies. (Anger about the neighbour alone never escalates.)
    pub noise_anger_threshold: f32,
    /// One message whose anxious probability reaches this escalates; 1 (the default) turns
    /// it off, because worry about the noise is what our customers come with and the bot's
    /// job to answer with empathy. Kept high when set, because
    /// customers with a noise problem are often worried; ordinary worry is the bot's job.
    pub anxious_threshold: f32,
    /// This many consecutive customer messages labelled anger, the current one included,
    /// escalate whatever their probabilities. 0 turns the rule off.
    pub consecutive_anger: u32,
    /// The trend looks at the last `trend_window` customer messages, the current one included,
    /// and only once that many readings exist. 0 turns the trend off.
    pub trend_window: usize,
    /// The trend escalates when the mean distress over the window reaches this, where a
    /// message's distress is `P(anger) + anxious_weight × P(anxious)`. It only fires while the
    /// current message itself is labelled anger or anxious, so a customer who has calmed
    /// down is not handed over for what they felt earlier.
    pub trend_threshold: f32,
    /// How much anxiety counts toward distress relative to anger (see `trend_threshold`).
    pub anxious_weight: f32,
    /// Completed round trips (customer message + bot reply) that did not help, counted by the
    /// caller, after which the customer's next message goes to a person instead of getting
    /// another bot reply. The current message is not counted: it has not been answered yet,
    /// and whether the previous reply helped is only known from it. With the seed's 3, the
    /// customer's 4th message after three unhelpful answers is handed over. 0 turns it off.
    pub unresolved_turns: u32,
    /// Per-rule switches.
    pub rules: EscalationRules,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            anger_threshold: 0.80,
            noise_anger_threshold: 0.95,
            anxious_threshold: 1.0,
            consecutive_anger: 2,
            trend_window: 3,
            trend_threshold: 0.60,
            anxious_weight: 0.0,
            unresolved_turns: 3,
            rules: EscalationRules::default(),
        }
    }
}

/// Turns single rules on or off (`[escalation.rules]`); all are on by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationRules {
    /// Legal action, legal advice or authorities such as the consumer centre.
    pub legal: bool,
    /// Refund, cancellation, ending the contract.
    pub refund_or_cancel: bool,
    /// Complaints about our service, staff, report or bot.
    pub complaint: bool,
    /// An explicit request for a person or a phone call.
    pub customer_request: bool,
    /// The sentiment thresholds and trend.
    pub negative_sentiment: bool,
    /// The unresolved round-trip count.
    pub unresolved: bool,
    /// The model's `escalate_to_human` tool call.
    pub tool: bool,
}

impl Default for EscalationRules {
    fn default() -> Self {
        Self {
            legal: true,
            refund_or_cancel: true,
            complaint: true,
            customer_request: true,
            negative_sentiment: true,
            unresolved: true,
            tool: true,
        }
    }
}

impl EscalationRules {
    fn allows(&self, reason: EscalationReason) -> bool {
        match reason {
            EscalationReason::Legal => self.legal,
            EscalationReason::RefundOrCancel => self.refund_or_cancel,
            EscalationReason::Complaint => self.complaint,
            EscalationReason::CustomerRequest => self.customer_request,
            EscalationReason::NegativeSentiment => self.negative_sentiment,
            EscalationReason::Unresolved => self.unresolved,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EscalationConfigError {
    #[error("escalation.{field} must be a probability between 0 and 1, got {value}")]
    NotAProbability { field: &'static str, value: f32 },
    #[error("escalation.anxious_weight must be between 0 and 1, got {0}")]
    BadWeight(f32),
}

impl EscalationConfig {
    /// Checks the thresholds; call once at start-up so a typo fails loudly.
    pub fn validate(&self) -> Result<(), EscalationConfigError> {
        for (field, value) in [
            ("anger_threshold", self.anger_threshold),
            ("noise_anger_threshold", self.noise_anger_threshold),
            ("anxious_threshold", self.anxious_threshold),
            ("trend_threshold", self.trend_threshold),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(EscalationConfigError::NotAProbability { field, value });
            }
        }
        if !(0.0..=1.0).contains(&self.anxious_weight) {
            return Err(EscalationConfigError::BadWeight(self.anxious_weight));
        }
        Ok(())
    }
}

/// What the policy sees for one customer message.
#[derive(Debug, Clone, Default)]
pub struct TurnSignals<'a> {
    /// The customer's message as written.
    pub text: &'a str,
    /// Its sentiment reading, when a model is configured.
    pub sentiment: Option<&'a SentimentReading>,
    /// Readings of the earlier customer messages of this conversation, oldest first.
    pub recent_sentiments: &'a [SentimentReading],
    /// Consecutive earlier bot replies that did not help (see
    /// [`EscalationConfig::unresolved_turns`]).
    pub unresolved_streak: u32,
    /// Reason and summary of an `escalate_to_human` call the model made this turn.
    pub tool_request: Option<(EscalationReason, String)>,
    /// What the message asks for (the intent model), with its probability.
    pub intent: Option<(crate::intent::Intent, f32)>,
    /// The customer's earlier messages of this conversation, oldest first: what a message
    /// with no target of its own (「もう限界です」) is about.
    pub previous_texts: &'a [String],
    /// A write proposed by the last reply awaits consent: 「やっぱりやめておきます」 declines
    /// it, and is no cancellation.
    pub awaiting_consent: bool,
}

/// A handover, with what the CSM needs to know first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscalationDecision {
    pub reason: EscalationReason,
    /// A short explanation for the CSM (Japanese), e.g. the rule and the phrase it matched.
    pub detail: String,
    /// The customer's words that triggered a text rule (NFKC-normalised), if any.
    pub matched: Option<String>,
}

/// Decides, message by message, whether a person must take over.
#[derive(Debug, Clone, Default)]
pub struct EscalationPolicy {
    config: EscalationConfig,
}

impl EscalationPolicy {
    pub fn new(config: EscalationConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &EscalationConfig {
        &self.config
    }

    /// The handover for this message, or `None` when the bot should keep answering.
    ///
    /// Every enabled source is consulted (text rules, the `escalate_to_human` tool, the
    /// sentiment readings, the unresolved count) and the most important reason among them
    /// is recorded, in [`EscalationReason::BY_PRIORITY`] order. The tool's reason takes
    /// part in the same order: the model sees the whole conversation, so its "legal" beats a
    /// rule's "customer_request", but a legal phrase in the customer's own words beats the
    /// model's "negative_sentiment". When a text rule and the tool give the same reason,
    /// the rule's decision is kept because it names the customer's words.
    pub fn assess(&self, signals: &TurnSignals<'_>) -> Option<EscalationDecision> {
        let rules = &self.config.rules;
        let text = NormalizedText::new(signals.text);
        let mut candidates: Vec<EscalationDecision> = Vec::new();

        if let Some(hit) = rule_hits(&text)
            .into_iter()
            .find(|hit| rules.allows(hit.reason))
        {
            candidates.push(EscalationDecision {
                reason: hit.reason,
                detail: format!("{}: 「{}」", hit.summary, hit.matched),
                matched: Some(hit.matched),
            });
        }
        if rules.tool {
            if let Some((reason, summary)) = &signals.tool_request {
                if rules.allows(*reason) {
                    let summary = summary.trim();
                    candidates.push(EscalationDecision {
                        reason: *reason,
                        detail: if summary.is_empty() {
                            "AIが担当者への引き継ぎを判断しました".to_string()
                        } else {
                            format!("AIが担当者への引き継ぎを判断しました: {summary}")
                        },
                        matched: None,
                    });
                }
            }
        }
        if rules.negative_sentiment {
            if let Some(detail) = self.sentiment_detail(signals, &text) {
                candidates.push(EscalationDecision {
                    reason: EscalationReason::NegativeSentiment,
                    detail,
                    matched: None,
                });
            }
        }
        let needed = self.config.unresolved_turns;
        if rules.unresolved && needed > 0 && signals.unresolved_streak >= needed {
            candidates.push(EscalationDecision {
                reason: EscalationReason::Unresolved,
                detail: format!(
                    "{}往復のやり取りで解決していません",
                    signals.unresolved_streak
                ),
                matched: None,
            });
        }
        // `min_by_key` keeps the first of equal keys: rule before tool for the same reason.
        candidates
            .into_iter()
            .min_by_key(|decision| decision.reason.priority())
    }

    /// Why the readings call for a person, or `None`.
    ///
    /// Distress about the neighbour's noise is the normal state of our customers (the
    /// escalation issue, issue 13): a message the intent model reads as a description of the
    /// noise never escalates on sentiment, and anxiety alone does not either unless
    /// `anxious_threshold` is set below 1. A concrete question (a price, a slot, how the
    /// service works) asked with some heat is answered; only near-certain anger escalates it.
    fn sentiment_detail(&self, signals: &TurnSignals<'_>, text: &NormalizedText) -> Option<String> {
        let cfg = &self.config;
        let current = signals.sentiment?;
        let anger = current.probability(SentimentLabel::Anger);
        let anxious = current.probability(SentimentLabel::Anxious);
        let intent = signals
            .intent
            .filter(|(_, p)| *p >= INTENT_TRUSTED)
            .map(|(i, _)| i);
        if intent == Some(Intent::NoiseReport) {
            return None;
        }
        let concrete_ask = intent.is_some_and(is_concrete_ask);

        // One message escalates on anger at `anger_threshold` only when it is aimed at us (a
        // sentence names our service, staff, report or bot outside quoted speech). The head
        // reads heat, not its target: anger with no target of ours (a terse question) or
        // around a concrete question takes a near-certain reading (`noise_anger_threshold`);
        // "that did not help" is counted by the unresolved streak instead.
        // Anger at the neighbour (quoted words included) that names nothing of ours is
        // distress about the noise: answered with empathy, not escalated on sentiment
        // (only a business that weighs distress in, `anxious_weight`, has it trend).
        // A message with no target of its own, in a conversation about the neighbour so far
        // (「上の階が毎晩うるさい」→「もう限界です」), is about the neighbour too.
        let their_side_only = about_their_side_in_context(text, signals.previous_texts);
        if their_side_only && cfg.anxious_weight <= 0.0 {
            return None;
        }
        // A correction of what the bot understood (「いえ、受け取り方ではなくて、届く日数を
        // 聞いているんです」) is not anger at us, however it reads.
        let unresolved_feedback = says_unresolved(&text.display) || is_clarification(text);
        let anger_limit = if aimed_at_us(text) && !concrete_ask {
            cfg.anger_threshold
        } else {
            cfg.anger_threshold.max(cfg.noise_anger_threshold)
        };
        if anger >= anger_limit && !unresolved_feedback && !their_side_only {
            return Some(format!("強い怒りを検知しました（anger {anger:.2}）"));
        }
        if cfg.anxious_threshold < 1.0 && anxious >= cfg.anxious_threshold {
            return Some(format!("強い不安を検知しました（anxious {anxious:.2}）"));
        }

        if cfg.consecutive_anger > 0 && current.label == SentimentLabel::Anger && !their_side_only {
            let earlier = signals
                .recent_sentiments
                .iter()
                .rev()
                .take_while(|r| r.label == SentimentLabel::Anger)
                .count();
            let run = earlier + 1;
            if run >= cfg.consecutive_anger as usize {
                return Some(format!("怒りの表現が{run}回続いています"));
            }
        }

        let window = cfg.trend_window;
        let distressed_now = current.label == SentimentLabel::Anger
            || (cfg.anxious_weight > 0.0 && current.label == SentimentLabel::Anxious);
        if window > 0 && distressed_now && signals.recent_sentiments.len() + 1 >= window {
            let earlier =
                &signals.recent_sentiments[signals.recent_sentiments.len() + 1 - window..];
            let total: f32 = earlier
                .iter()
                .chain(std::iter::once(current))
                .map(|r| {
                    r.probability(SentimentLabel::Anger)
                        + cfg.anxious_weight * r.probability(SentimentLabel::Anxious)
                })
                .sum();
            let mean = total / window as f32;
            if mean >= cfg.trend_threshold {
                return Some(format!(
                    "直近{window}件のメッセージで怒り・不安が続いています（平均 {mean:.2}）"
                ));
            }
        }
        None
    }
}

/// Intent probabilities below this are not used to soften sentiment decisions.
const INTENT_TRUSTED: f32 = 0.6;

/// A message that asks for something concrete the bot can answer.
fn is_concrete_ask(intent: Intent) -> bool {
    matches!(
        intent,
        Intent::PlanPrice
            | Intent::PlanCompare
            | Intent::PlanRecommend
            | Intent::Availability
            | Intent::Book
            | Intent::Reschedule
            | Intent::MyAccount
            | Intent::Faq
    )
}

/// The hub's hook: the policy decides, and the CSM gets the decision's detail.
impl crate::hub::EscalationCheck for EscalationPolicy {
    fn check(&self, input: &TurnSignals<'_>) -> Option<(EscalationReason, String)> {
        self.assess(input)
            .map(|decision| (decision.reason, decision.detail))
    }
}

/// The reason and matched phrase of the first text rule (in priority order) that fires on
/// `text`, all rules enabled. Sentiment, the unresolved count and the tool are not consulted.
pub fn rule_reason(text: &str) -> Option<(EscalationReason, String)> {
    rule_hits(&NormalizedText::new(text))
        .into_iter()
        .next()
        .map(|hit| (hit.reason, hit.matched))
}

// ---------------------------------------------------------------------------------------
// Text normalisation

/// The customer's text in two aligned forms: `display` is NFKC; `folded` is the same with
/// katakana turned into hiragana and ASCII lower-cased. Both kana blocks take three bytes in
/// UTF-8 and ASCII case does not change length, so byte ranges of one are ranges of the other.
struct NormalizedText {
    display: String,
    folded: String,
}

impl NormalizedText {
    fn new(text: &str) -> Self {
        let display: String = text.nfkc().collect();
        let folded = fold(&display);
        Self { display, folded }
    }

    /// Sentence ranges: split after 。 ! ? and line breaks (NFKC has turned ！？ into ASCII).
    fn sentences(&self) -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        for (i, c) in self.folded.char_indices() {
            if matches!(c, '。' | '!' | '?' | '\n') {
                let end = i + c.len_utf8();
                if end > start {
                    ranges.push(start..end);
                }
                start = end;
            }
        }
        if start < self.folded.len() {
            ranges.push(start..self.folded.len());
        }
        ranges
    }
}

/// Katakana → hiragana, ASCII → lower case; every other character is kept.
fn fold(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'ァ'..='ヶ' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => c,
        })
        .collect()
}

/// Rule patterns are written in natural spelling and folded the same way as the text.
/// The customer corrects what the bot understood: 「…ではなくて、…を聞いているんです」,
/// 「そうじゃなくて」, "that's not what I asked".
fn is_clarification(text: &NormalizedText) -> bool {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        compile(concat!(
            r"(?:を|が|について|のこと)(?:聞|訊|伺|尋ね|質問し)(?:いて|いてい|てい|って)(?:る|ます)",
            r"|(?:ではなく|じゃなく)(?:て)?[^。]{0,40}(?:を|が)(?:知りたい|聞きたい|伺いたい)",
            r"|そう(?:では|じゃ)なく(?:て)?|not what i (?:asked|meant)|i (?:was|am) asking (?:about|for)",
        ))
    });
    pattern.is_match(&text.folded)
}

/// The customer says the previous answers did not help or were not understood
/// (「まだよくわかりません」「ピンときません」「解決しないままです」 "that doesn't help"): the
/// observable signal of non-resolution, counted over consecutive turns by the hub.
pub fn says_unresolved(text: &str) -> bool {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        compile(concat!(
            r"(?:わから|分から|判ら)(?:ない|なかった|ん|ず)|(?:わかり|分かり)ません",
            r"|理解(?:でき|出来)(?:ない|ません|なかった)|ピンと(?:こ|来|き)(?:ない|ません|なかった)",
            r"|解決(?:し|でき)(?:ない|ません|てない|ていない|ていません|なかった)",
            r"|答えになって(?:ない|いない|いません)|(?:役に|参考に)(?:立た|なら)(?:ない|なかった)",
            r"|don'?t (?:understand|get it)|not helpful|(?:doesn'?t|didn'?t) help|still (?:confused|unclear)",
        ))
    });
    pattern.is_match(&NormalizedText::new(text).folded)
}

fn compile(pattern: &str) -> Regex {
    Regex::new(&fold(pattern)).expect("escalation rule patterns are valid regular expressions")
}

// ---------------------------------------------------------------------------------------
// Text rules

struct RuleHit {
    reason: EscalationReason,
    summary: &'static str,
    matched: String,
}

/// Whose matter a sentence must be for a rule to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Anyone's: the words only have one reading.
    Any,
    /// Not the neighbour's, landlord's or the customer's own side (「管理会社の対応が悪い」).
    /// A sentence naming nobody is, in a chat with us, about us.
    NotTheirSide,
    /// The sentence must name something of ours: the word alone is too general.
    NamesUs,
}

/// What a match must also satisfy; every rule is also dropped when the clause negates it.
#[derive(Debug, Clone, Copy)]
struct Guards {
    scope: Scope,
    /// Drop legal words in a question about what our report or plans offer (弁護士レビュー,
    /// 裁判の証拠になりますか) and 訴え that is no lawsuit (頭痛を訴える, こっちの訴え).
    product_question: bool,
    /// Drop words inside 「」 (what someone else said) and matches in thanks for something
    /// already done (「返金ありがとうございました」「人につないでいただき助かりました」).
    not_reported: bool,
    /// Drop a person of someone else's (「管理会社の担当者と話したい」「隣の人と話したい」).
    our_person: bool,
    /// Drop hypotheticals and policy questions (「返金される場合」「返金の規定」).
    policy_question: bool,
}

impl Guards {
    const fn new(scope: Scope) -> Self {
        Self {
            scope,
            product_question: false,
            not_reported: true,
            our_person: false,
            policy_question: false,
        }
    }
}

struct TextRule {
    reason: EscalationReason,
    summary: &'static str,
    pattern: Regex,
    guards: Guards,
}

const LEGAL: &str = "法的な相談・法的手段への言及";
const REFUND: &str = "返金の要求";
const CANCEL: &str = "キャンセル・解約の要求";
const COMPLAINT: &str = "サービス・スタッフ・請求・レポートへのクレーム";
const HUMAN: &str = "担当者との会話を希望";
const PHONE: &str = "電話での対応を希望";
const ANGER: &str = "当社への強い不満・怒りの表現";

fn text_rules() -> &'static [TextRule] {
    static RULES: OnceLock<Vec<TextRule>> = OnceLock::new();
    RULES.get_or_init(|| {
        use EscalationReason::*;
        let rule = |reason, summary, pattern: &str, guards| TextRule {
            reason,
            summary,
            pattern: compile(pattern),
            guards,
        };
        // Legal words keep their meaning in reported speech: a neighbour's 「訴える」 is exactly
        // what the customer needs legal help with.
        let legal_intent = Guards {
            not_reported: false,
            ..Guards::new(Scope::Any)
        };
        let legal_word = Guards {
            product_question: true,
            ..legal_intent
        };
        let refund = Guards {
            policy_question: true,
            ..Guards::new(Scope::Any)
        };
        let person = Guards {
            our_person: true,
            ..Guards::new(Scope::Any)
        };
        vec![
            // Legal. Intent to act, or a request for legal advice: these stay legal even in a
            // sentence that also mentions the report (「レポートを証拠に裁判を起こしたい」).
            rule(
                Legal,
                LEGAL,
                concat!(
                    r"訴え(?:たい|ます|る|よう|てやる|を起こ|を提起|させて)",
                    r"|(?:訴訟|裁判|提訴|告訴|調停|少額訴訟)(?:を|に|も|で|へ|まで)?",
                    r"(?:起こ|する|した|しま|しよう|検討|考え|辞さ|持ち込|踏み切|申し立て|争|訴え)",
                    r"|弁護士(?:さん|の先生|の方)?(?:に|へ|と|を|から|が)?(?:は|も)?(?:お|ご)?",
                    r"(?:相談|依頼|頼|立て|入れ|つけ|付け|紹介|願い|通|連絡|話|探)",
                    r"|(?:慰謝料|損害賠償|賠償金?|示談金)(?:を|は|って|の|も|が)?",
                    r"(?:請求|求め|払|支払|取れ|とれ|もらえ|貰え|いくら|相場)",
                    r"|法的(?:な)?(?:措置|手段|処置|対応を取|手続)",
                    r"|内容証明",
                    r"|消費(?:者|生活)センター|国民生活センター|法テラス",
                ),
                legal_intent,
            ),
            // Legal words without an intent verb: legal unless the sentence is about what our
            // report or plan offers (「レポートは裁判の証拠として使えますか」 is a sales question).
            // A neighbour's legal threat against the customer (「隣人から訴訟を起こすと言われた」,
            // 「訴えられたらどうしよう」) is a legal consultation the bot must not answer: legal.
            rule(
                Legal,
                LEGAL,
                concat!(
                    r"弁護士|訴え|訴訟|裁判|提訴|告訴|慰謝料|損害賠償|賠償|示談|調停",
                    r"|違法|法律違反|受忍限度|法律相談|法的に|法律的に|法律上",
                ),
                legal_word,
            ),
            // Any refund matter goes to a person (the FAQ routes refunds to staff), except a
            // question about the refund policy: 「返金の規定はどうなっていますか」.
            rule(
                RefundOrCancel,
                REFUND,
                concat!(
                    r"返金|払い戻し|払戻|返還",
                    r"|(?:お金|代金|料金|費用|お代|支払った分|払った分|(?:^|[^敷礼預賃税])金)",
                    r"(?:を|は|、)?(?:全額)?返(?:し|せ|して)",
                ),
                refund,
            ),
            // Cancelling or ending the contract as a request, not a question about the policy:
            // 「キャンセル料はかかりますか」 and the seed's FAQ example 「キャンセルできますか？」
            // are answered by the bot. 「解約したい場合はどうすれば」 is a request: the FAQ hands
            // every cancellation of a contract to the CSM.
            rule(
                RefundOrCancel,
                CANCEL,
                concat!(
                    r"(?:キャンセル|解約|退会)(?:を|の|も)?(?:したい|します|しよう|したく|するつもり|する予定|することに",
                    r"|して(?:ください|下さい|ほしい|欲しい|もらえ|いただ|くれ)|させて|お願い|希望|手続|方法|申請",
                    r"|申し込|を?検討|予定|の件|を?考え|届|の(?:連絡|依頼))",
                    r"|(?:キャンセル|解約|退会)で(?:お願い|いい|結構)|途中解約",
                    r"|(?:申し?込み?|予約|注文|契約|オプション)(?:を|は|だけ)?取り?消(?:し|す)(?:たい|て|ます)",
                    r"|(?:契約|サービス|利用|プラン|サブスク|定期)(?:を|の|は)?",
                    r"(?:やめ|辞め|止め|解除|打ち切|終了|停止)(?:たい|ます|る|させ|して)",
                ),
                Guards::new(Scope::Any),
            ),
            // Complaints: a concrete failure of our service, staff, billing or report. Phrases
            // that can only be about us.
            rule(
                Complaint,
                COMPLAINT,
                concat!(
                    r"説明と(?:全然|まったく|全く|ぜんぜん|だいぶ|かなり)?違",
                    r"|話が(?:全然|まったく)?違(?:う|い)",
                    r"|聞いて(?:い)?た(?:話|内容|の|金額|額)?と(?:全然|まったく)?違",
                    r"|(?:約束|見積もり|見積り|見積|案内|書いてあった(?:こと|の)?)と(?:全然|まったく)?違",
                    r"|言ってる(?:こと)?が(?:全然)?違|言っていることが違",
                    r"|二重(?:に)?請求|勝手に(?:キャンセル|変更|日程|請求|引き落|予約)",
                ),
                Guards::new(Scope::Any),
            ),
            // Complaint words that could also be about the neighbour, the landlord, the
            // management company or the customer's own firm: only when the sentence is not about
            // their side. 苦情/クレーム count only as the customer's complaint to us
            // (「クレームを入れたい」「御社への苦情」), never as one about or from a neighbour.
            rule(
                Complaint,
                COMPLAINT,
                concat!(
                    r"(?:苦情|クレーム)(?:を|として)?(?:言い|入れ|申し上げ|申し|伝え|出し|させて)(?:たい|ます|させ)",
                    r"|(?:苦情|クレーム)です|(?:苦情|クレーム)があります",
                    r"|(?:御社|貴社|そちら|スタッフ|測定員|担当者?|対応|レポート|サービス|ボット)",
                    r"(?:への|に対する|についての|について|の)(?:苦情|クレーム)",
                    r"|(?:対応|接客)(?:が|は|も)?(?:本当に|とても|非常に|すごく|かなり|大変|あまりにも)?(?:悪|ひど|酷|遅|雑|不誠実|いい加減|適当|不十分)",
                    r"|(?:失礼|無礼|不誠実|高圧的|横柄|威圧的|乱暴)(?:な|の)?(?:対応|態度|接客|口調|物言い|言葉遣い)",
                    r"|態度(?:が|は)?(?:本当に|とても|非常に|すごく|かなり|大変|ちょっと)?(?:悪|ひど|酷|失礼|横柄|大き|最悪|最低|高圧的)",
                    r"|謝罪(?:して|しろ|を求|がな|もな|すら)|謝って(?:ください|ほしい|よ)",
                    r"|遅刻|(?:スタッフ|測定員|担当者|担当の方|誰も)(?:さん)?(?:が|は|も)?(?:まだ|全然|一向に)?(?:来ない|来ません|来なかった|来てない|来ていない)",
                    r"|来てくれ(?:ない|ません|なかった)",
                    r"|(?:レポート|報告書|測定結果)(?:が|は|も)?(?:まだ|全然|一向に|いつまでも)?(?:届かない|届いていない|届いてない|届きません|来ない|来ません)",
                    r"|(?:経っ|たっ|待っ|過ぎ)ても(?:まだ|全然)?(?:届|来|連絡|返事|返信)(?:かない|ない|きません|ません|ていない|てない)",
                    r"|(?:返事|返信|連絡|回答)(?:が|も)(?:まだ|全然|一向に|何も)?(?:来ない|来ません|ない|ありません|なかった|なし)",
                    r"|(?:内容|記載|日付|日時|数値|金額|請求額?|結果|測定結果|部屋番号|住所|名前|宛名)(?:が|に|は)(?:明らかに|全然|全く|まったく|なんか|少し)?(?:おかしい|間違|誤り|誤って|でたらめ)",
                    r"|(?:住所|部屋番号|名前|宛名|日付|日時|時間帯?|金額|請求額?)(?:が|は)、?(?:うち|実際|私|自分|こちら)[^。]{0,12}と(?:全然|全く|まったく|[0-9]+時間も?)?(?:違|ずれ)",
                    r"|(?:請求|金額|料金)[^。]{0,10}(?:見積もり|見積り|見積|案内|説明)より[^。]{0,10}(?:多く|高く)",
                    r"|連絡漏れ|管理体制",
                    r"|(?:測定|御社|貴社|スタッフ|そちら|担当者?|請求|記載|入力|事務|手続き?)(?:の|側の)?(?:ミス|不手際|手違い)",
                    r"|(?:不手際|手違い)(?:が|で|です|でした|を)",
                    r"|頼んで(?:い)?ない|申し込んで(?:い)?ない|注文して(?:い)?ない|身に覚えのない",
                ),
                Guards::new(Scope::NotTheirSide),
            ),
            // Too general to read as a complaint unless the sentence names our report, bot or
            // service (「レポートがテンプレートの使い回し」).
            rule(
                Complaint,
                COMPLAINT,
                concat!(
                    r"使い回し|反映されて(?:い)?(?:ない|ません)|誤字|脱字",
                    r"|のに[^。]{0,15}(?:引き落とされ|請求され|引かれ)(?:て|た)",
                    r"|(?:関係|状況|事態)が(?:さらに|余計に|かえって)?(?:悪化し|こじれ)(?:た|まし|てしま|ています|ている)",
                    r"|無駄にし|損害を(?:受け|被)",
                    r"|壊(?:され|した|れ)|傷(?:を|が)?(?:つけ|付け|つい)|汚(?:され|して|れ)",
                ),
                Guards::new(Scope::NamesUs),
            ),
            rule(
                CustomerRequest,
                HUMAN,
                concat!(
                    r"(?:人間|担当(?:者|の方|の人|csm)|csm|オペレーター|スタッフ|係の人|係の方|生身の人",
                    r"|専門家|専門のスタッフ|専門の方|相談員|サポートの方|社員|責任者|上司|人)",
                    r"(?:さん)?(?:の方)?(?:と|に|で|から|へ|を)(?:直接)?(?:お|ご)?",
                    r"(?:話|代わ|かわ|替わ|変わ|つな|繋|対応して|相談し|説明し|連絡|出|呼|よこ)",
                    r"|(?:ボット|ai|ロボット|機械|自動応答)(?:じゃ|では)(?:なく|話にならない|埒が明かない|らちがあかない|だめ|ダメ)",
                    r"|有人(?:チャット|対応|窓口|の窓口)?|人間に(?:切り替|代わ)",
                ),
                person,
            ),
            rule(
                CustomerRequest,
                PHONE,
                concat!(
                    r"電話(?:で|にて)(?:直接)?(?:お|ご)?(?:話|相談|説明|願い|連絡|対応|聞)",
                    r"|電話(?:を|が)?(?:ください|下さい|してほしい|して欲しい|して(?:もらえ|いただけ|くれ)|もらえ|いただけ|したい|希望)",
                    r"|折り返し(?:の)?(?:お|ご)?(?:電話|連絡)|電話番号を?教え",
                ),
                Guards::new(Scope::Any),
            ),
            // Anger at us in so many words, for when no sentiment model is configured or it
            // misses sarcasm: generic frustration, review threats, "never again". Only when the
            // sentence is about us: 「上の階ふざけるな」「騒音のせいで最悪」 are about the neighbour.
            rule(
                NegativeSentiment,
                ANGER,
                concat!(
                    r"ふざけ(?:ないで|るな|んな|てる|ている)|いい加減にして|話にならない",
                    r"|(?:私|わたし|こっち|こちら)(?:は|が|も)?(?:本当に|かなり|すごく|相当)?怒って",
                    r"|怒ってる(?:んですけど|んですよ|んだけど|んだよ|から|の(?:わか|分か))|怒っています(?:よ|から)",
                    r"|二度と(?:使|利用|頼|依頼|お願い|申し込)|口コミに書|レビューに書|星1|晒(?:し|す)",
                    r"|詐欺|ぼったくり|(?:お?金|時間)の無駄|どう責任|責任(?:を)?取(?:れ|って)",
                    r"|(?:最悪|最低)(?:な|の)?(?:会社|サービス|対応)|(?:会社|サービス|対応)(?:が|は)?(?:最悪|最低)",
                ),
                Guards::new(Scope::NotTheirSide),
            ),
            rule(
                NegativeSentiment,
                ANGER,
                concat!(
                    r"不満|がっかり|失望|裏切(?:られ|った|り)|信じられない|腹が立|頭にくる|むかつく|イライラ",
                    r"|使えない|役に立たな|役にも立たな|何の役にも|通じない|せいで",
                    r"|非常識|迷惑して|放置|知らんぷり|売りつけ|嘘",
                ),
                Guards::new(Scope::NamesUs),
            ),
        ]
    })
}

/// Every text rule that fires on `text`, in rule order (which is priority order).
fn rule_hits(text: &NormalizedText) -> Vec<RuleHit> {
    let sentences = text.sentences();
    let mut hits = Vec::new();
    for rule in text_rules() {
        let found = sentences.iter().find_map(|sentence| {
            let folded = &text.folded[sentence.clone()];
            rule.pattern.find_iter(folded).find_map(|m| {
                let start = sentence.start + m.start();
                let end = sentence.start + m.end();
                rule.guards
                    .pass(text, sentence.clone(), start..end)
                    .then(|| text.display[start..end].to_string())
            })
        });
        if let Some(matched) = found {
            hits.push(RuleHit {
                reason: rule.reason,
                summary: rule.summary,
                matched,
            });
        }
    }
    hits
}

impl Guards {
    fn pass(&self, text: &NormalizedText, sentence: Range<usize>, hit: Range<usize>) -> bool {
        let folded = &text.folded;
        let whole = &folded[sentence.clone()];
        let before = &folded[sentence.start..hit.start];
        let after = &folded[hit.end..sentence.end];
        if negated_after(after) {
            return false;
        }
        let in_scope = match self.scope {
            Scope::Any => true,
            Scope::NotTheirSide => target_of(whole) != Target::TheirSide,
            Scope::NamesUs => target_of(whole) == Target::Us,
        };
        in_scope
            && !(self.product_question
                && (about_our_product(whole)
                    || (folded[hit.clone()].starts_with("訴え") && not_a_lawsuit(before))))
            && !(self.not_reported && (inside_quotes(before) || thanks_for_it(whole)))
            && !(self.our_person && someone_elses_person(before))
            && !(self.policy_question && policy_question(whole, after))
    }
}

/// Whether the clause after a match refuses or denies it: 「弁護士には相談したくない」,
/// 「返金は求めていません」, 「キャンセルしないでください」, 「返金ではなく日程変更を」.
/// Only the rest of the clause is read (up to 、 or a conjunction such as けど / ですが), and
/// the negation must come soon after the match. A negation followed by か is a question
/// (「違法ではないですか」) and does not count.
fn negated_after(rest_of_sentence: &str) -> bool {
    static NEGATION: OnceLock<Regex> = OnceLock::new();
    static CLAUSE_END: OnceLock<Regex> = OnceLock::new();
    const WINDOW_CHARS: usize = 14;
    let negation = NEGATION.get_or_init(|| {
        compile(concat!(
            r"たくない|たくありません|たくはない|たくはありません",
            r"|つもりはな|つもりはありません|つもりもな|気はな|気はありません|気もな",
            r"|考えていな|考えていません|考えてな|考えてません|予定はな|予定はありません",
            r"|ほどでは|ほどじゃ|までは(?:し|考え|求め|望|いか)|わけではな|わけじゃな",
            r"|必要はな|必要はありません|必要ありません|必要な(?:い|し)",
            r"|しません|しないで|しなくて|なくて(?:いい|大丈夫|も)",
            r"|求めていな|求めていません|求めてな|求めません|望んでいな|望んでいません|望んでな|望みません",
            r"|結構です|けっこうです|いりません|いらない|不要|大丈夫です",
            r"|ではなく|じゃなく|ではありません|じゃありません|ではないです|じゃないです",
        ))
    });
    let clause_end = CLAUSE_END
        .get_or_init(|| compile(r"[、,]|けど|けれど|のに|ので|ますが|ですが|ましたが|でしたが"));
    let clause = match clause_end.find(rest_of_sentence) {
        Some(m) => &rest_of_sentence[..m.start()],
        None => rest_of_sentence,
    };
    negation.find_iter(clause).any(|m| {
        let near = clause[..m.start()].chars().count() <= WINDOW_CHARS;
        let question = clause[m.end()..].starts_with('か');
        near && !question
    })
}

/// A policy question rather than a request: a hypothetical or a fee right after the match
/// (「返金される場合」「返金の条件」「返金手数料」), a sentence asking about the rules without
/// asking for anything (「一部返金になるのか、規定を教えてください」), or a conditional asking
/// what would happen (「もしキャンセルした場合、料金は返金されますか」).
fn policy_question(sentence: &str, rest_of_sentence: &str) -> bool {
    static WOULD_IT_BE: OnceLock<Regex> = OnceLock::new();
    static CONDITION: OnceLock<Regex> = OnceLock::new();
    static HYPOTHETICAL: OnceLock<Regex> = OnceLock::new();
    static RULES: OnceLock<Regex> = OnceLock::new();
    static ASKS: OnceLock<Regex> = OnceLock::new();
    let hypothetical = HYPOTHETICAL.get_or_init(|| {
        compile(concat!(
            r"^(?:を|は|の|に|が)?(?:した|する|される|された|になった|になる|できた|できる)?",
            r"(?:場合|としたら|とすると|とき|時|際|なら|たら|条件|規定|ポリシー|規約)",
            r"|^(?:したら|すると|すれば|されたら|されると)",
            r"|^(?:の|に|する|した|時の|の際の|の場合の)?(?:手数料|費用|料金|違約金|料|金)",
        ))
    });
    let rules = RULES.get_or_init(|| compile(r"規定|ポリシー|規約|条件"));
    let asks = ASKS.get_or_init(|| {
        compile(r"お願い|ください|下さい|ほしい|欲しい|したい|希望|求め|もらえ|いただけ")
    });
    // 「返金されますか」 alone may be a customer waiting for their money; under a condition
    // (もし / 場合 / たら) it asks about the rules.
    let would_it_be = WOULD_IT_BE.get_or_init(|| {
        compile(r"^(?:は|が|って)?(?:され(?:ます|る(?:の|ん)|ません)|になり?ます|になる(?:の|ん)|は(?:あり|でき)ます)")
    });
    let condition =
        CONDITION.get_or_init(|| compile(r"もし|場合|としたら|とすると|たら[、,]|なら[、,]"));
    hypothetical.is_match(rest_of_sentence)
        || (would_it_be.is_match(rest_of_sentence) && condition.is_match(sentence))
        || (rules.is_match(sentence) && !asks.is_match(&sentence.replace("教えてください", "")))
}

/// Whether the match sits inside 「」 or 『』 opened before it: someone else's words.
fn inside_quotes(before_hit: &str) -> bool {
    let opened = before_hit.matches(['「', '『']).count();
    let closed = before_hit.matches(['」', '』']).count();
    opened > closed
}

/// Thanks or praise for something already done: 「返金ありがとうございました」,
/// 「すぐ人につないでいただき助かりました」, 「キャンセルの手続きもスムーズでした」; or a
/// request someone else made of the customer: 「オーナーから解約をほのめかされて」.
fn thanks_for_it(sentence: &str) -> bool {
    static DONE: OnceLock<Regex> = OnceLock::new();
    DONE.get_or_init(|| {
        compile(concat!(
            r"ありがと|助かりました|助かった|よかった|良かった|感謝|お礼|迅速|スムーズ|確認できました",
            r"|確認ができました|気持ちよく",
            r"|を?(?:ほのめかされ|求められ|迫られ|要求され|申し出られ|突きつけられ|示唆され)",
        ))
    })
    .is_match(sentence)
}

/// A sentence about what our report or plans offer: legal words there are product words
/// (弁護士レビュー, 弁護士さんのコメント, 裁判の証拠として使えますか).
fn about_our_product(sentence: &str) -> bool {
    static PRODUCT: OnceLock<Regex> = OnceLock::new();
    PRODUCT
        .get_or_init(|| {
            compile(concat!(
                r"レポート|報告書|測定|プラン|プレミアム|データ|記録|証拠|レビュー|コメント|チェック|監修",
                r"|法的根拠|法的効力|資料|オプション|付き|含まれ|使え|効力|有効|役に?立|提出|認められ",
                r"|なりますか",
            ))
        })
        .is_match(sentence)
}

/// 「頭痛を訴える」「眠れないと訴えています」「こっちの訴えを疑ってる」: 訴え for symptoms or
/// for what the customer says, not a lawsuit.
fn not_a_lawsuit(before_hit: &str) -> bool {
    static SYMPTOM: OnceLock<Regex> = OnceLock::new();
    SYMPTOM
        .get_or_init(|| compile(r"(?:と|痛|不調|不良|不眠|症状|苦痛|体調)を?$|の$"))
        .is_match(before_hit)
}

/// 「管理会社の担当者」「隣の人」: a person of someone else, not of ours.
fn someone_elses_person(before_hit: &str) -> bool {
    static OTHERS: OnceLock<Regex> = OnceLock::new();
    OTHERS
        .get_or_init(|| {
            compile(concat!(
                r"(?:管理会社|管理人|大家|オーナー|不動産屋?|隣|上の階|下の階|上階|階下|近所|相手",
                r"|マンション|アパート|役所|警察|理事会|管理組合|家主|弊社|当社|入居者",
                r"|上|下|横|向かい|本|友|知|住|他|別|家|恋|犯)(?:さん|様)?の?$",
            ))
        })
        .is_match(before_hit)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Names us: our staff, report, bot, company.
    Us,
    /// About the neighbour, the landlord, the management company, the tenants or the
    /// customer's own firm (弊社), or the noise itself.
    TheirSide,
    /// Names nobody; in a chat with us that is taken to be about us.
    Unknown,
}

/// Who a sentence is about. Words that can only mean us win; then the other side; then
/// words that usually mean us (「スタッフ」「対応」, which also fit 管理会社のスタッフ).
fn target_of(sentence: &str) -> Target {
    static STRONG_US: OnceLock<Regex> = OnceLock::new();
    static WEAK_US: OnceLock<Regex> = OnceLock::new();
    let strong_us = STRONG_US.get_or_init(|| {
        compile(concat!(
            r"御社|貴社|そちら|そっち|おたく|お宅|zenbu|あなた|このチャット|チャット|ボット|bot",
            r"|(?:^|[^a-z])ai(?:[^a-z]|$)|自動応答|測定員|測定スタッフ|オペレーター|サポート|窓口",
            r"|レポート|報告書|測定結果|この会社|このサービス",
        ))
    });
    let their_side = their_side();
    let weak_us = WEAK_US.get_or_init(|| {
        compile(concat!(
            r"スタッフ|担当|対応|サービス|予約|料金|請求|説明|回答|返事|返信|案内|問い合わせ",
            r"|お金|費用|プラン|測定",
        ))
    });
    if strong_us.is_match(sentence) {
        Target::Us
    } else if their_side.is_match(sentence) {
        Target::TheirSide
    } else if weak_us.is_match(sentence) {
        Target::Us
    } else {
        Target::Unknown
    }
}

/// The neighbour, the landlord, the customer's own firm, the noise itself.
fn their_side() -> &'static Regex {
    static THEIR_SIDE: OnceLock<Regex> = OnceLock::new();
    THEIR_SIDE.get_or_init(|| {
        compile(concat!(
            r"管理会社|管理人|大家|オーナー|不動産|隣|上の階|下の階|上階|階下|上の人|下の人",
            r"|上の部屋|下の部屋|上の住|下の住|住人|住民|入居者|近所|相手|警察|役所|理事|管理組合|家主",
            r"|弊社|当社|我が社|わが社",
            r"|うるさ|騒音|足音|物音|音が|音で|音に|騒ぎ|響|振動|眠れ|寝られ|工事",
        ))
    })
}

/// The message mentions the neighbour, the landlord or the noise itself (quoted words
/// included): what a conversation about the customer's noise problem sounds like.
pub fn mentions_their_side(text: &str) -> bool {
    their_side().is_match(&NormalizedText::new(text).folded)
}

/// Some sentence of the message, quoted speech removed, is about us.
fn aimed_at_us(text: &NormalizedText) -> bool {
    text.sentences().into_iter().any(|s| {
        let unquoted = without_quotes(&text.folded[s]);
        target_of(&unquoted) == Target::Us
    })
}

/// The text with 「…」『…』 and "…" spans removed (someone else's words).
fn without_quotes(sentence: &str) -> String {
    let mut out = String::with_capacity(sentence.len());
    let mut depth = 0usize;
    for c in sentence.chars() {
        match c {
            '「' | '『' | '“' => depth += 1,
            '」' | '』' | '”' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The message is about the neighbour (or the landlord, the customer's own side, the noise)
/// rather than us: it says so and names nothing of ours, or it names nobody in a conversation
/// that has been about the neighbour and not about us (「上の階が毎晩うるさい」→「もう限界
/// です」).
pub fn about_their_side(text: &str, previous_texts: &[String]) -> bool {
    about_their_side_in_context(&NormalizedText::new(text), previous_texts)
}

fn about_their_side_in_context(text: &NormalizedText, previous_texts: &[String]) -> bool {
    about_their_side_only(text)
        || (!aimed_at_us(text)
            && previous_texts
                .iter()
                .rev()
                .take(3)
                .any(|t| about_their_side_only(&NormalizedText::new(t)))
            && !previous_texts
                .iter()
                .rev()
                .take(3)
                .any(|t| aimed_at_us(&NormalizedText::new(t))))
}

/// The message is about the neighbour's noise (or the customer's own side) and names nothing
/// of ours, so a high anger reading more likely reflects anger at them than at us.
fn about_their_side_only(text: &NormalizedText) -> bool {
    // Quoted words count here: 「そっちこそうるさい」と言われた is about the neighbour.
    let mentions_their_side = text.sentences().into_iter().any(|s| {
        target_of(&without_quotes(&text.folded[s.clone()])) == Target::TheirSide
            || their_side().is_match(&text.folded[s])
    });
    mentions_their_side && !aimed_at_us(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(label: SentimentLabel, p: f32) -> SentimentReading {
        let mut probabilities = [0.0; 4];
        probabilities[label.index()] = p;
        let rest = (1.0 - p) / 3.0;
        for (i, slot) in probabilities.iter_mut().enumerate() {
            if i != label.index() {
                *slot = rest;
            }
        }
        SentimentReading {
            label,
            score: p,
            probabilities,
        }
    }

    #[test]
    fn folding_keeps_byte_offsets() {
        let text = NormalizedText::new("ｷｬﾝｾﾙしたい ＡＩ");
        assert_eq!(text.display, "キャンセルしたい AI");
        assert_eq!(text.folded, "きゃんせるしたい ai");
        assert_eq!(text.display.len(), text.folded.len());
    }

    #[test]
    fn width_and_kana_variants_match_alike() {
        for text in [
            "ｷｬﾝｾﾙしたいです",
            "キャンセルしたいです",
            "きゃんせるしたいです",
        ] {
            assert_eq!(
                rule_reason(text).map(|(r, _)| r),
                Some(EscalationReason::RefundOrCancel),
                "{text}"
            );
        }
    }

    #[test]
    fn matched_phrase_is_the_customers_spelling() {
        let (reason, matched) = rule_reason("オペレーターと話したいです").expect("escalates");
        assert_eq!(reason, EscalationReason::CustomerRequest);
        assert_eq!(matched, "オペレーターと話");
    }

    #[test]
    fn negation_reads_only_its_own_clause() {
        assert!(negated_after("には相談したくない"));
        assert!(negated_after("は求めていません"));
        assert!(!negated_after("しましたが解決しません"));
        assert!(!negated_after("ではないですか"));
        assert!(!negated_after("するしかないと思っています"));
    }

    #[test]
    fn targets() {
        assert_eq!(target_of("管理会社の対応が悪い"), Target::TheirSide);
        assert_eq!(target_of("弊社の対応が遅れました"), Target::TheirSide);
        assert_eq!(target_of("御社の対応が悪い"), Target::Us);
        assert_eq!(target_of("対応が悪い"), Target::Us);
        assert_eq!(target_of("ありえない"), Target::Unknown);
    }

    #[test]
    fn reasons_parse_and_print_their_serde_names() {
        for reason in EscalationReason::BY_PRIORITY {
            let json = serde_json::to_string(&reason).expect("serialises");
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            assert_eq!(reason.as_str().parse::<EscalationReason>(), Ok(reason));
        }
        assert!("anger".parse::<EscalationReason>().is_err());
    }

    #[test]
    fn hub_hook_passes_every_signal_through() {
        use crate::hub::{EscalationCheck, EscalationInput};
        let policy = EscalationPolicy::default();
        let input = EscalationInput {
            text: "よろしくお願いします",
            sentiment: None,
            recent_sentiments: &[],
            unresolved_streak: 3,
            tool_request: None,
            intent: None,
            previous_texts: &[],
            awaiting_consent: false,
        };
        let (reason, detail) = policy.check(&input).expect("escalates");
        assert_eq!(reason, EscalationReason::Unresolved);
        assert!(detail.contains('3'));
        let calm = EscalationInput {
            unresolved_streak: 0,
            ..input
        };
        assert_eq!(policy.check(&calm), None);
    }

    #[test]
    fn priority_orders_candidates() {
        let policy = EscalationPolicy::default();
        let angry = reading(SentimentLabel::Anger, 0.95);
        let decision = policy
            .assess(&TurnSignals {
                text: "弁護士に相談します",
                sentiment: Some(&angry),
                unresolved_streak: 5,
                tool_request: Some((EscalationReason::CustomerRequest, String::new())),
                intent: None,
                ..Default::default()
            })
            .expect("escalates");
        assert_eq!(decision.reason, EscalationReason::Legal);
    }

    #[test]
    fn saying_it_did_not_help_is_read_in_several_registers() {
        for text in [
            "すみません、今の説明ではよくわかりませんでした",
            "うーん、読んでもピンときません",
            "やっぱり理解できないです",
            "全然解決しません",
            "ｲﾏｲﾁ ﾜｶﾗﾅｲ",
            "Sorry, that doesn't help. I still don't understand.",
        ] {
            assert!(says_unresolved(text), "{text}");
        }
        for text in [
            "ありがとうございます、よくわかりました",
            "測定は何時間ですか",
            "Thanks, that helps",
        ] {
            assert!(!says_unresolved(text), "{text}");
        }
    }

    #[test]
    fn quoted_words_are_not_the_target_of_anger() {
        let quoted =
            NormalizedText::new("直接お願いしに行ったら「そっちこそうるさい」って言い返されました");
        assert!(!aimed_at_us(&quoted));
        assert!(aimed_at_us(&NormalizedText::new(
            "そちらの測定、全然役に立たなかった"
        )));
        assert!(!aimed_at_us(&NormalizedText::new(
            "それで具体的に何がわかるんですか？"
        )));
    }

    #[test]
    fn a_clarification_is_not_anger_at_us() {
        // Issue 13's example: a one-line correction was handed to a person.
        let policy = EscalationPolicy::default();
        let furious = reading(SentimentLabel::Anger, 0.99);
        for text in [
            "いえ、受け取り方ではなくて、測定してから何日くらいで届くのかを聞いているんです",
            "いや、料金じゃなくて、空いている日を聞いてるんです",
            "No, that's not what I asked. I was asking about the report.",
        ] {
            let signals = TurnSignals {
                text,
                sentiment: Some(&furious),
                ..Default::default()
            };
            assert_eq!(policy.assess(&signals), None, "{text}");
        }
    }
}
