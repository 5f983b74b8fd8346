//! Recognising a customer's request to stop proactive messages.

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

/// Whether `text` is a request to stop proactive messages (配信停止 / 停止 / 配信不要 / stop /
/// unsubscribe). Full-width letters and case are normalised first.
pub fn is_opt_out_request(text: &str) -> bool {
    let normalised: String = text
        .chars()
        .map(|c| match c {
            // Full-width ASCII (ｓｔｏｐ) to half-width.
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect::<String>()
        .to_lowercase();
    let trimmed = normalised
        .trim()
        .trim_end_matches(['。', '.', '!', '！', ' ']);
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

#[cfg(test)]
mod tests {
    use super::is_opt_out_request;

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
}
