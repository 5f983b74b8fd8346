//! The agent's tools. Each is scoped by the verified identity in its [`ToolContext`]
//! (kizuna_agent::tool::ToolContext), never by what the conversation claims.

pub mod availability;
pub mod plans;
pub mod recommend_plan;

use std::sync::Arc;

use kizuna_agent::tool::{RegistryError, ToolRegistry};
use kizuna_store::Store;

pub use availability::{BookingCalendar, CalendarError, CheckAvailability};
pub use recommend_plan::RecommendPlan;

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Every tool this build ships, registered.
pub fn registry(store: Store, calendar: BookingCalendar) -> Result<ToolRegistry, ToolsError> {
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(RecommendPlan))?;
    tools.register(Arc::new(CheckAvailability::new(store, calendar)?))?;
    Ok(tools)
}
