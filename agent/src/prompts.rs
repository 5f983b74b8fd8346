//! Prompts live in files under `prompts/` and are loaded once at start, so they can be
//! reviewed and changed without touching code.

use std::path::{Path, PathBuf};

use crate::llm::ToolSpec;

#[derive(Debug, Clone, PartialEq)]
pub struct Prompts {
    /// The fixed system prompt (kept short: every token costs prefill time on a CPU model).
    pub system: String,
    /// Tool-use instructions for models without native tool calls; `{{tools}}` is replaced
    /// by one line per tool.
    pub tools: String,
    /// Sent once after a malformed tool call.
    pub retry: String,
    /// The safe reply when no answer can be produced.
    pub fallback: String,
    /// Appended to tool results for text-only models.
    pub tool_result_hint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read prompt file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prompt file {0} is empty")]
    Empty(PathBuf),
    #[error("prompt file {0} lacks the {{{{tools}}}} placeholder")]
    NoToolsPlaceholder(PathBuf),
}

impl Prompts {
    pub fn load(dir: &Path) -> Result<Self, PromptError> {
        let read = |name: &str| -> Result<String, PromptError> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|source| PromptError::Read {
                path: path.clone(),
                source,
            })?;
            let text = text.trim().to_string();
            if text.is_empty() {
                return Err(PromptError::Empty(path));
            }
            Ok(text)
        };
        let prompts = Self {
            system: read("system.ja.md")?,
            tools: read("tools.ja.md")?,
            retry: read("retry.ja.md")?,
            fallback: read("fallback.ja.md")?,
            tool_result_hint: read("tool_result.ja.md")?,
        };
        if !prompts.tools.contains("{{tools}}") {
            return Err(PromptError::NoToolsPlaceholder(dir.join("tools.ja.md")));
        }
        Ok(prompts)
    }

    /// The system message: the system prompt, plus tool instructions for text-only models.
    pub fn system_message(&self, tools: &[ToolSpec], native_tools: bool) -> String {
        if native_tools || tools.is_empty() {
            return self.system.clone();
        }
        let lines = tools
            .iter()
            .map(compact_tool_line)
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "{}\n\n{}",
            self.system,
            self.tools.replace("{{tools}}", &lines)
        )
    }
}

/// `- name(arg: type|a/b, ...): description` — a few tokens per tool instead of a schema.
fn compact_tool_line(spec: &ToolSpec) -> String {
    let args = spec
        .parameters
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| {
                    let ty = match v.get("enum").and_then(|e| e.as_array()) {
                        Some(values) => values
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join("/"),
                        None => v
                            .get("type")
                            .and_then(|t| t.as_str())
                            .unwrap_or("any")
                            .to_string(),
                    };
                    format!("{k}: {ty}")
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!("- {}({}): {}", spec.name, args, spec.description)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repo_prompts() -> Prompts {
        Prompts::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts")).unwrap()
    }

    #[test]
    fn shipped_prompts_load() {
        let p = repo_prompts();
        assert!(p.system.contains("ZENBU"));
        assert!(p.fallback.contains("担当者"));
    }

    #[test]
    fn tool_lines_are_compact_and_only_for_text_models() {
        let p = repo_prompts();
        let spec = ToolSpec {
            name: "recommend_plan".into(),
            description: "最適なプラン".into(),
            parameters: json!({"type": "object", "properties": {"time_of_day": {"type": "string", "enum": ["night", "day"]}}}),
        };
        let text = p.system_message(std::slice::from_ref(&spec), false);
        assert!(text.contains("- recommend_plan(time_of_day: night/day): 最適なプラン"));
        assert!(!text.contains("{{tools}}"));
        assert_eq!(p.system_message(&[spec], true), p.system);
    }

    #[test]
    fn missing_files_name_the_path() {
        let err = Prompts::load(Path::new("/nonexistent-prompts")).unwrap_err();
        assert!(err
            .to_string()
            .contains("/nonexistent-prompts/system.ja.md"));
    }
}
