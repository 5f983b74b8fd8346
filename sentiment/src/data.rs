//! The labelled message files (`{"text": "...", "label": "anger"}` per line) and the overlap
//! check that keeps held-out messages out of training.

use std::collections::HashSet;
use std::path::Path;

use kizuna_agent::sentiment::SentimentLabel;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// One labelled customer message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LabelledMessage {
    pub text: String,
    pub label: SentimentLabel,
}

/// Parses JSONL text: one message per non-blank line. `source` names the file in errors.
pub fn parse_labelled_jsonl(content: &str, source: &str) -> Result<Vec<LabelledMessage>> {
    let mut messages = Vec::new();
    for (index, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad_line = |reason: String| Error::BadData {
            path: source.to_string(),
            line: index + 1,
            reason,
        };
        let message: LabelledMessage =
            serde_json::from_str(line).map_err(|e| bad_line(e.to_string()))?;
        if message.text.trim().is_empty() {
            return Err(bad_line("empty text".into()));
        }
        messages.push(message);
    }
    Ok(messages)
}

/// Reads a labelled JSONL file.
pub fn read_labelled_jsonl(path: &Path) -> Result<Vec<LabelledMessage>> {
    let content = std::fs::read_to_string(path).map_err(Error::io(path))?;
    parse_labelled_jsonl(&content, &path.display().to_string())
}

/// The form two messages are compared in for overlap: NFKC-normalised with punctuation,
/// symbols and whitespace removed (only letters and digits kept), so 「？」 vs "?" or a
/// trailing 「。」 does not hide a duplicate.
pub fn overlap_key(text: &str) -> String {
    text.nfkc().filter(|c| c.is_alphanumeric()).collect()
}

/// Splits `train` into the messages to keep and those whose [`overlap_key`] also occurs in
/// `heldout` (which would otherwise inflate the held-out scores).
pub fn drop_heldout_overlaps(
    train: Vec<LabelledMessage>,
    heldout: &[LabelledMessage],
) -> (Vec<LabelledMessage>, Vec<LabelledMessage>) {
    let heldout_keys: HashSet<String> = heldout.iter().map(|m| overlap_key(&m.text)).collect();
    train
        .into_iter()
        .partition(|m| !heldout_keys.contains(&overlap_key(&m.text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_reports_bad_lines_with_their_number() {
        let parsed = parse_labelled_jsonl(
            "{\"text\": \"ありがとうございました\", \"label\": \"positive\"}\n\n\
             {\"text\": \"返事がない\", \"label\": \"anger\"}\n",
            "t.jsonl",
        )
        .expect("valid lines parse");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].label, SentimentLabel::Positive);
        assert_eq!(parsed[1].label, SentimentLabel::Anger);

        let error = parse_labelled_jsonl(
            "{\"text\": \"a\", \"label\": \"anger\"}\n{\"text\": \"b\", \"label\": \"furious\"}\n",
            "t.jsonl",
        )
        .expect_err("unknown label");
        assert!(matches!(error, Error::BadData { line: 2, .. }), "{error}");
    }

    #[test]
    fn overlap_ignores_width_and_punctuation() {
        assert_eq!(
            overlap_key("測定時間はどれくらいかかりますか？"),
            overlap_key("測定時間は、どれくらいかかりますか?")
        );
        assert_eq!(overlap_key("ＡＢＣ　１２３。"), "ABC123");
        assert_ne!(
            overlap_key("測定は必要ですか"),
            overlap_key("測定は不要ですか")
        );
    }

    #[test]
    fn drops_only_training_lines_found_in_heldout() {
        let message = |text: &str| LabelledMessage {
            text: text.into(),
            label: SentimentLabel::Neutral,
        };
        let train = vec![
            message("レポートの再発行はできますか"),
            message("解約したいです"),
        ];
        let heldout = vec![message("レポートの再発行はできますか？")];
        let (kept, dropped) = drop_heldout_overlaps(train, &heldout);
        assert_eq!(kept, vec![message("解約したいです")]);
        assert_eq!(dropped, vec![message("レポートの再発行はできますか")]);
    }
}
