//! Scoping, consent, logging and limits of the MCP layer, over a real SQLite store and
//! small test tools (the real tools are driven end to end by tests/mcp/).

use super::*;
use kizuna_agent::tool::ToolOutput;

struct TestTool {
    name: &'static str,
    audience: Audience,
    risk: RiskClass,
}

#[async_trait]
impl AgentTool for TestTool {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "a test tool"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"n": {"type": "integer"}}})
    }
    fn risk(&self) -> RiskClass {
        self.risk
    }
    fn audience(&self) -> Audience {
        self.audience
    }
    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput {
            data: json!({"done": true, "caller": ctx.identity.subject, "n": args["n"]}),
            display: "done".into(),
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
    async fn preview(&self, _: &ToolContext, _: Value) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput {
            data: json!({"possible": true}),
            display: "would do it".into(),
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
}

struct FixedSearch;

#[async_trait]
impl KnowledgeSearch for FixedSearch {
    async fn search(
        &self,
        query: &str,
        _: &Identity,
        limit: usize,
    ) -> Result<Vec<Passage>, String> {
        Ok(vec![Passage {
            doc_id: "faq-price".into(),
            title: format!("about {query}"),
            text: "スタンダードプランは12,800円です。".into(),
            score: 0.9,
        }]
        .into_iter()
        .take(limit)
        .collect())
    }
}

async fn server(per_minute: u32) -> (KizunaMcp, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&url).await.unwrap();
    let mut tools = ToolRegistry::new();
    for (name, audience, risk) in [
        ("public_fact", Audience::Everyone, RiskClass::Read),
        ("own_account", Audience::SignedIn, RiskClass::Read),
        ("staff_report", Audience::Managers, RiskClass::Read),
        ("book_it", Audience::Customers, RiskClass::Write),
        ("escalate", Audience::ChatOnly, RiskClass::Read),
    ] {
        tools
            .register(Arc::new(TestTool {
                name,
                audience,
                risk,
            }))
            .unwrap();
    }
    let faq = vec![
        FaqDocument {
            id: "faq-price".into(),
            title: "料金".into(),
            text: "A: 12,800円".into(),
            audience: kizuna_knowledge::Audience::All,
        },
        FaqDocument {
            id: "faq-b2b".into(),
            title: "管理会社向け".into(),
            text: "A: API".into(),
            audience: kizuna_knowledge::Audience::B2b,
        },
    ];
    let services = McpServices::new(
        tools,
        store.clone(),
        Some(Arc::new(FixedSearch)),
        faq,
        McpConfig {
            calls_per_minute: per_minute,
            ..McpConfig::default()
        },
    );
    (KizunaMcp::new(services, Caller::PerRequest), store, dir)
}

fn names(tools: &[Tool]) -> Vec<String> {
    let mut n: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    n.sort();
    n
}

#[tokio::test]
async fn each_role_is_offered_its_tools_only() {
    let (mcp, _, _dir) = server(60).await;
    assert_eq!(
        names(&mcp.tools_for(&Identity::anonymous("v"))),
        ["public_fact", "search_knowledge"]
    );
    assert_eq!(
        names(&mcp.tools_for(&Identity::customer("C-1"))),
        ["book_it", "own_account", "public_fact", "search_knowledge"]
    );
    assert_eq!(
        names(&mcp.tools_for(&Identity::manager("M-1"))),
        [
            "own_account",
            "public_fact",
            "search_knowledge",
            "staff_report"
        ]
    );
    let book = mcp
        .tools_for(&Identity::customer("C-1"))
        .into_iter()
        .find(|t| t.name == "book_it")
        .unwrap();
    assert!(book.input_schema["properties"].get(CONFIRM_ARG).is_some());
    assert_eq!(book.annotations.unwrap().read_only_hint, Some(false));
}

#[tokio::test]
async fn a_customer_calling_a_staff_tool_is_refused_and_the_refusal_is_logged() {
    let (mcp, store, _dir) = server(60).await;
    let customer = Identity::customer("C-1");
    let err = mcp
        .call(&customer, "c", "staff_report", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code, rmcp::model::ErrorCode::INVALID_PARAMS);
    // The same answer as for a tool that does not exist.
    let unknown = mcp
        .call(&customer, "c", "nope", json!({}))
        .await
        .unwrap_err();
    assert_eq!(unknown.code, err.code);
    let escalate = mcp
        .call(&Identity::manager("M"), "m", "escalate", json!({}))
        .await;
    assert!(escalate.is_err(), "chat-only tools are never offered");

    let calls = store
        .tool_calls(&mcp.log_conversation(&customer))
        .await
        .unwrap();
    assert_eq!(calls.len(), 2);
    let refused = calls.iter().find(|c| c.name == "staff_report").unwrap();
    assert!(!refused.ok);
    assert_eq!(refused.result["error"], "not_offered");
}

#[tokio::test]
async fn calls_run_with_the_callers_identity_and_are_logged() {
    let (mcp, store, _dir) = server(60).await;
    let manager = Identity::manager("M-7");
    let result = mcp
        .call(&manager, "m", "staff_report", json!({"n": 3}))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    let data = result.structured_content.unwrap();
    assert_eq!(data["caller"], "M-7");
    assert_eq!(data["n"], 3);
    let bad = mcp
        .call(&manager, "m", "staff_report", json!({"n": "three"}))
        .await
        .unwrap();
    assert_eq!(
        bad.is_error,
        Some(true),
        "schema violations are tool errors"
    );

    let conv = mcp.log_conversation(&manager);
    let stored = store.conversation(&conv).await.unwrap().unwrap();
    assert_eq!(stored.owner_role, "mcp:manager");
    assert_eq!(stored.owner_id, "M-7");
    let calls = store.tool_calls(&conv).await.unwrap();
    assert_eq!(calls.len(), 2);
    let done = calls.iter().find(|c| c.ok).unwrap();
    assert_eq!(done.arguments, json!({"n": 3}));
    assert_eq!(done.result["caller"], "M-7");
    assert!(calls
        .iter()
        .any(|c| !c.ok && c.arguments == json!({"n": "three"})));
}

#[tokio::test]
async fn write_tools_preview_until_confirmed() {
    let (mcp, _, _dir) = server(60).await;
    let customer = Identity::customer("C-1");
    let preview = mcp
        .call(&customer, "c", "book_it", json!({}))
        .await
        .unwrap();
    let data = preview.structured_content.clone().unwrap();
    assert_eq!(data["preview"], true);
    assert_eq!(data.get("done"), None);
    let done = mcp
        .call(&customer, "c", "book_it", json!({"confirm": true}))
        .await
        .unwrap();
    assert_eq!(done.structured_content.unwrap()["done"], true);
    let bad = mcp
        .call(&customer, "c", "book_it", json!({"confirm": "yes"}))
        .await
        .unwrap();
    assert_eq!(bad.is_error, Some(true));
}

#[tokio::test]
async fn callers_are_rate_limited_separately() {
    let (mcp, store, _dir) = server(12).await; // bursts of 2
    let a = Identity::manager("M-1");
    for _ in 0..2 {
        let r = mcp
            .call(&a, "manager:M-1", "public_fact", json!({}))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false));
    }
    let limited = mcp
        .call(&a, "manager:M-1", "public_fact", json!({}))
        .await
        .unwrap();
    assert_eq!(limited.is_error, Some(true));
    let other = mcp
        .call(
            &Identity::manager("M-2"),
            "manager:M-2",
            "public_fact",
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(other.is_error, Some(false));
    let calls = store.tool_calls(&mcp.log_conversation(&a)).await.unwrap();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.result["error"] == "rate_limited")
            .count(),
        1
    );
}

#[tokio::test]
async fn knowledge_search_and_faq_resources_follow_the_caller() {
    let (mcp, _, _dir) = server(60).await;
    let anon = Identity::anonymous("v");
    let found = mcp
        .call(
            &anon,
            "a",
            SEARCH_TOOL,
            json!({"query": "料金", "limit": 3}),
        )
        .await
        .unwrap();
    assert_eq!(
        found.structured_content.unwrap()["passages"][0]["doc_id"],
        "faq-price"
    );
    let empty = mcp
        .call(&anon, "a", SEARCH_TOOL, json!({"query": "  "}))
        .await
        .unwrap();
    assert_eq!(empty.is_error, Some(true));

    let uris = |id: &Identity| -> Vec<String> {
        mcp.resources_for(id).into_iter().map(|r| r.uri).collect()
    };
    assert_eq!(uris(&anon), ["kizuna://faq/faq-price"]);
    assert_eq!(
        uris(&Identity::customer("C-1")),
        ["kizuna://faq/faq-price", "kizuna://faq/faq-b2b"]
    );
    assert!(mcp.read(&anon, "kizuna://faq/faq-b2b").is_none());
    let ResourceContents::TextResourceContents { text, .. } =
        mcp.read(&anon, "kizuna://faq/faq-price").unwrap()
    else {
        panic!("text expected")
    };
    assert!(text.contains("12,800円"));
}
