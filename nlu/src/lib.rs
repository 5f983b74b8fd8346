//! Reading what customers and staff write: the grammars for *when* ([`when`]), *which plan*
//! ([`plans`]) and *which account* ([`accounts`]), following the conventions in
//! `nlu/DATETIME.md`, and the intent inventory of `nlu/INTENTS.md`.

pub mod accounts;
pub mod asks;
pub mod intent;
pub mod plans;
pub mod when;

mod text;
