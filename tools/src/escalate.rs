//! `escalate_to_human`: the model asks for a person. The tool only states the request
//! (`{"escalate": true, "reason": …}`); the agent's escalation policy acts on it (hand-off,
//! notification), so calling it twice is harmless.

use async_trait::async_trait;
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use serde::Deserialize;
use serde_json::{json, Value};

/// The reasons of `shared/spec/transcripts.md`.
pub const ESCALATION_REASONS: [&str; 6] = [
    "legal",
    "negative_sentiment",
    "refund_or_cancel",
    "complaint",
    "unresolved",
    "customer_request",
];

const MAX_SUMMARY_CHARS: usize = 1_000;

pub struct EscalateToHuman;

#[derive(Debug, Deserialize)]
struct Args {
    reason: String,
    summary: String,
}

#[async_trait]
impl Tool for EscalateToHuman {
    fn name(&self) -> &str {
        "escalate_to_human"
    }

    fn description(&self) -> &str {
        "担当者（人）に引き継ぐ。法的な相談、強い不満、返金・解約、苦情、解決できない問題、お客様のご希望のときに使う"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "reason": {"type": "string", "enum": ESCALATION_REASONS},
                "summary": {"type": "string", "description": "what the customer needs, for the person taking over"}
            },
            "required": ["reason", "summary"]
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    fn audience(&self) -> Audience {
        Audience::ChatOnly
    }

    async fn call(&self, _ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let args: Args =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        if !ESCALATION_REASONS.contains(&args.reason.as_str()) {
            return Err(ToolError::InvalidArguments(format!(
                "reason {:?} must be one of {}",
                args.reason,
                ESCALATION_REASONS.join(", ")
            )));
        }
        let summary: String = args
            .summary
            .trim()
            .chars()
            .take(MAX_SUMMARY_CHARS)
            .collect();
        Ok(ToolOutput {
            data: json!({
                "escalate": true,
                "reason": args.reason,
                "summary": summary,
            }),
            display: "担当者に引き継ぎます。これまでの内容は担当者にお伝えしますので、同じご説明を繰り返していただく必要はありません。".into(),
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizuna_agent::identity::Identity;

    fn ctx() -> ToolContext {
        ToolContext {
            identity: Identity::anonymous("v"),
            conversation_id: "c".into(),
            now: chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00+09:00").unwrap(),
        }
    }

    #[tokio::test]
    async fn returns_the_escalation_request() {
        let out = EscalateToHuman
            .call(&ctx(), json!({"reason": "legal", "summary": "訴訟を検討"}))
            .await
            .unwrap();
        assert_eq!(out.data["escalate"], json!(true));
        assert_eq!(out.data["reason"], json!("legal"));
        assert!(out.display.contains("担当者"));
    }

    #[tokio::test]
    async fn unknown_reasons_are_rejected() {
        let err = EscalateToHuman
            .call(&ctx(), json!({"reason": "bored", "summary": "x"}))
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::InvalidArguments(_)));
    }
}
