//! Test doubles shared by this crate's unit tests (never shipped).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;

use crate::llm::{LanguageModel, LlmError, LlmOutput, LlmRequest, ToolCall};
use crate::tool::{RiskClass, Tool, ToolContext, ToolError, ToolOutput};

/// A test double: replies from a script, records what it was asked.
pub struct ScriptedModel {
    pub native: bool,
    pub script: Mutex<VecDeque<Step>>,
    pub requests: Mutex<Vec<LlmRequest>>,
}

pub enum Step {
    Text(&'static str),
    Calls(Vec<ToolCall>),
    Sleep(Duration),
    Fail,
}

impl ScriptedModel {
    pub fn new(native: bool, steps: Vec<Step>) -> Arc<Self> {
        Arc::new(Self {
            native,
            script: Mutex::new(steps.into()),
            requests: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl LanguageModel for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }
    fn native_tool_calls(&self) -> bool {
        self.native
    }
    async fn generate(
        &self,
        request: LlmRequest,
        deltas: mpsc::UnboundedSender<String>,
    ) -> Result<LlmOutput, LlmError> {
        self.requests.lock().unwrap().push(request);
        let step = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .expect("script ran out");
        match step {
            Step::Text(text) => {
                // Stream in small pieces, as a real backend does.
                let chars: Vec<char> = text.chars().collect();
                for piece in chars.chunks(3) {
                    let _ = deltas.send(piece.iter().collect());
                }
                Ok(LlmOutput {
                    text: text.into(),
                    ..Default::default()
                })
            }
            Step::Calls(calls) => Ok(LlmOutput {
                tool_calls: calls,
                ..Default::default()
            }),
            Step::Sleep(d) => {
                tokio::time::sleep(d).await;
                Ok(LlmOutput {
                    text: "遅すぎた返事".into(),
                    ..Default::default()
                })
            }
            Step::Fail => Err(LlmError::Unavailable("down".into())),
        }
    }
}

/// A tool that quotes a price and reports who called it.
pub struct PriceTool;

#[async_trait]
impl Tool for PriceTool {
    fn name(&self) -> &str {
        "recommend_plan"
    }
    fn description(&self) -> &str {
        "プランを提案"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {
            "noise_type": {"type": "string"}, "time_of_day": {"type": "string"},
            "duration_months": {"type": "integer"}, "n": {"type": "integer"}}})
    }
    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }
    async fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput {
            data: json!({"plan": "standard", "caller": ctx.identity.customer_id, "args": args}),
            display: "スタンダードプラン（12,800円）をおすすめします。".into(),
            must_quote: vec!["12,800円".into()],
            effects: Vec::new(),
        })
    }
}

/// An intent model that reads every message as one intent, for tests of what the hub does
/// with a label (the real model is tested in the intent crate).
pub struct FixedIntent(pub crate::intent::Intent);

impl crate::intent::IntentModel for FixedIntent {
    fn classify(
        &self,
        _text: &str,
    ) -> Result<crate::intent::IntentReading, crate::intent::IntentError> {
        let mut probabilities = vec![0.0; crate::intent::Intent::ALL.len()];
        probabilities[self.0.index()] = 0.95;
        Ok(crate::intent::IntentReading { probabilities })
    }
}
