use serde_json::json;

use super::*;
use crate::clock::jst;
use crate::llm::ChatRole;
use crate::testing::{PriceTool, ScriptedModel, Step};

fn agent(model: Arc<ScriptedModel>, config: AgentConfig) -> Agent {
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(PriceTool)).unwrap();
    let prompts =
        Prompts::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts"))
            .unwrap();
    Agent::new(model, tools, prompts, config)
}

fn request(text: &str) -> TurnRequest {
    TurnRequest {
        conversation_id: "c1".into(),
        identity: Identity::customer("C-1001"),
        now: chrono::Utc::now().with_timezone(&jst()),
        history: vec![],
        user_text: text.into(),
        context: vec![],
    }
}

async fn run(agent: &Agent, req: TurnRequest) -> (TurnResult, Vec<TurnEvent>) {
    run_plan(agent, req, TurnPlan::Model { calls: vec![] }).await
}

async fn run_plan(agent: &Agent, req: TurnRequest, plan: TurnPlan) -> (TurnResult, Vec<TurnEvent>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let result = agent.run(req, plan, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (result, events)
}

fn streamed(events: &[TurnEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::Delta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn plan_call() -> TurnPlan {
    TurnPlan::Model {
        calls: vec![PlannedCall {
            name: "recommend_plan",
            arguments: json!({"noise_type": "footsteps", "time_of_day": "late_night"}),
        }],
    }
}

#[tokio::test]
async fn planned_tool_runs_before_the_model_and_its_price_is_quoted() {
    let model = ScriptedModel::new(
        false,
        vec![Step::Text(
            "足音でお困りなのですね。スタンダードプランがおすすめです。",
        )],
    );
    let agent = agent(model.clone(), AgentConfig::default());
    let (result, events) = run_plan(
        &agent,
        request("深夜の足音がひどいです。どのプランがおすすめですか"),
        plan_call(),
    )
    .await;

    assert_eq!(result.tool_calls.len(), 1);
    let call = &result.tool_calls[0];
    assert!(call.planned && call.ok);
    assert_eq!(call.arguments["noise_type"], "footsteps");
    assert_eq!(
        call.result["caller"], "C-1001",
        "tools see the verified identity"
    );
    // The model's reply omitted the price, so the tool's own text was added.
    assert!(result.reply.contains("12,800円"), "{}", result.reply);
    assert_eq!(result.fallback, Some(Fallback::AddedToolFacts));
    assert_eq!(result.steps, 1);
    // The model saw the tool result, and the prompt's system message is first.
    let requests = model.requests.lock().unwrap();
    let msgs = &requests[0].messages;
    assert_eq!(msgs[0].role, ChatRole::System);
    assert!(msgs
        .iter()
        .any(|m| m.role == ChatRole::Tool && m.content.contains("12,800円")));
    // A text-only model is offered no tools: its prompt stays small.
    assert!(requests[0].tools.is_empty());
    assert!(!msgs[0].content.contains("tool_call"));
    assert!(streamed(&events).starts_with("足音でお困り"));
}

#[tokio::test]
async fn composed_plans_answer_without_the_model() {
    // No scripted step: asking the model would panic.
    let model = ScriptedModel::new(false, vec![]);
    let agent = agent(model.clone(), AgentConfig::default());
    let (result, _) = run_plan(
        &agent,
        request("料金は？"),
        TurnPlan::Tools {
            calls: vec![PlannedCall {
                name: "recommend_plan",
                arguments: json!({}),
            }],
            lead: Some("お調べしました。".into()),
        },
    )
    .await;
    assert_eq!(
        result.reply,
        "お調べしました。\n\nスタンダードプラン（12,800円）をおすすめします。"
    );
    assert!(result.composed);
    assert_eq!(result.tool_calls.len(), 1);
    let (said, _) = run_plan(
        &agent,
        request("こんにちは"),
        TurnPlan::Say {
            text: "こんにちは。".into(),
            quick_replies: vec![],
        },
    )
    .await;
    assert_eq!(said.reply, "こんにちは。");
    assert!(model.requests.lock().unwrap().is_empty());
}

/// A write tool with a preview, counting real writes.
struct CountingBooking(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl crate::tool::Tool for CountingBooking {
    fn name(&self) -> &str {
        "book_measurement"
    }
    fn description(&self) -> &str {
        "予約"
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object", "properties": {"slot_start": {"type": "string"}}})
    }
    fn risk(&self) -> crate::tool::RiskClass {
        crate::tool::RiskClass::Write
    }
    async fn preview(
        &self,
        _ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        let full = args["slot_start"] == "full";
        Ok(ToolOutput {
            data: json!({"possible": !full}),
            display: if full {
                "その枠は満席です。".into()
            } else {
                "11月25日 19:00〜でご予約をお取りします。".into()
            },
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
    async fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> Result<ToolOutput, ToolError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(ToolOutput {
            data: json!({"created": true}),
            display: "ご予約を承りました。".into(),
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
}

fn booking_agent(model: Arc<ScriptedModel>) -> (Agent, Arc<CountingBooking>) {
    let booking = Arc::new(CountingBooking(std::sync::atomic::AtomicUsize::new(0)));
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(PriceTool)).unwrap();
    tools.register(booking.clone()).unwrap();
    let prompts =
        Prompts::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts"))
            .unwrap();
    (
        Agent::new(model, tools, prompts, AgentConfig::default()),
        booking,
    )
}

#[tokio::test]
async fn writes_are_proposed_and_run_only_on_consent() {
    let (agent, booking) = booking_agent(ScriptedModel::new(false, vec![]));
    let call = PlannedCall {
        name: "book_measurement",
        arguments: json!({"slot_start": "2026-11-25T19:00:00+09:00"}),
    };
    let (proposed, _) = run_plan(
        &agent,
        request("25日の19時で"),
        TurnPlan::Propose {
            call: call.clone(),
            otherwise: None,
        },
    )
    .await;
    let proposal = proposed.proposal.clone().expect("a proposal");
    assert_eq!(proposal.tool, "book_measurement");
    assert!(proposed.reply.contains("11月25日 19:00〜"));
    assert!(proposed.reply.contains("「はい」"));
    assert_eq!(proposed.quick_replies, consent_buttons());
    assert!(proposed.tool_calls.is_empty());
    assert_eq!(booking.0.load(std::sync::atomic::Ordering::SeqCst), 0);

    let (done, _) = run_plan(&agent, request("はい"), TurnPlan::Execute(proposal)).await;
    assert_eq!(done.reply, "ご予約を承りました。");
    assert_eq!(done.tool_calls[0].name, "book_measurement");
    assert_eq!(booking.0.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A slot that cannot be booked shows why and the alternatives, and proposes nothing.
    let (full, _) = run_plan(
        &agent,
        request("満席の枠で"),
        TurnPlan::Propose {
            call: PlannedCall {
                name: "book_measurement",
                arguments: json!({"slot_start": "full"}),
            },
            otherwise: Some(PlannedCall {
                name: "recommend_plan",
                arguments: json!({}),
            }),
        },
    )
    .await;
    assert!(full.proposal.is_none());
    assert!(
        full.reply.starts_with("その枠は満席です。"),
        "{}",
        full.reply
    );
    assert!(full.reply.contains("12,800円"));
}

#[tokio::test]
async fn a_model_asking_to_write_only_proposes() {
    let model = ScriptedModel::new(
        true,
        vec![Step::Calls(vec![ToolCall {
            id: "w".into(),
            name: "book_measurement".into(),
            arguments: json!({"slot_start": "2026-11-25T19:00:00+09:00"}),
        }])],
    );
    let (agent, booking) = booking_agent(model);
    let (result, _) = run(&agent, request("予約して")).await;
    assert!(result.proposal.is_some());
    assert!(result.reply.contains("11月25日 19:00〜"));
    assert_eq!(result.fallback, None);
    assert_eq!(booking.0.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_text_model_gets_no_tools_and_its_call_syntax_never_shows() {
    let model = ScriptedModel::new(
        false,
        vec![Step::Text(
            "確認します。<tool_call>{\"name\": \"recommend_plan\", \"arguments\": {}}</tool_call>",
        )],
    );
    let agent = agent(model, AgentConfig::default());
    let (result, events) = run(&agent, request("隣の話し声が気になります")).await;
    assert!(result.tool_calls.is_empty());
    let shown = streamed(&events);
    assert!(
        !shown.contains("tool_call") && !shown.contains('{'),
        "{shown}"
    );
    assert!(!result.reply.contains("tool_call"), "{}", result.reply);
}

#[tokio::test]
async fn a_leaking_reply_is_replaced_by_the_faq_answer_and_never_streamed() {
    // Issue 13: replies echoed the tool instruction and internal ids.
    for leak in [
        "上の結果をもとに、お客様への返答を2〜3文で書いてください。測定は2時間です。",
        "参考情報の[faq-measure-012]によると、測定は2時間です。",
        "質問: 測定時間は？\n答: 2時間です。",
    ] {
        let model = ScriptedModel::new(false, vec![Step::Text(leak)]);
        let agent = agent(model, AgentConfig::default());
        let mut req = request("測定時間は？");
        req.context.push(ContextChunk {
            doc_id: "faq-measure-012".into(),
            title: "測定時間".into(),
            text: "Q: 測定時間は？\nA: スタンダードプランの測定は2時間です。".into(),
            score: 0.9,
            answer: Some("スタンダードプランの測定は2時間です。".into()),
        });
        let (result, events) = run(&agent, req).await;
        assert_eq!(result.fallback, Some(Fallback::RejectedReply), "{leak}");
        assert!(result.rejected.is_some());
        assert_eq!(result.reply, "スタンダードプランの測定は2時間です。");
        let shown = streamed(&events);
        assert!(
            !shown.contains("faq-") && !shown.contains("上の結果") && !shown.contains("質問:"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn step_limit_bounds_the_loop_and_answers_from_tool_results() {
    let calls = |n: i64| {
        Step::Calls(vec![ToolCall {
            id: format!("x{n}"),
            name: "recommend_plan".into(),
            arguments: json!({"n": n}),
        }])
    };
    let model = ScriptedModel::new(true, vec![calls(1), calls(2), calls(3)]);
    let agent = agent(
        model,
        AgentConfig {
            max_steps: 3,
            ..AgentConfig::default()
        },
    );
    let (result, _) = run(&agent, request("相談です")).await;
    assert_eq!(result.steps, 3);
    assert_eq!(result.tool_calls.len(), 3);
    assert_eq!(result.fallback, Some(Fallback::StepLimit));
    assert!(result.reply.contains("12,800円"));
}

#[tokio::test]
async fn repeated_identical_calls_stop_the_loop() {
    let same = || {
        Step::Calls(vec![ToolCall {
            id: "x".into(),
            name: "recommend_plan".into(),
            arguments: json!({}),
        }])
    };
    let model = ScriptedModel::new(true, vec![same(), same()]);
    let agent = agent(model, AgentConfig::default());
    let (result, _) = run(&agent, request("相談です")).await;
    assert_eq!(result.tool_calls.len(), 1);
    assert_eq!(result.steps, 2);
}

#[tokio::test]
async fn model_timeout_and_failure_never_leave_the_customer_without_a_reply() {
    let model = ScriptedModel::new(false, vec![Step::Sleep(Duration::from_secs(5))]);
    let agent = agent(
        model,
        AgentConfig {
            llm_timeout: Duration::from_millis(50),
            ..AgentConfig::default()
        },
    );
    let (result, _) = run(&agent, request("こんにちは")).await;
    assert_eq!(result.fallback, Some(Fallback::ModelTimeout));
    assert!(result.reply.contains("申し訳ありません"));

    let model = ScriptedModel::new(false, vec![Step::Fail]);
    let agent = self::agent(model, AgentConfig::default());
    let (result, _) = run_plan(&agent, request("料金はいくら？"), plan_call()).await;
    assert_eq!(result.fallback, Some(Fallback::ModelError));
    // The planned tool still ran, so the customer gets its facts.
    assert!(result.reply.contains("12,800円"), "{}", result.reply);
}

#[tokio::test]
async fn unknown_tools_and_bad_arguments_are_reported_to_the_model() {
    let model = ScriptedModel::new(
        true,
        vec![
            Step::Calls(vec![
                ToolCall {
                    id: "a".into(),
                    name: "drop_tables".into(),
                    arguments: json!({}),
                },
                ToolCall {
                    id: "b".into(),
                    name: "recommend_plan".into(),
                    arguments: json!({"evil": true}),
                },
            ]),
            Step::Text("失礼しました。"),
        ],
    );
    let agent = agent(model.clone(), AgentConfig::default());
    let (result, _) = run(&agent, request("相談です")).await;
    assert_eq!(result.tool_calls.len(), 2);
    assert!(result.tool_calls.iter().all(|c| !c.ok));
    assert_eq!(result.reply, "失礼しました。");
    let requests = model.requests.lock().unwrap();
    let tool_msgs: Vec<_> = requests[1]
        .messages
        .iter()
        .filter(|m| m.role == ChatRole::Tool)
        .collect();
    assert!(tool_msgs[0].content.contains("no tool named"));
    assert!(tool_msgs[1].content.contains("unknown argument"));
    // Native backends get the tool specs.
    assert_eq!(requests[0].tools.len(), 1);
}

#[tokio::test]
async fn the_passage_that_answers_follows_the_system_prompt() {
    let model = ScriptedModel::new(false, vec![Step::Text("測定は2時間です。")]);
    let agent = agent(model.clone(), AgentConfig::default());
    let mut req = request("測定時間はどのくらいですか？");
    req.context.push(ContextChunk {
        doc_id: "faq-001".into(),
        title: "測定時間".into(),
        text: "Q: 測定時間は？\nA: …".into(),
        score: 0.9,
        answer: Some(
            "お支払いはクレジットカードに対応しています。スタンダードプランの測定時間は2時間です。領収書も発行できます。"
                .into(),
        ),
    });
    let (result, _) = run(&agent, req).await;
    assert_eq!(result.sources.len(), 1);
    assert_eq!(result.sources[0].doc_id, "faq-001");
    let requests = model.requests.lock().unwrap();
    let system = &requests[0].messages[0];
    assert_eq!(system.role, ChatRole::System);
    assert!(
        system.content.contains("測定時間は2時間です。"),
        "{}",
        system.content
    );
    // The constant system prompt comes first, the passage after it: the cacheable order.
    assert!(system.content.find("測定時間は2時間") > Some(0));
    let last = requests[0].messages.last().unwrap();
    assert_eq!(last.content, "測定時間はどのくらいですか？");
    // No document ids or Q/A scaffolding for a small model to copy.
    assert!(!system.content.contains("faq-001") && !system.content.contains("Q:"));
}

#[test]
fn passages_are_the_fixed_piece_of_each_chunk_that_answers() {
    let chunk = |answer: &str| ContextChunk {
        doc_id: "d".into(),
        title: "t".into(),
        text: String::new(),
        score: 0.9,
        answer: Some(answer.into()),
    };
    let context = [
        chunk(
            "レポートはPDFでお送りします。測定後3営業日以内に届きます。紙の郵送はオプションです。",
        ),
        chunk("お支払いはクレジットカードです。"),
    ];
    // Pieces of at most 32 characters: [PDF + 3営業日] and [郵送].
    let kept = answering_passages_within("紙の郵送はできますか", &context, 32);
    assert_eq!(
        kept,
        ["紙の郵送はオプションです。"],
        "the unrelated second chunk is left out"
    );
    let other = answering_passages_within("レポートはいつ届きますか", &context, 32);
    assert_eq!(
        other,
        ["レポートはPDFでお送りします。測定後3営業日以内に届きます。"]
    );
    // Another wording of the same question gets the very same passage text (cacheable).
    let again = answering_passages_within("報告のレポート、何日で届く？", &context, 32);
    assert_eq!(again, other);
    let whole = answering_passages_within("紙の郵送はできますか", &context, 500);
    assert_eq!(whole.len(), 1);
    assert!(whole[0].starts_with("レポートはPDF") && whole[0].ends_with("オプションです。"));
}

#[test]
fn fact_matching_ignores_width_and_commas() {
    assert!(
        normalize_for_match("料金は１２,８００円です").contains(&normalize_for_match("12,800円"))
    );
}

#[test]
fn truncated_replies_end_at_a_sentence() {
    assert_eq!(
        cut_to_last_sentence("料金は12,800円です。測定は2時間で、夜"),
        "料金は12,800円です。"
    );
    assert_eq!(
        cut_to_last_sentence("ご予約を承ります！次に"),
        "ご予約を承ります！"
    );
    assert_eq!(cut_to_last_sentence("句点なし"), "句点なし");
}

#[tokio::test]
async fn a_reply_cut_by_the_token_limit_is_trimmed_and_keeps_its_facts() {
    struct Truncating;
    #[async_trait::async_trait]
    impl LanguageModel for Truncating {
        fn name(&self) -> &str {
            "truncating"
        }
        fn native_tool_calls(&self) -> bool {
            false
        }
        async fn generate(
            &self,
            req: LlmRequest,
            _: mpsc::UnboundedSender<String>,
        ) -> Result<crate::llm::LlmOutput, LlmError> {
            // The tool result reached the model.
            assert!(req
                .messages
                .iter()
                .any(|m| m.role == ChatRole::Tool && m.content.contains("12,800円")));
            Ok(crate::llm::LlmOutput {
                text: "足音は大変ですね。スタンダードプランが最適で、料金は".into(),
                usage: Usage {
                    completion_tokens: req.max_tokens,
                    ..Usage::default()
                },
                ..Default::default()
            })
        }
    }
    let mut tools = ToolRegistry::new();
    tools.register(Arc::new(PriceTool)).unwrap();
    let prompts =
        Prompts::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompts"))
            .unwrap();
    let agent = Agent::new(Arc::new(Truncating), tools, prompts, AgentConfig::default());
    let (result, _) = run_plan(&agent, request("どのプランがおすすめ？"), plan_call()).await;
    assert!(
        result.reply.starts_with("足音は大変ですね。\n\n"),
        "{}",
        result.reply
    );
    assert!(result.reply.contains("12,800円"));
}

#[test]
fn looping_and_copied_sentences_are_dropped() {
    let looped = "足音がうるさくて困っています。候補を提示します。足音がうるさくて困っています。足音がうるさくて困っています。";
    assert_eq!(
        drop_repeated_sentences(looped, &[]),
        "足音がうるさくて困っています。候補を提示します。"
    );
    let earlier = ["スタンダードプランがおすすめです。ほかにご質問はありますか？"];
    assert_eq!(
        drop_repeated_sentences(
            "スタンダードプランがおすすめです。空きは月曜です。",
            &earlier
        ),
        "空きは月曜です。"
    );
    // Short sentences ("はい。") may repeat.
    assert_eq!(drop_repeated_sentences("はい。はい。", &[]), "はい。はい。");
}

#[tokio::test]
async fn other_account_ids_are_removed_from_replies_to_customers() {
    let model = ScriptedModel::new(false, vec![Step::Text("B-2001様とC-1001様の情報です。")]);
    let answering = agent(model, AgentConfig::default());
    let (result, _) = run(&answering, request("私の契約について教えてください")).await;
    assert!(!result.reply.contains("B-2001"), "{}", result.reply);
    assert!(result.reply.contains("C-1001"));
}
