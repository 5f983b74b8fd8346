//! Proactive outreach seen from the conversation: a customer's 配信停止 / 配信再開 in chat,
//! and the `opened` / `replied` / `converted` events of the sends a conversation holds.
//!
//! Event recording never fails a customer's turn: errors are logged and the turn goes on.

use std::time::Instant;

use kizuna_protocol::{PreferenceOutcome, ReplyFrame, ServerFrame};
use kizuna_store::OutreachEventInsert;
use serde_json::{json, Value};

use super::optout::{is_opt_in_request, is_opt_out_request};
use super::{ConversationHub, Job, Live};
use crate::engine::ExecutedCall;
use crate::identity::Identity;
use crate::tool::ToolEffect;

pub(super) const OPENED: &str = "opened";
pub(super) const REPLIED: &str = "replied";
pub(super) const CONVERTED: &str = "converted";

pub(super) const OPT_OUT_CONFIRMATION: &str = "配信停止を承りました。今後、こちらからのご案内（メール・SMS・チャット）はお送りしません。再開をご希望の場合は「配信再開」とお送りください。";
pub(super) const OPT_IN_CONFIRMATION: &str = "配信再開を承りました。今後、こちらからのご案内（メール・SMS・チャット）を再開いたします。停止をご希望の場合は「配信停止」とお送りください。";
pub(super) const NOTHING_TO_STOP: &str = "こちらからのご案内（メール・SMS・チャット）は、ログインしたお客様のアカウントにのみお送りしています。現在お客様アカウントでログインされていないため、停止するご案内はありません。";
pub(super) const SIGN_IN_TO_RESUME: &str = "こちらからのご案内（メール・SMS・チャット）は、ログインしたお客様のアカウントにのみお送りしています。再開をご希望の場合は、お客様アカウントでログインのうえ「配信再開」とお送りください。";
const PREFERENCE_FAILED: &str = "申し訳ございません。ただいまお手続きを完了できませんでした。お手数ですが、しばらくしてからもう一度お送りください。";

/// A customer's request about proactive messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Preference {
    OptOut,
    OptIn,
}

impl Preference {
    pub(super) fn of(text: &str) -> Option<Self> {
        if is_opt_in_request(text) {
            Some(Preference::OptIn)
        } else if is_opt_out_request(text) {
            Some(Preference::OptOut)
        } else {
            None
        }
    }

    fn key(self) -> &'static str {
        match self {
            Preference::OptOut => "opt_out",
            Preference::OptIn => "opt_in",
        }
    }
}

/// What became of a preference request.
enum Applied {
    /// Stored for the customer (or, missing from the CRM, they get no outreach anyway).
    Stored,
    /// Not a signed-in customer: nothing is sent to them, so there is nothing to change.
    NotACustomer,
    /// The database failed: nothing was changed.
    Failed,
}

/// Whether the turn made a new booking (not one the customer already had): a call that
/// reported the effect, whatever the tool is called.
pub(super) fn booked_measurement(calls: &[ExecutedCall]) -> bool {
    calls.iter().any(|c| {
        c.ok && c.output.as_ref().is_some_and(|o| {
            o.effects
                .iter()
                .any(|e| matches!(e, ToolEffect::BookingCreated { .. }))
        })
    })
}

impl ConversationHub {
    /// Stores the customer's choice (`customers.opted_out`).
    async fn apply_preference(
        &self,
        conversation_id: &str,
        identity: &Identity,
        preference: Preference,
    ) -> Applied {
        let Some(customer_id) = identity
            .customer_id
            .as_deref()
            .filter(|_| identity.role == crate::identity::Role::Customer)
        else {
            tracing::info!(
                conversation_id,
                request = preference.key(),
                "proactive-message preference from someone who is not a signed-in customer"
            );
            return Applied::NotACustomer;
        };
        let opted_out = preference == Preference::OptOut;
        metrics::counter!("kizuna_outreach_preference_total", "request" => preference.key())
            .increment(1);
        match self
            .store
            .set_customer_opted_out(customer_id, opted_out, self.now_ms())
            .await
        {
            Ok(changed) => {
                if changed.is_none() {
                    // Outreach only reaches customers in the CRM: nothing would be sent.
                    tracing::warn!(
                        conversation_id,
                        customer_id,
                        request = preference.key(),
                        "proactive-message preference of a customer missing from the CRM; nothing to store"
                    );
                } else {
                    tracing::info!(
                        conversation_id,
                        customer_id,
                        opted_out,
                        changed = changed == Some(true),
                        "customer changed their proactive-message preference in chat"
                    );
                }
                Applied::Stored
            }
            Err(e) => {
                tracing::error!(conversation_id, customer_id, error = %e, "could not store a proactive-message preference");
                Applied::Failed
            }
        }
    }

    /// Answers 配信停止 / 配信再開 at once, without the model: the choice is stored and a
    /// confirmation replies to the message.
    pub(super) async fn answer_preference(
        &self,
        conversation_id: &str,
        live: &Live,
        job: &Job,
        preference: Preference,
        started: Instant,
    ) {
        let applied = self
            .apply_preference(conversation_id, &job.identity, preference)
            .await;
        let asked = |stored: bool| match preference {
            Preference::OptOut => PreferenceOutcome {
                opt_out: Some(stored),
                ..Default::default()
            },
            Preference::OptIn => PreferenceOutcome {
                opt_in: Some(stored),
                ..Default::default()
            },
        };
        let (text, outcome) = match (applied, preference) {
            (Applied::Stored, Preference::OptOut) => (OPT_OUT_CONFIRMATION, asked(true)),
            (Applied::Stored, Preference::OptIn) => (OPT_IN_CONFIRMATION, asked(true)),
            (Applied::NotACustomer, Preference::OptOut) => (
                NOTHING_TO_STOP,
                PreferenceOutcome {
                    signed_in: Some(false),
                    ..asked(false)
                },
            ),
            (Applied::NotACustomer, Preference::OptIn) => (
                SIGN_IN_TO_RESUME,
                PreferenceOutcome {
                    signed_in: Some(false),
                    ..asked(false)
                },
            ),
            (Applied::Failed, _) => (
                PREFERENCE_FAILED,
                PreferenceOutcome {
                    failed: Some(true),
                    ..asked(false)
                },
            ),
        };
        // The message's metadata records the same outcome the reply frame carries.
        let metadata = serde_json::to_value(&outcome).unwrap_or(Value::Null);
        let reply_id = uuid::Uuid::new_v4().to_string();
        let mut reply = ReplyFrame::text(&job.client_msg_id, &reply_id, text);
        reply.preference = outcome;
        let payload = ServerFrame::Reply(reply);
        match self
            .post_fixed_reply(
                conversation_id,
                live,
                job,
                &reply_id,
                text,
                &metadata,
                payload,
            )
            .await
        {
            Ok(()) => {
                tracing::info!(
                    conversation_id,
                    request = preference.key(),
                    total_ms = started.elapsed().as_millis() as u64,
                    "answered a proactive-message preference"
                );
            }
            Err(e) => {
                tracing::error!(conversation_id, error = %e, "could not store the preference confirmation; the message stays pending")
            }
        }
    }

    /// 配信停止 while people hold the conversation: honoured at once, but the bot stays
    /// silent (the person sees the message); the message is marked for them.
    pub(super) async fn apply_preference_while_held(
        &self,
        conversation_id: &str,
        job: &Job,
        preference: Preference,
    ) {
        if let Applied::Stored = self
            .apply_preference(conversation_id, &job.identity, preference)
            .await
        {
            if let Err(e) = self
                .store
                .merge_message_metadata(&job.message_id, &json!({preference.key(): true}))
                .await
            {
                tracing::warn!(conversation_id, error = %e, "could not mark the preference message");
            }
        }
    }

    /// Records `kind` for one send; failures are only logged.
    pub(super) async fn record_send_event(&self, conversation_id: &str, send_id: &str, kind: &str) {
        match self
            .store
            .record_outreach_event(send_id, kind, self.now_ms())
            .await
        {
            Ok(OutreachEventInsert::Recorded) => {
                tracing::debug!(conversation_id, send_id, kind, "outreach event recorded")
            }
            Ok(OutreachEventInsert::AlreadyRecorded) => {}
            Ok(OutreachEventInsert::UnknownSend) => {
                tracing::warn!(
                    conversation_id,
                    send_id,
                    kind,
                    "outreach event for an unknown send not recorded"
                )
            }
            Err(e) => {
                tracing::warn!(conversation_id, send_id, kind, error = %e, "could not record an outreach event")
            }
        }
    }

    async fn send_ids(&self, conversation_id: &str) -> Vec<String> {
        match self.store.proactive_send_ids(conversation_id).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(conversation_id, error = %e, "could not read the conversation's outreach sends");
                Vec::new()
            }
        }
    }

    /// The customer opened a conversation: every send in it has been seen.
    pub(super) async fn record_outreach_opened(&self, conversation_id: &str) {
        for send_id in self.send_ids(conversation_id).await {
            self.record_send_event(conversation_id, &send_id, OPENED)
                .await;
        }
    }

    /// The customer wrote in a conversation holding sends: the newest one was answered (and
    /// so read).
    pub(super) async fn record_outreach_replied(&self, conversation_id: &str) {
        if let Some(send_id) = self.send_ids(conversation_id).await.first() {
            self.record_send_event(conversation_id, send_id, OPENED)
                .await;
            self.record_send_event(conversation_id, send_id, REPLIED)
                .await;
        }
    }

    /// A measurement was booked in a conversation holding sends: the newest one converted.
    pub(super) async fn record_outreach_converted(&self, conversation_id: &str) {
        if let Some(send_id) = self.send_ids(conversation_id).await.first() {
            self.record_send_event(conversation_id, send_id, CONVERTED)
                .await;
        }
    }
}
