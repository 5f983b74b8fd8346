//! Questions about a measurement's *time* that a slot or a plan answers: when it ends
//! (「21時開始だと何時に終わりますか」) and how long it takes (「何時間かかりますか」 "how long
//! does it take"). A small grammar, not a word list: a question word about the clock or a
//! length, tied to the verb of ending or taking (`nlu/INTENTS.md`, "Slots a reply reads").

use std::sync::OnceLock;

use regex::Regex;

use crate::text::{fold_kana, normalize};

/// What a message asks about a measurement's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeQuestion {
    /// The clock time it ends: 「何時に終わりますか」「終了時刻は？」 "what time does it end".
    EndTime,
    /// How long it takes: 「何時間かかりますか」「所要時間は？」 "how long does it take".
    Length,
}

/// The time question a message asks, if any. Statements that only mention a length
/// (「何時間も続いて眠れない」「2時間の測定ですね」) ask nothing.
pub fn time_question(text: &str) -> Option<TimeQuestion> {
    static END: OnceLock<Vec<Regex>> = OnceLock::new();
    static LENGTH: OnceLock<Vec<Regex>> = OnceLock::new();
    let text = fold_kana(&normalize(text));
    let end = END.get_or_init(|| {
        [
            // question word … end verb: 「何時に終わりますか」「なんじごろ終わる？」
            r"(何時|なんじ|いつ|何分)[^。!！]{0,10}?(終わ|おわ|終了|終え|済|す[みむ])",
            // end verb … question word: 「終わるのは何時？」「終了は何時ごろになりますか」
            r"(終わ|おわ|終了|終え|済)[^。!！]{0,12}?(何時|なんじ|いつ|何分)",
            r"終了(時刻|時間|予定)|終わる時間|終わりの時間|終わり時間",
            r"what time[^.!]{0,30}\b(end|finish|over|done|wrap)",
            r"\bwhen\b[^.!]{0,30}\b(end|finish|be over|be done|wrap up)",
            r"\bhow late\b",
            r"\bend time\b|\bfinish time\b",
        ]
        .iter()
        .map(|p| Regex::new(p).expect("valid regex"))
        .collect()
    });
    if end.iter().any(|r| r.is_match(&text)) {
        return Some(TimeQuestion::EndTime);
    }
    let length = LENGTH.get_or_init(|| {
        [
            // 「何時間かかりますか」「何時間ぐらい？」 but not 「何時間も続く」.
            r"何時間(くらい|ぐらい|ほど|程|程度)?\s*(かか|掛か|で[すし]|必要|要|\?|？|$)",
            r"(どのくらい|どのぐらい|どれくらい|どれぐらい|どの程度)[^。!！]{0,8}?(時間|かか|掛か)",
            r"(時間|測定)[^。!！]{0,6}?(どのくらい|どのぐらい|どれくらい|どれぐらい|どの程度)",
            r"所要時間|測定時間(は|って|を)",
            r"\bhow long\b|\bhow many hours\b|\bduration\b",
        ]
        .iter()
        .map(|p| Regex::new(p).expect("valid regex"))
        .collect()
    });
    length
        .iter()
        .any(|r| r.is_match(&text))
        .then_some(TimeQuestion::Length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_time_questions_across_registers() {
        for text in [
            "21時開始だと、測定は何時に終わりますか？",
            "念のため、終わるのは何時になりますか？",
            "終了は何時ごろになりますか",
            "それって何時に終わる？",
            "なんじにおわるの",
            "ｿｸﾃｲは何時に終わりますか", // half-width kana
            "終了時刻を教えてください",
            "What time does it end?",
            "when will the measurement finish?",
            "How late will the staff be there?",
        ] {
            assert_eq!(time_question(text), Some(TimeQuestion::EndTime), "{text}");
        }
    }

    #[test]
    fn length_questions_across_registers() {
        for text in [
            "測定は何時間かかりますか？",
            "何時間くらい？",
            "どのくらい時間かかる？",
            "測定時間はどれくらいですか",
            "所要時間を教えてください",
            "How long does a measurement take?",
            "how many hours is the premium one?",
        ] {
            assert_eq!(time_question(text), Some(TimeQuestion::Length), "{text}");
        }
    }

    #[test]
    fn statements_and_other_questions_ask_nothing() {
        for text in [
            "上の階の足音が何時間も続いて眠れません",
            "夜中の2時まで音がします",
            "2時間の測定ですね、了解です",
            "12月9日の21時開始でお願いします",
            "何時から予約できますか？",
            "いつ来てもらえますか？",
            "料金はいくらですか",
            "The noise goes on for hours every night.",
        ] {
            assert_eq!(time_question(text), None, "{text}");
        }
    }
}
