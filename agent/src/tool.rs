//! The tool interface: every capability the agent can call implements [`Tool`].

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::identity::{Identity, Role};
use crate::llm::ToolSpec;

/// Tool names are at most this long (OpenAI's limit for function names).
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// Whether calling a tool changes anything. Write tools are never retried blindly and are
/// guarded by the caller's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskClass {
    Read,
    Write,
}

/// Who a tool is offered to outside a chat turn (e.g. over MCP, docs/mcp.md). Calls are still
/// checked by the tool itself against the verified identity; this only decides what a caller
/// is shown and may try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Anyone, signed in or not (plan facts, free slots).
    Everyone,
    /// Signed-in customers (their own account) and managers.
    SignedIn,
    /// Signed-in customers only (their own account).
    Customers,
    /// Managers (CSMs) only.
    Managers,
    /// Only inside a chat conversation: the tool acts on the conversation itself.
    ChatOnly,
}

impl Audience {
    /// Whether a caller with `role` is offered the tool.
    pub fn admits(self, role: Role) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::SignedIn => matches!(role, Role::Customer | Role::Manager),
            Audience::Customers => role == Role::Customer,
            Audience::Managers => role == Role::Manager,
            Audience::ChatOnly => false,
        }
    }
}

/// What a tool knows about the call besides its arguments: the verified caller and "now".
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub identity: Identity,
    pub conversation_id: String,
    pub now: DateTime<FixedOffset>,
}

/// What a tool returns on success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    /// Structured result for the model, the widget and the evaluation harness.
    pub data: serde_json::Value,
    /// A short Japanese rendering the agent can show as is when the model is unavailable
    /// or leaves out facts that must reach the customer.
    pub display: String,
    /// Strings the reply must contain (e.g. a quoted price); the agent appends `display`
    /// to a model reply that omits any of them.
    #[serde(default)]
    pub must_quote: Vec<String>,
    /// What the call changed in the world. The hub acts on effects (e.g. a booking made in
    /// reply to outreach counts as converted), never on tool names (docs/architecture.md,
    /// "How to add a tool").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<ToolEffect>,
}

/// A change a tool made, reported as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum ToolEffect {
    /// A new measurement booking (not one the customer already had).
    BookingCreated { booking_id: String },
    /// A booking was cancelled.
    BookingCancelled { booking_id: String },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    #[error("not permitted for this caller: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the tool failed: {0}")]
    Failed(String),
}

#[async_trait]
pub trait Tool: Send + Sync {
    /// Canonical name (see shared/spec/transcripts.md), at most 64 characters.
    fn name(&self) -> &str;
    /// One line for the model, in Japanese or English.
    fn description(&self) -> &str;
    /// JSON schema of the arguments object.
    fn parameters(&self) -> serde_json::Value;
    fn risk(&self) -> RiskClass;
    /// Who is offered the tool outside a chat turn. Closed by default: a tool that says
    /// nothing is shown to managers only.
    fn audience(&self) -> Audience {
        Audience::Managers
    }
    async fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError>;

    /// For a write tool: checks the call without changing anything and describes, in
    /// `display`, exactly what [`Tool::call`] would do, for the customer to consent to (see
    /// docs/architecture.md, "Writes need consent"). `data.possible == false` means it
    /// cannot be done as asked (e.g. the slot is full), `display` saying why. Read tools
    /// need no preview.
    async fn preview(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        Err(ToolError::Failed(format!(
            "{} has no preview: it is not a write tool",
            self.name()
        )))
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    #[error("tool name {0:?} is empty, longer than 64 characters or not [a-zA-Z0-9_-]")]
    BadName(String),
    #[error("tool {0:?} is registered twice")]
    Duplicate(String),
}

/// The tools available to the agent, by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl ToolRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), RegistryError> {
        let name = tool.name().to_string();
        let valid = !name.is_empty()
            && name.len() <= MAX_TOOL_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(RegistryError::BadName(name));
        }
        if self.tools.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        self.tools.insert(name, tool);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .values()
            .map(|t| ToolSpec {
                name: t.name().to_string(),
                description: t.description().to_string(),
                parameters: t.parameters(),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// Checks `args` against the parts of a JSON schema tools use: object type, required keys,
/// property types and enums. Unknown keys are rejected so typos surface to the model.
pub fn validate_arguments(
    schema: &serde_json::Value,
    args: &serde_json::Value,
) -> Result<(), ToolError> {
    use serde_json::Value;
    let obj = args
        .as_object()
        .ok_or_else(|| ToolError::InvalidArguments("arguments must be a JSON object".into()))?;
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(key) {
                return Err(ToolError::InvalidArguments(format!(
                    "missing required argument {key:?}"
                )));
            }
        }
    }
    for (key, value) in obj {
        let Some(prop) = props.and_then(|p| p.get(key)) else {
            return Err(ToolError::InvalidArguments(format!(
                "unknown argument {key:?}"
            )));
        };
        if value.is_null() {
            continue;
        }
        let type_ok = match prop.get("type").and_then(Value::as_str) {
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some("array") => value.is_array(),
            Some("object") => value.is_object(),
            _ => true,
        };
        if !type_ok {
            return Err(ToolError::InvalidArguments(format!(
                "argument {key:?} has the wrong type"
            )));
        }
        if let Some(allowed) = prop.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                return Err(ToolError::InvalidArguments(format!(
                    "argument {key:?} must be one of {}",
                    Value::Array(allowed.clone())
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Named(&'static str);

    #[async_trait]
    impl Tool for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn description(&self) -> &str {
            "test"
        }
        fn parameters(&self) -> serde_json::Value {
            json!({"type": "object", "properties": {}})
        }
        fn risk(&self) -> RiskClass {
            RiskClass::Read
        }
        async fn call(
            &self,
            _: &ToolContext,
            _: serde_json::Value,
        ) -> Result<ToolOutput, ToolError> {
            Err(ToolError::Failed("unused".into()))
        }
    }

    #[test]
    fn registry_enforces_names() {
        let mut r = ToolRegistry::new();
        r.register(Arc::new(Named("recommend_plan"))).unwrap();
        assert_eq!(
            r.register(Arc::new(Named("recommend_plan"))).unwrap_err(),
            RegistryError::Duplicate("recommend_plan".into())
        );
        let long: &'static str = Box::leak("x".repeat(65).into_boxed_str());
        assert!(matches!(
            r.register(Arc::new(Named(long))),
            Err(RegistryError::BadName(_))
        ));
        assert!(matches!(
            r.register(Arc::new(Named("has space"))),
            Err(RegistryError::BadName(_))
        ));
        assert_eq!(r.specs().len(), 1);
    }

    #[test]
    fn arguments_are_validated() {
        let schema = json!({
            "type": "object",
            "properties": {
                "noise_type": {"type": "string", "enum": ["footsteps", "voices"]},
                "duration_months": {"type": "integer"}
            },
            "required": ["noise_type"]
        });
        assert!(validate_arguments(&schema, &json!({"noise_type": "footsteps"})).is_ok());
        assert!(validate_arguments(&schema, &json!({"noise_type": "jet"})).is_err());
        assert!(validate_arguments(&schema, &json!({"duration_months": 2})).is_err());
        assert!(validate_arguments(
            &schema,
            &json!({"noise_type": "voices", "duration_months": "2"})
        )
        .is_err());
        assert!(validate_arguments(&schema, &json!({"noise_type": "voices", "evil": 1})).is_err());
        assert!(validate_arguments(&schema, &json!([1])).is_err());
    }
}
