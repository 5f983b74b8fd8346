//! The agent's tools. Each is scoped by the verified identity in its [`ToolContext`]
//! (kizuna_agent::tool::ToolContext), never by what the conversation claims: a customer
//! reaches only their own account, managers any account, anonymous visitors none.
//!
//! Also the customer data behind them: the CRM import ([`crm`]), the health score
//! ([`health`]), bookings and reminders ([`booking`]) and segmentation ([`segments`]).
//!
//! [`ToolContext`]: kizuna_agent::tool::ToolContext

mod access;
pub mod accounts;
pub mod availability;
pub mod booking;
pub mod churn;
pub mod crm;
pub mod escalate;
pub mod followup;
pub mod health;
pub mod insight;
pub mod my_account;
pub mod optout;
pub mod plan_info;
pub mod plans;
pub mod recommend_plan;
pub mod segments;
pub mod upsell;

use std::sync::Arc;

use kizuna_agent::tool::{RegistryError, ToolRegistry};
use kizuna_store::Store;

pub use accounts::{
    at_risk_accounts, AtRiskAccount, AtRiskFilter, ListAtRiskAccounts, LookupHealth,
};
pub use availability::{BookingCalendar, CalendarError, CheckAvailability, SlotProblem};
pub use booking::{BookMeasurement, CancelBooking};
pub use crm::{
    get_customer, import_customers, list_customers, Customer, CustomerFilter, CustomerKind, Format,
    ImportError, ImportReport, RowError,
};
pub use escalate::EscalateToHuman;
pub use followup::{
    CatalogTemplate, GenerateFollowup, MessageTemplate, TemplateCatalog, TemplateSource,
    TemplateSourceError,
};
pub use health::{health_score, HealthReport, HealthStatus};
pub use optout::{is_opt_in_request, is_opt_out_request};
pub use plan_info::PlanInfo;
pub use recommend_plan::RecommendPlan;
pub use segments::{segment_customers, SegmentCustomers, SegmentOptions, SegmentReport};
pub use upsell::RecommendUpsell;

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What the tools need.
#[derive(Clone)]
pub struct ToolDeps {
    pub store: Store,
    pub calendar: BookingCalendar,
    /// Message templates for `generate_followup`.
    pub templates: Arc<dyn TemplateSource>,
    /// The URL filled into `{{link}}` (e.g. the customer's my-page); templates that need it
    /// are skipped while it is unset.
    pub followup_link: Option<String>,
}

/// Every tool this build ships, registered.
/// Every price a reply may quote: the plans, the add-on and each plan with the add-on (the
/// output validator rejects any other amount a model writes).
pub fn price_table() -> Vec<u64> {
    let mut prices: Vec<u64> = plans::PLANS.iter().map(|p| p.price_jpy as u64).collect();
    let mediation = plans::MEDIATION.price_jpy as u64;
    prices.push(mediation);
    prices.extend(plans::PLANS.iter().map(|p| p.price_jpy as u64 + mediation));
    prices
}

pub fn registry(deps: ToolDeps) -> Result<ToolRegistry, ToolsError> {
    let ToolDeps {
        store,
        calendar,
        templates,
        followup_link,
    } = deps;
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(RecommendPlan))?;
    tools.register(Arc::new(PlanInfo))?;
    tools.register(Arc::new(CheckAvailability::new(
        store.clone(),
        calendar.clone(),
    )?))?;
    tools.register(Arc::new(BookMeasurement::new(store.clone(), calendar)?))?;
    tools.register(Arc::new(CancelBooking::new(store.clone())))?;
    tools.register(Arc::new(LookupHealth::new(store.clone())))?;
    tools.register(Arc::new(my_account::MyAccount::new(store.clone())))?;
    tools.register(Arc::new(ListAtRiskAccounts::new(store.clone())))?;
    tools.register(Arc::new(churn::PredictChurn::new(store.clone())))?;
    tools.register(Arc::new(insight::CustomerInsight::new(store.clone())))?;
    tools.register(Arc::new(RecommendUpsell::new(store.clone())))?;
    tools.register(Arc::new(GenerateFollowup::new(
        store.clone(),
        templates,
        followup_link,
    )))?;
    tools.register(Arc::new(EscalateToHuman))?;
    tools.register(Arc::new(SegmentCustomers::new(store)))?;
    Ok(tools)
}
