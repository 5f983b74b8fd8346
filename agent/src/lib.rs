//! Kizuna's engine. It knows nothing about HTTP: the binary's transport layer turns
//! websocket frames into calls on [`hub::ConversationHub`] and back.

pub mod admission;
pub mod clock;
pub mod engine;
pub mod escalation;
pub mod hub;
pub mod identity;
pub mod intent;
pub mod llm;
pub mod planner;
pub mod prompts;
pub mod sentiment;
#[cfg(test)]
mod testing;
pub mod tool;
pub mod tool_parse;
pub mod validate;
