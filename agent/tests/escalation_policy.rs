//! The escalation policy against the fixture table (tests/fixtures/escalation_cases.yaml) and
//! its thresholds, trend, unresolved count and tool signal.

use std::path::Path;

use kizuna_agent::escalation::{
    rule_reason, EscalationConfig, EscalationConfigError, EscalationDecision, EscalationPolicy,
    EscalationReason, TurnSignals,
};
use kizuna_agent::sentiment::{SentimentLabel, SentimentReading};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    text: String,
    escalate: bool,
    #[serde(default)]
    reason: Option<EscalationReason>,
}

fn fixture() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/escalation_cases.yaml");
    let yaml = std::fs::read_to_string(&path).expect("fixture file is readable");
    serde_yaml::from_str(&yaml).expect("fixture is a list of cases")
}

/// A reading labelled `label` with probability `p`; the rest is spread over the other labels.
fn reading(label: SentimentLabel, p: f32) -> SentimentReading {
    let rest = (1.0 - p) / 3.0;
    let mut probabilities = [rest; 4];
    probabilities[label.index()] = p;
    SentimentReading {
        label,
        score: p,
        probabilities,
    }
}

/// A reading with explicit anger and anxious probabilities, labelled by the larger of all four.
fn mixed(anger: f32, anxious: f32) -> SentimentReading {
    let neutral = (1.0 - anger - anxious).max(0.0);
    let probabilities = [anger, anxious, neutral, 0.0];
    let (index, score) =
        probabilities
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |best, (i, p)| if p > best.1 { (i, p) } else { best },
            );
    SentimentReading {
        label: SentimentLabel::ALL[index],
        score,
        probabilities,
    }
}

fn text_only(policy: &EscalationPolicy, text: &str) -> Option<EscalationDecision> {
    policy.assess(&TurnSignals {
        text,
        ..Default::default()
    })
}

fn with_reading(
    policy: &EscalationPolicy,
    text: &str,
    reading: &SentimentReading,
) -> Option<EscalationDecision> {
    policy.assess(&TurnSignals {
        text,
        sentiment: Some(reading),
        ..Default::default()
    })
}

/// The whole table. Cases whose reason is not `negative_sentiment` are decided on the text
/// alone (no sentiment reading, no history, no tool). For `negative_sentiment` cases the test
/// feeds a SYNTHETIC reading of anger 0.95, standing in for the sentiment model: the table
/// checks that the text rules do not claim a different reason and that such a reading does
/// escalate them. Every non-escalating case must also stay quiet with a moderately anxious
/// reading (0.70), as customers describing their noise problem often are.
#[test]
fn fixture_table() {
    let cases = fixture();
    assert!(cases.len() >= 80, "fixture has {} cases", cases.len());
    let policy = EscalationPolicy::default();
    let angry = reading(SentimentLabel::Anger, 0.95);
    let worried = reading(SentimentLabel::Anxious, 0.70);

    let mut failures = Vec::new();
    let mut sentiment_cases = 0;
    let mut sentiment_cases_caught_by_text = 0;
    for case in &cases {
        assert_eq!(
            case.escalate,
            case.reason.is_some(),
            "fixture case {:?} must give a reason exactly when it escalates",
            case.text
        );
        let decision = match case.reason {
            Some(EscalationReason::NegativeSentiment) => {
                sentiment_cases += 1;
                if rule_reason(&case.text).map(|(r, _)| r)
                    == Some(EscalationReason::NegativeSentiment)
                {
                    sentiment_cases_caught_by_text += 1;
                }
                with_reading(&policy, &case.text, &angry)
            }
            _ => text_only(&policy, &case.text),
        };
        let got = decision.as_ref().map(|d| d.reason);
        if got != case.reason {
            failures.push(format!(
                "{:?}: expected {:?}, got {:?}",
                case.text, case.reason, decision
            ));
            continue;
        }
        if !case.escalate {
            if let Some(d) = with_reading(&policy, &case.text, &worried) {
                failures.push(format!(
                    "{:?}: escalated with a moderate anxious reading: {d:?}",
                    case.text
                ));
            }
        }
    }
    let passed = cases.len() - failures.len();
    println!(
        "escalation fixture: {passed}/{} passed; negative_sentiment cases also caught by \
         the text rules alone: {sentiment_cases_caught_by_text}/{sentiment_cases}",
        cases.len()
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

/// Rule-decided fixture cases record the customer's words for the CSM.
#[test]
fn rule_decisions_name_the_matched_phrase() {
    let policy = EscalationPolicy::default();
    for case in fixture()
        .iter()
        .filter(|c| c.escalate && c.reason != Some(EscalationReason::NegativeSentiment))
    {
        let decision = text_only(&policy, &case.text).expect("escalates");
        let matched = decision.matched.expect("a text rule names its phrase");
        assert!(!matched.is_empty());
        assert!(
            decision.detail.contains(&matched),
            "{:?}: detail {:?}",
            case.text,
            decision.detail
        );
    }
}

/// Customers describing the neighbour's noise, in strong words, must not be handed over:
/// neither with a moderately anxious reading nor with a high (but not near-certain) anger
/// reading, which for such messages more likely reflects anger at the neighbour.
#[test]
fn noise_descriptions_do_not_escalate() {
    let descriptions = [
        "上の階の足音が毎晩ひどくて、まったく眠れません",
        "隣の部屋から夜中に怒鳴り声が聞こえてきて怖いです",
        "下の階の人に足音がうるさいと苦情を言われました。どうすればいいでしょうか",
        "管理会社の対応が悪くて、何度言っても動いてくれません",
        "隣人に直接注意したら、逆に怒鳴られてしまいました",
        "上の階の住人にクレームを入れても、全然改善されません",
        "騒音のせいで毎日イライラして、仕事に集中できません",
        "隣の犬の鳴き声が最悪で、もう限界です",
        "工事の音がうるさすぎて頭が痛くなります",
        "上の階の子どもが走り回って、本当にふざけるなって思います",
        "管理会社に相談しても話にならないので、自分で証拠を集めたいです",
        "隣人の嫌がらせのような音に、正直腹が立っています",
        "夜中の足音で目が覚めてしまい、不安で眠れません",
        "大家さんに伝えたのに、何の対応もしてくれません",
        "隣の人と直接話したいのですが、怖くてできません",
        "上の人に謝ってほしいです。毎晩ドンドンうるさいので",
        "隣の住人の態度が悪くて、話し合いになりません",
        "壁越しのテレビの音がうるさくて、毎晩最悪な気分です",
        "上の階の足音がひどくて、子どもが怖がって泣いています",
        "隣の部屋の音楽がうるさいのに、管理人は放置しています",
        "ｳｴﾉｶｲﾉ ｱｼｵﾄｶﾞ ｳﾙｻｲ。マジで許せない",
    ];
    assert!(descriptions.len() >= 15);
    let policy = EscalationPolicy::default();
    let worried = reading(SentimentLabel::Anxious, 0.70);
    let annoyed = reading(SentimentLabel::Anger, 0.90);
    for text in descriptions {
        assert_eq!(rule_reason(text), None, "{text}");
        assert_eq!(text_only(&policy, text), None, "{text}");
        assert_eq!(with_reading(&policy, text, &worried), None, "{text}");
        assert_eq!(with_reading(&policy, text, &annoyed), None, "{text}");
    }
    // Not even a near-certain anger reading: anger at the neighbour is distress about the
    // noise (issue 13), and the customer is answered with empathy.
    let furious = reading(SentimentLabel::Anger, 0.999);
    for text in descriptions {
        assert_eq!(with_reading(&policy, text, &furious), None, "{text}");
    }
    // Quoted words of the neighbour do not make it anger at us.
    assert_eq!(
        with_reading(
            &policy,
            "お願いしに行ったら「そっちこそうるさい」と言い返されました",
            &furious
        ),
        None
    );
}

#[test]
fn refusals_and_policy_questions_do_not_escalate() {
    for text in [
        "弁護士には相談したくないので、穏便に解決したいです",
        "裁判までは考えていません。まずは測定したいです",
        "訴えるつもりはありません。話し合いで解決したいです",
        "返金は求めていません。日程を変更したいだけです",
        "返金ではなく、別の日に振り替えてほしいです",
        "人間と話す必要はありません",
        "担当者に代わらなくて大丈夫です",
        "電話は結構です",
        "キャンセル料はかかりますか",
        "解約した場合、違約金はかかりますか",
        "キャンセルすることはできますか",
        "プレミアムプランの弁護士レビューとは？",
        "レポートは裁判の証拠になりますか",
        "調停で使えるレポートですか",
        "子どもが頭痛を訴えています",
    ] {
        assert_eq!(rule_reason(text), None, "{text}");
    }
}

/// Trigger words in messages that are not a request, a complaint or anger at us: the
/// neighbour's or tenants' complaints, the customer's own firm, thanks for a refund or a
/// handover already done, quoted words of others, policy questions.
#[test]
fn trigger_words_out_of_context_do_not_escalate() {
    for text in [
        "夜泣きで下の階から苦情が来ないか心配です",
        "御社を導入してから、入居者からのクレームが減りました",
        "返金を確認できました。ありがとうございました",
        "すぐに担当者につないでいただき、助かりました",
        "オーナーから管理契約の解約をほのめかされています",
        "退去する入居者から「敷金を返せ」と言われて困っています",
        "寝不足で仕事のミスが増えてしまいました",
        "予約確認のメールが届いていないようです",
        "プレミアムプランの弁護士さんのコメントがとても参考になりました",
        "レポートを見せたら、かえって関係が悪化しないか心配です",
        "一部返金と全額返金の違いについて、規定を教えてください",
        "退会したら過去のレポートは見られなくなりますか",
        "相手が怒っているのか、返事がまだ来ません",
        "弊社の対応が遅れたせいで、入居者に迷惑をかけてしまいました",
        "こちらの訴えをきちんと聞いてもらえて安心しました",
        "キャンセルの手続きもスムーズで助かりました",
    ] {
        assert_eq!(rule_reason(text), None, "{text}");
    }
}

#[test]
fn rule_examples_from_the_issue() {
    let cases = [
        ("弁護士に相談して訴えたいです", EscalationReason::Legal),
        ("訴えられたらどうしよう", EscalationReason::Legal),
        ("慰謝料はいくらくらい取れますか", EscalationReason::Legal),
        ("消費者センターに相談します", EscalationReason::Legal),
        ("ｷｬﾝｾﾙしたいです", EscalationReason::RefundOrCancel),
        ("金返せ", EscalationReason::RefundOrCancel),
        ("契約をやめたいです", EscalationReason::RefundOrCancel),
        ("説明と違うじゃないですか", EscalationReason::Complaint),
        ("測定員の態度が悪かったです", EscalationReason::Complaint),
        ("苦情です", EscalationReason::Complaint),
        ("人につないでください", EscalationReason::CustomerRequest),
        ("電話で話したいです", EscalationReason::CustomerRequest),
        ("スタッフと話したい", EscalationReason::CustomerRequest),
        ("最悪なサービスですね", EscalationReason::NegativeSentiment),
    ];
    for (text, expected) in cases {
        assert_eq!(rule_reason(text).map(|(r, _)| r), Some(expected), "{text}");
    }
}

#[test]
fn anger_threshold_is_inclusive_and_configurable() {
    // Aimed at us (そちら): the plain anger threshold applies.
    let text = "そちらの説明はもういいです";
    let policy = EscalationPolicy::default();
    let at = mixed(0.80, 0.0);
    let below = mixed(0.79, 0.0);
    assert_eq!(
        with_reading(&policy, text, &at).map(|d| d.reason),
        Some(EscalationReason::NegativeSentiment)
    );
    assert_eq!(with_reading(&policy, text, &below), None);

    let strict = EscalationPolicy::new(EscalationConfig {
        anger_threshold: 0.90,
        ..Default::default()
    });
    assert_eq!(with_reading(&strict, text, &at), None);
}

#[test]
fn anxiety_alone_escalates_only_when_configured() {
    let text = "この先どうなるのか心配です";
    // Worry is what our customers come with: by default it is answered, however strong.
    let default = EscalationPolicy::default();
    assert_eq!(with_reading(&default, text, &mixed(0.0, 0.99)), None);
    assert_eq!(with_reading(&default, text, &mixed(0.0, 1.0)), None);
    let policy = EscalationPolicy::new(EscalationConfig {
        anxious_threshold: 0.90,
        ..Default::default()
    });
    assert_eq!(with_reading(&policy, text, &mixed(0.0, 0.89)), None);
    let decision = with_reading(&policy, text, &mixed(0.0, 0.90)).expect("escalates");
    assert_eq!(decision.reason, EscalationReason::NegativeSentiment);
    assert!(decision.detail.contains("不安"), "{}", decision.detail);
}

#[test]
fn untargeted_anger_takes_a_near_certain_reading() {
    let policy = EscalationPolicy::default();
    let reading = mixed(0.90, 0.0);
    // Names nothing of ours: 0.90 is below the near-certain bar.
    assert_eq!(
        with_reading(&policy, "はぁ、もう嫌になってきた", &reading),
        None
    );
    // Aimed at us: the plain anger threshold.
    assert_eq!(
        with_reading(
            &policy,
            "上の階の足音の件、御社に相談して損しました",
            &reading
        )
        .map(|d| d.reason),
        Some(EscalationReason::NegativeSentiment)
    );
    let lenient = EscalationPolicy::new(EscalationConfig {
        noise_anger_threshold: 0.0,
        ..Default::default()
    });
    assert!(with_reading(&lenient, "はぁ、もう嫌になってきた", &reading).is_some());
    // About the neighbour only: never, whatever the setting.
    assert_eq!(
        with_reading(&lenient, "上の階の足音がうるさくて腹が立つ", &reading),
        None
    );
}

#[test]
fn trend_needs_a_full_window_and_a_distressed_current_message() {
    // Anxiety weighted into the trend, as a business may configure it.
    let policy = EscalationPolicy::new(EscalationConfig {
        anxious_weight: 0.75,
        ..Default::default()
    });
    let text = "まだですか";
    // Distress = anger + 0.75 × anxious: 0.5 + 0.75 × 0.2 = 0.65 per message.
    let uneasy = mixed(0.5, 0.2);
    assert_eq!(uneasy.label, SentimentLabel::Anger);
    let history = [mixed(0.1, 0.7), mixed(0.5, 0.2)];

    // By default anxiety does not count toward the trend: 0.1, 0.5, 0.5 of anger stays low.
    let default_no_consecutive = EscalationPolicy::new(EscalationConfig {
        consecutive_anger: 0,
        ..Default::default()
    });
    assert_eq!(
        default_no_consecutive.assess(&TurnSignals {
            text,
            sentiment: Some(&uneasy),
            recent_sentiments: &history,
            ..Default::default()
        }),
        None
    );

    // With anxiety weighted in (0.75): two readings (window 3) give no trend yet; the
    // consecutive-anger rule is off here.
    let no_consecutive = EscalationPolicy::new(EscalationConfig {
        consecutive_anger: 0,
        anxious_weight: 0.75,
        ..Default::default()
    });
    let short = no_consecutive.assess(&TurnSignals {
        text,
        sentiment: Some(&uneasy),
        recent_sentiments: &history[1..],
        ..Default::default()
    });
    assert_eq!(short, None);

    // Three readings: distress 0.1 + 0.75 × 0.7 = 0.625, then 0.65 twice; mean ≈ 0.64 ≥ 0.60.
    let full = no_consecutive
        .assess(&TurnSignals {
            text,
            sentiment: Some(&uneasy),
            recent_sentiments: &history,
            ..Default::default()
        })
        .expect("trend escalates");
    assert_eq!(full.reason, EscalationReason::NegativeSentiment);
    assert!(full.detail.contains("直近3件"), "{}", full.detail);

    // The same history, but the customer is calm now.
    let calm = mixed(0.05, 0.05);
    assert_eq!(calm.label, SentimentLabel::Neutral);
    assert_eq!(
        policy.assess(&TurnSignals {
            text,
            sentiment: Some(&calm),
            recent_sentiments: &history,
            ..Default::default()
        }),
        None
    );

    // Three moderately anxious noise descriptions stay below the trend threshold:
    // 0.05 + 0.75 × 0.70 = 0.575 each.
    let anxious = mixed(0.05, 0.70);
    let anxious_history = [anxious.clone(), anxious.clone()];
    assert_eq!(
        policy.assess(&TurnSignals {
            text: "夜中の足音で今日も眠れませんでした",
            sentiment: Some(&anxious),
            recent_sentiments: &anxious_history,
            ..Default::default()
        }),
        None
    );
    // Strongly anxious three times running about the noise is what our customers go
    // through: by default it is answered, not escalated (issue 13); a business that weighs
    // anxiety in (0.75) gets the old behaviour: 0.05 + 0.75 × 0.85 ≈ 0.69 each.
    let very = mixed(0.05, 0.85);
    let very_history = [very.clone(), very.clone()];
    let signals = TurnSignals {
        text: "夜中の足音で今日も眠れませんでした",
        sentiment: Some(&very),
        recent_sentiments: &very_history,
        ..Default::default()
    };
    assert_eq!(EscalationPolicy::default().assess(&signals), None);
    assert_eq!(
        policy.assess(&signals).map(|d| d.reason),
        Some(EscalationReason::NegativeSentiment)
    );
}

#[test]
fn consecutive_anger_readings_escalate() {
    let policy = EscalationPolicy::default();
    let mild_anger = mixed(0.55, 0.1);
    assert_eq!(mild_anger.label, SentimentLabel::Anger);
    let text = "まだ答えてもらっていません";

    let first = policy.assess(&TurnSignals {
        text,
        sentiment: Some(&mild_anger),
        ..Default::default()
    });
    assert_eq!(first, None, "one mildly angry message is not enough");

    let history = [reading(SentimentLabel::Neutral, 0.9), mild_anger.clone()];
    let second = policy
        .assess(&TurnSignals {
            text,
            sentiment: Some(&mild_anger),
            recent_sentiments: &history,
            ..Default::default()
        })
        .expect("two angry messages in a row escalate");
    assert!(second.detail.contains("2回"), "{}", second.detail);

    // Broken run: neutral in between.
    let broken = [mild_anger.clone(), reading(SentimentLabel::Neutral, 0.9)];
    assert_eq!(
        policy.assess(&TurnSignals {
            text,
            sentiment: Some(&mild_anger),
            recent_sentiments: &broken,
            ..Default::default()
        }),
        None
    );
}

#[test]
fn unresolved_counts_completed_unhelpful_round_trips() {
    let policy = EscalationPolicy::default();
    let text = "それで、結局どうすればいいですか";
    let at = |streak| {
        policy.assess(&TurnSignals {
            text,
            unresolved_streak: streak,
            ..Default::default()
        })
    };
    assert_eq!(at(0), None);
    assert_eq!(
        at(2),
        None,
        "two unhelpful replies: the bot gets a third try"
    );
    let decision = at(3).expect("three unhelpful round trips escalate");
    assert_eq!(decision.reason, EscalationReason::Unresolved);
    assert!(decision.detail.contains('3'), "{}", decision.detail);
    assert_eq!(at(7).map(|d| d.reason), Some(EscalationReason::Unresolved));

    let two = EscalationPolicy::new(EscalationConfig {
        unresolved_turns: 2,
        ..Default::default()
    });
    assert!(two
        .assess(&TurnSignals {
            text,
            unresolved_streak: 2,
            ..Default::default()
        })
        .is_some());
    let off = EscalationPolicy::new(EscalationConfig {
        unresolved_turns: 0,
        ..Default::default()
    });
    assert_eq!(
        off.assess(&TurnSignals {
            text,
            unresolved_streak: 10,
            ..Default::default()
        }),
        None
    );
}

#[test]
fn tool_signal_escalates_with_its_reason_and_takes_its_place_in_the_priority() {
    let policy = EscalationPolicy::default();
    let decision = policy
        .assess(&TurnSignals {
            text: "少し込み入った話なのですが",
            tool_request: Some((
                EscalationReason::Legal,
                "近隣との損害賠償の相談".to_string(),
            )),
            ..Default::default()
        })
        .expect("the tool escalates");
    assert_eq!(decision.reason, EscalationReason::Legal);
    assert!(decision.detail.contains("近隣との損害賠償の相談"));
    assert_eq!(decision.matched, None);

    // A text rule of higher priority wins over the tool's reason...
    let decision = policy
        .assess(&TurnSignals {
            text: "返金してください",
            tool_request: Some((EscalationReason::NegativeSentiment, String::new())),
            intent: None,
            ..Default::default()
        })
        .expect("escalates");
    assert_eq!(decision.reason, EscalationReason::RefundOrCancel);

    // ...and the tool's reason wins over a lower one from the rules or the count.
    let decision = policy
        .assess(&TurnSignals {
            text: "人間と話したいです",
            unresolved_streak: 3,
            tool_request: Some((EscalationReason::Complaint, "測定員の遅刻".to_string())),
            intent: None,
            ..Default::default()
        })
        .expect("escalates");
    assert_eq!(decision.reason, EscalationReason::Complaint);

    // Same reason from both: the rule's decision, which names the customer's words.
    let decision = policy
        .assess(&TurnSignals {
            text: "オペレーターに代わってください",
            tool_request: Some((EscalationReason::CustomerRequest, String::new())),
            intent: None,
            ..Default::default()
        })
        .expect("escalates");
    assert!(decision.matched.is_some());

    let no_tool = EscalationPolicy::new(EscalationConfig {
        rules: kizuna_agent::escalation::EscalationRules {
            tool: false,
            ..Default::default()
        },
        ..Default::default()
    });
    assert_eq!(
        no_tool.assess(&TurnSignals {
            text: "少し込み入った話なのですが",
            tool_request: Some((EscalationReason::Legal, String::new())),
            intent: None,
            ..Default::default()
        }),
        None
    );
}

#[test]
fn switched_off_rules_fall_through_to_the_next_reason() {
    let config: EscalationConfig = toml::from_str(
        r#"
        [rules]
        legal = false
        "#,
    )
    .expect("parses");
    let policy = EscalationPolicy::new(config);
    // Legal is off: the refund request in the same message is what remains.
    assert_eq!(
        text_only(&policy, "返金しないなら少額訴訟を起こします").map(|d| d.reason),
        Some(EscalationReason::RefundOrCancel)
    );
    assert_eq!(text_only(&policy, "弁護士に相談します"), None);
    assert_eq!(
        text_only(
            &EscalationPolicy::default(),
            "返金しないなら少額訴訟を起こします"
        )
        .map(|d| d.reason),
        Some(EscalationReason::Legal)
    );
}

#[test]
fn config_reads_from_the_binarys_toml_table() {
    #[derive(Deserialize)]
    struct File {
        escalation: EscalationConfig,
    }
    let file: File = toml::from_str(
        r#"
        [escalation]
        anger_threshold = 0.7
        unresolved_turns = 4
        [escalation.rules]
        negative_sentiment = false
        "#,
    )
    .expect("parses");
    let config = file.escalation;
    assert_eq!(config.anger_threshold, 0.7);
    assert_eq!(config.unresolved_turns, 4);
    assert!(!config.rules.negative_sentiment);
    assert!(config.rules.legal, "unnamed switches keep their default");
    assert_eq!(
        config.anxious_threshold,
        EscalationConfig::default().anxious_threshold
    );
    assert_eq!(config.validate(), Ok(()));

    let typo = toml::from_str::<File>("[escalation]\nanger_treshold = 0.7\n");
    assert!(typo.is_err(), "unknown keys are rejected");

    let bad = EscalationConfig {
        anxious_threshold: 1.5,
        ..Default::default()
    };
    assert_eq!(
        bad.validate(),
        Err(EscalationConfigError::NotAProbability {
            field: "anxious_threshold",
            value: 1.5
        })
    );
}
