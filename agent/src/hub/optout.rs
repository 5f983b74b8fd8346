//! Recognising a customer's request to stop (or resume) proactive messages. The hub answers
//! these in chat; outreach re-exports them (through `kizuna_tools::optout`) for replies that
//! reach it by other channels.

/// Phrases that ask to stop messages wherever they appear.
const STOP_PHRASES_JA: [&str; 3] = ["配信停止", "配信不要", "配信を停止"];
const STOP_WORDS_EN: [&str; 3] = ["unsubscribe", "opt out", "opt-out"];
/// Whole messages that ask to stop: a bare 停止 / stop inside a longer sentence
/// (「測定を停止したい」, "the noise never stops") is not an opt-out.
const STOP_MESSAGES: [&str; 6] = [
    "停止",
    "停止します",
    "停止してください",
    "stop",
    "stop please",
    "please stop",
];

/// Whole messages (after a polite ending is removed) that ask to resume. Stricter than
/// stopping: resuming is consent, so a question about it (「配信再開の方法は？」) is not one.
const START_MESSAGES: [&str; 7] = [
    "配信再開",
    "配信を再開",
    "配信停止を解除",
    "配信停止解除",
    "resubscribe",
    "start",
    "start again",
];
const POLITE_ENDINGS: [&str; 8] = [
    "してください",
    "して下さい",
    "してほしいです",
    "してほしい",
    "をお願いします",
    "でお願いします",
    "お願いします",
    "します",
];

/// Full-width ASCII (ｓｔｏｐ) to half-width, ideographic space to space, lower case.
fn normalise(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect::<String>()
        .to_lowercase()
}

fn trim_message(normalised: &str) -> &str {
    normalised
        .trim()
        .trim_end_matches(['。', '.', '!', '！', ' '])
}

/// Whether `text` is a request to stop proactive messages (配信停止 / 停止 / 配信不要 / stop /
/// unsubscribe). Full-width letters and case are normalised first. Never true together with
/// [`is_opt_in_request`] (「配信停止を解除して」 asks to resume).
pub fn is_opt_out_request(text: &str) -> bool {
    if is_opt_in_request(text) {
        return false;
    }
    let normalised = normalise(text);
    let trimmed = trim_message(&normalised);
    if STOP_MESSAGES.contains(&trimmed) {
        return true;
    }
    if STOP_PHRASES_JA.iter().any(|p| trimmed.contains(p)) {
        return true;
    }
    // Whole words only: "was i unsubscribed?" asks a question, it is not a request.
    let words: Vec<&str> = trimmed
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .filter(|w| !w.is_empty())
        .collect();
    let joined = format!(" {} ", words.join(" "));
    STOP_WORDS_EN
        .iter()
        .any(|w| joined.contains(&format!(" {w} ")))
}

/// Whether `text`, as a whole message, asks to resume proactive messages (配信再開 /
/// 配信を再開してください / 配信停止を解除 / resubscribe / start).
pub fn is_opt_in_request(text: &str) -> bool {
    let normalised = normalise(text);
    let mut message = trim_message(&normalised);
    for polite in ["please ", "pls "] {
        if let Some(rest) = message.strip_prefix(polite) {
            message = rest.trim_start();
        }
    }
    for polite in [" please", " pls"] {
        if let Some(rest) = message.strip_suffix(polite) {
            message = rest.trim_end();
        }
    }
    if let Some(rest) = POLITE_ENDINGS
        .iter()
        .find_map(|ending| message.strip_suffix(ending))
    {
        message = rest.trim_end();
    }
    START_MESSAGES.contains(&message)
}

#[cfg(test)]
mod tests {
    use super::{is_opt_in_request, is_opt_out_request};

    #[test]
    fn recognises_stop_requests() {
        for text in [
            "配信停止",
            "配信停止でお願いします",
            "停止",
            "停止。",
            "STOP",
            "ｓｔｏｐ",
            "Unsubscribe me please",
            "今後のご案内は配信不要です",
            "メールの配信を停止してください",
        ] {
            assert!(is_opt_out_request(text), "{text}");
        }
    }

    #[test]
    fn ignores_ordinary_messages() {
        for text in [
            "測定を停止したいのですが、予約の変更はできますか",
            "騒音がstopしない",
            "The noise never stops at night and I need help with a measurement",
            "予約をお願いします",
            "nonstop",
        ] {
            assert!(!is_opt_out_request(text), "{text}");
        }
    }

    #[test]
    fn recognises_resume_requests() {
        for text in [
            "配信再開",
            "配信再開。",
            "配信を再開してください",
            "配信再開をお願いします",
            "配信停止を解除してください",
            "ＳＴＡＲＴ",
            "Start",
            "resubscribe please",
        ] {
            assert!(is_opt_in_request(text), "{text}");
            assert!(!is_opt_out_request(text), "{text} is not also a stop");
        }
    }

    #[test]
    fn resuming_needs_the_whole_message() {
        for text in [
            "配信再開の方法は？",
            "配信再開？",
            "測定を再開してください",
            "start the measurement tomorrow",
            "When does the measurement start?",
            "restart",
            "配信停止",
        ] {
            assert!(!is_opt_in_request(text), "{text}");
        }
    }
}
