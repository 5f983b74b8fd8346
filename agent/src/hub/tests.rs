use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::clock::SystemClock;
use crate::engine::AgentConfig;
use crate::prompts::Prompts;
use crate::testing::{PriceTool, ScriptedModel, Step};
use crate::tool::ToolRegistry;

async fn hub(model: Arc<ScriptedModel>) -> (Arc<ConversationHub>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("h.db").display()
    ))
    .await
    .unwrap();
    (hub_on(store, model), dir)
}

fn hub_on(store: Store, model: Arc<ScriptedModel>) -> Arc<ConversationHub> {
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(PriceTool)).unwrap();
    let prompts =
        Prompts::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts"))
            .unwrap();
    let agent = Arc::new(Agent::new(model, tools, prompts, AgentConfig::default()));
    ConversationHub::new(
        store,
        agent,
        Arc::new(SystemClock),
        None,
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
    let model = ScriptedModel::new(false, vec![Step::Text("スタンダードは12,800円です。")]);
    let hub = hub_on(Store::connect(&url).await.unwrap(), model.clone());
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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("h.db").display()
    ))
    .await
    .unwrap();
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(PriceTool)).unwrap();
    let prompts =
        Prompts::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts"))
            .unwrap();
    let agent = Arc::new(Agent::new(model, tools, prompts, AgentConfig::default()));
    let services = HubServices {
        escalation: Some(Arc::new(LawyerWord)),
        handover: HandoverConfig {
            notify_channel: notify_channel.map(str::to_string),
            ..HandoverConfig::default()
        },
        ..HubServices::default()
    };
    let hub = ConversationHub::with_services(
        store,
        agent,
        Arc::new(SystemClock),
        services,
        HubConfig::default(),
    );
    (hub, dir)
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
        )
        .await
        .unwrap();
    assert_eq!(again, conv);
    assert!(live);
    assert_eq!(next_durable(&mut opened.live).await["type"], "proactive");
}
