//! Recognising a customer's request to stop (or resume) proactive messages. The chat hub
//! answers these itself; they live in kizuna-agent and are re-exported through kizuna-tools.

pub use kizuna_tools::optout::{is_opt_in_request, is_opt_out_request};
