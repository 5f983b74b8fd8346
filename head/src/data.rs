//! The labelled message files (`{"text": "...", "<label field>": "<label>"}` per line) and the
//! overlap check that keeps held-out messages out of training.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// One labelled message; `label` is an index into the label list it was read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledMessage {
    pub text: String,
    pub label: usize,
}

/// Parses JSONL text: one message per non-blank line, each an object with a string `text` and
/// a string label in `label_field` (e.g. `label` for sentiment, `intent` for intents) naming
/// one of `labels`, whose index becomes the message's label; other fields are ignored.
/// `source` names the file in errors, which give the 1-based line.
pub fn parse_labelled_jsonl(
    content: &str,
    source: &str,
    label_field: &str,
    labels: &[impl AsRef<str>],
) -> Result<Vec<LabelledMessage>> {
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
        let value: Value = serde_json::from_str(line).map_err(|e| bad_line(e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(bad_line("expected a JSON object".into()));
        };
        let text = match object.get("text") {
            Some(Value::String(text)) => text,
            Some(_) => return Err(bad_line("field `text` is not a string".into())),
            None => return Err(bad_line("missing field `text`".into())),
        };
        let name = match object.get(label_field) {
            Some(Value::String(name)) => name,
            Some(_) => return Err(bad_line(format!("field `{label_field}` is not a string"))),
            None => return Err(bad_line(format!("missing field `{label_field}`"))),
        };
        let label = labels
            .iter()
            .position(|l| l.as_ref() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = labels.iter().map(|l| l.as_ref()).collect();
                bad_line(format!(
                    "unknown {label_field} {name:?} (expected one of {})",
                    names.join(", ")
                ))
            })?;
        if text.trim().is_empty() {
            return Err(bad_line("empty text".into()));
        }
        messages.push(LabelledMessage {
            text: text.clone(),
            label,
        });
    }
    Ok(messages)
}

/// Reads a labelled JSONL file (see [`parse_labelled_jsonl`]).
pub fn read_labelled_jsonl(
    path: &Path,
    label_field: &str,
    labels: &[impl AsRef<str>],
) -> Result<Vec<LabelledMessage>> {
    let content = std::fs::read_to_string(path).map_err(Error::io(path))?;
    parse_labelled_jsonl(&content, &path.display().to_string(), label_field, labels)
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

    const SENTIMENT: [&str; 4] = ["anger", "anxious", "neutral", "positive"];

    #[test]
    fn parses_labels_and_reports_bad_lines_with_their_number() {
        let parsed = parse_labelled_jsonl(
            "{\"text\": \"ありがとうございました\", \"label\": \"positive\"}\n\n\
             {\"text\": \"返事がない\", \"label\": \"anger\", \"note\": 1}\n",
            "t.jsonl",
            "label",
            &SENTIMENT,
        )
        .expect("valid lines parse");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].label, 3);
        assert_eq!(parsed[1].label, 0);
        assert_eq!(parsed[1].text, "返事がない");

        let error = parse_labelled_jsonl(
            "{\"text\": \"a\", \"label\": \"anger\"}\n{\"text\": \"b\", \"label\": \"furious\"}\n",
            "t.jsonl",
            "label",
            &SENTIMENT,
        )
        .expect_err("unknown label");
        assert!(matches!(error, Error::BadData { line: 2, .. }), "{error}");
        let message = error.to_string();
        assert!(message.starts_with("t.jsonl, line 2: "), "{message}");
        assert!(message.contains("\"furious\""), "{message}");
        assert!(
            message.contains("anger, anxious, neutral, positive"),
            "{message}"
        );

        for (content, line) in [
            ("{\"text\": \"a\"}\n", 1),
            ("{\"text\": \"  \", \"label\": \"anger\"}\n", 1),
            ("\n{\"label\": \"anger\"}\n", 2),
            ("{\"text\": \"a\", \"label\": 3}\n", 1),
            ("[1, 2]\n", 1),
            ("{\"text\": \"a\", \"label\": \"anger\"\n", 1),
        ] {
            let error = parse_labelled_jsonl(content, "t.jsonl", "label", &SENTIMENT)
                .expect_err("a bad line must be refused");
            assert!(
                matches!(&error, Error::BadData { line: l, .. } if *l == line),
                "{content:?}: {error}"
            );
        }
    }

    #[test]
    fn the_caller_names_the_label_field() {
        let labels = vec!["greeting".to_string(), "cancel".to_string()];
        let parsed = parse_labelled_jsonl(
            "{\"text\": \"こんにちは\", \"intent\": \"greeting\", \"label\": \"x\"}\n\
             {\"text\": \"解約したい\", \"intent\": \"cancel\"}\n",
            "intents.jsonl",
            "intent",
            &labels,
        )
        .expect("parse");
        assert_eq!(parsed.iter().map(|m| m.label).collect::<Vec<_>>(), [0, 1]);
        let error = parse_labelled_jsonl(
            "{\"text\": \"a\", \"label\": \"greeting\"}\n",
            "intents.jsonl",
            "intent",
            &labels,
        )
        .expect_err("no intent field");
        assert!(error.to_string().contains("`intent`"), "{error}");
        let error = parse_labelled_jsonl(
            "{\"text\": \"a\", \"intent\": \"refund\"}\n",
            "intents.jsonl",
            "intent",
            &labels,
        )
        .expect_err("unknown intent");
        assert_eq!(
            error.to_string(),
            "intents.jsonl, line 1: unknown intent \"refund\" (expected one of greeting, cancel)"
        );
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
            label: 2,
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
