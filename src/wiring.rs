//! Builds the parts `kizuna serve`, `kizuna eval` and the data commands share: the
//! knowledge base, the sentiment model, the escalation policy, the tools and the model
//! backend (a new backend is a `LlmBackend` value and a branch of [`build_llm`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kizuna_agent::escalation::{EscalationPolicy, EscalationReason};
use kizuna_agent::hub::EscalationCheck;
use kizuna_agent::llm::LanguageModel;
use kizuna_agent::sentiment::SentimentModel;
use kizuna_knowledge::embed::{CachedQueryEmbedder, E5Model};
use kizuna_knowledge::{
    EdgeIndex, Embedder, KnowledgeBase, ServerIndex, SparseEncoder, VectorIndex,
};
use kizuna_llm::local::{LocalConfig, LocalModel};
use kizuna_llm::openai::{OpenAiConfig, OpenAiModel};
use kizuna_store::Store;
use kizuna_tools::followup::TemplateSource;

use crate::config::Settings;

/// The embedding model, loaded once.
pub fn load_embedder(settings: &Settings) -> anyhow::Result<Arc<dyn Embedder>> {
    let path = &settings.knowledge.embedder_path;
    let started = std::time::Instant::now();
    let model = E5Model::load(path).with_context(|| {
        format!(
            "cannot load the embedding model {} (run scripts/setup)",
            path.display()
        )
    })?;
    tracing::info!(path = %path.display(), load_ms = started.elapsed().as_millis() as u64, "embedding model loaded");
    // One cache in front of the model: retrieval and the sentiment head share each turn's
    // query embedding.
    Ok(Arc::new(CachedQueryEmbedder::new(
        Arc::new(model),
        settings.knowledge.retrieval.query_cache_size,
    )))
}

/// The vector index: a Qdrant server when configured, else the in-process engine.
pub async fn open_index(settings: &Settings) -> anyhow::Result<Arc<dyn VectorIndex>> {
    match &settings.knowledge.qdrant_url {
        Some(url) => {
            let index = ServerIndex::connect(
                url,
                settings.knowledge.qdrant_api_key.clone(),
                &settings.knowledge.collection,
            )
            .context("cannot set up the Qdrant client")?;
            Ok(Arc::new(index))
        }
        None => {
            if settings.database_url().starts_with("postgres") {
                // Each replica would search its own copy: documents changed through one
                // replica's API would not be found by the others (docs/deployment.md).
                tracing::warn!(
                    "PostgreSQL with the in-process knowledge index: with several replicas, set \
                     QDRANT_URL so they share one index"
                );
            }
            let dir = settings.data_dir.join("knowledge");
            let index = EdgeIndex::open(&dir)
                .await
                .with_context(|| format!("cannot open the knowledge index in {}", dir.display()))?;
            Ok(Arc::new(index))
        }
    }
}

/// The knowledge base over the configured index and embedder. Keyword search needs the
/// lindera dictionary; without it retrieval is dense only (with a warning).
pub async fn knowledge_base(
    settings: &Settings,
    embedder: Arc<dyn Embedder>,
) -> anyhow::Result<Arc<KnowledgeBase>> {
    let index = open_index(settings).await?;
    let dict = &settings.knowledge.dictionary_dir;
    let sparse = if dict.exists() {
        Some(Arc::new(SparseEncoder::load(dict).with_context(|| {
            format!("cannot load the lindera dictionary {}", dict.display())
        })?))
    } else {
        tracing::warn!(dir = %dict.display(), "no lindera dictionary (run scripts/setup): keyword search is off");
        None
    };
    Ok(Arc::new(KnowledgeBase::new(
        index,
        embedder,
        sparse,
        settings.knowledge.retrieval.clone(),
    )))
}

/// The sentiment head over the shared embedder, if trained.
pub fn sentiment_model(
    settings: &Settings,
    embedder: Arc<dyn Embedder>,
) -> anyhow::Result<Option<Arc<dyn SentimentModel>>> {
    if !settings.sentiment.enabled {
        return Ok(None);
    }
    let classifier =
        kizuna_sentiment::load(&settings.sentiment.model_dir, embedder).with_context(|| {
            format!(
                "cannot load the sentiment model from {} (kizuna train-sentiment makes it)",
                settings.sentiment.model_dir.display()
            )
        })?;
    Ok(Some(Arc::new(classifier)))
}

/// The intent head over the shared embedder, if trained.
pub fn intent_model(
    settings: &Settings,
    embedder: Arc<dyn Embedder>,
) -> anyhow::Result<Option<Arc<dyn kizuna_agent::intent::IntentModel>>> {
    if !settings.intent.enabled {
        return Ok(None);
    }
    let classifier =
        kizuna_intent::load(&settings.intent.model_dir, embedder).with_context(|| {
            format!(
                "cannot load the intent model from {} (kizuna train-intents makes it)",
                settings.intent.model_dir.display()
            )
        })?;
    Ok(Some(Arc::new(classifier)))
}

/// The escalation check of a hub: the policy's rules and readings, and the escalation head
/// when it is trained (docs/evals.md, "Escalation head").
pub fn escalation_check(
    settings: &Settings,
    head: Option<kizuna_escalation::EscalationClassifier>,
) -> Arc<dyn EscalationCheck> {
    let policy = EscalationPolicy::new(settings.escalation.clone());
    match head {
        Some(head) => Arc::new(HeadedEscalation { policy, head }),
        None => Arc::new(policy),
    }
}

/// The head reads a message's meaning where the rules read its words: when it is sure a
/// message needs no person (a policy question that names 返金 or 弁護士, anger at the
/// neighbour, a correction), the rules' and sentiment's hit on it is dropped. The unresolved
/// count and the model's own `escalate_to_human` call are kept as they are.
///
/// It adds escalations only where the conversation backs its reading (`head_adds`): read one
/// message alone, it takes a customer's introduction (「先月測ってもらった者です」), the
/// story of a neighbour or a prompt injection for a complaint (adding on its reading alone at
/// 0.9: on `evals/dev` +4 escalations and +8 false ones; public precision 0.96 → 0.76).
/// docs/evals.md, "Escalation head".
struct HeadedEscalation {
    policy: EscalationPolicy,
    head: kizuna_escalation::EscalationClassifier,
}

/// The head's probability that no person is needed at or above which a rule or sentiment
/// hit is dropped (chosen on `evals/dev`: 0.9 took its false escalations from 15 to 7 and
/// kept every true one, and left the public set's precision and recall unchanged).
const HEAD_VETO_THRESHOLD: f32 = 0.9;

impl EscalationCheck for HeadedEscalation {
    fn check(
        &self,
        input: &kizuna_agent::hub::EscalationInput<'_>,
    ) -> Option<(EscalationReason, String)> {
        let Some(decision) = self.policy.assess(input) else {
            return self.head_adds(input);
        };
        if matches!(decision.reason, EscalationReason::Unresolved) || input.tool_request.is_some() {
            return Some((decision.reason, decision.detail));
        }
        match self.head.classify(input.text) {
            Ok(reading) if 1.0 - reading.escalation_probability() >= HEAD_VETO_THRESHOLD => {
                let (label, p) = reading.top();
                tracing::info!(
                    reason = %decision.reason,
                    head = label.as_str(),
                    p,
                    "escalation head: no person needed; not escalated"
                );
                None
            }
            Ok(_) => Some((decision.reason, decision.detail)),
            Err(e) => {
                tracing::warn!(error = %e, "escalation head failed; rules only");
                Some((decision.reason, decision.detail))
            }
        }
    }
}

/// The head's probability of its label at or above which it escalates a message the rules
/// passed over, where the conversation backs it (chosen on `evals/dev` and the public set).
const HEAD_ADD_THRESHOLD: f32 = 0.99;

impl HeadedEscalation {
    /// An escalation the rules missed (「払った分、戻してもらえませんか」「約束の時間に誰も
    /// 来なかった」 "I'd like my money back"), when the head is sure and the conversation
    /// backs it:
    /// - legal action or a refund / cancellation, unless a proposal awaits consent (then
    ///   「やっぱりやめておきます」 declines it);
    /// - a complaint or anger at us, never as the conversation's first message (which
    ///   introduces: 「先月測ってもらった者です」) and never about the neighbour, the landlord
    ///   or the noise (the customer's own story, `about_their_side`).
    fn head_adds(
        &self,
        input: &kizuna_agent::hub::EscalationInput<'_>,
    ) -> Option<(EscalationReason, String)> {
        use kizuna_escalation::EscalationLabel as L;
        let reading = match self.head.classify(input.text) {
            Ok(reading) => reading,
            Err(e) => {
                tracing::warn!(error = %e, "escalation head failed; rules only");
                return None;
            }
        };
        let (label, p) = reading.top();
        if p < HEAD_ADD_THRESHOLD {
            return None;
        }
        let reason = match label {
            L::Legal if !input.awaiting_consent => EscalationReason::Legal,
            L::RefundOrCancel if !input.awaiting_consent => EscalationReason::RefundOrCancel,
            L::Complaint | L::AngerAtUs
                if !input.previous_texts.is_empty()
                    && !kizuna_agent::escalation::about_their_side(
                        input.text,
                        input.previous_texts,
                    ) =>
            {
                if label == L::Complaint {
                    EscalationReason::Complaint
                } else {
                    EscalationReason::NegativeSentiment
                }
            }
            _ => return None,
        };
        tracing::info!(%reason, head = label.as_str(), p, "escalation head: escalated what the rules missed");
        Some((
            reason,
            format!(
                "エスカレーション判定モデル（{}、確度 {p:.2}）",
                label.as_str()
            ),
        ))
    }
}

/// Every tool, over `store`.
pub fn tools(
    settings: &Settings,
    store: Store,
    templates: Arc<dyn TemplateSource>,
) -> anyhow::Result<kizuna_agent::tool::ToolRegistry> {
    Ok(kizuna_tools::registry(kizuna_tools::ToolDeps {
        store,
        calendar: settings.booking.clone(),
        templates,
        followup_link: Some(settings.outreach.link.clone()),
    })?)
}

/// Builds the configured model backend. For the embedded model it also returns the model
/// itself, so the caller can prefill the agent's system prompt once it exists.
pub async fn build_llm(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn LanguageModel>, Option<LocalModel>)> {
    match settings.llm.backend {
        crate::config::LlmBackend::Openai => {
            let mut cfg = OpenAiConfig::new(
                settings.llm.openai_base_url.clone(),
                settings.llm.openai_model.clone(),
            );
            cfg.api_key = settings.llm.openai_api_key.clone();
            cfg.request_timeout = Duration::from_secs(settings.llm.timeout_secs);
            let model =
                OpenAiModel::new(cfg).context("cannot set up the OpenAI-compatible backend")?;
            tracing::info!(base_url = %kizuna_llm::openai::redact_endpoint(&settings.llm.openai_base_url), model = %settings.llm.openai_model, "using an OpenAI-compatible endpoint");
            Ok((Arc::new(model), None))
        }
        crate::config::LlmBackend::Local => {
            let mut cfg =
                LocalConfig::with_paths(&settings.llm.model_path, &settings.llm.tokenizer_path);
            cfg.context_tokens = settings.llm.context_tokens;
            cfg.kv_cache_bytes = settings.llm.kv_cache_mib << 20;
            let model = LocalModel::load_async(cfg).await.context(
                "cannot load the local model (run scripts/setup, or set KIZUNA_LLM=openai)",
            )?;
            tracing::info!(path = %settings.llm.model_path.display(), load_ms = model.load_time().as_millis() as u64, "local model loaded");
            Ok((Arc::new(model.clone()), Some(model)))
        }
    }
}
