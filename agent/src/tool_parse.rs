//! Tool calls written as text by models without native tool calling.
//!
//! Small local models emit calls in several shapes; all of these are accepted:
//! `<tool_call>{"name": .., "arguments": {..}}</tool_call>`, a fenced ```json block, or a bare
//! JSON object in the text. Keys seen in the wild are tolerated too (`parameters`/`args` for
//! `arguments`, `{"function": {..}}` wrappers, arguments given as a JSON string).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedReply {
    /// The text with every tool-call block removed, trimmed.
    pub text: String,
    pub calls: Vec<ParsedCall>,
    /// Something looked like a tool call but could not be read: the agent retries once.
    pub malformed: bool,
}

/// Splits model text into prose and tool calls.
pub fn parse_reply(raw: &str) -> ParsedReply {
    let mut out = ParsedReply::default();
    let mut rest = raw.to_string();

    // 1. <tool_call> ... </tool_call> blocks (a missing close tag runs to the end).
    while let Some(start) = rest.find("<tool_call>") {
        let body_start = start + "<tool_call>".len();
        let (body_end, block_end) = match rest[body_start..].find("</tool_call>") {
            Some(i) => (body_start + i, body_start + i + "</tool_call>".len()),
            None => (rest.len(), rest.len()),
        };
        let body = strip_fence(rest[body_start..body_end].trim());
        match call_from_json_text(body) {
            Some(call) => out.calls.push(call),
            None => out.malformed = true,
        }
        rest.replace_range(start..block_end, "");
    }

    // 2. Fenced code blocks whose content is a call object.
    let mut search_from = 0;
    while let Some(rel) = rest[search_from..].find("```") {
        let start = search_from + rel;
        let after_ticks = start + 3;
        let Some(close_rel) = rest[after_ticks..].find("```") else {
            // An unclosed fence that opens like a call is a truncated call.
            if looks_like_call(&rest[after_ticks..]) {
                out.malformed = true;
                rest.truncate(start);
            }
            break;
        };
        let inner = &rest[after_ticks..after_ticks + close_rel];
        let inner = inner
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .trim();
        let block_end = after_ticks + close_rel + 3;
        if let Some(call) = call_from_json_text(inner) {
            out.calls.push(call);
            rest.replace_range(start..block_end, "");
            search_from = start;
        } else {
            if looks_like_call(inner) {
                out.malformed = true;
                rest.replace_range(start..block_end, "");
                search_from = start;
                continue;
            }
            search_from = block_end;
        }
    }

    // 3. Bare JSON objects.
    let mut search_from = 0;
    while let Some(rel) = rest[search_from..].find('{') {
        let start = search_from + rel;
        match balanced_object_end(&rest[start..]) {
            Some(len) => {
                let candidate = &rest[start..start + len];
                if let Some(call) = call_from_json_text(candidate) {
                    out.calls.push(call);
                    rest.replace_range(start..start + len, "");
                    search_from = start;
                } else {
                    search_from = start + 1;
                }
            }
            None => {
                if looks_like_call(&rest[start..]) {
                    out.malformed = true;
                    rest.truncate(start);
                }
                break;
            }
        }
    }

    out.text = rest.trim().to_string();
    out
}

fn strip_fence(s: &str) -> &str {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix("```") {
        let inner = inner.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        inner.trim_end_matches("```").trim()
    } else {
        s
    }
}

fn looks_like_call(s: &str) -> bool {
    let s = s.trim_start();
    (s.starts_with('{') || s.starts_with("json")) && s.contains("\"name\"")
}

/// Length of the balanced `{...}` object at the start of `s`, honouring JSON strings.
fn balanced_object_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn call_from_json_text(text: &str) -> Option<ParsedCall> {
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    call_from_value(&value)
}

fn call_from_value(value: &Value) -> Option<ParsedCall> {
    let obj = value.as_object()?;
    if let Some(function) = obj.get("function").filter(|f| f.is_object()) {
        return call_from_value(function);
    }
    let name = obj
        .get("name")
        .or_else(|| obj.get("tool"))
        .or_else(|| obj.get("tool_name"))?
        .as_str()?
        .trim()
        .to_string();
    if name.is_empty() {
        return None;
    }
    let arguments = match obj
        .get("arguments")
        .or_else(|| obj.get("parameters"))
        .or_else(|| obj.get("args"))
    {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(Value::String(s)) => serde_json::from_str(s).ok().filter(Value::is_object)?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return None,
    };
    Some(ParsedCall { name, arguments })
}

/// Decides, while text streams in, which part can be shown to the customer: prose is
/// forwarded; from the first sign of a tool call on, nothing is.
#[derive(Debug, Default)]
pub struct DeltaGate {
    seen: String,
    forwarded: usize,
    closed: bool,
}

const CALL_MARKERS: [&str; 3] = ["<tool_call>", "```", "{"];

impl DeltaGate {
    /// Feeds generated text; returns what may be shown now.
    pub fn push(&mut self, delta: &str) -> Option<String> {
        if self.closed {
            return None;
        }
        self.seen.push_str(delta);
        let pending = &self.seen[self.forwarded..];
        if let Some(pos) = CALL_MARKERS.iter().filter_map(|m| pending.find(m)).min() {
            self.closed = true;
            let shown = pending[..pos].to_string();
            self.forwarded += pos;
            return (!shown.is_empty()).then_some(shown);
        }
        // Hold back a tail that could be the start of a marker split across deltas.
        let hold = CALL_MARKERS
            .iter()
            .flat_map(|m| (1..m.len()).map(move |n| &m[..n]))
            .filter(|prefix| pending.ends_with(prefix))
            .map(|p| p.len())
            .max()
            .unwrap_or(0);
        let cut = pending.len() - hold;
        if cut == 0 {
            return None;
        }
        let shown = pending[..cut].to_string();
        self.forwarded += cut;
        Some(shown)
    }

    /// Whether a tool call (or code) started, so the rest was held back.
    pub fn closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tagged_call() {
        let r = parse_reply("確認します。\n<tool_call>\n{\"name\": \"recommend_plan\", \"arguments\": {\"noise_type\": \"footsteps\"}}\n</tool_call>");
        assert_eq!(
            r.calls,
            vec![ParsedCall {
                name: "recommend_plan".into(),
                arguments: json!({"noise_type": "footsteps"})
            }]
        );
        assert_eq!(r.text, "確認します。");
        assert!(!r.malformed);
    }

    #[test]
    fn fenced_call_with_string_arguments() {
        let r = parse_reply("```json\n{\"name\": \"check_availability\", \"arguments\": \"{\\\"preferred_time\\\": \\\"night\\\"}\"}\n```");
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].arguments, json!({"preferred_time": "night"}));
        assert_eq!(r.text, "");
    }

    #[test]
    fn bare_json_and_function_wrapper() {
        let r = parse_reply(
            "{\"function\": {\"name\": \"recommend_plan\", \"parameters\": {}}} 以上です",
        );
        assert_eq!(r.calls.len(), 1);
        assert_eq!(r.calls[0].name, "recommend_plan");
        assert_eq!(r.text, "以上です");
    }

    #[test]
    fn several_calls_in_one_reply() {
        let r = parse_reply("<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call><tool_call>{\"name\":\"b\",\"arguments\":{\"x\":\"}\"}}</tool_call>");
        assert_eq!(
            r.calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(r.calls[1].arguments, json!({"x": "}"}));
    }

    #[test]
    fn malformed_calls_are_flagged() {
        assert!(
            parse_reply("<tool_call>{\"name\": \"recommend_plan\", \"arguments\": {</tool_call>")
                .malformed
        );
        assert!(
            parse_reply("```json\n{\"name\": \"recommend_plan\", \"arguments\": {\"a\": }\n```")
                .malformed
        );
        assert!(parse_reply("はい {\"name\": \"recommend_plan\", \"arguments\": {\"a\"").malformed);
    }

    #[test]
    fn prose_and_non_call_json_are_left_alone() {
        let r = parse_reply("料金は12,800円です。{\"plan\": \"standard\"}");
        assert!(r.calls.is_empty());
        assert!(!r.malformed);
        assert_eq!(r.text, "料金は12,800円です。{\"plan\": \"standard\"}");
        let code = parse_reply("```\nfn main() {}\n```");
        assert!(code.calls.is_empty() && !code.malformed);
    }

    #[test]
    fn gate_forwards_prose_and_stops_at_calls() {
        let mut g = DeltaGate::default();
        assert_eq!(g.push("こんにちは"), Some("こんにちは".into()));
        assert_eq!(g.push("。<tool"), Some("。".into()));
        assert_eq!(g.push("_call>{\"name\""), None);
        assert!(g.closed());
        assert_eq!(g.push("more"), None);

        let mut g = DeltaGate::default();
        assert_eq!(g.push("`"), None);
        assert_eq!(g.push("`` json"), None);
        assert!(g.closed());

        let mut g = DeltaGate::default();
        assert_eq!(g.push("<b"), Some("<b".into()));
    }
}
