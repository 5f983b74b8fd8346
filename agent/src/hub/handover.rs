//! Hand-offs to people: escalation (the bot stops and says a person will reply), takeover
//! by a CSM, the CSM's replies, hand-back to the bot and closing. Every change is one
//! transaction with the durable frame that announces it, so sockets that reconnect see it.

use chrono::{DateTime, Datelike, FixedOffset, Timelike};
use kizuna_protocol::{ConversationStatus, EscalationNote, ReplyFrame, ServerFrame, ToolCallFrame};
use kizuna_store::{EscalationInsert, EscalationRow, OutboxInsert, StoredFrame};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ConversationHub, HubError, Job, Live, OutFrame};
use crate::escalation::EscalationReason;
use crate::identity::{Identity, Role};

/// Who answers escalations, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoverConfig {
    /// Days people answer (1 = Monday … 7 = Sunday), JST.
    pub weekdays: Vec<u32>,
    /// First hour people answer (JST, 0–23).
    pub open_hour: u32,
    /// Hour they stop (exclusive).
    pub close_hour: u32,
    /// The console link put in notifications, e.g. `https://cs.example.com/console`.
    pub console_url: String,
    /// Outbox channel for escalation notices (`slack`), or none when nothing is configured.
    pub notify_channel: Option<String>,
    /// Unsent notices on that channel past which no further one is queued (the escalation
    /// itself is still recorded and shown in the console).
    pub max_pending_notices: usize,
}

impl Default for HandoverConfig {
    fn default() -> Self {
        Self {
            weekdays: vec![1, 2, 3, 4, 5],
            open_hour: 9,
            close_hour: 18,
            console_url: "http://127.0.0.1:8080/console".into(),
            notify_channel: None,
            max_pending_notices: 1000,
        }
    }
}

impl HandoverConfig {
    pub fn is_open(&self, now: DateTime<FixedOffset>) -> bool {
        self.weekdays.contains(&now.weekday().number_from_monday())
            && now.hour() >= self.open_hour
            && now.hour() < self.close_hour
    }

    /// What the customer reads when the bot steps back.
    pub fn holding_message(&self, reason: EscalationReason, now: DateTime<FixedOffset>) -> String {
        let lead = match reason {
            EscalationReason::Legal => "法的なご相談につきましては、専門の担当者が対応いたします。",
            EscalationReason::RefundOrCancel => {
                "返金・解約のご依頼は担当者が確認のうえ対応いたします。"
            }
            EscalationReason::Complaint | EscalationReason::NegativeSentiment => {
                "ご不便とご心配をおかけして申し訳ございません。"
            }
            EscalationReason::Unresolved => "十分なご案内ができず申し訳ございません。",
            EscalationReason::CustomerRequest => "承知いたしました。",
        };
        if self.is_open(now) {
            format!("{lead}担当者におつなぎしています。まもなく担当者からこのチャットでご連絡いたしますので、少々お待ちください。")
        } else {
            format!(
                "{lead}担当者におつなぎしています。ただいま営業時間外（{}）のため、次の営業時間に担当者からこのチャットでご連絡いたします。",
                self.hours_label()
            )
        }
    }

    fn hours_label(&self) -> String {
        let weekdays = if self.weekdays == [1, 2, 3, 4, 5] {
            "平日".to_string()
        } else {
            const NAMES: [&str; 7] = ["月", "火", "水", "木", "金", "土", "日"];
            self.weekdays
                .iter()
                .filter_map(|d| NAMES.get((*d as usize).wrapping_sub(1)))
                .copied()
                .collect::<Vec<_>>()
                .join("・")
        };
        format!("{weekdays} {}:00〜{}:00", self.open_hour, self.close_hour)
    }
}

/// What the escalation check sees for one customer message (the policy's own input type).
pub use crate::escalation::TurnSignals as EscalationInput;

/// Decides whether a message hands the conversation to people (the escalation policy).
pub trait EscalationCheck: Send + Sync {
    fn check(&self, input: &EscalationInput<'_>) -> Option<(EscalationReason, String)>;
}

fn reason_str(reason: EscalationReason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn require_staff(identity: &Identity) -> Result<(), HubError> {
    if identity.role == Role::Manager {
        Ok(())
    } else {
        Err(HubError::Forbidden)
    }
}

impl ConversationHub {
    /// Hands the conversation of `job` to people: the holding reply answers the message, a
    /// `status` frame says `escalated`, and the notification is queued, all in one commit.
    pub(super) async fn escalate(
        &self,
        conversation_id: &str,
        live: &Live,
        job: &Job,
        reason: EscalationReason,
        detail: &str,
    ) -> Result<(), HubError> {
        if !self.escalation_budget_allows(&job.identity) {
            tracing::warn!(
                conversation_id,
                address = ?job.identity.address,
                "anonymous escalation over its hourly budget; the bot answers instead"
            );
            return Err(HubError::EscalationCapped);
        }
        let now = self.clock.now();
        let now_ms = self.now_ms();
        let reason_name = reason_str(reason);
        let holding = self.handover.holding_message(reason, now);
        let status_frame = ServerFrame::Status {
            seq: None,
            status: ConversationStatus::Escalated,
            reason: Some(reason_name.clone()),
            message: Some(holding.clone()),
            agent_name: None,
        };
        let reply_id = uuid::Uuid::new_v4().to_string();
        let mut reply = ReplyFrame::text(&job.client_msg_id, &reply_id, &holding);
        reply.tool_calls = vec![ToolCallFrame {
            id: "escalation".into(),
            name: "escalate_to_human".into(),
            arguments: json!({"reason": reason_name, "summary": detail}),
            ok: true,
            result: json!({"escalate": true, "reason": reason_name}),
        }];
        reply.escalation = Some(EscalationNote {
            reason: reason_name.clone(),
        });
        let reply_frame = ServerFrame::Reply(reply);
        let metadata = json!({"escalation": {"reason": reason_name, "detail": detail}});
        // A bounded outbox: past `max_pending_notices` the escalation is still recorded (the
        // console queue shows it) but no further notice is queued (docs/security.md).
        let backlog_full = match &self.handover.notify_channel {
            Some(channel) => {
                let pending = self.store.pending_notifications(channel).await.unwrap_or(0);
                let full = pending >= self.handover.max_pending_notices as i64;
                if full {
                    metrics::counter!("kizuna_dropped_notices_total").increment(1);
                    tracing::error!(channel, pending, "the notification outbox is full; this escalation is in the console queue only");
                }
                full
            }
            None => false,
        };
        let notification = match &self.handover.notify_channel {
            Some(_) if backlog_full => None,
            Some(channel) => {
                let recent = self
                    .store
                    .recent_messages(conversation_id, 6)
                    .await
                    .unwrap_or_default();
                let conv = self.store.conversation(conversation_id).await?;
                let last_messages: Vec<_> = recent
                    .iter()
                    .map(|m| {
                        let role = match m.role.as_str() {
                            "user" => "customer",
                            "human_agent" => "human",
                            _ => "bot",
                        };
                        json!({"role": role, "text": m.content})
                    })
                    .collect();
                Some(OutboxInsert {
                    id: uuid::Uuid::new_v4().to_string(),
                    channel: channel.clone(),
                    kind: "escalation".into(),
                    payload: json!({
                        "conversation_id": conversation_id,
                        "customer_id": conv.as_ref().and_then(|c| c.customer_id.clone()),
                        "customer_name": job.identity.display_name,
                        "reason": reason_name,
                        "detail": detail,
                        "last_messages": last_messages,
                        "takeover_url": format!("{}#{}", self.handover.console_url, conversation_id),
                        "escalated_at": now.to_rfc3339(),
                    }),
                })
            }
            None => None,
        };
        let escalation_id = uuid::Uuid::new_v4().to_string();
        let (status_seq, reply_seq) = self
            .store
            .record_escalation(
                &EscalationInsert {
                    escalation_id: &escalation_id,
                    conversation_id,
                    user_message_id: &job.message_id,
                    reason: &reason_name,
                    detail,
                    status_frame: &status_frame.to_value(),
                    reply_message_id: &reply_id,
                    reply_text: &holding,
                    reply_metadata: &metadata,
                    reply_frame: &reply_frame.to_value(),
                    notification: notification.as_ref(),
                },
                now_ms,
            )
            .await?;
        if notification.is_some() {
            self.outbox_wakeup.notify_one();
        }
        live.publish(OutFrame::durable(status_seq, status_frame));
        live.publish(OutFrame::durable(reply_seq, reply_frame));
        metrics::counter!("kizuna_escalations_total", "reason" => reason_name.clone()).increment(1);
        tracing::info!(conversation_id, reason = %reason_name, "conversation escalated to a person");
        Ok(())
    }

    async fn change_handler(
        &self,
        conversation_id: &str,
        staff: &Identity,
        status: ConversationStatus,
        allowed_from: &[ConversationStatus],
        message: String,
    ) -> Result<i64, HubError> {
        require_staff(staff)?;
        let conv = self
            .store
            .conversation(conversation_id)
            .await?
            .ok_or(HubError::NotFound)?;
        if !ConversationStatus::parse(&conv.status).is_some_and(|s| allowed_from.contains(&s)) {
            let allowed: Vec<&str> = allowed_from.iter().map(|s| s.as_str()).collect();
            return Err(HubError::Conflict(format!(
                "the conversation is {}, not {}",
                conv.status,
                allowed.join(" or ")
            )));
        }
        let frame = ServerFrame::Status {
            seq: None,
            status,
            reason: None,
            message: Some(message),
            agent_name: Some(
                staff
                    .display_name
                    .clone()
                    .unwrap_or_else(|| staff.subject.clone()),
            ),
        };
        let seq = self
            .store
            .change_handler(
                conversation_id,
                status.as_str(),
                Some(&staff.subject),
                &frame.to_value(),
                self.now_ms(),
            )
            .await?;
        self.broadcast(conversation_id, OutFrame::durable(seq, frame));
        tracing::info!(conversation_id, status = status.as_str(), staff = %staff.subject, "conversation handler changed");
        Ok(seq)
    }

    /// A CSM takes the conversation: the bot stays silent until it is handed back.
    pub async fn takeover(&self, conversation_id: &str, staff: &Identity) -> Result<i64, HubError> {
        let name = staff
            .display_name
            .clone()
            .unwrap_or_else(|| "担当者".into());
        self.change_handler(
            conversation_id,
            staff,
            ConversationStatus::Human,
            &[
                ConversationStatus::Escalated,
                ConversationStatus::Bot,
                ConversationStatus::Closed,
            ],
            format!("担当の{name}が対応いたします。"),
        )
        .await
    }

    /// The CSM gives the conversation back to the bot.
    pub async fn handback(&self, conversation_id: &str, staff: &Identity) -> Result<i64, HubError> {
        self.change_handler(
            conversation_id,
            staff,
            ConversationStatus::Bot,
            &[ConversationStatus::Escalated, ConversationStatus::Human],
            "ここからはAIアシスタントがご案内いたします。".into(),
        )
        .await
    }

    /// Ends the conversation; a later customer message reopens it with the bot.
    pub async fn close(&self, conversation_id: &str, staff: &Identity) -> Result<i64, HubError> {
        self.change_handler(
            conversation_id,
            staff,
            ConversationStatus::Closed,
            &[
                ConversationStatus::Escalated,
                ConversationStatus::Human,
                ConversationStatus::Bot,
            ],
            "お問い合わせありがとうございました。このご相談は終了いたしました。".into(),
        )
        .await
    }

    /// A CSM's reply, shown live in the customer's chat. Only while the CSM holds it.
    pub async fn human_reply(
        &self,
        conversation_id: &str,
        staff: &Identity,
        text: &str,
    ) -> Result<i64, HubError> {
        require_staff(staff)?;
        let text = text.trim();
        if text.is_empty() || text.chars().count() > self.config.max_message_chars {
            return Err(HubError::BadRequest(format!(
                "the reply must be 1–{} characters",
                self.config.max_message_chars
            )));
        }
        let conv = self
            .store
            .conversation(conversation_id)
            .await?
            .ok_or(HubError::NotFound)?;
        if conv.status != "human" {
            return Err(HubError::Conflict(format!(
                "take the conversation over first (it is {})",
                conv.status
            )));
        }
        let message_id = uuid::Uuid::new_v4().to_string();
        let agent_name = staff
            .display_name
            .clone()
            .unwrap_or_else(|| staff.subject.clone());
        let frame = ServerFrame::Human {
            seq: None,
            message_id: message_id.clone(),
            text: text.to_string(),
            agent_name: Some(agent_name.clone()),
        };
        let seq = self
            .store
            .record_human_reply(
                conversation_id,
                &message_id,
                text,
                &json!({"staff_id": staff.subject, "agent_name": agent_name}),
                &frame.to_value(),
                self.now_ms(),
            )
            .await?;
        self.broadcast(conversation_id, OutFrame::durable(seq, frame));
        Ok(seq)
    }

    /// The CSM queue.
    pub async fn escalations(
        &self,
        staff: &Identity,
        limit: i64,
    ) -> Result<Vec<EscalationRow>, HubError> {
        require_staff(staff)?;
        Ok(self.store.open_escalations(limit).await?)
    }

    /// Durable frames of any conversation, for staff.
    pub async fn frames_for_staff(
        &self,
        conversation_id: &str,
        staff: &Identity,
        after: i64,
    ) -> Result<Vec<StoredFrame>, HubError> {
        require_staff(staff)?;
        if self.store.conversation(conversation_id).await?.is_none() {
            return Err(HubError::NotFound);
        }
        Ok(self
            .store
            .frames_after(conversation_id, after.max(0))
            .await?)
    }

    /// Starts (or continues) a conversation with an agent-initiated message, e.g. outreach.
    /// The customer's answer then goes through the normal agent loop. `send_id` (the
    /// `outreach_sends` row) is kept with the message so that opening, answering and booking
    /// in this conversation are recorded as that send's events. Returns the seq.
    pub async fn post_proactive(
        &self,
        customer: &Identity,
        conversation_id: &str,
        text: &str,
        campaign_id: &str,
        trigger: &str,
        send_id: Option<&str>,
    ) -> Result<i64, HubError> {
        if customer.role != Role::Customer {
            return Err(HubError::BadRequest(
                "proactive messages go to customers".into(),
            ));
        }
        let now_ms = self.now_ms();
        match self.store.conversation(conversation_id).await? {
            Some(conv) => super::check_owner(&conv, customer)?,
            None => {
                let id = super::validate_conversation_id(conversation_id)?;
                self.store
                    .create_conversation(
                        &id,
                        customer.role.as_str(),
                        &customer.subject,
                        customer.customer_id.as_deref(),
                        now_ms,
                    )
                    .await?;
            }
        }
        let message_id = uuid::Uuid::new_v4().to_string();
        let frame = ServerFrame::Proactive {
            seq: None,
            message_id: message_id.clone(),
            text: text.to_string(),
            campaign_id: Some(campaign_id.to_string()),
            trigger: Some(trigger.to_string()),
            send_id: send_id.map(str::to_string),
        };
        let mut proactive = json!({"campaign_id": campaign_id, "trigger": trigger});
        if let Some(send_id) = send_id {
            proactive["send_id"] = json!(send_id);
        }
        let seq = self
            .store
            .record_proactive(
                conversation_id,
                &message_id,
                text,
                &json!({ "proactive": proactive }),
                &frame.to_value(),
                now_ms,
            )
            .await?;
        self.broadcast(conversation_id, OutFrame::durable(seq, frame));
        Ok(seq)
    }

    /// Delivers an agent-initiated message to a customer: into their latest conversation the
    /// bot handles (a connected widget shows it at once), else into a new conversation that
    /// their next visit opens. Returns the conversation id and whether a socket was watching;
    /// when one was, the send (`send_id`) is recorded as `opened` at once.
    pub async fn deliver_proactive(
        &self,
        customer_id: &str,
        text: &str,
        campaign_id: &str,
        trigger: &str,
        send_id: Option<&str>,
    ) -> Result<(String, bool), HubError> {
        let customer = Identity::customer(customer_id);
        let conversation_id = match self
            .store
            .latest_conversation(customer.role.as_str(), &customer.subject)
            .await?
        {
            Some(conv) if conv.status == "bot" || conv.status == "closed" => conv.id,
            _ => uuid::Uuid::new_v4().to_string(),
        };
        self.post_proactive(
            &customer,
            &conversation_id,
            text,
            campaign_id,
            trigger,
            send_id,
        )
        .await?;
        let live = self
            .live
            .lock()
            .expect("live lock")
            .get(&conversation_id)
            .is_some_and(|l| l.frames.receiver_count() > 0);
        if let (true, Some(send_id)) = (live, send_id) {
            self.record_send_event(&conversation_id, send_id, super::outreach::OPENED)
                .await;
        }
        Ok((conversation_id, live))
    }

    /// The customer's newest conversation that the agent started and they have not answered.
    pub(super) async fn pending_proactive(
        &self,
        identity: &Identity,
    ) -> Result<Option<String>, HubError> {
        if identity.role != Role::Customer {
            return Ok(None);
        }
        Ok(self
            .store
            .unanswered_proactive_conversation(identity.role.as_str(), &identity.subject)
            .await?)
    }

    /// Sends a frame to the conversation's sockets, if any are watching.
    fn broadcast(&self, conversation_id: &str, frame: OutFrame) {
        let map = self.live.lock().expect("live lock");
        if let Some(live) = map.get(conversation_id) {
            live.publish(frame);
        }
    }
}
