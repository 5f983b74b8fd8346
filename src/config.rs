//! Settings: built-in defaults < TOML file (`--config`) < environment / command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use kizuna_tools::BookingCalendar;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackend {
    /// Embedded GGUF model on the CPU (default; needs `scripts/setup`).
    Local,
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Defaults to a SQLite file in `data_dir`.
    pub database_url: Option<String>,
    pub prompts_dir: PathBuf,
    /// Directory with the built web widget, console and demo page (`scripts/setup` builds it).
    pub web_dir: PathBuf,
    /// HMAC secret for identity tokens; generated into `data_dir` when unset.
    pub token_secret: Option<String>,
    pub llm: LlmSettings,
    pub limits: Limits,
    pub booking: BookingCalendar,
    pub knowledge: KnowledgeSettings,
    pub sentiment: SentimentSettings,
    pub intent: IntentSettings,
    /// How turns are planned from the intent model (thresholds).
    pub planner: kizuna_agent::planner::PlannerConfig,
    /// When a conversation goes to people (thresholds, rule switches).
    pub escalation: kizuna_agent::escalation::EscalationConfig,
    /// Who answers escalations and when (business hours, console link).
    pub handover: kizuna_agent::hub::HandoverConfig,
    pub slack: SlackSettings,
    pub outreach: OutreachSettings,
    pub security: SecuritySettings,
    /// The MCP server: `/mcp` on `kizuna serve` and `kizuna mcp` (docs/mcp.md).
    pub mcp: McpSettings,
    /// LINE Messaging API as a chat channel (docs/line.md).
    pub line: LineSettings,
    /// Several replicas on one PostgreSQL (docs/deployment.md).
    pub cluster: ClusterSettings,
}

/// How replicas sharing one PostgreSQL divide the work (docs/deployment.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// A replica's claim on a conversation's turn, renewed every third of it while the turn
    /// runs: after a crash another replica finishes the turn within about this long.
    pub turn_lease_secs: u64,
    /// How often each replica looks for messages no replica is answering.
    pub sweep_interval_secs: u64,
    /// A singleton job's (outreach scheduler, LINE forwarder) claim; a follower takes over
    /// within about this long after the leader stops.
    pub singleton_lease_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            turn_lease_secs: 15,
            sweep_interval_secs: 5,
            singleton_lease_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineSettings {
    /// The channel secret: checks `X-Line-Signature` (a secret; never logged). The channel is
    /// on when this and the access token are set.
    pub channel_secret: Option<String>,
    /// Long-lived channel access token for reply and push (a secret; never logged).
    pub channel_access_token: Option<String>,
    /// Messaging API base URL (a proxy, or a stand-in in tests).
    pub api_base_url: String,
    /// How often new replies are looked for and queued for LINE, in milliseconds.
    pub forward_interval_ms: u64,
    /// How long an account-link token stays valid, in seconds (docs/line.md).
    pub link_token_ttl_secs: i64,
    /// The account's basic ID (e.g. `@zenbu`): link tokens then come with a
    /// `https://line.me/R/oaMessage/…` link that opens the chat with the token typed in.
    pub basic_id: Option<String>,
}

impl Default for LineSettings {
    fn default() -> Self {
        Self {
            channel_secret: None,
            channel_access_token: None,
            api_base_url: "https://api.line.me".into(),
            forward_interval_ms: 500,
            link_token_ttl_secs: 86_400,
            basic_id: None,
        }
    }
}

impl LineSettings {
    pub fn enabled(&self) -> bool {
        self.channel_secret.is_some() && self.channel_access_token.is_some()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpSettings {
    /// Serve `/mcp` (Streamable HTTP) on `kizuna serve`.
    pub enabled: bool,
    /// Tool calls per minute per caller (per token subject; per address without a token).
    pub calls_per_minute: u32,
    /// `Host` header values `/mcp` accepts (DNS-rebinding protection; a name without a port
    /// matches any port). Add the public host name when `/mcp` is reachable from outside.
    pub allowed_hosts: Vec<String>,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            calls_per_minute: 60,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutreachSettings {
    /// The customer's page filled into templates' `{{link}}` (e.g. a my-page URL).
    pub link: String,
    /// How often `kizuna serve` evaluates the triggers, in seconds; 0 turns the scheduler off.
    pub interval_secs: u64,
    /// Triggers, frequency cap, quiet hours, approval threshold (docs/outreach.md).
    pub rules: kizuna_outreach::OutreachConfig,
    /// Extra channels besides the chat: email (SMTP) and a webhook for SMS providers.
    pub channels: kizuna_outreach::ChannelsConfig,
}

impl Default for OutreachSettings {
    fn default() -> Self {
        Self {
            link: "https://zenbu.example.jp/mypage".into(),
            interval_secs: 900,
            rules: kizuna_outreach::OutreachConfig::default(),
            channels: kizuna_outreach::ChannelsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeSettings {
    /// Retrieval and direct FAQ answers; off means the agent answers without the knowledge base.
    pub enabled: bool,
    /// What `kizuna ingest` and the re-index API read by default.
    pub content_dir: PathBuf,
    /// multilingual-e5-small, 4-bit (`scripts/setup-embedder`).
    pub embedder_path: PathBuf,
    /// lindera IPADIC dictionary for keyword search (`scripts/setup-lindera`).
    pub dictionary_dir: PathBuf,
    /// A Qdrant server or cluster; unset = the in-process engine under the data dir.
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<String>,
    /// Collection name on a Qdrant server.
    pub collection: String,
    /// top-k, threshold, hybrid mode, direct-answer thresholds.
    pub retrieval: kizuna_knowledge::RetrievalConfig,
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            content_dir: PathBuf::from("knowledge/content"),
            embedder_path: PathBuf::from("models/e5-small-q4.bin"),
            dictionary_dir: PathBuf::from("models/lindera-ipadic"),
            qdrant_url: None,
            qdrant_api_key: None,
            collection: "kizuna_knowledge".into(),
            retrieval: kizuna_knowledge::RetrievalConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentimentSettings {
    pub enabled: bool,
    /// The trained head (`kizuna train-sentiment` writes it).
    pub model_dir: PathBuf,
}

impl Default for SentimentSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            model_dir: PathBuf::from("sentiment/model"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntentSettings {
    pub enabled: bool,
    /// The trained intent head (`kizuna train-intents` writes it).
    pub model_dir: PathBuf,
}

impl Default for IntentSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            model_dir: PathBuf::from("intent/model"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackSettings {
    /// Incoming-webhook URL for escalation notices (a secret; never logged).
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    pub backend: LlmBackend,
    pub max_steps: usize,
    pub timeout_secs: u64,
    pub max_reply_tokens: u32,
    pub temperature: f32,
    pub model_path: PathBuf,
    pub tokenizer_path: PathBuf,
    pub context_tokens: usize,
    /// MiB of KV snapshots the embedded model keeps (system prompt + passages, and
    /// conversations; least recently used dropped first). Each position takes 56 KiB.
    pub kv_cache_mib: usize,
    pub openai_base_url: String,
    pub openai_model: String,
    pub openai_api_key: Option<String>,
    /// Model calls served at once; more wait in the model queue and their customers see
    /// `queue` frames. 0 (default): 1 for the embedded model, 8 for an endpoint.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted websocket frame, in bytes; larger ones get a `too_large` error frame.
    pub max_frame_bytes: usize,
    pub max_message_chars: usize,
    pub messages_per_minute_per_connection: u32,
    pub messages_per_minute_per_ip: u32,
    /// Open websockets per visitor address (the forwarded one behind a trusted proxy).
    pub connections_per_ip: u32,
    /// How long shutdown waits for sockets to close.
    pub drain_secs: u64,
    /// Open TCP connections in all (capped further by the open-file limit).
    pub max_connections: usize,
    /// Open TCP connections per peer address (trusted proxies are not counted).
    pub connections_per_address: u32,
    /// A request head must arrive within this many seconds of the connection opening (or
    /// of the previous response on a keep-alive connection).
    pub header_read_timeout_secs: u64,
    /// A websocket must send its `hello` within this many seconds.
    pub hello_timeout_secs: u64,
    /// The server pings every websocket this often...
    pub ping_interval_secs: u64,
    /// ...and closes one that sent nothing (not even a pong) for this long.
    pub idle_timeout_secs: u64,
    /// Error frames a socket may provoke per minute before it is closed (code 1008).
    pub error_frames_per_minute: u32,
    /// Messages of one conversation waiting for an answer; more get a `busy` error.
    pub max_pending_per_conversation: usize,
    /// Turns waiting or running in all; more get an `overloaded` error (never silence).
    pub max_queued_turns: usize,
    /// The same for anonymous visitors, lower so signed-in customers keep room.
    pub max_queued_turns_anonymous: usize,
    /// Anonymous escalations per visitor address per hour; above it the conversation is
    /// still handed over but queued without a notice (one digest instead).
    pub anonymous_escalations_per_hour_per_ip: u32,
    /// Anonymous escalations per hour in all, with the same effect above it.
    pub anonymous_escalations_per_hour: u32,
}

/// Who may reach what (docs/security.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` are believed (addresses or
    /// CIDR ranges). Empty: the TCP peer is the visitor.
    pub trusted_proxies: Vec<String>,
    /// Origins (e.g. "https://www.zenbu.example.jp") whose pages may open `/ws`, besides
    /// this server's own. Clients without an `Origin` header (apps, scripts) are not browsers
    /// and are allowed; "*" allows every origin.
    pub allowed_origins: Vec<String>,
    /// Bearer token for `/metrics`. Unset: `/metrics` answers loopback peers only.
    pub metrics_token: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            data_dir: PathBuf::from("data"),
            database_url: None,
            prompts_dir: PathBuf::from("prompts"),
            web_dir: PathBuf::from("web-widget/dist"),
            token_secret: None,
            llm: LlmSettings::default(),
            limits: Limits::default(),
            booking: BookingCalendar::default(),
            knowledge: KnowledgeSettings::default(),
            sentiment: SentimentSettings::default(),
            intent: IntentSettings::default(),
            planner: Default::default(),
            escalation: Default::default(),
            handover: Default::default(),
            slack: SlackSettings::default(),
            outreach: OutreachSettings::default(),
            security: SecuritySettings::default(),
            mcp: McpSettings::default(),
            line: LineSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            backend: LlmBackend::Local,
            max_steps: 4,
            timeout_secs: 180,
            max_reply_tokens: 160,
            temperature: 0.0,
            model_path: PathBuf::from("models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
            tokenizer_path: PathBuf::from("models/qwen2.5-tokenizer.json"),
            context_tokens: 4096,
            kv_cache_mib: kizuna_llm::local::DEFAULT_KV_CACHE_MIB,
            openai_base_url: "https://api.openai.com/v1".into(),
            openai_model: "gpt-4o-mini".into(),
            openai_api_key: None,
            concurrency: 0,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 * 1024,
            max_message_chars: 2000,
            messages_per_minute_per_connection: 30,
            messages_per_minute_per_ip: 120,
            connections_per_ip: 100,
            drain_secs: 10,
            max_connections: 10_000,
            connections_per_address: 256,
            header_read_timeout_secs: 10,
            hello_timeout_secs: 15,
            ping_interval_secs: 30,
            idle_timeout_secs: 90,
            error_frames_per_minute: 30,
            max_pending_per_conversation: 3,
            max_queued_turns: 64,
            max_queued_turns_anonymous: 24,
            anonymous_escalations_per_hour_per_ip: 3,
            anonymous_escalations_per_hour: 30,
        }
    }
}

/// Declares each `kizuna serve` flag once, with the setting it overrides: generates
/// [`ServeArgs`] (clap, with its environment variable) and [`Settings::apply`], so a flag can
/// be neither declared without its setting nor applied twice. The settings themselves (TOML
/// keys and defaults) are the `Settings` structs above.
macro_rules! serve_flags {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $name:ident: $ty:ty => |$settings:ident, $value:ident| $apply:expr;
    )*) => {
        /// Flags of `kizuna serve`; each overrides the config file.
        #[derive(Debug, Clone, Default, Args)]
        pub struct ServeArgs {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $name: Option<$ty>,
            )*
        }

        impl Settings {
            /// The flags (and environment variables) that are set replace their settings.
            pub fn apply(&mut self, flags: &ServeArgs) {
                $(
                    if let Some($value) = flags.$name.clone() {
                        let $settings: &mut Settings = self;
                        $apply;
                    }
                )*
            }
        }
    };
}

serve_flags! {
    /// Address to listen on.
    #[arg(long, env = "KIZUNA_LISTEN")]
    listen: SocketAddr => |s, v| s.listen = v;
    /// Directory for the SQLite database and generated secrets.
    #[arg(long, env = "KIZUNA_DATA_DIR")]
    data_dir: PathBuf => |s, v| s.data_dir = v;
    /// sqlite://… or postgres://… (default: SQLite file in the data dir).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String => |s, v| s.database_url = Some(v);
    /// Directory with the prompt files.
    #[arg(long, env = "KIZUNA_PROMPTS_DIR")]
    prompts_dir: PathBuf => |s, v| s.prompts_dir = v;
    /// Directory with the built web widget, console and demo page.
    #[arg(long, env = "KIZUNA_WEB_DIR")]
    web_dir: PathBuf => |s, v| s.web_dir = v;
    /// HMAC secret (≥ 32 bytes) that signs customer and manager tokens.
    #[arg(long, env = "KIZUNA_TOKEN_SECRET", hide_env_values = true)]
    token_secret: String => |s, v| s.token_secret = Some(v);
    /// LLM backend.
    #[arg(long, env = "KIZUNA_LLM", value_enum)]
    llm: LlmBackend => |s, v| s.llm.backend = v;
    /// GGUF model file for the local backend.
    #[arg(long, env = "KIZUNA_MODEL_PATH")]
    model_path: PathBuf => |s, v| s.llm.model_path = v;
    /// tokenizer.json for the local backend.
    #[arg(long, env = "KIZUNA_TOKENIZER_PATH")]
    tokenizer_path: PathBuf => |s, v| s.llm.tokenizer_path = v;
    /// Base URL of the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.
    #[arg(long, env = "KIZUNA_OPENAI_BASE_URL")]
    openai_base_url: String => |s, v| s.llm.openai_base_url = v;
    /// Model name to request from the OpenAI-compatible endpoint.
    #[arg(long, env = "KIZUNA_OPENAI_MODEL")]
    openai_model: String => |s, v| s.llm.openai_model = v;
    /// API key for the OpenAI-compatible endpoint.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    openai_api_key: String => |s, v| s.llm.openai_api_key = Some(v);
    /// Longest reply, in tokens.
    #[arg(long, env = "KIZUNA_MAX_REPLY_TOKENS")]
    max_reply_tokens: u32 => |s, v| s.llm.max_reply_tokens = v;
    /// Per-call model timeout, in seconds.
    #[arg(long, env = "KIZUNA_LLM_TIMEOUT_SECS")]
    llm_timeout_secs: u64 => |s, v| s.llm.timeout_secs = v;
    /// A Qdrant server or cluster for the knowledge base (default: in-process engine).
    #[arg(long, env = "QDRANT_URL")]
    qdrant_url: String => |s, v| s.knowledge.qdrant_url = Some(v);
    /// API key for the Qdrant server.
    #[arg(long, env = "QDRANT_API_KEY", hide_env_values = true)]
    qdrant_api_key: String => |s, v| s.knowledge.qdrant_api_key = Some(v);
    /// Slack incoming-webhook URL for escalation notices.
    #[arg(long, env = "KIZUNA_SLACK_WEBHOOK_URL", hide_env_values = true)]
    slack_webhook_url: String => |s, v| s.slack.webhook_url = Some(v);
    /// Public URL of the operator console, linked from escalation notices.
    #[arg(long, env = "KIZUNA_CONSOLE_URL")]
    console_url: String => |s, v| s.handover.console_url = v;
    /// SMTP server for outreach email, e.g. smtps://user:pass@mail.example.jp:465
    /// (turns the email channel on; needs a sender).
    #[arg(long, env = "KIZUNA_SMTP_URL", hide_env_values = true)]
    smtp_url: String => |s, v| s.email_channel().smtp_url = v;
    /// Sender of outreach email, e.g. "ZENBU <support@zenbu.example.jp>".
    #[arg(long, env = "KIZUNA_SMTP_FROM")]
    smtp_from: String => |s, v| s.email_channel().from = v;
    /// Webhook that receives outreach messages for SMS (turns the webhook channel on).
    #[arg(long, env = "KIZUNA_OUTREACH_WEBHOOK_URL", hide_env_values = true)]
    outreach_webhook_url: String => |s, v| s.webhook_channel().url = v;
    /// LINE channel secret (turns the LINE channel on, with the access token).
    #[arg(long, env = "KIZUNA_LINE_CHANNEL_SECRET", hide_env_values = true)]
    line_channel_secret: String => |s, v| s.line.channel_secret = Some(v);
    /// LINE channel access token.
    #[arg(long, env = "KIZUNA_LINE_CHANNEL_ACCESS_TOKEN", hide_env_values = true)]
    line_channel_access_token: String => |s, v| s.line.channel_access_token = Some(v);
    /// LINE Messaging API base URL (default https://api.line.me).
    #[arg(long, env = "KIZUNA_LINE_API_BASE_URL")]
    line_api_base_url: String => |s, v| s.line.api_base_url = v;
    /// Bearer token sent to the outreach webhook.
    #[arg(long, env = "KIZUNA_OUTREACH_WEBHOOK_TOKEN", hide_env_values = true)]
    outreach_webhook_token: String => |s, v| s.webhook_channel().bearer_token = Some(v);
    /// Reverse proxies whose X-Forwarded-For is believed, comma-separated addresses or CIDR
    /// ranges (e.g. 10.0.0.0/8,127.0.0.1).
    #[arg(long, env = "KIZUNA_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String> => |s, v| s.security.trusted_proxies = v;
    /// Origins whose pages may open the chat websocket besides this server's own,
    /// comma-separated (e.g. https://www.zenbu.example.jp).
    #[arg(long, env = "KIZUNA_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String> => |s, v| s.security.allowed_origins = v;
    /// Bearer token for /metrics (unset: loopback peers only).
    #[arg(long, env = "KIZUNA_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: String => |s, v| s.security.metrics_token = Some(v);
    /// Seconds a replica's claim on a conversation's turn lasts without renewal (failover
    /// time after a crash; docs/deployment.md).
    #[arg(long, env = "KIZUNA_TURN_LEASE_SECS")]
    turn_lease_secs: u64 => |s, v| s.cluster.turn_lease_secs = v;
}

impl Settings {
    /// Defaults, then the file (if any).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The email channel, created empty when a flag sets part of it (validation then
    /// reports what is missing).
    fn email_channel(&mut self) -> &mut kizuna_outreach::EmailConfig {
        self.outreach
            .channels
            .email
            .get_or_insert_with(|| kizuna_outreach::EmailConfig::new("", ""))
    }

    /// The webhook channel, created empty when a flag sets part of it.
    fn webhook_channel(&mut self) -> &mut kizuna_outreach::WebhookConfig {
        self.outreach
            .channels
            .webhook
            .get_or_insert_with(|| kizuna_outreach::WebhookConfig::new(""))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.booking
            .validate()
            .context("invalid [booking] settings")?;
        if self.limits.max_frame_bytes < 256 {
            bail!("limits.max_frame_bytes must be at least 256");
        }
        self.escalation
            .validate()
            .context("invalid [escalation] settings")?;
        self.outreach
            .rules
            .validate()
            .context("invalid [outreach.rules] settings")?;
        self.outreach.channels.validate().context(
            "invalid [outreach.channels] settings (or KIZUNA_SMTP_* / KIZUNA_OUTREACH_WEBHOOK_*)",
        )?;
        if self.handover.open_hour >= 24 || self.handover.close_hour > 24 {
            bail!("handover.open_hour and close_hour must be hours (0–24)");
        }
        if self.llm.max_steps == 0 {
            bail!("llm.max_steps must be at least 1");
        }
        let l = &self.limits;
        if l.max_connections == 0 || l.connections_per_address == 0 || l.connections_per_ip == 0 {
            bail!("limits.max_connections, connections_per_address and connections_per_ip must be at least 1");
        }
        if l.header_read_timeout_secs == 0 || l.hello_timeout_secs == 0 {
            bail!("limits.header_read_timeout_secs and hello_timeout_secs must be at least 1");
        }
        if l.ping_interval_secs == 0 || l.idle_timeout_secs <= l.ping_interval_secs {
            bail!("limits.idle_timeout_secs must be longer than ping_interval_secs (≥ 1)");
        }
        if self.cluster.turn_lease_secs < 3
            || self.cluster.sweep_interval_secs == 0
            || self.cluster.singleton_lease_secs < 3
        {
            bail!("cluster.turn_lease_secs and singleton_lease_secs must be at least 3, sweep_interval_secs at least 1");
        }
        if l.max_pending_per_conversation == 0 || l.max_queued_turns == 0 {
            bail!("limits.max_pending_per_conversation and max_queued_turns must be at least 1");
        }
        crate::client_addr::TrustedProxies::parse(&self.security.trusted_proxies)
            .map_err(anyhow::Error::msg)?;
        for origin in &self.security.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                bail!("security.allowed_origins: {origin:?} must be \"*\" or start with http:// or https://");
            }
        }
        if let Some(token) = &self.security.metrics_token {
            if token.len() < 16 {
                bail!("security.metrics_token must be at least 16 characters");
            }
        }
        if self.line.channel_secret.is_some() != self.line.channel_access_token.is_some() {
            bail!("the LINE channel needs both line.channel_secret and line.channel_access_token");
        }
        if !(60..=crate::line::MAX_LINK_TTL_SECS).contains(&self.line.link_token_ttl_secs) {
            bail!(
                "line.link_token_ttl_secs must be between 60 and {}",
                crate::line::MAX_LINK_TTL_SECS
            );
        }
        if self.outreach.channels.line.is_some() && !self.line.enabled() {
            bail!("[outreach.channels.line] needs the LINE channel: set line.channel_secret and line.channel_access_token");
        }
        if self.mcp.calls_per_minute == 0 {
            bail!("mcp.calls_per_minute must be at least 1");
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("kizuna.db").display()
            )
        })
    }

    /// The configured secret, or one generated once and kept in the data dir (mode 0600).
    pub fn token_secret(&self) -> anyhow::Result<String> {
        if let Some(secret) = &self.token_secret {
            return Ok(secret.clone());
        }
        let path = self.data_dir.join("token_secret");
        if let Ok(secret) = std::fs::read_to_string(&path) {
            return Ok(secret.trim().to_string());
        }
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
        // Created 0600 from the start: writing first and chmod-ing after leaves a moment in
        // which the secret is world-readable.
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::io::Write::write_all(&mut file, secret.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        tracing::warn!(path = %path.display(), "generated a token secret; set KIZUNA_TOKEN_SECRET to share one with your backend");
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\n[llm]\nbackend = \"openai\"\nopenai_model = \"m1\"\n[limits]\nconnections_per_ip = 7\n").unwrap();
        let mut s = Settings::load(Some(&path)).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.llm.backend, LlmBackend::Openai);
        assert_eq!(s.limits.connections_per_ip, 7);
        s.apply(&ServeArgs {
            openai_model: Some("m2".into()),
            ..Default::default()
        });
        assert_eq!(s.llm.openai_model, "m2");
        assert_eq!(s.listen.port(), 9000);
        s.validate().unwrap();
    }

    #[test]
    fn flags_replace_their_settings() {
        let mut s = Settings::default();
        s.apply(&ServeArgs {
            database_url: Some("postgres://db/k".into()),
            llm_timeout_secs: Some(7),
            qdrant_url: Some("http://qdrant:6334".into()),
            console_url: Some("https://console.example.jp".into()),
            line_channel_secret: Some("secret".into()),
            trusted_proxies: Some(vec!["10.0.0.0/8".into()]),
            turn_lease_secs: Some(9),
            ..Default::default()
        });
        assert_eq!(s.database_url.as_deref(), Some("postgres://db/k"));
        assert_eq!(s.llm.timeout_secs, 7);
        assert_eq!(
            s.knowledge.qdrant_url.as_deref(),
            Some("http://qdrant:6334")
        );
        assert_eq!(s.handover.console_url, "https://console.example.jp");
        assert_eq!(s.line.channel_secret.as_deref(), Some("secret"));
        assert_eq!(s.security.trusted_proxies, ["10.0.0.0/8"]);
        assert_eq!(s.cluster.turn_lease_secs, 9);
        // Unset flags leave the file's values alone.
        assert_eq!(s.listen, Settings::default().listen);
        assert!(s.outreach.channels.email.is_none());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = format!("{:#}", Settings::load(Some(&path)).unwrap_err());
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn secret_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let a = s.token_secret().unwrap();
        assert!(a.len() >= 32);
        assert_eq!(a, s.token_secret().unwrap());
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kizuna.example.toml");
        let s = Settings::load(Some(&path)).unwrap();
        s.validate().unwrap();
    }

    #[test]
    fn outreach_channels_from_flags() {
        let mut s = Settings::default();
        s.apply(&ServeArgs {
            smtp_url: Some("smtp://127.0.0.1:2525".into()),
            ..Default::default()
        });
        // An SMTP server without a sender is a clear error, not a silent default.
        let err = format!("{:#}", s.validate().unwrap_err());
        assert!(err.contains("outreach.channels"), "{err}");
        s.apply(&ServeArgs {
            smtp_from: Some("ZENBU <support@zenbu.example.jp>".into()),
            outreach_webhook_url: Some("https://sms.example.jp/hook".into()),
            outreach_webhook_token: Some("t".into()),
            ..Default::default()
        });
        s.validate().unwrap();
        let email = s.outreach.channels.email.as_ref().unwrap();
        assert_eq!(email.smtp_url, "smtp://127.0.0.1:2525");
        let webhook = s.outreach.channels.webhook.as_ref().unwrap();
        assert_eq!(webhook.bearer_token.as_deref(), Some("t"));
        // Secrets stay out of Debug output (it reaches logs).
        let debug = format!("{:?}", s.outreach);
        assert!(
            !debug.contains("sms.example.jp/hook") && !debug.contains("\"t\""),
            "{debug}"
        );
    }
}
