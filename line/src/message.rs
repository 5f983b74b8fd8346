//! The message objects Kizuna sends and LINE's limits on them (Messaging API reference:
//! a text message holds at most 5,000 characters; a reply or push carries at most 5
//! messages; a quick reply has at most 13 buttons, each label at most 20 characters).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const MAX_TEXT_CHARS: usize = 5_000;
pub const MAX_MESSAGES_PER_REQUEST: usize = 5;
pub const MAX_QUICK_REPLY_ITEMS: usize = 13;
pub const MAX_QUICK_REPLY_LABEL_CHARS: usize = 20;
/// A message action's `text` is at most 300 characters.
pub const MAX_ACTION_TEXT_CHARS: usize = 300;

/// A button under a message: tapping it sends `text` as the user's message (the chat's
/// `quick_replies`, docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickReply {
    pub label: String,
    pub text: String,
}

/// Splits `text` into pieces of at most `max_chars` characters, preferring to cut after a
/// line break, then after a Japanese full stop, so sentences stay whole where they can.
pub fn split_text(text: &str, max_chars: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let end = (start + max_chars).min(chars.len());
        let cut = if end == chars.len() {
            end
        } else {
            let window = &chars[start..end];
            let at = |set: &[char]| {
                window
                    .iter()
                    .rposition(|c| set.contains(c))
                    .filter(|&i| i + 1 >= window.len() / 2)
                    .map(|i| start + i + 1)
            };
            at(&['\n'])
                .or_else(|| at(&['。', '！', '？', '.']))
                .unwrap_or(end)
        };
        let piece: String = chars[start..cut].iter().collect();
        if !piece.trim().is_empty() {
            pieces.push(piece.trim_end_matches('\n').to_string());
        }
        start = cut;
    }
    pieces
}

/// LINE message objects for one reply: the text split at LINE's limit, the quick-reply
/// buttons on the last message. Batches of at most 5 messages each (one request each).
pub fn text_messages(text: &str, quick_replies: &[QuickReply]) -> Vec<Vec<Value>> {
    let mut messages: Vec<Value> = split_text(text, MAX_TEXT_CHARS)
        .into_iter()
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    if messages.is_empty() {
        return Vec::new();
    }
    let items: Vec<Value> = quick_replies
        .iter()
        .take(MAX_QUICK_REPLY_ITEMS)
        .map(|q| {
            json!({"type": "action", "action": {
                "type": "message",
                "label": truncate(&q.label, MAX_QUICK_REPLY_LABEL_CHARS),
                "text": truncate(&q.text, MAX_ACTION_TEXT_CHARS),
            }})
        })
        .collect();
    if !items.is_empty() {
        let last = messages.last_mut().expect("not empty");
        last["quickReply"] = json!({"items": items});
    }
    messages
        .chunks(MAX_MESSAGES_PER_REQUEST)
        .map(<[Value]>::to_vec)
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_split_at_the_limit_on_sentence_ends() {
        let sentence = "スタンダードプランは12,800円です。";
        let text = sentence.repeat(600); // 12,600 characters
        let pieces = split_text(&text, MAX_TEXT_CHARS);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_TEXT_CHARS));
        assert!(pieces.iter().all(|p| p.ends_with('。')));
        assert_eq!(pieces.concat(), text, "nothing is lost");
        assert_eq!(split_text("短い", 5000), ["短い"]);
        let unbroken = "あ".repeat(10_001);
        let pieces = split_text(&unbroken, MAX_TEXT_CHARS);
        assert_eq!(
            pieces.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [5000, 5000, 1]
        );
    }

    #[test]
    fn messages_are_batched_by_five_with_quick_replies_on_the_last() {
        let choices: Vec<QuickReply> = (0..15)
            .map(|i| QuickReply {
                label: format!("とても長いボタンのラベルです、番号{i}"),
                text: format!("選択{i}"),
            })
            .collect();
        let batches = text_messages(&"あ".repeat(6 * MAX_TEXT_CHARS), &choices);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [5, 1]);
        let last = &batches[1][0];
        let items = last["quickReply"]["items"].as_array().unwrap();
        assert_eq!(items.len(), MAX_QUICK_REPLY_ITEMS);
        assert_eq!(items[0]["action"]["type"], "message");
        assert_eq!(items[0]["action"]["text"], "選択0");
        assert!(
            items[0]["action"]["label"]
                .as_str()
                .unwrap()
                .chars()
                .count()
                <= 20
        );
        assert!(batches[0][0].get("quickReply").is_none());
        assert!(text_messages("  ", &choices).is_empty());
    }
}
