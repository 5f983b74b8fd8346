//! Proactive outreach (seed 003 §5.1–5.4): triggers evaluated over the CRM data and booking
//! reminders, guard rails (opt-out, frequency cap, quiet hours, idempotency, approval of
//! important accounts), delivery through the server's [`Delivery`], and campaign measurement.
//!
//! Idempotency lives in the database: `outreach_sends` has a UNIQUE key on
//! (customer, trigger, cause) and a send is claimed by INSERT before it is delivered, so a
//! cause sends once across runs, restarts and replicas.

pub mod channels;
pub mod config;
pub mod conversions;
pub mod engine;
pub mod events;
pub mod health_state;
pub mod line;
pub mod optout;
pub mod review;
pub mod trigger;

#[cfg(test)]
mod tests;

pub use channels::{
    attempts_for, enqueue_channel_messages, ChannelAttempt, ChannelConfigError, ChannelMessage,
    ChannelPolicy, ChannelSender, ChannelsConfig, EmailConfig, EmailSender, RecordingSender,
    WebhookConfig, WebhookSender, CHANNEL_EMAIL, CHANNEL_WEBHOOK, KIND_OUTREACH_MESSAGE,
};
pub use config::{ConfigError, FrequencyCap, OutreachConfig, QuietHours};
pub use conversions::{goal_reached, record_conversions, BookingFacts, ConversionCounts, OpenSend};
pub use engine::{
    approve_and_deliver, pending_approvals, variant_for, Delivery, DeliveryOutcome, Evaluation,
    OutboundMessage, Outcome, OutreachEngine, PendingApproval, RunEntry, RunReport, SkipReason,
    StaffTask, StaffTaskKind,
};
pub use events::{campaign_report, record_event, CampaignReport, EventKind, VariantStats};
pub use health_state::{
    health_changes, load_health_states, save_health_states, HealthChange, HealthState,
};
pub use line::{line_sender, LineChannelConfig, LineOutreachSender, CHANNEL_LINE};
pub use optout::is_opt_out_request;
pub use review::reject_approval;
pub use trigger::{evaluate, Candidate, Trigger, UnopenedStep};

#[derive(Debug, thiserror::Error)]
pub enum OutreachError {
    #[error(transparent)]
    Database(#[from] kizuna_store::StoreError),
    #[error(transparent)]
    Customers(#[from] kizuna_tools::crm::CustomerError),
    #[error(transparent)]
    Booking(#[from] kizuna_tools::booking::BookingError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no outreach send {0}")]
    UnknownSend(String),
    #[error("delivery failed: {0}")]
    Delivery(String),
}
