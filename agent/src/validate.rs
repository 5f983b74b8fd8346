//! The output validator: every reply a model writes is checked before a customer reads it,
//! whatever the backend (the embedded 1.5B model or an OpenAI-compatible one).
//!
//! Small models echo their prompt (「参考情報:」「質問: … 答: …」, the tool-result hint),
//! print tool syntax (`<tool_response>`), cite internal document ids (「[faq-measure-012]」),
//! fall into boilerplate refusals, drift into Chinese, or make up prices. A reply with any of
//! these is rejected as a whole, and the caller replaces it with a composed answer (see
//! docs/architecture.md, "A turn"). Checks are on NFKC text, so full-width variants count.

use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Why a reply was rejected. `kind` names the check (for metrics and the evaluation's leak
/// scan); `evidence` is the offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub evidence: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Text of our own prompts: instructions, the context header, Q/A scaffolding, template
    /// placeholders ({{link}}).
    PromptText,
    /// Tool-call syntax or chat-template markers.
    ToolSyntax,
    /// An internal document id (faq-…, scenario-…, tpl-…).
    InternalId,
    /// A canned refusal or "as an AI" boilerplate.
    Boilerplate,
    /// Chinese rather than Japanese.
    WrongLanguage,
    /// A price that is in neither the price table nor the facts the reply was given.
    UnknownPrice,
    /// An e-mail address or phone number the reply was not given.
    PersonalData,
    /// The customer's own message copied back (a long run of it) instead of an answer.
    Echo,
    /// A claim that a booking was made, changed or cancelled. Writes run only on the
    /// customer's consent to a concrete proposal, outside the model (docs/architecture.md), so
    /// a reply the model writes never did one: 「ご予約が確定しました」 there is false. Nor
    /// has the model seen the calendar: 「6日の午後1時に測定できます」 about a day is a
    /// guess (the 6th was a Sunday, when nobody measures); free slots come from
    /// `check_availability`.
    UnbackedAction,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::PromptText => "prompt_text",
            ViolationKind::ToolSyntax => "tool_syntax",
            ViolationKind::InternalId => "internal_id",
            ViolationKind::Boilerplate => "boilerplate",
            ViolationKind::WrongLanguage => "wrong_language",
            ViolationKind::UnknownPrice => "unknown_price",
            ViolationKind::PersonalData => "personal_data",
            ViolationKind::Echo => "echo",
            ViolationKind::UnbackedAction => "unbacked_action",
        }
    }
}

/// What the reply may legitimately repeat: the texts the model was given (retrieved
/// passages, tool results, the customer's own words) and our own prompt texts, which it must
/// never repeat.
#[derive(Debug, Clone, Default)]
pub struct ReplyContext<'a> {
    /// Facts the model was shown: prices, e-mail addresses or phone numbers found here may
    /// appear in the reply.
    pub facts: Vec<&'a str>,
    /// Our prompt texts (system prompt, instructions): no line of them may appear.
    pub prompts: Vec<&'a str>,
    /// Prices (in yen) that are always fine to quote: the price table. Empty: prices are
    /// not checked.
    pub known_prices: Vec<u64>,
    /// The customer's message: a reply may not copy a long run of it back. Empty: unchecked.
    pub user_text: &'a str,
    /// The model wrote the reply: it may not claim a booking was made, changed or cancelled
    /// (only the consent path writes). Composed replies quote the tool that did.
    pub model_written: bool,
}

/// Characters of the customer's message a reply may repeat verbatim in one run.
const ECHO_RUN_CHARS: usize = 20;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("validator patterns are valid"))
}

/// Scaffolding a model copies from prompts: headers and Q/A labels at the start of a line.
fn scaffolding() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(
        &RE,
        r"(?m)(参考情報|^\s*(質問|答え?|回答|Q|A|ユーザー|アシスタント|user|assistant|system)\s*[:：]|お客様への返答を|上の結果をもとに|ツール(の結果|呼び出し)|tool_result|function_call|\{\{[^{}]{0,40}\}\})",
    )
}

fn tool_syntax() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(
        &RE,
        r#"(</?\s*tool_(call|response|result)\s*>|<\|im_(start|end)\|>|<\|endoftext\|>|```|"name"\s*:\s*"|"arguments"\s*:)"#,
    )
}

fn internal_id() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(
        &RE,
        r"(?i)(\[\s*[a-z][a-z0-9]*(-[a-z0-9]+)+\s*\]|(?:^|[^a-z0-9_])(faq|scenario|tpl|template|doc|chunk)-[a-z0-9][a-z0-9-]*)",
    )
}

fn boilerplate() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(
        &RE,
        r"(?i)(そのような(返答|回答|ご質問)(には|は)(お答え)?できません|AI(アシスタント|言語モデル)として|言語モデルなので|私はAIなので|as an ai\b|i'?m sorry,? but i can'?t|i cannot (help|assist) with|i am (just )?an? (ai|language model))",
    )
}

/// A booking made, changed or cancelled, in the past tense and at a sentence end (not
/// 「確定しましたら」, a condition).
fn claimed_action() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(
        &RE,
        r"(?i)((予約|日程|日時|キャンセル|変更)[^。！？!?\n]{0,12}(確定|完了|承り|お取り|受け付け|受付|キャンセル|取り消|変更)(いた)?し?ました(?:[。！!\s]|$)|(予約|日程)を?承りました|\b(i|we)('ve| have) (booked|cancell?ed|confirmed|rescheduled)\b|\b(booking|appointment|reservation) (is|has been) (confirmed|booked|cancell?ed|made)\b)",
    )
}

/// A named day said to be free for a visit: 「6日の午後1時に測定できます」「12月9日は空いて
/// います」 "the 6th at 1 pm is available".
fn claimed_availability() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(
        &RE,
        r"(?i)((\d{1,2}月)?\d{1,2}日[^。！？!?\n]{0,24}(測定|訪問|伺|予約|ご案内|お取り)?[^。！？!?\n]{0,8}(できます|可能です|空いて(い|お)ります|空いています|空きがあります|お伺いできます|伺えます)|\b(the )?\d{1,2}(st|nd|rd|th)\b[^.!?\n]{0,30}\b(is|are) (available|free|open)\b)",
    )
}

fn yen_amount() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(&RE, r"(?:¥\s*([0-9][0-9,]*)|([0-9][0-9,]*)\s*円)")
}

fn personal_data() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    re(
        &RE,
        r"([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|(?:^|[^0-9-])0\d{1,4}-\d{1,4}-\d{3,4}(?:[^0-9-]|$))",
    )
}

/// Characters of simplified Chinese that Japanese does not use: a reply with several of them
/// has drifted out of Japanese.
/// Characters of simplified Chinese that Japanese does not use (候 and 得, shared with
/// Japanese as in 候補 and 得られる, are not in it).
const SIMPLIFIED_ONLY: &str =
    "们这吗么您请问没对关为时还让说话给过进买卖预约诉觉际应该样认识谢帮吧呢";

fn normalize(text: &str) -> String {
    text.nfkc().collect()
}

fn amounts(text: &str) -> Vec<u64> {
    yen_amount()
        .captures_iter(text)
        .filter_map(|c| {
            let digits: String = c
                .get(1)
                .or_else(|| c.get(2))?
                .as_str()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// Checks a model-written reply; `Ok` when a customer may read it.
pub fn check_reply(reply: &str, ctx: &ReplyContext<'_>) -> Result<(), Violation> {
    let text = normalize(reply);
    let violation = |kind, evidence: &str| {
        Err(Violation {
            kind,
            evidence: evidence.chars().take(80).collect(),
        })
    };
    if let Some(m) = tool_syntax().find(&text) {
        return violation(ViolationKind::ToolSyntax, m.as_str());
    }
    if let Some(m) = scaffolding().find(&text) {
        return violation(ViolationKind::PromptText, m.as_str());
    }
    for prompt in &ctx.prompts {
        for line in normalize(prompt).lines() {
            let line = line.trim().trim_start_matches(['-', '・', '*']).trim();
            // A whole instruction line (or its first 16 characters) copied into the reply.
            let probe: String = line.chars().take(16).collect();
            if probe.chars().count() >= 12 && text.contains(&probe) {
                return violation(ViolationKind::PromptText, &probe);
            }
        }
    }
    if let Some(m) = internal_id().find(&text) {
        return violation(ViolationKind::InternalId, m.as_str());
    }
    if let Some(m) = boilerplate().find(&text) {
        return violation(ViolationKind::Boilerplate, m.as_str());
    }
    if ctx.model_written {
        if let Some(m) = claimed_action()
            .find(&text)
            .or_else(|| claimed_availability().find(&text))
        {
            return violation(ViolationKind::UnbackedAction, m.as_str());
        }
    }
    // A reply with no Japanese at all to a customer who wrote Japanese (the model switched
    // languages) is not ours to send; an English question may get an English answer.
    let has_japanese = |t: &str| {
        t.chars().any(|c| {
            ('\u{3040}'..='\u{30ff}').contains(&c) || ('\u{4e00}'..='\u{9fff}').contains(&c)
        })
    };
    let latin = text.chars().filter(|c| c.is_ascii_alphabetic()).count();
    if latin >= 20 && !has_japanese(&text) && has_japanese(ctx.user_text) {
        return violation(ViolationKind::WrongLanguage, "no Japanese");
    }
    // Compared without punctuation and spaces: 「…も、測定で」 echoed as 「…も測定で」.
    let bare = |t: &str| -> String {
        normalize(t)
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect()
    };
    let user: Vec<char> = bare(ctx.user_text).chars().collect();
    if user.len() >= ECHO_RUN_CHARS {
        let reply = bare(&text);
        for window in user.windows(ECHO_RUN_CHARS) {
            let run: String = window.iter().collect();
            if reply.contains(&run) {
                return violation(ViolationKind::Echo, &run);
            }
        }
    }
    let chinese: Vec<char> = text
        .chars()
        .filter(|c| SIMPLIFIED_ONLY.contains(*c))
        .collect();
    if chinese.len() >= 2 {
        return violation(
            ViolationKind::WrongLanguage,
            &chinese.iter().collect::<String>(),
        );
    }
    let facts: Vec<String> = ctx.facts.iter().map(|f| normalize(f)).collect();
    // Without a price table there is nothing to judge prices against.
    if !ctx.known_prices.is_empty() {
        let given: Vec<u64> = facts.iter().flat_map(|f| amounts(f)).collect();
        for amount in amounts(&text) {
            if !ctx.known_prices.contains(&amount) && !given.contains(&amount) {
                return violation(ViolationKind::UnknownPrice, &format!("{amount}円"));
            }
        }
    }
    for m in personal_data().find_iter(&text) {
        // The phone pattern takes a neighbouring character on each side; compare without it.
        let found = m
            .as_str()
            .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '@');
        if !facts.iter().any(|f| f.contains(found)) {
            return violation(ViolationKind::PersonalData, found);
        }
    }
    Ok(())
}

/// Every check that applies to any text shown to a customer, composed or written, without
/// context: tool syntax, prompt scaffolding, internal ids, boilerplate and Chinese. The
/// evaluation's leak scan runs this on every reply.
pub fn leaks(reply: &str) -> Option<Violation> {
    check_reply(
        reply,
        &ReplyContext {
            facts: vec![reply],
            ..ReplyContext::default()
        },
    )
    .err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ReplyContext<'static> {
        ReplyContext {
            facts: vec!["スタンダードプラン（12,800円）は2時間の測定です。"],
            prompts: vec![
                "あなたはZENBU株式会社（騒音トラブルの測定サービス）のカスタマーサポートAIです。\n- 料金・プラン・空き日程は、ツールの結果に書かれた内容だけを使い、金額を推測しないでください。",
                "上の結果をもとに、お客様への返答を2〜3文で書いてください。",
            ],
            known_prices: vec![8_800, 12_800, 24_800, 8_000],
            user_text: "隣の部屋から夜中じゅう低い音が響いてきて、もう気が狂いそうです。測定をお願いできますか？",
            model_written: true,
        }
    }

    fn kind(reply: &str) -> Option<ViolationKind> {
        check_reply(reply, &ctx()).err().map(|v| v.kind)
    }

    #[test]
    fn ordinary_replies_pass() {
        for reply in [
            "スタンダードプランは12,800円で、2時間の測定です。夜の音も記録できます。",
            "ご不安なお気持ち、お察しします。測定の流れをご案内しますね。",
            "料金は１２，８００円です。",
            "予約番号はBK-12345です。",
        ] {
            assert_eq!(kind(reply), None, "{reply}");
        }
        // An English question may get an English answer.
        let english = ReplyContext {
            user_text: "How much is the standard plan?",
            ..ctx()
        };
        assert!(check_reply("Thank you. The Standard plan costs 12,800 yen.", &english).is_ok());
    }

    #[test]
    fn the_leaks_seen_in_replies_are_caught() {
        // The examples reported in the answers issue (issue 13).
        assert_eq!(
            kind("上の結果をもとに、お客様への返答を2〜3文で書いてください。スタンダードです。"),
            Some(ViolationKind::PromptText)
        );
        assert_eq!(
            kind("<tool_response>料金は12,800円です"),
            Some(ViolationKind::ToolSyntax)
        );
        assert_eq!(
            kind("参考情報の[faq-measure-012]によると、測定は2時間です。"),
            Some(ViolationKind::PromptText)
        );
        assert_eq!(
            kind("[faq-measure-012]によると、測定は2時間です。"),
            Some(ViolationKind::InternalId)
        );
        assert_eq!(
            kind("質問: 料金は？\n答: 12,800円です。"),
            Some(ViolationKind::PromptText)
        );
        assert_eq!(
            kind("Q: 料金は？\nA: 12,800円です。"),
            Some(ViolationKind::PromptText)
        );
        assert_eq!(
            kind("申し訳ありませんが、そのような返答はできません。"),
            Some(ViolationKind::Boilerplate)
        );
        assert_eq!(
            kind("料金・プラン・空き日程は、ツールの結果に書かれた内容だけを使います"),
            Some(ViolationKind::PromptText)
        );
    }

    #[test]
    fn made_up_prices_chinese_and_foreign_contacts_are_caught() {
        assert_eq!(
            kind("スタンダードプランは15,000円です。"),
            Some(ViolationKind::UnknownPrice)
        );
        assert_eq!(kind("ライトプランは8800円です。"), None);
        assert_eq!(
            kind("您好，我们可以帮您预约。"),
            Some(ViolationKind::WrongLanguage)
        );
        // Kanji that Japanese shares with Chinese are Japanese.
        assert_eq!(
            kind("空いている候補日時をお調べします。納得が得られるまでご説明します。"),
            None
        );
        assert_eq!(
            kind("担当の佐藤（sato@example.com）にご連絡ください。"),
            Some(ViolationKind::PersonalData)
        );
        assert_eq!(
            kind("お電話は03-1234-5678までどうぞ。"),
            Some(ViolationKind::PersonalData)
        );
    }

    #[test]
    fn claims_of_a_booking_the_model_never_made_are_caught() {
        for claim in [
            "ご予約が確定しました。確認メールをお送りしています。",
            "12月9日21時のご予約を承りました。",
            "予約をキャンセルしました。",
            "日程を変更しました！",
            "I've booked you in for Friday.",
            "Your appointment has been confirmed.",
        ] {
            assert_eq!(kind(claim), Some(ViolationKind::UnbackedAction), "{claim}");
        }
        for guess in [
            "はい、6日の午後1時に測定できます。",
            "12月9日は空いています。",
            "15日の10時でしたら伺えます。",
            "Yes, the 6th at 1 pm is available.",
        ] {
            assert_eq!(kind(guess), Some(ViolationKind::UnbackedAction), "{guess}");
        }
        // A composed reply quotes the booking tool that did it (the evaluation's leak scan).
        assert!(leaks("ご予約を承りました。予約番号 b-1").is_none());
        for fine in [
            "ご予約が確定しましたら、確認メールが届きます。",
            "この内容でご予約をお取りします。よろしければ「はい」とお送りください。",
            "キャンセルは前日までにチャットでお知らせください。",
            "予約の変更はチャットで承ります。",
            "測定は月曜から土曜の10時〜21時に開始できます。",
            "変更は測定の24時間前までできます。",
        ] {
            assert_eq!(kind(fine), None, "{fine}");
        }
    }

    #[test]
    fn template_placeholders_are_caught() {
        // Copied from a scenario template in the retrieved context.
        assert_eq!(
            kind("当日の流れを動画にまとめましたので、ご覧ください：{{link}}"),
            Some(ViolationKind::PromptText)
        );
    }

    #[test]
    fn echoes_and_english_only_replies_are_caught() {
        assert_eq!(
            kind("はい、隣の部屋から夜中じゅう低い音が響いてきて、もう気が狂いそうです。"),
            Some(ViolationKind::Echo)
        );
        assert_eq!(
            kind("夜中の低い音もスタンダードプランで測定できます。"),
            None
        );
        // English to a Japanese message (the test context's), not to an English one.
        assert_eq!(
            kind("Yes, we can measure low-frequency noise at night for you."),
            Some(ViolationKind::WrongLanguage)
        );
    }

    #[test]
    fn leak_scan_needs_no_context() {
        assert!(leaks("測定は2時間です。").is_none());
        assert_eq!(
            leaks("[scenario-b2c-nps-survey] のとおりです").map(|v| v.kind),
            Some(ViolationKind::InternalId)
        );
    }
}
