//! One plan per turn, from what the message asks for (the intent model), what it names (the
//! grammars of `nlu/`: dates and times, plans, accounts) and where the conversation stands
//! (a write proposed and waiting for consent).
//!
//! The plan decides how the reply is made (docs/architecture.md, "A turn"): a fact question
//! gets the fact from a tool's text, a recommendation only when one is asked for, a
//! confident FAQ match its answer; a write tool (booking, cancellation) is only ever
//! *proposed* until the customer consents; the model writes only where nothing structured
//! answers. Planning is pure: no I/O, so every rule is unit-tested.

pub mod facts;
pub mod intents;

use chrono::{DateTime, FixedOffset};
use kizuna_nlu::asks::{time_question, TimeQuestion};
use kizuna_nlu::intent::Intent;
use kizuna_nlu::plans::{plans_mentioned, PlanRef};
use kizuna_nlu::when::{parse_when, requested_start, DaySet, When};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use unicode_normalization::UnicodeNormalization;

use crate::escalation::EscalationReason;
use crate::identity::{Identity, Role};
pub use facts::NoiseFacts;

/// A tool call decided by the planner.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCall {
    pub name: &'static str,
    pub arguments: Value,
}

impl PlannedCall {
    fn new(name: &'static str, arguments: Value) -> Self {
        Self { name, arguments }
    }
}

/// A button under a reply: `label` is shown, `text` is sent as the customer's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickReply {
    pub label: String,
    pub text: String,
}

impl QuickReply {
    pub fn new(label: &str, text: &str) -> Self {
        Self {
            label: label.to_string(),
            text: text.to_string(),
        }
    }
}

/// A write the agent proposed and the customer has not yet consented to. It is stored with
/// the reply that proposed it, so consent in the next message (on any replica, after a
/// restart) runs exactly what was shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The write tool.
    pub tool: String,
    /// Its arguments, exactly as they will run.
    pub arguments: Value,
    /// What the customer was shown and consents to.
    pub summary: String,
    /// When it was proposed (ms since the epoch); consent after [`PROPOSAL_TTL_MS`] is stale.
    pub created_at_ms: i64,
}

/// Consent older than this is not taken: the slot may be gone and the customer may have
/// forgotten what they were asked.
pub const PROPOSAL_TTL_MS: i64 = 30 * 60 * 1000;

/// The buttons under a proposal.
pub fn consent_buttons() -> Vec<QuickReply> {
    vec![
        QuickReply::new("はい、お願いします", "はい、お願いします"),
        QuickReply::new("いいえ、やめておきます", "いいえ、やめておきます"),
    ]
}

/// How the reply of a turn is made.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnPlan {
    /// A fixed reply: no tool, no model (greetings, out-of-scope, clarifying questions).
    Say {
        text: String,
        quick_replies: Vec<QuickReply>,
    },
    /// Read tools; the reply is their texts, after `lead` when given.
    Tools {
        calls: Vec<PlannedCall>,
        lead: Option<String>,
    },
    /// Preview a write and ask for consent; when the preview says it cannot be done,
    /// `otherwise` runs instead (e.g. the nearest free slots).
    Propose {
        call: PlannedCall,
        otherwise: Option<PlannedCall>,
    },
    /// Look for free slots; when exactly one fits what the customer asked, propose booking
    /// it (`booking` holds the plan and options), else list them after `lead`.
    FindSlot {
        availability: PlannedCall,
        booking: Value,
        lead: Option<String>,
    },
    /// The customer consented: run the proposed write.
    Execute(Proposal),
    /// Show the pending proposal again (it answers the question asked about it, e.g. when
    /// the measurement ends) and keep it awaiting consent.
    Restate(Proposal),
    /// The FAQ entry that answers the question.
    Faq,
    /// The model writes, from the retrieved passages (trimmed) and these read tools' texts.
    Model { calls: Vec<PlannedCall> },
    /// Hand the conversation to a person.
    Escalate {
        reason: EscalationReason,
        detail: String,
    },
}

/// Thresholds of the planner (`[planner]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerConfig {
    /// The intent model's (renormalised) probability at or above which its label is acted on;
    /// below it the turn is answered from the FAQ, the model or a clarifying question.
    pub intent_threshold: f32,
    /// Consent (`affirm`) is taken at or above this probability, or when the message is the
    /// consent button's own text.
    pub affirm_threshold: f32,
    /// A request for a person (`human_request`) escalates at or above this probability, when
    /// the escalation rules did not already.
    pub human_request_threshold: f32,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            intent_threshold: 0.5,
            affirm_threshold: 0.6,
            human_request_threshold: 0.8,
        }
    }
}

/// What the FAQ search found for the message, as the planner needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaqSignal {
    /// The best FAQ clears the direct-answer bar on its own (very confident).
    pub confident: bool,
    /// The best FAQ is good enough to answer a message the intent model reads as `faq`.
    pub answers_faq_intent: bool,
}

/// Everything the planner reads.
pub struct PlanInput<'a> {
    pub identity: &'a Identity,
    pub now: DateTime<FixedOffset>,
    /// The message, as written.
    pub text: &'a str,
    /// The caller's earlier messages in this conversation, oldest first.
    pub previous_user: &'a [&'a str],
    /// The intent and its probability among the labels this caller may have.
    pub intent: Option<(Intent, f32)>,
    /// A write awaiting consent, proposed by the previous reply.
    pub pending: Option<&'a Proposal>,
    /// Account ids the message names (by id or company name).
    pub accounts: &'a [String],
    /// The intent of the caller's previous message, as read then.
    pub previous_intent: Option<(Intent, f32)>,
    /// The intent model's probability of `affirm` and `book` together.
    pub consent_probability: Option<f32>,
    /// Account ids the caller's latest earlier message naming any named: a manager's
    /// follow-up (「じゃあフォローのメール案を作って」) is about the account under discussion.
    pub earlier_accounts: &'a [String],
    pub faq: Option<FaqSignal>,
    /// Whether retrieval found any passage above its threshold.
    pub has_context: bool,
    /// Tools this agent has.
    pub available: &'a dyn Fn(&str) -> bool,
    pub config: &'a PlannerConfig,
}

impl PlanInput<'_> {
    fn intent(&self) -> Option<Intent> {
        self.intent
            .filter(|(_, p)| *p >= self.config.intent_threshold)
            .map(|(i, _)| i)
    }

    fn has(&self, tool: &str) -> bool {
        (self.available)(tool)
    }

    fn normalized(&self) -> String {
        self.text.nfkc().collect()
    }
}

pub const GREETING: &str = "こんにちは。ZENBUのサポートです。騒音のお悩み、測定プランや料金、ご予約について、お気軽にご相談ください。";
pub const THANKS: &str =
    "どういたしまして。ほかにもご不明な点があれば、いつでもお気軽にお知らせください。";
pub const GOODBYE: &str =
    "ご利用ありがとうございました。またお困りのことがあれば、いつでもご相談ください。";
pub const ABOUT_BOT: &str = "こちらはZENBUのAIサポートです。料金・プランのご案内や測定のご予約をお手伝いします。担当者との会話をご希望の場合は、その旨お知らせください。";
pub const OUT_OF_SCOPE: &str = "申し訳ございません。こちらでは、ZENBUの騒音測定サービス（料金・プラン、測定のご予約、レポートなど）に関するご相談を承っております。騒音のことでお困りでしたら、お気軽にお聞かせください。";
pub const CLARIFY: &str = "ご質問の内容を確認させてください。次のどれについてのご相談でしょうか？";
pub const NOTHING_PENDING: &str =
    "承知しました。ほかにお手伝いできることがあれば、お気軽にお知らせください。";
pub const DECLINED: &str = "承知しました。ご予約などの手続きは行っておりません。別の日時をお探しの場合や、ほかにご不明な点があればお知らせください。";
pub const WHICH_ACCOUNT: &str =
    "どのアカウントについてお調べしますか？顧客ID（例: B-2003）か会社名でお知らせください。";
pub const BOOKING_NEEDS_SLOT: &str =
    "ご予約ですね。ご案内できる日時からお選びください。ご希望の日時をお知らせいただいても構いません。";
pub const RESCHEDULE: &str = "日程の変更ですね。新しいご希望の日時をお選びください。変更を確定する前に、内容をご確認いただきます。";

fn clarify_buttons() -> Vec<QuickReply> {
    vec![
        QuickReply::new("料金・プランについて", "料金とプランについて教えてください"),
        QuickReply::new("測定の予約について", "測定の予約をしたいです"),
        QuickReply::new("騒音の相談", "騒音のことで相談したいです"),
    ]
}

/// The plan for one turn.
pub fn plan_turn(input: &PlanInput<'_>) -> TurnPlan {
    if let Some(pending) = input.pending {
        if is_consent(input, pending) {
            return TurnPlan::Execute(pending.clone());
        }
        if input.intent() == Some(Intent::Deny) {
            return say(DECLINED);
        }
        // 「終わるのは何時？」 about a proposed booking: its summary shows the end.
        if pending.tool == "book_measurement"
            && time_question(input.text).is_some()
            && requested_slot(input).is_none()
        {
            return TurnPlan::Restate(pending.clone());
        }
    }
    if input.identity.role != Role::Manager {
        if let Some(plan) = time_answer(input).or_else(|| plan_correction(input)) {
            return plan;
        }
    }
    let Some(intent) = input.intent() else {
        // A message that names a future day or slot but whose intent is unclear
        // (「土曜の朝に来てもらえますか？スタンダードで」) is about scheduling: look it up (a
        // concrete slot is proposed, never booked).
        if input.intent.is_some() && input.identity.role != Role::Manager && names_future_day(input)
        {
            return plan_availability(input);
        }
        if input.identity.role == Role::Manager {
            return manager_unsure(input);
        }
        return unsure(input);
    };
    if intent.is_manager_only() {
        if input.identity.role == Role::Manager {
            return plan_manager(input, intent);
        }
        // Never for customers (the caller masks these labels); be safe anyway.
        return unsure(input);
    }
    // Staff asking a customer's kind of question: the facts (prices, plans, slots) are the
    // same for them, but the FAQ and the customer flows (booking, cancellation, handover)
    // are written for customers.
    if input.identity.role == Role::Manager
        && !matches!(
            intent,
            Intent::PlanPrice
                | Intent::PlanCompare
                | Intent::PlanRecommend
                | Intent::Availability
                | Intent::Greeting
        )
    {
        return manager_unsure(input);
    }
    plan_customer(input, intent)
}

/// Whether a proposal still awaits consent after this plan's reply: a side question
/// (the FAQ, a fact, the model) leaves it pending; a new proposal, other slots, consent,
/// refusal or a handover end it.
pub fn keeps_pending(plan: &TurnPlan) -> bool {
    match plan {
        TurnPlan::Faq | TurnPlan::Model { .. } | TurnPlan::Restate(_) => true,
        TurnPlan::Tools { calls, .. } => calls.iter().all(|c| c.name != "check_availability"),
        TurnPlan::Say { text, .. } => text != DECLINED && text != NOTHING_PENDING,
        TurnPlan::Propose { .. }
        | TurnPlan::FindSlot { .. }
        | TurnPlan::Execute(_)
        | TurnPlan::Escalate { .. } => false,
    }
}

/// A question about how long a measurement takes or when it ends (「21時開始だと何時に
/// 終わりますか」), answered from the catalogue with the start it names. A request for
/// one concrete slot is not: its proposal shows the end.
fn time_answer(input: &PlanInput<'_>) -> Option<TurnPlan> {
    let question = time_question(input.text)?;
    let answerable = match input.intent() {
        None => true,
        Some(intent) => !matches!(
            intent,
            Intent::NoiseReport
                | Intent::Cancel
                | Intent::HumanRequest
                | Intent::MyAccount
                | Intent::OptOut
                | Intent::OptIn
        ),
    };
    if !answerable
        || !input.has("plan_info")
        || (may_book(input) && requested_slot(input).is_some())
    {
        return None;
    }
    Some(duration_plan(
        input,
        named_plans(input),
        question,
        input.text,
    ))
}

/// `plan_info` on durations; for an end-time question, from the start `text` names.
fn duration_plan(
    input: &PlanInput<'_>,
    plans: Vec<&'static str>,
    question: TimeQuestion,
    text: &str,
) -> TurnPlan {
    let mut args = json!({"plans": plans, "aspect": "duration"});
    if question == TimeQuestion::EndTime {
        let when = parse_when(text, input.now);
        let start = match when.time {
            Some(kizuna_nlu::when::TimeSpec::At(at)) => Some(at),
            _ => requested_start(text, input.now),
        };
        if let Some(start) = start {
            args["start"] = json!(format!("{:02}:{:02}", start / 60, start % 60));
        }
    }
    TurnPlan::Tools {
        calls: vec![PlannedCall::new("plan_info", args)],
        lead: None,
    }
}

/// A correction that names another plan and asks nothing new (「あ、スタンダードのほう
/// でした」 "sorry, I meant the premium plan"): the previous question again, for that plan.
fn plan_correction(input: &PlanInput<'_>) -> Option<TurnPlan> {
    let plans = named_plans(input);
    let previous = *input.previous_user.last()?;
    if plans.is_empty() || !parse_when(input.text, input.now).is_empty() {
        return None;
    }
    // The message's own label must not be a request of its own. A statement (no question)
    // that follows a question about time is read as narrowing that question, whatever
    // plan-ish label it got (「ライトじゃなくてスタンダードの場合です」 reads as a comparison).
    let statement = !is_question(input.text);
    let after_time_question = time_question(previous).is_some();
    let asks_own = input.intent().is_some_and(|i| {
        let weak = matches!(
            i,
            Intent::Greeting | Intent::Affirm | Intent::Deny | Intent::OutOfScope
        );
        // (`book` for "Sorry, I meant the premium plan": the head's misreading of English
        // corrections; a message that says 予約 / book is a booking.)
        let says_booking = {
            let t = input.normalized().to_lowercase();
            ["予約", "申し込", "申込", "book", "reserve"]
                .iter()
                .any(|w| t.contains(w))
        };
        let narrowing = statement
            && after_time_question
            && (matches!(i, Intent::PlanCompare | Intent::PlanPrice)
                || (i == Intent::Book && !says_booking));
        !(weak || narrowing)
    });
    // A correction is short; a longer message says something of its own.
    if asks_own || input.text.chars().count() > 60 || !input.has("plan_info") {
        return None;
    }
    if let Some(question) = time_question(previous) {
        return Some(duration_plan(input, plans, question, previous));
    }
    let aspect = match input.previous_intent {
        Some((Intent::PlanPrice, p)) if p >= input.config.intent_threshold => "price",
        Some((Intent::PlanCompare, p)) if p >= input.config.intent_threshold => "compare",
        _ => return None,
    };
    Some(TurnPlan::Tools {
        calls: vec![PlannedCall::new(
            "plan_info",
            json!({"plans": plans, "aspect": aspect}),
        )],
        lead: None,
    })
}

/// Whether the message is a question (a question mark, or a sentence-final か / "?").
fn is_question(text: &str) -> bool {
    let text: String = text.nfkc().collect();
    let text = text.trim_end_matches(|c: char| c.is_whitespace() || "。.!！".contains(c));
    text.contains('?') || text.ends_with('か') || text.ends_with("かな")
}

/// Consent to `pending`: the affirm intent, the button's own text, or a booking request
/// that names nothing new ("それで予約してください").
fn is_consent(input: &PlanInput<'_>, pending: &Proposal) -> bool {
    let age = input.now.timestamp_millis() - pending.created_at_ms;
    if !(0..=PROPOSAL_TTL_MS).contains(&age) {
        return false;
    }
    let text = input.normalized();
    let text = text.trim();
    if consent_buttons()
        .first()
        .is_some_and(|b| b.text == text || b.label == text)
    {
        return true;
    }
    let names_nothing_new =
        || parse_when(text, input.now).is_empty() && plans_mentioned(text).is_empty();
    match input.intent {
        Some((Intent::Affirm, p)) if p >= input.config.affirm_threshold => true,
        Some((Intent::Book, p)) if p >= input.config.intent_threshold => names_nothing_new(),
        // Split between the two (「了解です。ではその内容で予約を確定してください」): together
        // they must clear the consent bar.
        Some((Intent::Affirm | Intent::Book, _)) => {
            input
                .consent_probability
                .is_some_and(|p| p >= input.config.affirm_threshold)
                && names_nothing_new()
        }
        _ => false,
    }
}

fn say(text: &str) -> TurnPlan {
    TurnPlan::Say {
        text: text.to_string(),
        quick_replies: Vec::new(),
    }
}

/// No label to act on: the FAQ if one answers, the model if passages were found, else ask.
/// Without an intent model at all (none configured, or it failed), the model writes.
fn unsure(input: &PlanInput<'_>) -> TurnPlan {
    if input.intent.is_none() {
        return match input.faq {
            Some(f) if f.confident => TurnPlan::Faq,
            _ => TurnPlan::Model { calls: Vec::new() },
        };
    }
    match input.faq {
        Some(f) if f.confident || f.answers_faq_intent => TurnPlan::Faq,
        _ if input.has_context => TurnPlan::Model { calls: Vec::new() },
        _ => TurnPlan::Say {
            text: CLARIFY.to_string(),
            quick_replies: clarify_buttons(),
        },
    }
}

fn plan_customer(input: &PlanInput<'_>, intent: Intent) -> TurnPlan {
    let signed_in = input.identity.role == Role::Customer;
    // A very confident FAQ match answers what these labels would answer less well: a
    // question about one plan's feature (「スタンダードのレポートは裁判で使えますか」), the
    // price of a B2B add-on, whether a CSM is assigned, a receipt, a report's numbers.
    // Labels whose own answer is weak (a generic upsell, "out of scope", a handover for a
    // question about whether a CSM is assigned) give way to a good FAQ match; the others
    // only to a very confident one. Explicit requests for a person are caught by the
    // escalation rules before planning.
    let faq_confident = input.faq.is_some_and(|f| f.confident);
    let faq_answers = input
        .faq
        .is_some_and(|f| f.confident || f.answers_faq_intent);
    // (`affirm` / `deny` reach here only with nothing pending: a misread question.)
    let weak_label = matches!(
        intent,
        Intent::UpsellInterest
            | Intent::HumanRequest
            | Intent::OutOfScope
            | Intent::Affirm
            | Intent::Deny
    );
    // A scheduling label for a message that names no day or time, read with less than
    // near-certainty, is more likely a question about the day itself (「測定の当日は家に
    // いないといけませんか」): the FAQ answers it when it can.
    let scheduling_without_when = matches!(
        intent,
        Intent::Availability | Intent::Book | Intent::Reschedule
    ) && input.intent.is_some_and(|(_, p)| p < 0.9)
        && contextual_when(input).is_empty();
    if ((weak_label || scheduling_without_when) && faq_answers)
        || (faq_confident && matches!(intent, Intent::PlanCompare | Intent::MyAccount))
    {
        return TurnPlan::Faq;
    }
    match intent {
        Intent::PlanPrice | Intent::PlanCompare => {
            if !input.has("plan_info") {
                return unsure(input);
            }
            let named = named_plans(input);
            let aspect = if intent == Intent::PlanPrice {
                "price"
            } else {
                "compare"
            };
            TurnPlan::Tools {
                calls: vec![PlannedCall::new(
                    "plan_info",
                    json!({"plans": named, "aspect": aspect}),
                )],
                lead: None,
            }
        }
        Intent::PlanRecommend => {
            if !input.has("recommend_plan") {
                return unsure(input);
            }
            let facts = noise_facts(input);
            TurnPlan::Tools {
                calls: vec![PlannedCall::new("recommend_plan", facts.plan_arguments())],
                lead: None,
            }
        }
        Intent::Availability => plan_availability(input),
        Intent::Book => plan_booking(input),
        // Changing a slot that is only proposed (not booked yet) is a new proposal.
        Intent::Reschedule
            if input.pending.is_some_and(|p| p.tool == "book_measurement")
                && requested_slot(input).is_some() =>
        {
            plan_booking(input)
        }
        Intent::Reschedule => match availability_call(input) {
            Some(call) => TurnPlan::Tools {
                calls: vec![call],
                lead: Some(RESCHEDULE.to_string()),
            },
            None => unsure(input),
        },
        Intent::Cancel => match booking_number(input.text) {
            Some(id) if signed_in && input.has("cancel_booking") => TurnPlan::Propose {
                call: PlannedCall::new("cancel_booking", json!({"booking_id": id})),
                otherwise: None,
            },
            _ => unsure(input),
        },
        Intent::MyAccount => {
            if signed_in && input.has("my_account") {
                TurnPlan::Tools {
                    calls: vec![PlannedCall::new("my_account", json!({}))],
                    lead: None,
                }
            } else {
                unsure(input)
            }
        }
        Intent::Faq => match input.faq {
            Some(f) if f.confident || f.answers_faq_intent => TurnPlan::Faq,
            // A question no FAQ answers that asks for one concrete slot (「今度の日曜、6日の
            // 午後1時に測定してもらえますか」) is checked against the calendar, not left to
            // the model, which has not seen it.
            _ if requested_slot(input).is_some() => plan_availability(input),
            _ => TurnPlan::Model { calls: Vec::new() },
        },
        Intent::NoiseReport if in_noise_conversation(input) => noise_follow_up(input),
        Intent::NoiseReport => say(&noise_reply(&noise_facts(input))),
        // A "greeting" with no greeting in it, or "out of scope", in a conversation about the
        // customer's noise is more of their story (「年寄りの一人暮らしで心細い」): answered
        // as such, not with a welcome or a refusal.
        Intent::Greeting | Intent::OutOfScope
            if in_noise_conversation(input)
                && (intent == Intent::OutOfScope
                    || greeting_reply(&input.normalized()) == GREETING) =>
        {
            noise_follow_up(input)
        }
        Intent::Greeting => say(greeting_reply(&input.normalized())),
        Intent::HumanRequest => match input.intent {
            Some((_, p)) if p >= input.config.human_request_threshold => TurnPlan::Escalate {
                reason: EscalationReason::CustomerRequest,
                detail: "担当者との会話を希望（意図モデル）".to_string(),
            },
            _ => unsure(input),
        },
        // Preferences are answered by the hub before planning; reaching here means the rules
        // did not recognise the request, so the FAQ on notifications answers it.
        Intent::OptOut | Intent::OptIn => unsure(input),
        Intent::Affirm | Intent::Deny => say(NOTHING_PENDING),
        Intent::UpsellInterest => {
            if signed_in && input.has("recommend_upsell") {
                TurnPlan::Tools {
                    calls: vec![PlannedCall::new("recommend_upsell", json!({}))],
                    lead: None,
                }
            } else if input.has("plan_info") {
                TurnPlan::Tools {
                    calls: vec![PlannedCall::new(
                        "plan_info",
                        json!({"plans": [], "aspect": "compare"}),
                    )],
                    lead: None,
                }
            } else {
                unsure(input)
            }
        }
        Intent::OutOfScope => say(OUT_OF_SCOPE),
        _ => unsure(input),
    }
}

/// Plans named in this message (none: every plan).
fn named_plans(input: &PlanInput<'_>) -> Vec<&'static str> {
    plans_mentioned(input.text)
        .into_iter()
        .map(|p| p.id())
        .collect()
}

fn noise_facts(input: &PlanInput<'_>) -> NoiseFacts {
    NoiseFacts::from_messages(
        input.previous_user.iter().copied().chain([input.text]),
        input.now,
    )
}

/// What the message says about when, read in the conversation: a time without a day
/// (「同じ日の夜7時は？」「じゃあ10時は？」) takes the day the customer named last, and
/// 翌日 / 前日 / "the next day" are counted from it.
fn contextual_when(input: &PlanInput<'_>) -> When {
    let mut when = parse_when(input.text, input.now);
    let last_day = || {
        input.previous_user.iter().rev().find_map(|m| {
            let dates = parse_when(m, input.now).days?.dates()?;
            match dates.as_slice() {
                [day] => Some(*day),
                _ => None,
            }
        })
    };
    let text = input.normalized().to_lowercase();
    let shift = if ["翌日", "次の日", "next day", "day after"]
        .iter()
        .any(|w| text.contains(w))
    {
        Some(1)
    } else if text.contains("前日") || text.contains("day before") {
        Some(-1)
    } else {
        None
    };
    match (shift, last_day()) {
        (Some(days), Some(day)) => {
            when.days = Some(DaySet::List(vec![day + chrono::Duration::days(days)]));
        }
        (None, Some(day))
            if when.days.is_none() && when.weekdays.is_none() && when.time.is_some() =>
        {
            when.days = Some(DaySet::List(vec![day]));
        }
        _ => {}
    }
    when
}

/// The message (in context) names days, all of them today or later.
fn names_future_day(input: &PlanInput<'_>) -> bool {
    let today = input.now.date_naive();
    match contextual_when(input).days {
        Some(DaySet::List(days)) => !days.is_empty() && days.iter().all(|d| *d >= today),
        Some(DaySet::Range { from, to }) => to.unwrap_or(from) >= today,
        None => false,
    }
}

/// An availability question: a concrete slot is checked and proposed for booking (the
/// customer still has to say yes); anything vaguer lists the free slots that fit.
fn plan_availability(input: &PlanInput<'_>) -> TurnPlan {
    let exact = requested_slot(input).is_some();
    if exact && may_book(input) {
        return plan_booking(input);
    }
    find_slot(input, None)
}

/// The one slot the message (in context) asks for: a day and a time (「25日の夜7時」), or a
/// day and the start of an open window (「土曜の朝10時から」, `requested_start`).
fn requested_slot(input: &PlanInput<'_>) -> Option<DateTime<FixedOffset>> {
    let when = contextual_when(input);
    if let Some(slot) = when.exact(input.now) {
        return Some(slot);
    }
    let start = requested_start(input.text, input.now)?;
    let dates = when.days.as_ref()?.dates()?;
    let [date] = dates.as_slice() else {
        return None;
    };
    let naive = date.and_hms_opt(0, 0, 0)? + chrono::Duration::minutes(i64::from(start));
    let slot = naive.and_local_timezone(input.now.timezone()).single()?;
    (slot > input.now && when.accepts(slot)).then_some(slot)
}

fn may_book(input: &PlanInput<'_>) -> bool {
    input.identity.role == Role::Customer && input.has("book_measurement")
}

/// Free slots that fit what was said; a signed-in customer with exactly one fitting slot is
/// offered it for booking (still only a proposal).
fn find_slot(input: &PlanInput<'_>, lead: Option<String>) -> TurnPlan {
    match availability_call(input) {
        Some(call) if may_book(input) => TurnPlan::FindSlot {
            availability: call,
            booking: booking_options(input),
            lead,
        },
        Some(call) => TurnPlan::Tools {
            calls: vec![call],
            lead,
        },
        None => unsure(input),
    }
}

/// The plan and options of a booking, from what the customer said in this conversation.
fn booking_options(input: &PlanInput<'_>) -> Value {
    let mut args = json!({"plan": chosen_plan(input)});
    let mediation = std::iter::once(&input.text)
        .chain(input.previous_user.iter())
        .any(|t| plans_mentioned(t).contains(&PlanRef::Mediation) || t.contains("仲裁"));
    if mediation {
        args["mediation"] = json!(true);
    }
    args
}

/// `check_availability` with what the message says about when (days, weekdays, a time or
/// window, exclusions), and the noise's time of day as a preference when it says nothing.
fn availability_call(input: &PlanInput<'_>) -> Option<PlannedCall> {
    if !input.has("check_availability") {
        return None;
    }
    let when = contextual_when(input);
    let mut args = Map::new();
    if !when.is_empty() {
        args.insert("when".into(), serde_json::to_value(&when).ok()?);
    }
    if when.time.is_none() {
        if let Some(time) = noise_facts(input).time_of_day {
            let preferred = if matches!(time, "late_night" | "night") {
                "evening"
            } else {
                "daytime"
            };
            args.insert("preferred_time".into(), json!(preferred));
        }
    }
    Some(PlannedCall::new("check_availability", Value::Object(args)))
}

/// A booking request: a concrete slot is proposed for consent (never booked from a parse);
/// without one, the free slots that fit what was said are shown.
fn plan_booking(input: &PlanInput<'_>) -> TurnPlan {
    if let (Some(slot), true) = (requested_slot(input), input.has("book_measurement")) {
        let mut args = booking_options(input);
        args["slot_start"] = json!(slot.to_rfc3339());
        let otherwise = availability_call(input);
        return TurnPlan::Propose {
            call: PlannedCall::new("book_measurement", args),
            otherwise,
        };
    }
    find_slot(input, Some(BOOKING_NEEDS_SLOT.to_string()))
}

/// The plan to book: named now, else the last one the customer named, else スタンダード (the
/// seeds' recommendation for a typical case).
fn chosen_plan(input: &PlanInput<'_>) -> &'static str {
    let measurement = |t: &str| {
        plans_mentioned(t)
            .into_iter()
            .rev()
            .find(|p| *p != PlanRef::Mediation)
            .map(|p| p.id())
    };
    measurement(input.text)
        .or_else(|| {
            input
                .previous_user
                .iter()
                .rev()
                .find_map(|m| measurement(m))
        })
        .unwrap_or("standard")
}

/// A booking number (BK-…) named in the text.
pub fn booking_number(text: &str) -> Option<String> {
    let text: String = text.nfkc().collect::<String>().to_uppercase();
    let start = text.find("BK-")?;
    let id: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (id.len() > 3).then_some(id)
}

/// What a customer describing their noise reads: understanding first, then what we still
/// need to know to recommend a plan (seed 003 §5.1).
/// The reply to more venting about the noise in a conversation already about it: the
/// first reply's empathy is not repeated word for word; what is known is used and the next
/// step offered (buttons).
fn noise_follow_up(input: &PlanInput<'_>) -> TurnPlan {
    let facts = noise_facts(input);
    let when = match facts.time_of_day {
        Some("late_night") => "深夜の音",
        Some("night") => "夜の音",
        Some("morning") => "朝の音",
        Some("daytime") => "日中の音",
        _ => "音",
    };
    // Two wordings, alternating, so a long story is not answered with the same lines.
    let text = if input.previous_user.len() % 2 == 1 {
        format!(
            "お聞かせいただきありがとうございます。つらい状況が続いているのですね。{when}がいつ、どのくらい続いているかを測定で記録に残すと、管理会社や相手の方にも客観的にお伝えできます。状況に合ったプランや、測定できる日時をご案内しましょうか？"
        )
    } else {
        "そのようなお気持ちになるのも無理はありません。ひとりで抱え込まず、まずは音の事実を数字で残すところから一緒に進めましょう。測定のデータがあれば、管理会社への相談や相手の方との話し合いが進めやすくなります。プランや日時のご案内が必要でしたら、下のボタンからどうぞ。".to_string()
    };
    TurnPlan::Say {
        text,
        quick_replies: vec![
            QuickReply::new("おすすめのプラン", "私の状況に合うプランを教えてください"),
            QuickReply::new("空いている日時", "測定に来てもらえる日時を教えてください"),
        ],
    }
}

/// The conversation so far is about the customer's noise problem.
fn in_noise_conversation(input: &PlanInput<'_>) -> bool {
    let earlier = NoiseFacts::from_messages(input.previous_user.iter().copied(), input.now);
    earlier.noise_type.is_some()
        || earlier.time_of_day.is_some()
        || input
            .previous_user
            .iter()
            .any(|m| crate::escalation::mentions_their_side(m))
}

pub fn noise_reply(facts: &NoiseFacts) -> String {
    let what = match facts.noise_type {
        Some("footsteps") => "足音などの生活音",
        Some("voices") => "話し声",
        Some("music") => "音楽やテレビの音",
        Some("pets") => "ペットの鳴き声",
        Some("construction") => "工事の音",
        Some("low_frequency") => "低い音や振動",
        _ => "騒音",
    };
    let mut reply = format!(
        "{what}でお困りとのこと、毎日続くとお体も心も休まらず、本当におつらいことと思います。"
    );
    let mut missing = Vec::new();
    if facts.time_of_day.is_none() {
        missing.push("どの時間帯に");
    }
    if facts.duration_months.is_none() {
        missing.push("いつ頃から");
    }
    if missing.is_empty() {
        reply.push_str("お聞きした状況に合った測定プランをご案内できます。よろしければ「おすすめのプランを教えて」とお送りください。");
    } else {
        reply.push_str(&format!(
            "音の状況を記録に残すことが解決への第一歩です。{}音がするか教えていただければ、状況に合った測定プランをご案内します。",
            missing.join("、")
        ));
    }
    reply
}

fn greeting_reply(text: &str) -> &'static str {
    let lower = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&["ありがと", "有難", "助かり", "thank", "thx", "感謝"]) {
        THANKS
    } else if has(&["さようなら", "失礼しま", "またね", "bye", "おやすみ"]) {
        GOODBYE
    } else if has(&["ボット", "bot", "ロボット", "ai", "人間", "自動"]) {
        ABOUT_BOT
    } else {
        GREETING
    }
}

/// A manager's message the intent model cannot place: the customer FAQ is written for
/// customers, so it is not used; an account it names is looked up (score, reasons and the
/// recommended actions), anything else goes to the model.
fn manager_unsure(input: &PlanInput<'_>) -> TurnPlan {
    match input.accounts.first() {
        Some(id) if input.has("lookup_health") => TurnPlan::Tools {
            calls: vec![PlannedCall::new(
                "lookup_health",
                json!({"customer_id": id}),
            )],
            lead: None,
        },
        _ => TurnPlan::Model { calls: Vec::new() },
    }
}

fn plan_manager(input: &PlanInput<'_>, intent: Intent) -> TurnPlan {
    // An account named now, else the one under discussion (not for lists: 「赤の会社は？」
    // after asking about B-2003 is a new question).
    let account = input
        .accounts
        .first()
        .or_else(|| input.earlier_accounts.first())
        .cloned();
    let for_account = |tool: &'static str, extra: Value| -> TurnPlan {
        let Some(id) = &account else {
            return say(WHICH_ACCOUNT);
        };
        if !input.has(tool) {
            return unsure(input);
        }
        let mut args = json!({"customer_id": id});
        if let (Some(obj), Value::Object(more)) = (args.as_object_mut(), extra) {
            obj.extend(more);
        }
        TurnPlan::Tools {
            calls: vec![PlannedCall::new(tool, args)],
            lead: None,
        }
    };
    match intent {
        Intent::MgrAtRisk => match at_risk_call(input) {
            Some(call) => TurnPlan::Tools {
                calls: vec![call],
                lead: None,
            },
            None => unsure(input),
        },
        Intent::MgrAccountHealth => for_account("lookup_health", json!({})),
        Intent::MgrFollowup => for_account(
            "generate_followup",
            json!({"purpose": followup_purpose(&input.normalized())}),
        ),
        Intent::MgrUpsell => for_account("recommend_upsell", json!({})),
        Intent::MgrSegments if input.has("segment_customers") => TurnPlan::Tools {
            calls: vec![PlannedCall::new("segment_customers", json!({}))],
            lead: None,
        },
        Intent::MgrChurn if input.has("predict_churn") => {
            let args = match input.accounts.first() {
                Some(id) => json!({"customer_id": id}),
                None => json!({}),
            };
            TurnPlan::Tools {
                calls: vec![PlannedCall::new("predict_churn", args)],
                lead: None,
            }
        }
        // Without the churn model, the health score's at-risk list is the best answer.
        Intent::MgrChurn => match at_risk_call(input) {
            Some(call) => TurnPlan::Tools {
                calls: vec![call],
                lead: None,
            },
            None => unsure(input),
        },
        Intent::MgrInsight if input.has("customer_insight") => {
            for_account("customer_insight", json!({}))
        }
        Intent::MgrInsight => for_account("lookup_health", json!({})),
        _ => unsure(input),
    }
}

/// `list_at_risk_accounts` with the filters a manager named: a colour and a renewal window.
fn at_risk_call(input: &PlanInput<'_>) -> Option<PlannedCall> {
    if !input.has("list_at_risk_accounts") {
        return None;
    }
    let text = input.normalized();
    let mut args = Map::new();
    let status = match (mentions_red(&text), mentions_yellow(&text)) {
        (true, false) => "red",
        (false, true) => "yellow",
        _ => "any",
    };
    args.insert("status".into(), json!(status));
    if let Some(days) = renewal_days(&text) {
        args.insert("renewal_within_days".into(), json!(days));
    }
    args.insert("limit".into(), json!(20));
    Some(PlannedCall::new(
        "list_at_risk_accounts",
        Value::Object(args),
    ))
}

/// An English word as a whole word ("red", not the "red" inside "required").
fn has_word(text: &str, word: &str) -> bool {
    let lower = text.to_lowercase();
    lower.match_indices(word).any(|(i, _)| {
        let before = lower[..i].chars().next_back();
        let after = lower[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

fn mentions_red(text: &str) -> bool {
    ["レッド", "赤"].iter().any(|w| text.contains(w)) || has_word(text, "red")
}

fn mentions_yellow(text: &str) -> bool {
    ["イエロー", "黄"].iter().any(|w| text.contains(w)) || has_word(text, "yellow")
}

/// "90日以内に更新", "3ヶ月以内に契約が切れる" → days; a renewal named without a window → 90
/// (the renewal window of seed 003 §5.3); 来月 → 60.
fn renewal_days(text: &str) -> Option<u32> {
    let renewal = ["更新", "契約終了", "契約が切れ", "満了", "契約期限"]
        .iter()
        .any(|w| text.contains(w))
        || has_word(text, "renewal")
        || has_word(text, "renew");
    if !renewal {
        return None;
    }
    let digits = |s: &str| -> Option<(u32, String)> {
        let start = s.find(|c: char| c.is_ascii_digit())?;
        let n: String = s[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let rest = s[start + n.len()..].trim_start().to_string();
        Some((n.parse().ok()?, rest))
    };
    let mut scan = text;
    while let Some((n, rest)) = digits(scan) {
        if rest.starts_with('日') || rest.starts_with("days") {
            return Some(n);
        }
        if ["ヶ月", "か月", "カ月", "ケ月", "ヵ月", "months", "month"]
            .iter()
            .any(|u| rest.starts_with(u))
        {
            return Some(n * 30);
        }
        let consumed = scan.len() - rest.len();
        scan = &scan[consumed.max(1)..];
    }
    if text.contains("来月") || has_word(text, "next month") {
        return Some(60);
    }
    Some(90)
}

fn followup_purpose(text: &str) -> &'static str {
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(&["更新", "契約"]) {
        "renewal_90d"
    } else if has(&["支払", "未払", "請求", "入金"]) {
        "payment_overdue"
    } else if has(&["NPS", "アンケート", "満足"]) {
        "low_nps"
    } else if has(&["利用", "使って", "使用"]) {
        "usage_drop"
    } else {
        "health_red"
    }
}

#[cfg(test)]
mod tests;
