use super::*;

fn now() -> DateTime<FixedOffset> {
    // A Saturday, like the transcripts' clock.
    DateTime::parse_from_rfc3339("2026-11-21T10:00:00+09:00").unwrap()
}

fn all(_: &str) -> bool {
    true
}

struct Case {
    identity: Identity,
    text: &'static str,
    previous: Vec<&'static str>,
    intent: Option<(Intent, f32)>,
    pending: Option<Proposal>,
    accounts: Vec<String>,
    previous_intent: Option<(Intent, f32)>,
    consent_probability: Option<f32>,
    earlier_accounts: Vec<String>,
    faq: Option<FaqSignal>,
    has_context: bool,
}

impl Case {
    fn customer(text: &'static str, intent: Intent) -> Self {
        Self {
            identity: Identity::customer("C-1001"),
            text,
            previous: Vec::new(),
            intent: Some((intent, 0.9)),
            pending: None,
            accounts: Vec::new(),
            previous_intent: None,
            consent_probability: None,
            earlier_accounts: Vec::new(),
            faq: None,
            has_context: false,
        }
    }

    fn manager(text: &'static str, intent: Intent) -> Self {
        Self {
            identity: Identity::manager("csm-1"),
            ..Self::customer(text, intent)
        }
    }

    fn plan(&self) -> TurnPlan {
        let config = PlannerConfig::default();
        plan_turn(&PlanInput {
            identity: &self.identity,
            now: now(),
            text: self.text,
            previous_user: &self.previous,
            intent: self.intent,
            pending: self.pending.as_ref(),
            accounts: &self.accounts,
            previous_intent: self.previous_intent,
            consent_probability: self.consent_probability,
            earlier_accounts: &self.earlier_accounts,
            faq: self.faq,
            has_context: self.has_context,
            available: &all,
            config: &config,
        })
    }
}

/// The one read call of a plan (a slot search counts as its availability call).
fn only_call(plan: &TurnPlan) -> &PlannedCall {
    match plan {
        TurnPlan::Tools { calls, .. } if calls.len() == 1 => &calls[0],
        TurnPlan::FindSlot { availability, .. } => availability,
        other => panic!("expected one tool call, got {other:?}"),
    }
}

#[test]
fn one_named_plans_price_is_a_fact_not_a_recommendation() {
    // Issue 13: 「スタンダードの料金は？」 ran recommend_plan and answered ライト 8,800円.
    for text in [
        "スタンダードプランの料金はいくらですか？",
        "ｽﾀﾝﾀﾞｰﾄﾞﾌﾟﾗﾝっていくら？",
        "how much is the standard plan?",
    ] {
        let plan = Case::customer(text, Intent::PlanPrice).plan();
        let call = only_call(&plan);
        assert_eq!(call.name, "plan_info", "{text}");
        assert_eq!(call.arguments["plans"], json!(["standard"]), "{text}");
        assert_eq!(call.arguments["aspect"], "price");
    }
    let table = Case::customer("料金表を見せて", Intent::PlanPrice).plan();
    assert_eq!(only_call(&table).arguments["plans"], json!([]));
}

#[test]
fn a_comparison_names_both_plans() {
    let plan = Case::customer("ライトとスタンダードの違いは？", Intent::PlanCompare).plan();
    let call = only_call(&plan);
    assert_eq!(call.name, "plan_info");
    assert_eq!(call.arguments["plans"], json!(["light", "standard"]));
    assert_eq!(call.arguments["aspect"], "compare");
}

#[test]
fn a_recommendation_only_when_asked_and_with_the_facts() {
    let mut case = Case::customer("どのプランがいいですか", Intent::PlanRecommend);
    case.previous = vec!["上の階の足音が深夜に響きます", "半年くらい続いています"];
    let plan = case.plan();
    let call = only_call(&plan);
    assert_eq!(call.name, "recommend_plan");
    assert_eq!(call.arguments["noise_type"], "footsteps");
    assert_eq!(call.arguments["time_of_day"], "late_night");
    assert_eq!(call.arguments["duration_months"], 6);
}

#[test]
fn next_saturday_morning_asks_for_saturday_morning_slots() {
    // Issue 13: "next Saturday morning" was answered with Monday slots.
    let plan = Case::customer("来週の土曜の午前中に来てもらえますか", Intent::Availability).plan();
    let call = only_call(&plan);
    assert_eq!(call.name, "check_availability");
    let when: kizuna_nlu::when::When =
        serde_json::from_value(call.arguments["when"].clone()).unwrap();
    let saturday_morning = DateTime::parse_from_rfc3339("2026-11-28T10:00:00+09:00").unwrap();
    let saturday_evening = DateTime::parse_from_rfc3339("2026-11-28T19:00:00+09:00").unwrap();
    let monday_morning = DateTime::parse_from_rfc3339("2026-11-30T10:00:00+09:00").unwrap();
    assert!(when.accepts(saturday_morning));
    assert!(!when.accepts(saturday_evening));
    assert!(!when.accepts(monday_morning));
}

#[test]
fn a_named_slot_is_proposed_never_booked() {
    // Issue 13: 「25日の夜7時」 booked 07:00 without asking.
    let plan = Case::customer("25日の夜7時でお願いします", Intent::Book).plan();
    match plan {
        TurnPlan::Propose { call, otherwise } => {
            assert_eq!(call.name, "book_measurement");
            assert_eq!(call.arguments["slot_start"], "2026-11-25T19:00:00+09:00");
            assert_eq!(call.arguments["plan"], "standard");
            assert!(otherwise.is_some());
        }
        other => panic!("expected a proposal, got {other:?}"),
    }
    let mut case = Case::customer("12月1日の13時、ライトプランで予約します", Intent::Book);
    case.previous = vec!["プレミアムも気になる"];
    match case.plan() {
        TurnPlan::Propose { call, .. } => {
            assert_eq!(call.arguments["slot_start"], "2026-12-01T13:00:00+09:00");
            assert_eq!(call.arguments["plan"], "light");
        }
        other => panic!("expected a proposal, got {other:?}"),
    }
}

#[test]
fn an_excluded_time_is_not_a_slot_to_book() {
    // Issue 13: "I work from 13:00 on the 1st, any other time please" booked the 1st at 13:00.
    for text in [
        "I work from 13:00 on the 1st, any other time please",
        "1日は13時から仕事なので、それ以外の時間で予約したいです",
    ] {
        let plan = Case::customer(text, Intent::Book).plan();
        let call = only_call(&plan);
        assert_eq!(call.name, "check_availability", "{text}");
        let when: kizuna_nlu::when::When =
            serde_json::from_value(call.arguments["when"].clone()).unwrap();
        let first_at_one = DateTime::parse_from_rfc3339("2026-12-01T13:00:00+09:00").unwrap();
        assert!(!when.accepts(first_at_one), "{text}");
    }
}

fn pending(created_at: DateTime<FixedOffset>) -> Proposal {
    Proposal {
        tool: "book_measurement".into(),
        arguments: json!({"slot_start": "2026-11-25T19:00:00+09:00", "plan": "standard"}),
        summary: "次の内容でご予約をお取りします。".into(),
        created_at_ms: created_at.timestamp_millis(),
    }
}

#[test]
fn consent_runs_exactly_the_proposal_and_nothing_else_does() {
    let proposal = pending(now() - chrono::Duration::minutes(2));
    let mut yes = Case::customer("はい、お願いします", Intent::Affirm);
    yes.pending = Some(proposal.clone());
    assert_eq!(yes.plan(), TurnPlan::Execute(proposal.clone()));

    // The button's text is consent even when the model is unsure.
    let mut button = Case::customer("はい、お願いします", Intent::Faq);
    button.intent = Some((Intent::Faq, 0.3));
    button.pending = Some(proposal.clone());
    assert_eq!(button.plan(), TurnPlan::Execute(proposal.clone()));

    let mut no = Case::customer("いいえ、やめておきます", Intent::Deny);
    no.pending = Some(proposal.clone());
    assert_eq!(no.plan(), say(DECLINED));

    // Something else entirely: the proposal lapses.
    let mut other = Case::customer("キャンセル料はかかりますか", Intent::Faq);
    other.pending = Some(proposal.clone());
    assert_ne!(other.plan(), TurnPlan::Execute(proposal.clone()));

    // A new slot while one is pending is a new proposal, not consent to the old one.
    let mut change = Case::customer("やっぱり26日の13時でお願いします", Intent::Book);
    change.pending = Some(proposal.clone());
    match change.plan() {
        TurnPlan::Propose { call, .. } => {
            assert_eq!(call.arguments["slot_start"], "2026-11-26T13:00:00+09:00")
        }
        other => panic!("expected a new proposal, got {other:?}"),
    }

    // Stale consent is not taken.
    let mut late = Case::customer("はい", Intent::Affirm);
    late.pending = Some(pending(now() - chrono::Duration::hours(2)));
    assert!(!matches!(late.plan(), TurnPlan::Execute(_)));
}

#[test]
fn affirming_with_nothing_pending_writes_nothing() {
    assert_eq!(
        Case::customer("はい", Intent::Affirm).plan(),
        say(NOTHING_PENDING)
    );
}

#[test]
fn managers_name_accounts_by_id_or_name() {
    let mut case = Case::manager("あおば不動産の状況は？", Intent::MgrAccountHealth);
    case.accounts = vec!["B-2003".into()];
    let plan = case.plan();
    let call = only_call(&plan);
    assert_eq!(call.name, "lookup_health");
    assert_eq!(call.arguments["customer_id"], "B-2003");

    let mut followup = Case::manager(
        "みどり台リアルティさんに支払いのフォローを送りたい。文面を作って",
        Intent::MgrFollowup,
    );
    followup.accounts = vec!["B-2007".into()];
    let plan = followup.plan();
    let call = only_call(&plan);
    assert_eq!(call.name, "generate_followup");
    assert_eq!(call.arguments["customer_id"], "B-2007");
    assert_eq!(call.arguments["purpose"], "payment_overdue");

    // No account named: ask, instead of failing.
    assert_eq!(
        Case::manager("フォローアップの文面を作って", Intent::MgrFollowup).plan(),
        say(WHICH_ACCOUNT)
    );
}

#[test]
fn at_risk_filters_read_colours_as_words() {
    // Issue 13: "red" matched inside "required".
    let call_for = |text: &'static str| {
        let plan = Case::manager(text, Intent::MgrAtRisk).plan();
        only_call(&plan).arguments.clone()
    };
    assert_eq!(
        call_for("which accounts required attention this month?")["status"],
        "any"
    );
    assert_eq!(call_for("red accounts only")["status"], "red");
    assert_eq!(call_for("レッドの会社は？")["status"], "red");
    assert_eq!(call_for("イエローの会社")["status"], "yellow");
    let renewal = call_for("90日以内に更新のある危ない会社");
    assert_eq!(renewal["renewal_within_days"], 90);
    assert_eq!(
        call_for("3ヶ月以内に契約が切れる会社")["renewal_within_days"],
        90
    );
    assert_eq!(call_for("更新が近い会社")["renewal_within_days"], 90);
    assert!(call_for("リスクのある会社")
        .get("renewal_within_days")
        .is_none());
}

#[test]
fn churn_questions_use_the_churn_model_when_there_is_one() {
    let plan = Case::manager("来月解約しそうな会社と、その理由は？", Intent::MgrChurn).plan();
    assert_eq!(only_call(&plan).name, "predict_churn");
}

#[test]
fn customers_never_reach_manager_plans() {
    let mut case = Case::customer("B-2003はレッドですか", Intent::MgrAccountHealth);
    case.identity = Identity::anonymous("v");
    assert!(matches!(
        case.plan(),
        TurnPlan::Say { .. } | TurnPlan::Model { .. } | TurnPlan::Faq
    ));
}

#[test]
fn unsure_turns_use_the_faq_then_the_model_then_a_question() {
    let mut case = Case::customer("うーん", Intent::Faq);
    case.intent = Some((Intent::Faq, 0.3));
    assert!(
        matches!(case.plan(), TurnPlan::Say { quick_replies, .. } if !quick_replies.is_empty())
    );
    case.has_context = true;
    assert_eq!(case.plan(), TurnPlan::Model { calls: vec![] });
    case.faq = Some(FaqSignal {
        confident: true,
        answers_faq_intent: true,
    });
    assert_eq!(case.plan(), TurnPlan::Faq);
}

#[test]
fn fixed_replies_for_greetings_noise_and_out_of_scope() {
    assert_eq!(
        Case::customer("こんにちは", Intent::Greeting).plan(),
        say(GREETING)
    );
    assert_eq!(
        Case::customer("ありがとうございました！", Intent::Greeting).plan(),
        say(THANKS)
    );
    assert_eq!(
        Case::customer("今日の天気は？", Intent::OutOfScope).plan(),
        say(OUT_OF_SCOPE)
    );
    match Case::customer("上の階の足音がひどくて毎晩眠れません", Intent::NoiseReport).plan()
    {
        TurnPlan::Say { text, .. } => {
            assert!(text.contains("足音"), "{text}");
            assert!(text.contains("いつ頃から"), "{text}");
        }
        other => panic!("expected a fixed reply, got {other:?}"),
    }
}

#[test]
fn a_clear_request_for_a_person_escalates() {
    assert!(matches!(
        Case::customer("担当の方と直接お話しできますか", Intent::HumanRequest).plan(),
        TurnPlan::Escalate {
            reason: EscalationReason::CustomerRequest,
            ..
        }
    ));
}

#[test]
fn booking_numbers_are_read_in_any_width() {
    assert_eq!(
        booking_number("予約ＢＫ－１Ａ２Ｂをキャンセル").as_deref(),
        Some("BK-1A2B")
    );
    assert_eq!(booking_number("予約をキャンセルしたい"), None);
}

#[test]
fn a_time_without_a_day_takes_the_day_named_before() {
    // 「12月1日…」 then 「同じ日の夜7時は空いてますか？ライトで」: a concrete slot, proposed.
    let mut case = Case::customer(
        "じゃあ同じ日の夜7時は空いてますか？ライトプランで",
        Intent::Availability,
    );
    case.previous = vec!["12月1日に来てほしいんですが、1日は13時から仕事なんですよね"];
    match case.plan() {
        TurnPlan::Propose { call, .. } => {
            assert_eq!(call.name, "book_measurement");
            assert_eq!(call.arguments["slot_start"], "2026-12-01T19:00:00+09:00");
            assert_eq!(call.arguments["plan"], "light");
        }
        other => panic!("expected a proposal, got {other:?}"),
    }

    // 翌日 counts from the day named before, not from today.
    let mut next = Case::customer(
        "じゃあ翌日の月曜の、同じ13時はどうですか？",
        Intent::Availability,
    );
    next.previous = vec!["11月29日の日曜、13時に来てもらえますか？スタンダードで"];
    match next.plan() {
        TurnPlan::Propose { call, .. } => {
            assert_eq!(call.arguments["slot_start"], "2026-11-30T13:00:00+09:00");
            assert_eq!(call.arguments["plan"], "standard");
        }
        other => panic!("expected a proposal, got {other:?}"),
    }
}

#[test]
fn a_vague_slot_request_looks_for_one_slot_to_propose() {
    let plan = Case::customer(
        "来週の土曜の午前は空いてますか？AI仲裁も付けたい",
        Intent::Availability,
    )
    .plan();
    match plan {
        TurnPlan::FindSlot {
            availability,
            booking,
            ..
        } => {
            assert_eq!(availability.name, "check_availability");
            assert_eq!(booking["mediation"], true);
        }
        other => panic!("expected a slot search, got {other:?}"),
    }
    // Anonymous visitors cannot book: the slots are listed.
    let mut anonymous = Case::customer("来週の土曜の午前は空いてますか？", Intent::Availability);
    anonymous.identity = Identity::anonymous("v-1");
    assert_eq!(only_call(&anonymous.plan()).name, "check_availability");
}

#[test]
fn an_unclear_message_naming_a_future_day_is_about_scheduling() {
    let mut case = Case::customer(
        "今度の土曜の朝に来てもらうことってできますか？",
        Intent::UpsellInterest,
    );
    case.intent = Some((Intent::UpsellInterest, 0.38));
    assert!(matches!(case.plan(), TurnPlan::FindSlot { .. }));
    // A past day is not.
    let mut past = Case::customer("先週の土曜に測定してもらった件です", Intent::Faq);
    past.intent = Some((Intent::Faq, 0.3));
    assert!(!matches!(
        past.plan(),
        TurnPlan::FindSlot { .. } | TurnPlan::Propose { .. }
    ));
}

#[test]
fn a_good_faq_answer_beats_a_weak_label() {
    let faq = Some(FaqSignal {
        confident: false,
        answers_faq_intent: true,
    });
    for intent in [
        Intent::HumanRequest,
        Intent::UpsellInterest,
        Intent::OutOfScope,
    ] {
        let mut case = Case::customer("担当者はついてもらえますか？", intent);
        case.faq = faq;
        assert_eq!(case.plan(), TurnPlan::Faq, "{intent:?}");
    }
    // A price question keeps the price table unless the FAQ is very confident.
    let mut price = Case::customer("スタンダードプランはいくら？", Intent::PlanPrice);
    price.faq = faq;
    assert_eq!(only_call(&price.plan()).name, "plan_info");
}

#[test]
fn a_day_and_an_open_start_is_a_proposal_for_that_start() {
    // 「10時から」 on one day asks for 10:00 first (a list made 「はい」 book nothing).
    for (text, slot) in [
        (
            "来週の土曜、朝10時からプレミアムプランで測ってもらえますか？",
            "2026-11-28T10:00:00+09:00",
        ),
        (
            "来週の月曜、夕方4時からってイケる？スタンダードで",
            "2026-11-23T16:00:00+09:00",
        ),
    ] {
        match Case::customer(text, Intent::Availability).plan() {
            TurnPlan::Propose { call, otherwise } => {
                assert_eq!(call.name, "book_measurement");
                assert_eq!(call.arguments["slot_start"], slot, "{text}");
                // Not free: the slots that fit are listed instead.
                assert_eq!(otherwise.expect("fallback").name, "check_availability");
            }
            other => panic!("{text}: expected a proposal, got {other:?}"),
        }
    }
    // A part of the day is no start: the slots that fit are searched.
    assert!(matches!(
        Case::customer("来週の土曜の夜からは空いてますか？", Intent::Availability).plan(),
        TurnPlan::FindSlot { .. }
    ));
}

#[test]
fn a_question_about_a_pending_booking_restates_it_and_keeps_it() {
    let mut case = Case::customer(
        "念のため、終わるのは何時になりますか？",
        Intent::Availability,
    );
    case.pending = Some(pending(now()));
    match case.plan() {
        TurnPlan::Restate(p) => assert_eq!(Some(p), case.pending),
        other => panic!("expected the proposal again, got {other:?}"),
    }
    // Other side questions keep it too; other slots, refusal and consent end it.
    assert!(keeps_pending(&TurnPlan::Faq));
    assert!(keeps_pending(&TurnPlan::Model { calls: Vec::new() }));
    assert!(!keeps_pending(&say(DECLINED)));
    let mut other_day = Case::customer("やっぱり来週の水曜は空いてますか？", Intent::Availability);
    other_day.pending = case.pending.clone();
    assert!(!keeps_pending(&other_day.plan()));
}

#[test]
fn end_time_and_length_questions_are_answered_from_the_catalogue() {
    let plan = Case::customer(
        "21時開始だと、測定は何時に終わりますか？",
        Intent::Availability,
    )
    .plan();
    let call = only_call(&plan);
    assert_eq!(call.name, "plan_info");
    assert_eq!(call.arguments["aspect"], "duration");
    assert_eq!(call.arguments["start"], "21:00");
    let plan = Case::customer("How long does the premium plan take?", Intent::Faq).plan();
    let call = only_call(&plan);
    assert_eq!(call.arguments["plans"], json!(["premium"]));
    assert!(call.arguments.get("start").is_none());
    // Describing the noise asks nothing.
    let venting =
        Case::customer("夜中に何時間も足音が続いて眠れません", Intent::NoiseReport).plan();
    assert!(!matches!(venting, TurnPlan::Tools { ref calls, .. } if calls[0].name == "plan_info"));
}

#[test]
fn a_correction_naming_another_plan_asks_the_previous_question_again() {
    let mut case = Case::customer(
        "あ、ごめんなさい、スタンダードのほうでした",
        Intent::Greeting,
    );
    case.previous = vec!["ライトプランっていくらでしたっけ？"];
    case.previous_intent = Some((Intent::PlanPrice, 0.95));
    let plan = case.plan();
    let call = only_call(&plan);
    assert_eq!(
        call.arguments,
        json!({"plans": ["standard"], "aspect": "price"})
    );

    let mut case = Case::customer("Sorry, I meant for the premium plan.", Intent::Book);
    case.intent = Some((Intent::Book, 0.98));
    case.previous = vec!["How long does a measurement take?"];
    case.previous_intent = Some((Intent::Faq, 0.9));
    let plan = case.plan();
    let call = only_call(&plan);
    assert_eq!(call.arguments["aspect"], "duration");
    assert_eq!(call.arguments["plans"], json!(["premium"]));

    // A plan named with a request of its own is that request.
    let mut booking = Case::customer("じゃあスタンダードで予約したいです", Intent::Book);
    booking.previous = vec!["ライトプランっていくら？"];
    booking.previous_intent = Some((Intent::PlanPrice, 0.95));
    assert!(
        !matches!(booking.plan(), TurnPlan::Tools { ref calls, .. } if calls[0].name == "plan_info")
    );
}

#[test]
fn a_managers_follow_up_is_about_the_account_under_discussion() {
    let mut case = Case::manager(
        "じゃあ、先方に送るフォローアップのメール案を作って",
        Intent::MgrFollowup,
    );
    case.earlier_accounts = vec!["B-2007".to_string()];
    let plan = case.plan();
    let call = only_call(&plan);
    assert_eq!(call.name, "generate_followup");
    assert_eq!(call.arguments["customer_id"], "B-2007");
    // A list question is a new question.
    let mut churn = Case::manager("来月解約しそうな会社は？", Intent::MgrChurn);
    churn.earlier_accounts = vec!["B-2007".to_string()];
    let plan = churn.plan();
    assert!(only_call(&plan).arguments.get("customer_id").is_none());
}

#[test]
fn consent_split_between_affirm_and_book_is_consent_when_together_sure() {
    let proposal = pending(now() - chrono::Duration::minutes(1));
    let mut case = Case::customer(
        "了解です。ではその内容で予約を確定してください。",
        Intent::Book,
    );
    case.intent = Some((Intent::Book, 0.48));
    case.consent_probability = Some(0.92);
    case.pending = Some(proposal.clone());
    assert_eq!(case.plan(), TurnPlan::Execute(proposal.clone()));
    // Not sure enough together, or naming a new day: no write.
    case.consent_probability = Some(0.5);
    assert_ne!(case.plan(), TurnPlan::Execute(proposal.clone()));
    let mut other = Case::customer("では来週の水曜で確定してください", Intent::Book);
    other.intent = Some((Intent::Book, 0.48));
    other.consent_probability = Some(0.95);
    other.pending = Some(proposal.clone());
    assert_ne!(other.plan(), TurnPlan::Execute(proposal));
}
