//! The agent's tools, knowledge search and FAQ documents over the Model Context Protocol,
//! on the official Rust SDK (`rmcp`). The agent core knows nothing of MCP: this crate reads the
//! same [`ToolRegistry`] the chat uses and calls the tools with the caller's verified
//! [`Identity`], so scoping is the chat's (docs/mcp.md).
//!
//! - What a caller is offered follows each tool's [`Audience`]: managers see the staff tools,
//!   customers the ones about their own account, callers without a token the public ones.
//!   A tool the caller is not offered cannot be called either (a JSON-RPC error, logged).
//! - Write tools need consent, as in chat (docs/architecture.md, "Writes need consent"): a
//!   call without `"confirm": true` only previews what would happen.
//! - Every call is logged like a chat turn's tool calls (`tool_calls`, under a per-session
//!   log conversation) and counted against a per-caller rate limit.
//!
//! Transports: [`serve_stdio`] for `kizuna mcp`; [`http_service`] for `/mcp` on
//! `kizuna serve`, whose caller the HTTP layer authenticates and hands over as an
//! [`Identity`] in the request's extensions.

mod limit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kizuna_agent::identity::{Identity, Role};
use kizuna_agent::tool::{
    validate_arguments, Audience, RiskClass, Tool as AgentTool, ToolContext, ToolError, ToolOutput,
    ToolRegistry,
};
use kizuna_store::{Store, ToolCallRecord};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};

pub use limit::CallLimiter;

/// Name of the knowledge search tool (not in the agent's registry: in chat, retrieval runs
/// on every turn by itself).
pub const SEARCH_TOOL: &str = "search_knowledge";
/// URI prefix of the FAQ documents offered as resources.
pub const FAQ_URI_PREFIX: &str = "kizuna://faq/";
/// Argument a write tool needs to act instead of previewing.
pub const CONFIRM_ARG: &str = "confirm";

/// A passage found by [`KnowledgeSearch`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Passage {
    pub doc_id: String,
    pub title: String,
    pub text: String,
    pub score: f32,
}

/// Search over the knowledge base, scoped by the caller (what documents they may see).
#[async_trait]
pub trait KnowledgeSearch: Send + Sync {
    async fn search(
        &self,
        query: &str,
        identity: &Identity,
        limit: usize,
    ) -> Result<Vec<Passage>, String>;
}

#[async_trait]
impl KnowledgeSearch for kizuna_knowledge::KnowledgeBase {
    async fn search(
        &self,
        query: &str,
        identity: &Identity,
        limit: usize,
    ) -> Result<Vec<Passage>, String> {
        let audiences = kizuna_knowledge::audiences_for(identity);
        let hits = kizuna_knowledge::KnowledgeBase::search(self, query, &audiences)
            .await
            .map_err(|e| e.to_string())?;
        Ok(hits
            .into_iter()
            .take(limit)
            .map(|h| Passage {
                doc_id: h.doc_id,
                title: h.title,
                text: h.text,
                score: h.score,
            })
            .collect())
    }
}

/// An FAQ document offered as a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct FaqDocument {
    pub id: String,
    pub title: String,
    pub text: String,
    pub audience: kizuna_knowledge::Audience,
}

impl FaqDocument {
    /// The FAQ documents under a knowledge content directory (knowledge/content/faq).
    pub fn load_dir(
        dir: &std::path::Path,
    ) -> Result<Vec<FaqDocument>, kizuna_knowledge::KnowledgeError> {
        let outcome = kizuna_knowledge::document::load_dir(dir)?;
        Ok(outcome
            .documents
            .into_iter()
            .filter(|d| d.kind == kizuna_knowledge::DocumentKind::Faq)
            .map(|d| FaqDocument {
                id: d.id,
                title: d.title,
                text: d.text,
                audience: d.audience,
            })
            .collect())
    }

    fn uri(&self) -> String {
        format!("{FAQ_URI_PREFIX}{}", self.id)
    }

    fn visible_to(&self, identity: &Identity) -> bool {
        let allowed = kizuna_knowledge::audiences_for(identity);
        allowed.is_empty() || allowed.contains(&self.audience)
    }
}

#[derive(Debug, Clone)]
pub struct McpConfig {
    /// Tool calls a caller may make per minute (bursts of a sixth of it).
    pub calls_per_minute: u32,
    /// Longest a tool call may run.
    pub tool_timeout: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            calls_per_minute: 60,
            tool_timeout: Duration::from_secs(20),
        }
    }
}

/// What every MCP session shares.
pub struct McpServices {
    pub tools: ToolRegistry,
    pub store: Store,
    pub knowledge: Option<Arc<dyn KnowledgeSearch>>,
    pub faq: Vec<FaqDocument>,
    pub limiter: CallLimiter,
    pub config: McpConfig,
}

impl McpServices {
    pub fn new(
        tools: ToolRegistry,
        store: Store,
        knowledge: Option<Arc<dyn KnowledgeSearch>>,
        faq: Vec<FaqDocument>,
        config: McpConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            limiter: CallLimiter::new(config.calls_per_minute),
            tools,
            store,
            knowledge,
            faq,
            config,
        })
    }
}

/// Where a session's caller comes from.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Fixed for the whole session (stdio: `KIZUNA_MCP_TOKEN`, verified at start).
    Fixed(Identity),
    /// Per HTTP request: the [`Identity`] the HTTP layer put in the request's extensions
    /// (absent means an anonymous caller).
    PerRequest,
}

/// The client address the HTTP layer saw, for limiting anonymous callers per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// One MCP session.
#[derive(Clone)]
pub struct KizunaMcp {
    services: Arc<McpServices>,
    caller: Caller,
    session_id: String,
    /// The log conversation of each caller seen in this session.
    logs: Arc<Mutex<HashMap<String, String>>>,
}

/// The caller of one request and the key its rate limit is counted under.
struct Resolved {
    identity: Identity,
    limit_key: String,
}

impl KizunaMcp {
    pub fn new(services: Arc<McpServices>, caller: Caller) -> Self {
        Self {
            services,
            caller,
            session_id: uuid::Uuid::new_v4().to_string(),
            logs: Arc::default(),
        }
    }

    fn resolve(&self, ctx: &RequestContext<RoleServer>) -> Resolved {
        match &self.caller {
            Caller::Fixed(identity) => Resolved {
                limit_key: format!("{}:{}", identity.role.as_str(), identity.subject),
                identity: identity.clone(),
            },
            Caller::PerRequest => {
                let parts = ctx.extensions.get::<http::request::Parts>();
                let identity = parts.and_then(|p| p.extensions.get::<Identity>().cloned());
                let addr = parts.and_then(|p| p.extensions.get::<ClientAddr>().copied());
                match identity {
                    Some(identity) => Resolved {
                        limit_key: format!("{}:{}", identity.role.as_str(), identity.subject),
                        identity,
                    },
                    None => Resolved {
                        limit_key: match addr {
                            Some(ClientAddr(ip)) => format!("anonymous:{ip}"),
                            None => format!("anonymous:{}", self.session_id),
                        },
                        identity: Identity::anonymous(format!("mcp-{}", self.session_id)),
                    },
                }
            }
        }
    }

    /// The tools offered to `identity`, as MCP describes them.
    pub fn tools_for(&self, identity: &Identity) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self
            .services
            .tools
            .names()
            .filter_map(|name| self.services.tools.get(name))
            .filter(|t| t.audience().admits(identity.role))
            .map(|t| describe(t.as_ref()))
            .collect();
        if self.services.knowledge.is_some() {
            tools.push(search_tool());
        }
        tools
    }

    fn offered(&self, identity: &Identity, name: &str) -> Option<Offered> {
        if name == SEARCH_TOOL {
            return self.services.knowledge.as_ref().map(|_| Offered::Search);
        }
        self.services
            .tools
            .get(name)
            .filter(|t| t.audience().admits(identity.role))
            .map(|t| Offered::Tool(t.clone()))
    }

    /// Calls `name` for `identity`: what `tools/call` does once the caller is known.
    pub async fn call(
        &self,
        identity: &Identity,
        limit_key: &str,
        name: &str,
        arguments: Value,
    ) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let Some(offered) = self.offered(identity, name) else {
            // Unknown and not-offered look the same: nothing about staff tools leaks.
            self.log(
                identity,
                name,
                &arguments,
                &json!({"error": "not_offered"}),
                false,
                started,
            )
            .await;
            metrics::counter!("kizuna_mcp_calls_total", "tool" => "-", "outcome" => "refused")
                .increment(1);
            return Err(ErrorData::invalid_params(
                format!("no tool named {name:?} is available to this caller"),
                None,
            ));
        };
        if !self.services.limiter.try_take(limit_key) {
            self.log(
                identity,
                name,
                &arguments,
                &json!({"error": "rate_limited"}),
                false,
                started,
            )
            .await;
            metrics::counter!("kizuna_mcp_calls_total", "tool" => name.to_string(), "outcome" => "rate_limited")
                .increment(1);
            return Ok(error_result(
                "rate limited: too many tool calls; wait a moment and try again",
            ));
        }
        let outcome = match offered {
            Offered::Search => self.search(identity, &arguments).await,
            Offered::Tool(tool) => {
                self.run_tool(identity, tool.as_ref(), arguments.clone())
                    .await
            }
        };
        let (result, logged, ok) = match outcome {
            Ok((result, logged)) => (result, logged, true),
            Err(e) => (
                error_result(e.to_string()),
                json!({"error": e.to_string()}),
                false,
            ),
        };
        self.log(identity, name, &arguments, &logged, ok, started)
            .await;
        metrics::counter!("kizuna_mcp_calls_total", "tool" => name.to_string(), "outcome" => if ok { "ok" } else { "error" })
            .increment(1);
        tracing::info!(
            tool = name,
            role = identity.role.as_str(),
            ok,
            ms = started.elapsed().as_millis() as u64,
            "mcp tool call"
        );
        Ok(result)
    }

    async fn run_tool(
        &self,
        identity: &Identity,
        tool: &dyn AgentTool,
        mut arguments: Value,
    ) -> Result<(CallToolResult, Value), ToolError> {
        let write = tool.risk() == RiskClass::Write;
        let confirmed = if write {
            match arguments
                .as_object_mut()
                .and_then(|o| o.remove(CONFIRM_ARG))
            {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(_) => {
                    return Err(ToolError::InvalidArguments(format!(
                        "{CONFIRM_ARG:?} must be true or false"
                    )))
                }
            }
        } else {
            false
        };
        validate_arguments(&tool.parameters(), &arguments)?;
        let ctx = ToolContext {
            identity: identity.clone(),
            conversation_id: self.log_conversation(identity),
            now: chrono::Utc::now().fixed_offset(),
        };
        let timeout = self.services.config.tool_timeout;
        let run = async {
            if write && !confirmed {
                tool.preview(&ctx, arguments).await
            } else {
                tool.call(&ctx, arguments).await
            }
        };
        let output = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| ToolError::Failed(format!("timed out after {timeout:?}")))??;
        let preview = write && !confirmed;
        Ok((
            tool_result(&output, preview),
            logged_output(&output, preview),
        ))
    }

    async fn search(
        &self,
        identity: &Identity,
        arguments: &Value,
    ) -> Result<(CallToolResult, Value), ToolError> {
        validate_arguments(&search_schema(), arguments)?;
        let query = arguments["query"].as_str().unwrap_or_default().trim();
        if query.is_empty() || query.chars().count() > 500 {
            return Err(ToolError::InvalidArguments(
                "query must be 1 to 500 characters".into(),
            ));
        }
        let limit = arguments["limit"].as_u64().unwrap_or(5).clamp(1, 10) as usize;
        let knowledge = self
            .services
            .knowledge
            .as_ref()
            .ok_or_else(|| ToolError::Failed("the knowledge base is disabled".into()))?;
        let passages = knowledge
            .search(query, identity, limit)
            .await
            .map_err(ToolError::Failed)?;
        let data = json!({"passages": passages});
        let text = if passages.is_empty() {
            "該当する資料は見つかりませんでした。".to_string()
        } else {
            passages
                .iter()
                .map(|p| format!("【{}】({FAQ_URI_PREFIX}{})\n{}", p.title, p.doc_id, p.text))
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
        result.structured_content = Some(data.clone());
        Ok((result, data))
    }

    /// The log conversation of `identity` in this session.
    fn log_conversation(&self, identity: &Identity) -> String {
        let key = format!("{}:{}", identity.role.as_str(), identity.subject);
        let mut logs = self.logs.lock().expect("log map lock");
        logs.entry(key)
            .or_insert_with(|| format!("mcp-{}", uuid::Uuid::new_v4()))
            .clone()
    }

    async fn log(
        &self,
        identity: &Identity,
        name: &str,
        arguments: &Value,
        result: &Value,
        ok: bool,
        started: Instant,
    ) {
        let conversation_id = self.log_conversation(identity);
        let record = ToolCallRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.chars().take(64).collect(),
            arguments: arguments.clone(),
            result: result.clone(),
            ok,
            duration_ms: started.elapsed().as_millis() as i64,
        };
        let owner_role = format!("mcp:{}", identity.role.as_str());
        if let Err(e) = self
            .services
            .store
            .record_tool_call(
                &conversation_id,
                &owner_role,
                &identity.subject,
                identity.customer_id.as_deref(),
                &self.session_id,
                &record,
                chrono::Utc::now().timestamp_millis(),
            )
            .await
        {
            tracing::error!(error = %e, tool = name, "could not log an MCP tool call");
        }
    }

    fn resources_for(&self, identity: &Identity) -> Vec<Resource> {
        self.services
            .faq
            .iter()
            .filter(|d| d.visible_to(identity))
            .map(|d| {
                Resource::new(d.uri(), d.id.clone())
                    .with_title(d.title.clone())
                    .with_mime_type("text/markdown")
                    .with_size(d.text.len() as u64)
            })
            .collect()
    }

    fn read(&self, identity: &Identity, uri: &str) -> Option<ResourceContents> {
        let id = uri.strip_prefix(FAQ_URI_PREFIX)?;
        let doc = self
            .services
            .faq
            .iter()
            .find(|d| d.id == id && d.visible_to(identity))?;
        Some(
            ResourceContents::text(format!("# {}\n\n{}\n", doc.title, doc.text), uri)
                .with_mime_type("text/markdown"),
        )
    }
}

enum Offered {
    Search,
    Tool(Arc<dyn AgentTool>),
}

fn error_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

fn tool_result(output: &ToolOutput, preview: bool) -> CallToolResult {
    let text = if preview {
        format!(
            "{}\n\n(まだ実行していません。この内容で実行するには、同じ引数に \"{CONFIRM_ARG}\": true を付けてもう一度呼び出してください。)",
            output.display
        )
    } else {
        output.display.clone()
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(logged_output(output, preview));
    result
}

fn logged_output(output: &ToolOutput, preview: bool) -> Value {
    let mut data = match &output.data {
        Value::Object(o) => Value::Object(o.clone()),
        other => json!({"result": other}),
    };
    if preview {
        data["preview"] = json!(true);
    }
    data
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(o) => o,
        _ => JsonObject::new(),
    }
}

/// A registry tool as MCP describes it: its schema (a write tool's with `confirm`), its
/// description and hints.
fn describe(tool: &dyn AgentTool) -> Tool {
    let mut schema = tool.parameters();
    let write = tool.risk() == RiskClass::Write;
    if write {
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert(
                CONFIRM_ARG.into(),
                json!({"type": "boolean", "description": "true to do it; without it the call only previews what would happen, for the user to agree to"}),
            );
        }
    }
    let audience = match tool.audience() {
        Audience::Managers => " (staff only)",
        _ => "",
    };
    let description = format!("{}{audience}", tool.description());
    let annotations = ToolAnnotations::new().read_only(!write).destructive(false);
    Tool::new(
        tool.name().to_string(),
        description,
        Arc::new(object(schema)),
    )
    .with_annotations(annotations)
}

fn search_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "what to look for, in Japanese or English"},
            "limit": {"type": "integer", "description": "passages to return, 1 to 10 (default 5)"}
        },
        "required": ["query"]
    })
}

fn search_tool() -> Tool {
    Tool::new(
        SEARCH_TOOL,
        "ZENBU のナレッジベース（FAQ・案内）を検索し、関連する文章を返します。Search ZENBU's knowledge base (FAQ, guides).",
        Arc::new(object(search_schema())),
    )
    .with_annotations(ToolAnnotations::new().read_only(true).destructive(false))
}

impl ServerHandler for KizunaMcp {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("kizuna", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Kizuna: ZENBU's customer-success tools. What you are offered depends on the \
                 token you connected with (manager, customer or none). Write tools only preview \
                 until called again with \"confirm\": true.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.resolve(&context);
        Ok(ListToolsResult::with_all_items(
            self.tools_for(&caller.identity),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = self.resolve(&context);
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        self.call(
            &caller.identity,
            &caller.limit_key,
            &request.name,
            arguments,
        )
        .await
        .map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = self.resolve(&context);
        Ok(ListResourcesResult::with_all_items(
            self.resources_for(&caller.identity),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller = self.resolve(&context);
        match self.read(&caller.identity, &request.uri) {
            Some(contents) => Ok(ReadResourceResult::new(vec![contents]).into()),
            None => Err(ErrorData::resource_not_found(
                "no such resource for this caller",
                None,
            )),
        }
    }
}

/// Serves one MCP session on stdin/stdout until the client closes it.
pub async fn serve_stdio(services: Arc<McpServices>, identity: Identity) -> Result<(), McpError> {
    use rmcp::ServiceExt as _;
    let server = KizunaMcp::new(services, Caller::Fixed(identity))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Start(e.to_string()))?;
    server
        .waiting()
        .await
        .map_err(|e| McpError::Start(e.to_string()))?;
    Ok(())
}

/// Settings of the Streamable HTTP endpoint.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// `Host` values accepted (DNS-rebinding protection); empty accepts any.
    pub allowed_hosts: Vec<String>,
    /// Cancelled at shutdown: ends every session.
    pub cancel: tokio_util::sync::CancellationToken,
}

pub type HttpService = rmcp::transport::streamable_http_server::StreamableHttpService<
    KizunaMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
>;

/// The Streamable HTTP service for `/mcp`. The caller of each request is the [`Identity`]
/// the surrounding HTTP layer put in the request's extensions (none: anonymous).
pub fn http_service(services: Arc<McpServices>, options: HttpOptions) -> HttpService {
    use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
    let mut config = StreamableHttpServerConfig::default();
    config.cancellation_token = options.cancel;
    config.allowed_hosts = options.allowed_hosts;
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(KizunaMcp::new(services.clone(), Caller::PerRequest)),
        Arc::default(),
        config,
    )
}

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP session failed: {0}")]
    Start(String),
}

/// Whether the caller role may see the tool named `name` (for tests and docs).
pub fn offered_to(tools: &ToolRegistry, name: &str, role: Role) -> bool {
    tools.get(name).is_some_and(|t| t.audience().admits(role))
}

#[cfg(test)]
mod tests;
