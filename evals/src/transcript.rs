//! The transcript format (shared/spec/transcripts.md). Unknown keys are errors, so a typo in
//! an expectation fails loudly instead of silently passing.

use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;

use crate::EvalError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub now: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub fixtures: Option<Fixtures>,
    pub actor: Actor,
    pub turns: Vec<Turn>,
    /// The file it came from (fixture paths are relative to it).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    #[serde(default)]
    pub customers: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub role: ActorRole,
    #[serde(default)]
    pub customer_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorRole {
    Customer,
    Anonymous,
    Manager,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub proactive: Option<Proactive>,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proactive {
    pub trigger: String,
    pub customer_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub escalate: Option<bool>,
    /// After this turn, people hold the conversation (escalated now or earlier).
    pub handed_over: Option<bool>,
    pub escalation_reason: Option<String>,
    #[serde(default)]
    pub tools_called: Vec<String>,
    #[serde(default)]
    pub tools_not_called: Vec<String>,
    #[serde(default)]
    pub retrieved: Vec<String>,
    #[serde(default)]
    pub reply_contains: Vec<String>,
    #[serde(default)]
    pub reply_contains_any: Vec<String>,
    #[serde(default)]
    pub reply_not_contains: Vec<String>,
    #[serde(default)]
    pub mentions_customers: Vec<String>,
    #[serde(default)]
    pub not_mentions_customers: Vec<String>,
}

impl Transcript {
    pub fn parse(path: &Path, text: &str) -> Result<Self, EvalError> {
        let bad = |message: String| EvalError::BadTranscript {
            path: path.display().to_string(),
            message,
        };
        let mut t: Transcript = serde_yaml::from_str(text).map_err(|e| bad(e.to_string()))?;
        t.path = path.to_path_buf();
        if t.id.trim().is_empty() {
            return Err(bad("`id` is empty".into()));
        }
        if t.actor.role == ActorRole::Customer && t.actor.customer_id.is_none() {
            return Err(bad("actor.customer_id is required for role customer".into()));
        }
        if t.turns.is_empty() {
            return Err(bad("no turns".into()));
        }
        for (i, turn) in t.turns.iter().enumerate() {
            if turn.user.is_some() == turn.proactive.is_some() {
                return Err(bad(format!(
                    "turn {}: exactly one of `user` and `proactive` is required",
                    i + 1
                )));
            }
        }
        Ok(t)
    }

    /// The customers fixture file, resolved against the transcript's directory.
    pub fn customers_fixture(&self) -> Option<PathBuf> {
        let rel = self.fixtures.as_ref()?.customers.as_ref()?;
        let base = self.path.parent().unwrap_or(Path::new("."));
        Some(base.join(rel))
    }
}

/// Every `*.yaml` / `*.yml` file in `dir` (not recursive: fixtures live in subfolders), in
/// name order. Files that do not parse are returned as errors next to the good ones.
pub fn load_dir(dir: &Path) -> Result<Vec<Result<Transcript, EvalError>>, EvalError> {
    let io = |source| EvalError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|source| EvalError::Io {
                path: p.display().to_string(),
                source,
            })?;
            Transcript::parse(&p, &text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"
id: b2c-footsteps-001
title: 上階の足音の相談から予約まで
now: 2026-11-21T10:00:00+09:00
fixtures:
  customers: fixtures/customers.csv
actor:
  role: customer
  customer_id: C-1001
turns:
  - user: 上の階の足音がうるさいんです
    expect:
      escalate: false
  - user: 弁護士に相談して訴えたいです
    expect:
      escalate: true
      escalation_reason: legal
  - proactive:
      trigger: usage_drop
      customer_id: B-2001
    expect:
      reply_contains_any: [活用, ご利用]
"#;

    #[test]
    fn the_spec_example_parses() {
        let t = Transcript::parse(Path::new("/x/t.yaml"), SPEC_EXAMPLE).unwrap();
        assert_eq!(t.id, "b2c-footsteps-001");
        assert_eq!(t.turns.len(), 3);
        assert_eq!(
            t.turns[1].expect.escalation_reason.as_deref(),
            Some("legal")
        );
        assert_eq!(t.turns[2].proactive.as_ref().unwrap().trigger, "usage_drop");
        assert_eq!(
            t.customers_fixture().unwrap(),
            Path::new("/x/fixtures/customers.csv")
        );
    }

    #[test]
    fn unknown_expectations_and_missing_customer_ids_are_errors() {
        let typo = SPEC_EXAMPLE.replace("escalate: false", "escalates: false");
        assert!(Transcript::parse(Path::new("t.yaml"), &typo).is_err());
        let no_id = SPEC_EXAMPLE.replace("  customer_id: C-1001\n", "");
        assert!(Transcript::parse(Path::new("t.yaml"), &no_id).is_err());
    }
}
