use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::turn::conversation_signals;
use super::*;
use crate::clock::SystemClock;
use crate::engine::AgentConfig;
use crate::escalation::EscalationReason;
use crate::prompts::Prompts;
use crate::testing::{PriceTool, ScriptedModel, Step};
use crate::tool::ToolRegistry;

async fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("h.db").display()
    ))
    .await
    .unwrap();
    (store, dir)
}

async fn hub(model: Arc<ScriptedModel>) -> (Arc<ConversationHub>, tempfile::TempDir) {
    let (store, dir) = temp_store().await;
    (hub_on(store, model), dir)
}

fn hub_on(store: Store, model: Arc<ScriptedModel>) -> Arc<ConversationHub> {
    hub_with_tools(store, model, vec![])
}

fn hub_with_tools(
    store: Store,
    model: Arc<ScriptedModel>,
    extra: Vec<Arc<dyn crate::tool::Tool>>,
) -> Arc<ConversationHub> {
    hub_with_services(store, model, extra, HubServices::default())
}

/// The one place a test hub is built: the price tool (plus `extra`) over the real prompts.
fn hub_with_services(
    store: Store,
    model: Arc<ScriptedModel>,
    extra: Vec<Arc<dyn crate::tool::Tool>>,
    services: HubServices,
) -> Arc<ConversationHub> {
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(PriceTool)).unwrap();
    for tool in extra {
        tools.register(tool).unwrap();
    }
    let prompts =
        Prompts::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts"))
            .unwrap();
    let agent = Arc::new(Agent::new(model, tools, prompts, AgentConfig::default()));
    ConversationHub::with_services(
        store,
        agent,
        Arc::new(SystemClock),
        services,
        HubConfig::default(),
    )
}

async fn next_durable(rx: &mut broadcast::Receiver<OutFrame>) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("frame in time")
            .unwrap();
        if frame.seq.is_some() {
            return serde_json::from_str(&frame.json).unwrap();
        }
    }
}

#[tokio::test]
async fn message_is_acked_answered_and_never_processed_twice() {
    let model = ScriptedModel::new(false, vec![Step::Text("こんにちは。ご相談ください。")]);
    let (hub, _dir) = hub(model.clone()).await;
    let me = Identity::customer("C-1");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    assert!(opened.replay.is_empty());
    let conv = opened.conversation_id.clone();

    assert!(matches!(
        hub.submit(&me, &conv, "m-1", "こんにちは").await.unwrap(),
        Submitted::Accepted { .. }
    ));
    let ack = next_durable(&mut opened.live).await;
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["id"].as_str(),
            ack["seq"].as_i64()
        ),
        (Some("ack"), Some("m-1"), Some(1))
    );
    let reply = next_durable(&mut opened.live).await;
    assert_eq!(reply["type"], "reply");
    assert_eq!(reply["reply_to"], "m-1");
    assert_eq!(reply["seq"], 2);
    assert_eq!(reply["text"], "こんにちは。ご相談ください。");

    // The resend is re-acknowledged but not answered again (the script has no second step).
    match hub.submit(&me, &conv, "m-1", "こんにちは").await.unwrap() {
        Submitted::Duplicate(frame) => {
            let v: Value = serde_json::from_str(&frame.json).unwrap();
            assert_eq!(v["duplicate"], true);
            assert_eq!(v["status"], "answered");
        }
        Submitted::Accepted { .. } => panic!("duplicate accepted"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(model.requests.lock().unwrap().len(), 1);

    // Resume after seq 1 gets exactly the reply.
    let resumed = hub.open(&me, Some(&conv), 1).await.unwrap();
    assert_eq!(resumed.replay.len(), 1);
    assert_eq!(resumed.replay[0].seq, Some(2));
    assert_eq!(resumed.last_seq, 2);
}

#[tokio::test]
async fn conversations_are_private_to_their_owner() {
    let model = ScriptedModel::new(false, vec![Step::Text("はい。")]);
    let (hub, _dir) = hub(model).await;
    let owner = Identity::customer("C-1");
    let opened = hub.open(&owner, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    hub.submit(&owner, &conv, "m-1", "秘密の相談")
        .await
        .unwrap();

    let other = Identity::customer("C-2");
    assert!(matches!(
        hub.open(&other, Some(&conv), 0).await,
        Err(HubError::Forbidden)
    ));
    assert!(matches!(
        hub.submit(&other, &conv, "m-2", "見せて").await,
        Err(HubError::Forbidden)
    ));
    assert!(matches!(
        hub.open(&Identity::anonymous("v"), Some(&conv), 0).await,
        Err(HubError::Forbidden)
    ));
    assert!(matches!(
        hub.open(&owner, Some("not-a-uuid"), 0).await,
        Err(HubError::BadRequest(_))
    ));
    assert!(matches!(
        hub.submit(&owner, &conv, "m-3", "   ").await,
        Err(HubError::BadRequest(_))
    ));
}

#[tokio::test]
async fn unanswered_messages_are_answered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
    let conv = uuid::Uuid::new_v4().to_string();
    {
        // A previous run stored the message, then died before answering.
        let store = Store::connect(&url).await.unwrap();
        store
            .create_conversation(&conv, "customer", "C-9", Some("C-9"), 1)
            .await
            .unwrap();
        store
            .insert_user_message(
                &conv,
                "m",
                "client-m",
                "料金はいくら？",
                &serde_json::json!({"type": "ack"}),
                2,
            )
            .await
            .unwrap();
    }
    let model = ScriptedModel::new(false, vec![]);
    // The intent model reads a request for a recommendation: the planned tool runs.
    let services = HubServices {
        intent: Some(Arc::new(crate::testing::FixedIntent(
            crate::intent::Intent::PlanRecommend,
        ))),
        ..HubServices::default()
    };
    let hub = hub_with_services(
        Store::connect(&url).await.unwrap(),
        model.clone(),
        vec![],
        services,
    );
    let mut opened = hub
        .open(&Identity::customer("C-9"), Some(&conv), 1)
        .await
        .unwrap();
    assert_eq!(hub.recover().await.unwrap(), 1);
    let reply = next_durable(&mut opened.live).await;
    assert_eq!(reply["reply_to"], "client-m");
    // Recovery acts as the conversation's owner: the planned tool saw customer C-9.
    assert_eq!(reply["tool_calls"][0]["result"]["caller"], "C-9");
    assert!(hub.store().pending_messages(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn idle_sockets_leave_nothing_behind() {
    let model = ScriptedModel::new(false, vec![Step::Text("はい。")]);
    let (hub, _dir) = hub(model).await;
    let me = Identity::anonymous("v");
    let opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    assert_eq!(hub.live_conversations(), 1);
    // Still watched: kept.
    hub.release(&conv);
    assert_eq!(hub.live_conversations(), 1);
    drop(opened);
    hub.release(&conv);
    assert_eq!(
        hub.live_conversations(),
        0,
        "an unwatched conversation without a worker is forgotten"
    );
    // Nothing was written for a conversation that never got a message.
    assert!(hub.store().conversation(&conv).await.unwrap().is_none());

    // A conversation with a worker is kept until the worker goes idle.
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    hub.submit(&me, &conv, "m", "こんにちは").await.unwrap();
    next_durable(&mut opened.live).await;
    next_durable(&mut opened.live).await;
    drop(opened);
    hub.release(&conv);
    assert_eq!(hub.live_conversations(), 1);
}

/// Waits until the worker has held the customer's message `client_msg_id` for people.
async fn wait_until_held(store: &Store, conversation_id: &str, client_msg_id: &str) {
    for _ in 0..250 {
        let messages = store.recent_messages(conversation_id, 50).await.unwrap();
        if messages
            .iter()
            .any(|m| m.client_msg_id.as_deref() == Some(client_msg_id) && m.status == "held")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{client_msg_id} was not held in time");
}

/// Escalates any message containing 「弁護士」 (a stand-in for the real policy).
struct LawyerWord;

impl EscalationCheck for LawyerWord {
    fn check(&self, input: &EscalationInput<'_>) -> Option<(EscalationReason, String)> {
        if input.text.contains("弁護士") {
            return Some((EscalationReason::Legal, "弁護士".into()));
        }
        input.tool_request.clone()
    }
}

async fn hub_with_policy(
    model: Arc<ScriptedModel>,
    notify_channel: Option<&str>,
) -> (Arc<ConversationHub>, tempfile::TempDir) {
    let (store, dir) = temp_store().await;
    let services = HubServices {
        escalation: Some(Arc::new(LawyerWord)),
        handover: HandoverConfig {
            notify_channel: notify_channel.map(str::to_string),
            ..HandoverConfig::default()
        },
        ..HubServices::default()
    };
    (hub_with_services(store, model, vec![], services), dir)
}

#[tokio::test]
async fn escalation_hands_over_and_the_bot_stays_silent_until_handed_back() {
    // Only one model step exists: if the bot answered while people hold the conversation,
    // the second bot answer would have no script.
    let model = ScriptedModel::new(false, vec![Step::Text("AIがお答えします。")]);
    let (hub, _dir) = hub_with_policy(model.clone(), Some("slack")).await;
    let me = Identity::customer("C-1");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();

    hub.submit(&me, &conv, "m-1", "弁護士に相談して訴えたいです")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let status = next_durable(&mut opened.live).await;
    assert_eq!(
        (
            status["type"].as_str(),
            status["status"].as_str(),
            status["reason"].as_str()
        ),
        (Some("status"), Some("escalated"), Some("legal"))
    );
    let holding = next_durable(&mut opened.live).await;
    assert_eq!(holding["type"], "reply");
    assert!(holding["text"].as_str().unwrap().contains("担当者"));
    assert_eq!(holding["tool_calls"][0]["name"], "escalate_to_human");
    assert!(
        model.requests.lock().unwrap().is_empty(),
        "the model was not asked"
    );
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'escalation'")
        .fetch_one(hub.store().pool())
        .await
        .unwrap();
    assert_eq!(outbox, 1, "the notification is queued with the escalation");

    // While escalated, messages are acknowledged but the bot does not answer.
    hub.submit(&me, &conv, "m-2", "まだですか？").await.unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    wait_until_held(hub.store(), &conv, "m-2").await;

    let csm = Identity {
        display_name: Some("佐藤".into()),
        ..Identity::manager("csm-1")
    };
    let queue = hub.escalations(&csm, 10).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].reason, "legal");
    assert_eq!(queue[0].last_message.as_deref(), Some("まだですか？"));
    assert!(matches!(
        hub.human_reply(&conv, &csm, "担当の佐藤です。").await,
        Err(HubError::Conflict(_))
    ));
    assert!(matches!(
        hub.takeover(&conv, &me).await,
        Err(HubError::Forbidden)
    ));

    hub.takeover(&conv, &csm).await.unwrap();
    assert_eq!(next_durable(&mut opened.live).await["status"], "human");
    hub.human_reply(&conv, &csm, "担当の佐藤です。ご事情を伺います。")
        .await
        .unwrap();
    let human = next_durable(&mut opened.live).await;
    assert_eq!(
        (human["type"].as_str(), human["agent_name"].as_str()),
        (Some("human"), Some("佐藤"))
    );
    hub.submit(&me, &conv, "m-3", "よろしくお願いします")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    // Handing back before the worker saw m-3 would let the bot answer it.
    wait_until_held(hub.store(), &conv, "m-3").await;

    hub.handback(&conv, &csm).await.unwrap();
    assert_eq!(next_durable(&mut opened.live).await["status"], "bot");
    assert!(hub.escalations(&csm, 10).await.unwrap().is_empty());
    hub.submit(&me, &conv, "m-4", "ありがとうございました")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let reply = next_durable(&mut opened.live).await;
    assert_eq!(reply["text"], "AIがお答えします。");
    assert_eq!(model.requests.lock().unwrap().len(), 1);

    // A reconnecting socket sees the whole story in order.
    let replay = hub.open(&me, Some(&conv), 0).await.unwrap().replay;
    let kinds: Vec<String> = replay
        .iter()
        .map(|f| {
            let v: Value = serde_json::from_str(&f.json).unwrap();
            format!(
                "{}{}",
                v["type"].as_str().unwrap(),
                v["status"]
                    .as_str()
                    .map(|s| format!(":{s}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ack",
            "status:escalated",
            "reply",
            "ack",
            "status:human",
            "human",
            "ack",
            "status:bot",
            "ack",
            "reply"
        ]
    );
}

#[tokio::test]
async fn escalated_messages_are_not_answered_after_a_restart() {
    let model = ScriptedModel::new(false, vec![]);
    let (hub, dir) = hub_with_policy(model.clone(), None).await;
    let me = Identity::customer("C-1");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    hub.submit(&me, &conv, "m-1", "弁護士を立てます")
        .await
        .unwrap();
    for _ in 0..3 {
        next_durable(&mut opened.live).await;
    }
    hub.submit(&me, &conv, "m-2", "返事をください")
        .await
        .unwrap();
    next_durable(&mut opened.live).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(hub);
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("h.db").display()
    ))
    .await
    .unwrap();
    let pending = store.pending_messages(None).await.unwrap();
    assert!(
        pending.is_empty(),
        "held messages are not pending: {pending:?}"
    );
}

#[tokio::test]
async fn outreach_waits_for_the_next_visit_and_the_answer_continues_with_the_bot() {
    let model = ScriptedModel::new(false, vec![Step::Text("ご連絡ありがとうございます。")]);
    let (hub, _dir) = hub(model.clone()).await;
    let (conv, live) = hub
        .deliver_proactive(
            "C-7",
            "利用状況のご案内です。",
            "usage_drop:tpl-1",
            "usage_drop",
            None,
        )
        .await
        .unwrap();
    assert!(!live, "nobody was connected");

    // The customer's next visit (no conversation id) opens the conversation the agent started.
    let me = Identity::customer("C-7");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    assert_eq!(opened.conversation_id, conv);
    let first: Value = serde_json::from_str(&opened.replay[0].json).unwrap();
    assert_eq!(
        (first["type"].as_str(), first["trigger"].as_str()),
        (Some("proactive"), Some("usage_drop"))
    );
    // Someone else never gets it.
    let other = hub.open(&Identity::customer("C-8"), None, 0).await.unwrap();
    assert_ne!(other.conversation_id, conv);

    hub.submit(&me, &conv, "m-1", "詳しく教えてください")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    assert_eq!(next_durable(&mut opened.live).await["type"], "reply");
    // Answered: the next visit starts fresh.
    let later = hub.open(&me, None, 0).await.unwrap();
    assert_ne!(later.conversation_id, conv);

    // A connected customer gets the next message live, in the conversation they are in.
    let (again, live) = hub
        .deliver_proactive(
            "C-7",
            "更新のご案内です。",
            "renewal_90d:tpl-2",
            "renewal_90d",
            None,
        )
        .await
        .unwrap();
    assert_eq!(again, conv);
    assert!(live);
    assert_eq!(next_durable(&mut opened.live).await["type"], "proactive");
}

async fn insert_customer(store: &Store, id: &str) {
    sqlx::query(
        "INSERT INTO customers (id, kind, name, opted_out, created_at, updated_at)
         VALUES ($1, 'b2c', '山田', 0, 1, 1)",
    )
    .bind(id)
    .execute(store.pool())
    .await
    .unwrap();
}

async fn opted_out(store: &Store, id: &str) -> i64 {
    sqlx::query_scalar("SELECT opted_out FROM customers WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// The `outreach_sends` row outreach claims before delivering (the events' foreign key).
async fn insert_send(store: &Store, send_id: &str, customer_id: &str) {
    sqlx::query(
        "INSERT INTO outreach_sends (id, customer_id, trigger_slug, cause_key, campaign_id,
            variant, status, created_at)
         VALUES ($1, $2, 'usage_drop', $1, 'usage_drop', 'A', 'delivered', 1)",
    )
    .bind(send_id)
    .bind(customer_id)
    .execute(store.pool())
    .await
    .unwrap();
}

/// Every recorded event as `send_id:kind`, sorted.
async fn events(store: &Store) -> Vec<String> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT send_id, kind FROM outreach_events ORDER BY send_id, kind")
            .fetch_all(store.pool())
            .await
            .unwrap();
    rows.into_iter().map(|(s, k)| format!("{s}:{k}")).collect()
}

#[tokio::test]
async fn opt_out_in_chat_is_honoured_at_once_without_the_model() {
    // An empty script: any model call would panic the worker and no reply would come.
    let model = ScriptedModel::new(false, vec![]);
    let (hub, _dir) = hub(model.clone()).await;
    let store = hub.store().clone();
    insert_customer(&store, "C-1").await;
    insert_send(&store, "s-1", "C-1").await;
    hub.deliver_proactive(
        "C-1",
        "ご案内です。",
        "usage_drop:A",
        "usage_drop",
        Some("s-1"),
    )
    .await
    .unwrap();
    let me = Identity::customer("C-1");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();

    hub.submit(&me, &conv, "m-1", "配信停止").await.unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let reply = next_durable(&mut opened.live).await;
    assert_eq!(reply["type"], "reply");
    assert_eq!(reply["reply_to"], "m-1");
    assert_eq!(reply["text"], outreach::OPT_OUT_CONFIRMATION);
    assert_eq!(reply["opt_out"], true);
    assert_eq!(opted_out(&store, "C-1").await, 1);
    let messages = store.recent_messages(&conv, 10).await.unwrap();
    let stored = messages.last().unwrap();
    assert_eq!(
        (stored.role.as_str(), &stored.metadata),
        ("assistant", &serde_json::json!({"opt_out": true}))
    );
    // The confirmation is not an unresolved round trip.
    assert_eq!(conversation_signals(&messages, "none", None).1, 0);
    assert!(store.pending_messages(None).await.unwrap().is_empty());
    // A stop request is not counted as a reply to the campaign.
    assert_eq!(events(&store).await, ["s-1:opened"]);

    hub.submit(&me, &conv, "m-2", "配信を再開してください")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let reply = next_durable(&mut opened.live).await;
    assert_eq!(reply["text"], outreach::OPT_IN_CONFIRMATION);
    assert_eq!(reply["opt_in"], true);
    assert_eq!(opted_out(&store, "C-1").await, 0);
    assert!(
        model.requests.lock().unwrap().is_empty(),
        "the model was not asked"
    );
}

#[tokio::test]
async fn anonymous_visitors_have_nothing_to_stop() {
    let model = ScriptedModel::new(false, vec![]);
    let (hub, _dir) = hub(model.clone()).await;
    let store = hub.store().clone();
    // A visitor id that happens to equal a customer id changes nothing.
    insert_customer(&store, "C-1").await;
    let visitor = Identity::anonymous("C-1");
    let mut opened = hub.open(&visitor, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();

    hub.submit(&visitor, &conv, "m-1", "STOP").await.unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let reply = next_durable(&mut opened.live).await;
    assert_eq!(reply["text"], outreach::NOTHING_TO_STOP);
    assert_eq!(reply["opt_out"], false);
    assert_eq!(opted_out(&store, "C-1").await, 0);

    hub.submit(&visitor, &conv, "m-2", "配信再開")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let reply = next_durable(&mut opened.live).await;
    assert_eq!(reply["text"], outreach::SIGN_IN_TO_RESUME);
    assert!(model.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn opt_out_while_a_person_holds_the_conversation_is_stored_silently() {
    let model = ScriptedModel::new(false, vec![]);
    let (hub, _dir) = hub_with_policy(model.clone(), None).await;
    let store = hub.store().clone();
    insert_customer(&store, "C-1").await;
    let me = Identity::customer("C-1");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    hub.submit(&me, &conv, "m-1", "弁護士に相談します")
        .await
        .unwrap();
    for _ in 0..3 {
        next_durable(&mut opened.live).await;
    }
    let csm = Identity::manager("csm-1");
    hub.takeover(&conv, &csm).await.unwrap();
    assert_eq!(next_durable(&mut opened.live).await["status"], "human");

    hub.submit(&me, &conv, "m-2", "配信停止でお願いします")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    // Marking the message is the last thing the worker does with it.
    let mut handled = None;
    for _ in 0..100 {
        let messages = store.recent_messages(&conv, 20).await.unwrap();
        let m2 = messages
            .iter()
            .find(|m| m.client_msg_id.as_deref() == Some("m-2"))
            .unwrap()
            .clone();
        if m2.metadata.get("opt_out").is_some() {
            handled = Some((messages, m2));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (messages, m2) = handled.expect("the stop request was handled");
    assert_eq!(
        (m2.status.as_str(), &m2.metadata["opt_out"]),
        ("held", &Value::Bool(true))
    );
    assert_eq!(opted_out(&store, "C-1").await, 1);
    assert!(
        !messages
            .iter()
            .any(|m| m.content == outreach::OPT_OUT_CONFIRMATION),
        "the bot stays silent while a person holds the conversation"
    );
    // No bot frame came between the ack and the person's next reply.
    hub.human_reply(&conv, &csm, "承知しました。")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "human");
    assert!(model.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn opening_and_replying_are_recorded_once_for_the_right_send() {
    let model = ScriptedModel::new(
        false,
        vec![
            Step::Text("ご連絡ありがとうございます。"),
            Step::Text("はい。"),
            Step::Text("承知しました。"),
        ],
    );
    let (hub, _dir) = hub(model).await;
    let store = hub.store().clone();
    insert_send(&store, "s-1", "C-7").await;
    insert_send(&store, "s-2", "C-7").await;
    let (conv, live) = hub
        .deliver_proactive(
            "C-7",
            "ご案内です。",
            "usage_drop:A",
            "usage_drop",
            Some("s-1"),
        )
        .await
        .unwrap();
    assert!(!live);
    assert!(events(&store).await.is_empty(), "nobody has seen it yet");

    let me = Identity::customer("C-7");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    assert_eq!(opened.conversation_id, conv);
    let first: Value = serde_json::from_str(&opened.replay[0].json).unwrap();
    assert_eq!(first["send_id"], "s-1");
    assert_eq!(events(&store).await, ["s-1:opened"]);
    // Resuming the same conversation records nothing new.
    hub.open(&me, Some(&conv), 1).await.unwrap();
    assert_eq!(events(&store).await, ["s-1:opened"]);

    for (id, text) in [("m-1", "詳しく教えてください"), ("m-2", "ありがとう")] {
        hub.submit(&me, &conv, id, text).await.unwrap();
        assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
        assert_eq!(next_durable(&mut opened.live).await["type"], "reply");
    }
    assert_eq!(events(&store).await, ["s-1:opened", "s-1:replied"]);

    // Delivered while the customer watches: opened at once; the next answer is to s-2.
    let (again, live) = hub
        .deliver_proactive(
            "C-7",
            "更新のご案内です。",
            "renewal:B",
            "renewal_90d",
            Some("s-2"),
        )
        .await
        .unwrap();
    assert_eq!((again.as_str(), live), (conv.as_str(), true));
    let frame = next_durable(&mut opened.live).await;
    assert_eq!(
        (frame["type"].as_str(), frame["send_id"].as_str()),
        (Some("proactive"), Some("s-2"))
    );
    assert_eq!(
        events(&store).await,
        ["s-1:opened", "s-1:replied", "s-2:opened"]
    );
    hub.submit(&me, &conv, "m-3", "更新します").await.unwrap();
    next_durable(&mut opened.live).await;
    next_durable(&mut opened.live).await;
    assert_eq!(
        events(&store).await,
        ["s-1:opened", "s-1:replied", "s-2:opened", "s-2:replied"]
    );
    let proactive = store.recent_messages(&conv, 20).await.unwrap();
    assert_eq!(proactive[0].metadata["proactive"]["send_id"], "s-1");
}

/// Books whatever it is asked (a stand-in for the tools crate's `book_measurement`).
struct FakeBooking;

#[async_trait]
impl crate::tool::Tool for FakeBooking {
    fn name(&self) -> &str {
        "book_measurement"
    }
    fn description(&self) -> &str {
        "予約を確定"
    }
    fn parameters(&self) -> Value {
        serde_json::json!({"type": "object", "properties": {"slot_start": {"type": "string"}}})
    }
    fn risk(&self) -> crate::tool::RiskClass {
        crate::tool::RiskClass::Write
    }
    async fn preview(
        &self,
        _ctx: &crate::tool::ToolContext,
        _args: Value,
    ) -> Result<crate::tool::ToolOutput, crate::tool::ToolError> {
        Ok(crate::tool::ToolOutput {
            data: serde_json::json!({"possible": true}),
            display: "11月23日(月) 19:00〜でご予約をお取りします。".into(),
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
    async fn call(
        &self,
        _ctx: &crate::tool::ToolContext,
        _args: Value,
    ) -> Result<crate::tool::ToolOutput, crate::tool::ToolError> {
        Ok(crate::tool::ToolOutput {
            data: serde_json::json!({"booking_id": "b-1", "created": true}),
            display: "ご予約を承りました。".into(),
            must_quote: vec![],
            effects: vec![crate::tool::ToolEffect::BookingCreated {
                booking_id: "b-1".into(),
            }],
        })
    }
}

#[tokio::test]
async fn a_booking_is_proposed_then_made_on_consent_and_converts_the_newest_send() {
    let book = || {
        Step::Calls(vec![crate::llm::ToolCall {
            id: "b".into(),
            name: "book_measurement".into(),
            arguments: serde_json::json!({"slot_start": "2026-11-23T19:00:00+09:00"}),
        }])
    };
    let model = ScriptedModel::new(true, vec![book(), book()]);
    let (store, _dir) = temp_store().await;
    let hub = hub_with_tools(store.clone(), model, vec![Arc::new(FakeBooking)]);
    insert_send(&store, "s-1", "C-3").await;
    hub.deliver_proactive(
        "C-3",
        "測定のご案内です。",
        "usage_drop:A",
        "usage_drop",
        Some("s-1"),
    )
    .await
    .unwrap();
    let me = Identity::customer("C-3");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    hub.submit(&me, &conv, "m-1", "11月23日19時でお願いします")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    // The model asked to book: that is only a proposal, with the consent buttons.
    let proposal = next_durable(&mut opened.live).await;
    assert_eq!(proposal["proposal"]["tool"], "book_measurement");
    assert!(proposal["text"]
        .as_str()
        .unwrap()
        .contains("11月23日(月) 19:00〜"));
    assert_eq!(proposal["tool_calls"], serde_json::json!([]));
    assert_eq!(proposal["quick_replies"][0]["text"], "はい、お願いします");
    assert_eq!(events(&store).await, ["s-1:opened", "s-1:replied"]);

    hub.submit(&me, &conv, "m-2", "はい、お願いします")
        .await
        .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let booked = next_durable(&mut opened.live).await;
    assert_eq!(
        booked["tool_calls"][0]["name"], "book_measurement",
        "{booked}"
    );
    assert_eq!(booked["text"], "ご予約を承りました。");
    assert_eq!(
        events(&store).await,
        ["s-1:converted", "s-1:opened", "s-1:replied"]
    );

    // A booking in a conversation without outreach records nothing.
    let other = Identity::customer("C-4");
    let mut fresh = hub.open(&other, None, 0).await.unwrap();
    let fresh_id = fresh.conversation_id.clone();
    hub.submit(&other, &fresh_id, "m-1", "11月23日19時でお願いします")
        .await
        .unwrap();
    next_durable(&mut fresh.live).await;
    assert!(next_durable(&mut fresh.live).await["proposal"].is_object());
    hub.submit(&other, &fresh_id, "m-2", "はい、お願いします")
        .await
        .unwrap();
    next_durable(&mut fresh.live).await;
    let booked = next_durable(&mut fresh.live).await;
    assert_eq!(booked["tool_calls"][0]["name"], "book_measurement");
    assert_eq!(events(&store).await.len(), 3);
}

#[tokio::test]
async fn a_side_question_keeps_the_proposal_and_consent_still_books() {
    let book = Step::Calls(vec![crate::llm::ToolCall {
        id: "b".into(),
        name: "book_measurement".into(),
        arguments: serde_json::json!({"slot_start": "2026-11-23T19:00:00+09:00"}),
    }]);
    let model = ScriptedModel::new(
        true,
        vec![
            book,
            Step::Text("キャンセルは前日までにチャットでお知らせください。"),
        ],
    );
    let (store, _dir) = temp_store().await;
    let hub = hub_with_tools(store.clone(), model, vec![Arc::new(FakeBooking)]);
    let me = Identity::customer("C-5");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    hub.submit(&me, &conv, "m-1", "11月23日19時でお願いします")
        .await
        .unwrap();
    next_durable(&mut opened.live).await;
    assert_eq!(
        next_durable(&mut opened.live).await["proposal"]["tool"],
        "book_measurement"
    );
    // A question on the side: answered, and the proposal still awaits consent.
    hub.submit(
        &me,
        &conv,
        "m-2",
        "キャンセルするときはどうすればいいですか？",
    )
    .await
    .unwrap();
    next_durable(&mut opened.live).await;
    let side = next_durable(&mut opened.live).await;
    let text = side["text"].as_str().unwrap();
    assert!(text.contains("キャンセルは前日まで"), "{side}");
    assert!(text.contains(crate::engine::STILL_PENDING), "{side}");
    assert_eq!(side["proposal"]["tool"], "book_measurement");
    assert_eq!(side["quick_replies"][0]["text"], "はい、お願いします");
    assert_eq!(side["tool_calls"], serde_json::json!([]));
    // Consent after it runs the proposal made before it.
    hub.submit(&me, &conv, "m-3", "はい、お願いします")
        .await
        .unwrap();
    next_durable(&mut opened.live).await;
    let booked = next_durable(&mut opened.live).await;
    assert_eq!(
        booked["tool_calls"][0]["name"], "book_measurement",
        "{booked}"
    );
}

#[test]
fn only_new_bookings_count_as_conversions() {
    // Recognised by the effect the tool reports, whatever its name.
    let call =
        |name: &str, ok: bool, effects: Vec<crate::tool::ToolEffect>| crate::engine::ExecutedCall {
            id: "x".into(),
            name: name.into(),
            arguments: Value::Null,
            ok,
            result: Value::Null,
            output: Some(crate::tool::ToolOutput {
                data: Value::Null,
                display: String::new(),
                must_quote: vec![],
                effects,
            }),
            duration_ms: 0,
            planned: false,
        };
    let created = || {
        vec![crate::tool::ToolEffect::BookingCreated {
            booking_id: "b-1".into(),
        }]
    };
    assert!(outreach::booked_measurement(&[call(
        "book_measurement",
        true,
        created()
    )]));
    assert!(outreach::booked_measurement(&[call(
        "reserve_visit",
        true,
        created()
    )]));
    let cancelled = vec![crate::tool::ToolEffect::BookingCancelled {
        booking_id: "b-1".into(),
    }];
    for (ok, effects) in [(true, vec![]), (true, cancelled), (false, created())] {
        assert!(!outreach::booked_measurement(&[call(
            "book_measurement",
            ok,
            effects
        )]));
    }
}

#[tokio::test]
async fn staff_are_never_escalated_even_when_they_relay_an_angry_client() {
    // Issue 13: a manager's question about a risky account was handed to a person.
    let model = ScriptedModel::new(false, vec![Step::Text("状況を確認します。")]);
    let (hub, _dir) = hub_with_policy(model.clone(), None).await;
    let me = Identity::manager("csm-1");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    hub.submit(
        &me,
        &conv,
        "m-1",
        "取引先の担当者が弁護士に相談すると言っています。どう動けばいい？",
    )
    .await
    .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let next = next_durable(&mut opened.live).await;
    assert_eq!(next["type"], "reply", "{next}");
    assert!(next.get("escalation").is_none(), "{next}");
}

#[tokio::test]
async fn a_visitor_asking_about_a_named_company_is_refused_by_name() {
    // Issue 13: an anonymous visitor asking whether a named company "is red" was told it is.
    let model = ScriptedModel::new(false, vec![Step::Text("はい、レッドです。")]);
    let (store, _dir) = temp_store().await;
    sqlx::query(
        "INSERT INTO customers (id, kind, name, opted_out, created_at, updated_at)
         VALUES ('B-2003', 'b2b', 'あおば不動産株式会社', 0, 1, 1)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let hub = hub_on(store, model.clone());
    let me = Identity::anonymous("v-1");
    let mut opened = hub.open(&me, None, 0).await.unwrap();
    let conv = opened.conversation_id.clone();
    hub.submit(
        &me,
        &conv,
        "m-1",
        "あおば不動産さんって、レッドなんですか？",
    )
    .await
    .unwrap();
    assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
    let reply = next_durable(&mut opened.live).await;
    assert_eq!(
        reply["text"],
        crate::engine::OTHER_ACCOUNT_REFUSAL,
        "{reply}"
    );
    assert!(
        model.requests.lock().unwrap().is_empty(),
        "the model was not asked"
    );
}

#[test]
fn anonymous_escalation_budgets_cap_per_address_and_in_all_within_an_hour() {
    use super::EscalationWindow;
    let mut w = EscalationWindow::default();
    let t0 = Instant::now();
    let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let b: std::net::IpAddr = "192.0.2.2".parse().unwrap();
    assert!(w.try_take(Some(a), Some(2), Some(3), t0));
    assert!(w.try_take(Some(a), Some(2), Some(3), t0));
    assert!(
        !w.try_take(Some(a), Some(2), Some(3), t0),
        "per-address cap"
    );
    assert!(w.try_take(Some(b), Some(2), Some(3), t0));
    assert!(!w.try_take(Some(b), Some(2), Some(3), t0), "global cap");
    assert!(
        !w.try_take(None, Some(2), Some(3), t0),
        "global cap without an address"
    );
    // An hour later the window has moved on.
    let later = t0 + std::time::Duration::from_secs(3601);
    assert!(w.try_take(Some(a), Some(2), Some(3), later));
    // No caps: always allowed.
    let mut open = EscalationWindow::default();
    assert!((0..100).all(|_| open.try_take(Some(a), None, None, t0)));
}

#[tokio::test]
async fn a_full_outbox_still_escalates_but_queues_no_further_notice() {
    let model = ScriptedModel::new(false, vec![]);
    let (store, _dir) = temp_store().await;
    let services = HubServices {
        escalation: Some(Arc::new(LawyerWord)),
        handover: HandoverConfig {
            notify_channel: Some("slack".into()),
            max_pending_notices: 1,
            ..HandoverConfig::default()
        },
        ..HubServices::default()
    };
    let hub = hub_with_services(store, model, vec![], services);
    for (n, customer) in ["C-1", "C-2"].into_iter().enumerate() {
        let me = Identity::customer(customer);
        let mut opened = hub.open(&me, None, 0).await.unwrap();
        let conv = opened.conversation_id.clone();
        hub.submit(
            &me,
            &conv,
            &format!("m-{n}"),
            "弁護士に相談して訴えたいです",
        )
        .await
        .unwrap();
        assert_eq!(next_durable(&mut opened.live).await["type"], "ack");
        let status = next_durable(&mut opened.live).await;
        assert_eq!(
            status["status"], "escalated",
            "escalated whatever the outbox holds"
        );
    }
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'escalation'")
        .fetch_one(hub.store().pool())
        .await
        .unwrap();
    assert_eq!(outbox, 1, "the second notice is not queued past the bound");
    let queue = hub
        .escalations(&Identity::manager("csm"), 10)
        .await
        .unwrap();
    assert_eq!(queue.len(), 2, "both are in the console queue");
}

/// Frames (durable or not) until the reply to `client_id`, as JSON.
async fn frames_until_reply(
    rx: &mut broadcast::Receiver<OutFrame>,
    client_id: &str,
    secs: u64,
) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(secs), rx.recv())
            .await
            .expect("frame in time")
            .unwrap();
        let v: Value = serde_json::from_str(&frame.json).unwrap();
        let done = v["type"] == "reply" && v["reply_to"] == client_id;
        out.push(v);
        if done {
            return out;
        }
    }
}

#[tokio::test]
async fn a_turn_waiting_for_the_model_hears_its_place_and_structured_replies_never_wait() {
    // The first turn holds the (one-at-a-time) model for a while.
    let model = ScriptedModel::new(
        false,
        vec![
            Step::Sleep(Duration::from_millis(1500)),
            Step::Text("ご相談ありがとうございます。"),
        ],
    );
    let (hub, _dir) = hub(model.clone()).await;
    let first = Identity::customer("C-1");
    let mut first_open = hub.open(&first, None, 0).await.unwrap();
    let first_conv = first_open.conversation_id.clone();
    hub.submit(&first, &first_conv, "f-1", "こんにちは")
        .await
        .unwrap();
    // Wait until the model is busy with it.
    for _ in 0..100 {
        if !model.requests.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(model.requests.lock().unwrap().len(), 1);

    // Another customer's model turn waits, and is told where it stands.
    let second = Identity::customer("C-2");
    let mut second_open = hub.open(&second, None, 0).await.unwrap();
    let second_conv = second_open.conversation_id.clone();
    hub.submit(&second, &second_conv, "s-1", "相談があります")
        .await
        .unwrap();

    // A visitor's 配信停止 is answered at once, without the model, meanwhile.
    let visitor = Identity::anonymous("v-1");
    let mut visitor_open = hub.open(&visitor, None, 0).await.unwrap();
    let visitor_conv = visitor_open.conversation_id.clone();
    let asked = std::time::Instant::now();
    hub.submit(&visitor, &visitor_conv, "v-1", "配信停止")
        .await
        .unwrap();
    let visitor_frames = frames_until_reply(&mut visitor_open.live, "v-1", 5).await;
    assert!(
        asked.elapsed() < Duration::from_millis(1000),
        "a structured reply does not wait behind the model: {:?}",
        asked.elapsed()
    );
    assert!(
        !visitor_frames.iter().any(|f| f["type"] == "queue"),
        "{visitor_frames:?}"
    );

    let second_frames = frames_until_reply(&mut second_open.live, "s-1", 10).await;
    let queue: Vec<&Value> = second_frames
        .iter()
        .filter(|f| f["type"] == "queue")
        .collect();
    assert!(!queue.is_empty(), "{second_frames:?}");
    assert_eq!(queue[0]["position"], 1);
    assert_eq!(queue[0]["reply_to"], "s-1");
    assert!(queue[0]["expected_wait_secs"].as_u64().unwrap() >= 1);
    assert!(queue[0].get("seq").is_none(), "queue frames are transient");
    assert_eq!(
        second_frames.last().unwrap()["text"],
        "ご相談ありがとうございます。"
    );
    // The first turn finished first.
    let first_frames = frames_until_reply(&mut first_open.live, "f-1", 10).await;
    assert!(!first_frames.iter().any(|f| f["type"] == "queue"));
}
