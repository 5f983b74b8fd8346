//! Kizuna's engine. It knows nothing about HTTP: the binary's transport layer turns
//! websocket frames into calls on [`hub::ConversationHub`] and back.

pub mod llm;
pub mod tool_parse;
pub mod clock;
pub mod engine;
pub mod identity;
pub mod planner;
pub mod prompts;
pub mod tool;
pub mod hub;
#[cfg(test)]
mod testing;
