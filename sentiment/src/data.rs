//! The labelled message files (`{"text": "...", "label": "anger"}` per line), read with
//! kizuna-head's reader: a message's `label` is the head's label index (see
//! [`crate::label_at`]).

use std::path::Path;

pub use kizuna_head::data::{drop_heldout_overlaps, overlap_key, LabelledMessage};

use crate::error::Result;
use crate::labels::label_names;

/// The field of the labelled files holding the sentiment label.
pub const LABEL_FIELD: &str = "label";

/// Parses JSONL text: one message per non-blank line. `source` names the file in errors; an
/// unknown label is an error naming the file and line.
pub fn parse_labelled_jsonl(content: &str, source: &str) -> Result<Vec<LabelledMessage>> {
    Ok(kizuna_head::parse_labelled_jsonl(
        content,
        source,
        LABEL_FIELD,
        &label_names(),
    )?)
}

/// Reads a labelled JSONL file.
pub fn read_labelled_jsonl(path: &Path) -> Result<Vec<LabelledMessage>> {
    Ok(kizuna_head::read_labelled_jsonl(
        path,
        LABEL_FIELD,
        &label_names(),
    )?)
}

#[cfg(test)]
mod tests {
    use kizuna_agent::sentiment::SentimentLabel;

    use super::*;
    use crate::error::Error;
    use crate::labels::label_index;

    #[test]
    fn parses_labels_and_reports_bad_lines_with_their_number() {
        let parsed = parse_labelled_jsonl(
            "{\"text\": \"ありがとうございました\", \"label\": \"positive\"}\n\n\
             {\"text\": \"返事がない\", \"label\": \"anger\"}\n",
            "t.jsonl",
        )
        .expect("valid lines parse");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].label, label_index(SentimentLabel::Positive));
        assert_eq!(parsed[1].label, label_index(SentimentLabel::Anger));

        let error = parse_labelled_jsonl(
            "{\"text\": \"a\", \"label\": \"anger\"}\n{\"text\": \"b\", \"label\": \"furious\"}\n",
            "t.jsonl",
        )
        .expect_err("unknown label");
        assert!(matches!(error, Error::BadData { line: 2, .. }), "{error}");
        assert!(error.to_string().contains("furious"), "{error}");
    }
}
