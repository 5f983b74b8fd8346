//! `generate_followup`: a personalised follow-up message, grounded in a message template
//! chosen by purpose (trigger) and audience, at most 200 characters with one call to action.
//!
//! Templates come from a [`TemplateSource`]; production and tests both use [`TemplateCatalog`],
//! loaded from the knowledge base's `knowledge/content/templates/`. A template body uses the placeholders `{{name}}`,
//! `{{product}}`, `{{date}}`, `{{time}}`, `{{plan}}`, `{{price}}`, `{{days}}`, `{{company}}`,
//! `{{usage_rate}}` and `{{link}}`; any other placeholder is an error. By convention the
//! body's last sentence is its call to action.
//!
//! Values filled in:
//!
//! | placeholder | value |
//! | --- | --- |
//! | `name` | the customer's name |
//! | `company` | b2b: the company name (b2c: none) |
//! | `plan` | b2c: the plan's name (スタンダードプラン); b2b: the contract's plan name |
//! | `product` | the plan's name, or 騒音測定サービス when no plan is recorded |
//! | `price` | b2c: the plan's price; b2b: the monthly fee (`mrr_jpy`) |
//! | `usage_rate` | b2b: `measurements_30d / monthly_measurements` as a percentage |
//! | `date`, `time` | `renewal_90d`: the contract end date (no time); `payment_overdue`: the unpaid invoice's due date (no time); otherwise the next booking |
//! | `days` | `payment_overdue`: days overdue; `renewal_90d`: days to the contract end; `usage_drop` / `health_red`: days since the last login; otherwise days to the next booking |
//! | `link` | [`crate::ToolDeps::followup_link`] |
//!
//! A template whose placeholders cannot all be filled for this customer is skipped for the
//! next one; when none can be filled the tool says which values are missing.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate};
use kizuna_agent::tool::{Audience, RiskClass, Tool, ToolContext, ToolError, ToolOutput};
use kizuna_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access;
use crate::accounts::{as_of, load_customer, long_date};
use crate::availability::date_label;
use crate::booking::upcoming_bookings;
use crate::crm::{Customer, CustomerKind};
use crate::plans::{self, yen};

/// The longest message this tool produces, in characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// Placeholders a template may use.
pub const PLACEHOLDERS: [&str; 10] = [
    "name",
    "product",
    "date",
    "time",
    "plan",
    "price",
    "days",
    "company",
    "usage_rate",
    "link",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageTemplate {
    pub id: String,
    pub title: String,
    pub body: String,
    /// e.g. `polite`, `warm`, `urgent`.
    pub tone: String,
    /// e.g. `email`, `sms`, `in_app`.
    pub channel: String,
    /// The purpose it serves: `health_red`, `usage_drop`, `payment_overdue`, `low_nps`,
    /// `renewal_90d`, …
    pub trigger: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message templates are unavailable: {0}")]
pub struct TemplateSourceError(pub String);

/// Where message templates come from.
#[async_trait]
pub trait TemplateSource: Send + Sync {
    /// Templates for `purpose` (a trigger name) and `audience` (`b2c` or `b2b`), best first.
    async fn templates(
        &self,
        purpose: &str,
        audience: &str,
    ) -> Result<Vec<MessageTemplate>, TemplateSourceError>;
}

/// A template with what it is filed under: its purpose (`outreach`, `followup`, …) and its
/// audience (`b2c`, `b2b` or `all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTemplate {
    pub purpose: String,
    pub audience: String,
    pub template: MessageTemplate,
}

/// The one [`TemplateSource`]: production loads it from the knowledge base's template
/// documents ([`TemplateCatalog::load_content`]), tests from the same files or from fixtures,
/// so both run the same selection rule.
#[derive(Debug, Clone, Default)]
pub struct TemplateCatalog {
    templates: Vec<CatalogTemplate>,
}

impl TemplateCatalog {
    pub fn new(templates: Vec<CatalogTemplate>) -> Self {
        Self { templates }
    }

    /// The `template` documents under the knowledge content directory `dir` (files that do
    /// not parse are logged and skipped, as the knowledge loader does everywhere).
    pub fn load_content(dir: &std::path::Path) -> Result<Self, TemplateSourceError> {
        use kizuna_knowledge::document::{load_dir, DocumentKind};
        let outcome = load_dir(dir).map_err(|e| {
            TemplateSourceError(format!(
                "cannot read templates under {}: {e}",
                dir.display()
            ))
        })?;
        for problem in &outcome.problems {
            tracing::warn!(%problem, "skipping a bad knowledge file");
        }
        let templates = outcome
            .documents
            .into_iter()
            .filter(|d| d.kind == DocumentKind::Template)
            .map(|d| {
                let meta = |k: &str| d.metadata_str(k).unwrap_or_default().to_string();
                CatalogTemplate {
                    purpose: meta("purpose"),
                    audience: d.audience.as_str().to_string(),
                    template: MessageTemplate {
                        id: d.id.clone(),
                        title: d.title.clone(),
                        body: d.text.clone(),
                        tone: meta("tone"),
                        channel: meta("channel"),
                        trigger: meta("trigger"),
                    },
                }
            })
            .collect();
        Ok(Self { templates })
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

#[async_trait]
impl TemplateSource for TemplateCatalog {
    async fn templates(
        &self,
        purpose: &str,
        audience: &str,
    ) -> Result<Vec<MessageTemplate>, TemplateSourceError> {
        // A purpose names either the template's purpose or its trigger slug (or the start of
        // one); a template filed for `all` serves both audiences.
        Ok(self
            .templates
            .iter()
            .filter(|t| {
                let trigger = &t.template.trigger;
                (t.purpose == purpose || trigger == purpose || trigger.starts_with(purpose))
                    && (t.audience == audience || t.audience == "all")
            })
            .map(|t| t.template.clone())
            .collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateProblem {
    #[error("template {template_id} uses unknown placeholder {{{{{name}}}}}")]
    UnknownPlaceholder { template_id: String, name: String },
    #[error("template {template_id} has an unclosed {{{{")]
    Unclosed { template_id: String },
}

/// The placeholder names a template body uses, in order of first use.
pub fn placeholders(template: &MessageTemplate) -> Result<Vec<String>, TemplateProblem> {
    let mut names = Vec::new();
    let mut rest = template.body.as_str();
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| TemplateProblem::Unclosed {
            template_id: template.id.clone(),
        })?;
        let name = after[..close].trim().to_string();
        if !PLACEHOLDERS.contains(&name.as_str()) {
            return Err(TemplateProblem::UnknownPlaceholder {
                template_id: template.id.clone(),
                name,
            });
        }
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &after[close + 2..];
    }
    Ok(names)
}

/// Replaces every placeholder with its value; the caller checked they all have one.
fn fill(body: &str, values: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                let name = after[..close].trim();
                out.push_str(values.get(name).map(String::as_str).unwrap_or_default());
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits after sentence ends (。！？!? and line breaks), keeping the delimiters so that
/// the pieces concatenate back to the text.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '。' | '！' | '？' | '!' | '?' | '\n') {
            // Keep closing brackets and further line breaks with the sentence they end.
            let mut end = i + c.len_utf8();
            while let Some(&(j, next)) = chars.peek() {
                if matches!(next, '」' | '』' | '）' | ')' | '\n') {
                    end = j + next.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Fits a message into `max` characters, keeping its first sentence (the greeting with the
/// name) and its last (the call to action), and as many sentences between as fit, in order.
/// Returns the message and its call to action.
pub fn fit_message(text: &str, max: usize) -> (String, String) {
    let text = text.trim();
    let parts = sentences(text);
    let Some((last, init)) = parts.split_last() else {
        return (String::new(), String::new());
    };
    let cta = truncate_chars(last.trim(), max);
    if text.chars().count() <= max {
        return (text.to_string(), cta);
    }
    let cta_len = cta.chars().count();
    let Some((first, middle)) = init.split_first() else {
        return (cta.clone(), cta);
    };
    let first = truncate_chars(first, max.saturating_sub(cta_len));
    let mut used = first.chars().count() + cta_len;
    let mut message = first;
    for sentence in middle {
        let n = sentence.chars().count();
        if used + n <= max {
            message.push_str(sentence);
            used += n;
        }
    }
    message.push_str(&cta);
    (message, cta)
}

/// What the placeholders are filled with for this customer and purpose (see the module
/// table). Absent keys have no value for this customer.
pub fn placeholder_values(
    customer: &Customer,
    purpose: &str,
    today: NaiveDate,
    next_booking: Option<DateTime<FixedOffset>>,
    link: Option<&str>,
) -> BTreeMap<&'static str, String> {
    let mut v = BTreeMap::new();
    v.insert("name", customer.name.clone());
    let plan_name = customer.plan.as_deref().map(|p| match customer.kind {
        CustomerKind::B2c => plans::by_id(p).map_or(p.to_string(), |plan| plan.name.to_string()),
        CustomerKind::B2b => p.to_string(),
    });
    v.insert(
        "product",
        plan_name
            .clone()
            .unwrap_or_else(|| "騒音測定サービス".to_string()),
    );
    if let Some(plan) = plan_name {
        v.insert("plan", plan);
    }
    match customer.kind {
        CustomerKind::B2c => {
            if let Some(plan) = customer.plan.as_deref().and_then(plans::by_id) {
                v.insert("price", yen(plan.price_jpy));
            }
        }
        CustomerKind::B2b => {
            v.insert("company", customer.name.clone());
            if let Some(mrr) = customer.mrr_jpy.and_then(|m| u32::try_from(m).ok()) {
                v.insert("price", yen(mrr));
            }
            if let (Some(used), Some(quota)) = (
                customer.measurements_30d,
                customer.monthly_measurements.filter(|q| *q > 0),
            ) {
                v.insert(
                    "usage_rate",
                    format!("{}%", (used as f64 * 100.0 / quota as f64).round() as i64),
                );
            }
        }
    }
    let next_date = next_booking.map(|t| t.date_naive());
    match purpose {
        "renewal_90d" => {
            if let Some(end) = customer.contract_end {
                v.insert("date", long_date(end));
                v.insert("days", (end - today).num_days().max(0).to_string());
            }
        }
        _ => {
            if let Some(start) = next_booking {
                v.insert("date", date_label(start.date_naive()));
                v.insert("time", start.format("%H:%M").to_string());
            }
        }
    }
    match purpose {
        "renewal_90d" => {}
        "payment_overdue" => {
            if let Some(d) = customer.payment_overdue_days.filter(|d| *d > 0) {
                v.insert("days", d.to_string());
                // The templates name the due date of the unpaid invoice.
                v.insert("date", long_date(today - chrono::Duration::days(d)));
            }
        }
        "usage_drop" | "health_red" => {
            if let Some(login) = customer.last_login {
                v.insert("days", (today - login).num_days().max(0).to_string());
            }
        }
        _ => {
            if let Some(date) = next_date {
                v.insert("days", (date - today).num_days().max(0).to_string());
            }
        }
    }
    if let Some(link) = link.filter(|l| !l.is_empty()) {
        v.insert("link", link.to_string());
    }
    v
}

/// A generated message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Followup {
    pub template_id: String,
    pub channel: String,
    pub tone: String,
    pub message: String,
    pub call_to_action: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FollowupError {
    #[error("no {audience} templates for purpose {purpose:?}")]
    NoTemplates { purpose: String, audience: String },
    #[error(transparent)]
    Template(#[from] TemplateProblem),
    #[error("no template for {purpose:?} can be filled for this customer; missing: {missing}")]
    MissingValues { purpose: String, missing: String },
}

/// Picks the first template (those in `tone` first) whose placeholders all have values, and
/// fills it. A template with an unknown placeholder is an error, not skipped.
pub fn compose(
    templates: &[MessageTemplate],
    values: &BTreeMap<&'static str, String>,
    purpose: &str,
    audience: &str,
    tone: Option<&str>,
) -> Result<Followup, FollowupError> {
    if templates.is_empty() {
        return Err(FollowupError::NoTemplates {
            purpose: purpose.into(),
            audience: audience.into(),
        });
    }
    let mut ordered: Vec<&MessageTemplate> = templates.iter().collect();
    if let Some(tone) = tone {
        // Stable: the source's order is kept within each group.
        ordered.sort_by_key(|t| t.tone != tone);
    }
    let mut missing: Vec<String> = Vec::new();
    for template in ordered {
        let names = placeholders(template)?;
        let absent: Vec<&String> = names
            .iter()
            .filter(|n| !values.contains_key(n.as_str()))
            .collect();
        if !absent.is_empty() {
            for name in absent {
                let tag = format!("{{{{{name}}}}}");
                if !missing.contains(&tag) {
                    missing.push(tag);
                }
            }
            continue;
        }
        let (message, call_to_action) =
            fit_message(&fill(&template.body, values), MAX_MESSAGE_CHARS);
        return Ok(Followup {
            template_id: template.id.clone(),
            channel: template.channel.clone(),
            tone: template.tone.clone(),
            message,
            call_to_action,
        });
    }
    Err(FollowupError::MissingValues {
        purpose: purpose.into(),
        missing: missing.join(", "),
    })
}

/// `generate_followup`.
pub struct GenerateFollowup {
    store: Store,
    templates: Arc<dyn TemplateSource>,
    link: Option<String>,
}

impl GenerateFollowup {
    pub fn new(store: Store, templates: Arc<dyn TemplateSource>, link: Option<String>) -> Self {
        Self {
            store,
            templates,
            link,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Args {
    customer_id: Option<String>,
    purpose: String,
    tone: Option<String>,
}

#[async_trait]
impl Tool for GenerateFollowup {
    fn name(&self) -> &str {
        "generate_followup"
    }

    fn description(&self) -> &str {
        "目的（トリガー）に合うメッセージテンプレートから、お客様ごとにパーソナライズしたフォローアップ文面（200文字以内、行動の呼びかけ1つ）を作成する。配信停止のお客様には作成しない"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "customer_id": {"type": "string", "description": "managers: the account; customers always get their own"},
                "purpose": {"type": "string", "description": "the trigger: health_red, usage_drop, payment_overdue, low_nps, renewal_90d, or another template trigger"},
                "tone": {"type": "string", "description": "preferred template tone, e.g. polite, warm"}
            },
            "required": ["purpose"]
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Read
    }

    fn audience(&self) -> Audience {
        Audience::Managers
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let args: Args =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let id = access::target_customer(ctx, args.customer_id.as_deref())?;
        let purpose = args.purpose.trim();
        if purpose.is_empty() {
            return Err(ToolError::InvalidArguments("purpose is empty".into()));
        }
        let customer = load_customer(&self.store, &id).await?;
        if customer.opted_out {
            return Ok(ToolOutput {
                data: json!({
                    "customer_id": customer.id,
                    "refused": true,
                    "reason": "opted_out",
                }),
                display: "このお客様はご案内の配信停止（オプトアウト）を希望されているため、フォローアップメッセージは作成しません。".into(),
                must_quote: vec![],
                effects: Vec::new(),
            });
        }
        let audience = customer.kind.as_str();
        let templates = self
            .templates
            .templates(purpose, audience)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let next_booking = upcoming_bookings(&self.store, &customer.id, ctx.now)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?
            .first()
            .map(|b| b.slot_start);
        let values = placeholder_values(
            &customer,
            purpose,
            as_of(ctx),
            next_booking,
            self.link.as_deref(),
        );
        let followup = compose(&templates, &values, purpose, audience, args.tone.as_deref())
            .map_err(|e| match e {
                FollowupError::NoTemplates { .. } => ToolError::NotFound(e.to_string()),
                _ => ToolError::Failed(e.to_string()),
            })?;
        Ok(ToolOutput {
            data: json!({
                "customer_id": customer.id,
                "purpose": purpose,
                "refused": false,
                "template_id": followup.template_id,
                "channel": followup.channel,
                "tone": followup.tone,
                "message": followup.message,
                "call_to_action": followup.call_to_action,
                "chars": followup.message.chars().count(),
            }),
            display: followup.message,
            must_quote: vec![],
            effects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(id: &str, body: &str, tone: &str) -> MessageTemplate {
        MessageTemplate {
            id: id.into(),
            title: id.into(),
            body: body.into(),
            tone: tone.into(),
            channel: "email".into(),
            trigger: "usage_drop".into(),
        }
    }

    fn b2b() -> Customer {
        let mut c = Customer::new("B-1", CustomerKind::B2b, "サンプル管理株式会社");
        c.plan = Some("ビジネス30".into());
        c.monthly_measurements = Some(30);
        c.measurements_30d = Some(9);
        c.mrr_jpy = Some(120_000);
        c.last_login = NaiveDate::from_ymd_opt(2026, 11, 1);
        c.contract_end = NaiveDate::from_ymd_opt(2027, 1, 31);
        c.payment_overdue_days = Some(14);
        c
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
    }

    #[test]
    fn placeholders_are_listed_and_unknown_ones_rejected() {
        let t = template("t", "{{name}}様、{{ usage_rate }}です。{{name}}", "polite");
        assert_eq!(placeholders(&t).unwrap(), ["name", "usage_rate"]);
        let bad = template("bad", "{{name}}様 {{coupon}}", "polite");
        assert_eq!(
            placeholders(&bad).unwrap_err(),
            TemplateProblem::UnknownPlaceholder {
                template_id: "bad".into(),
                name: "coupon".into()
            }
        );
        assert!(placeholders(&template("u", "{{name", "polite")).is_err());
    }

    #[test]
    fn values_depend_on_kind_and_purpose() {
        let c = b2b();
        let v = placeholder_values(
            &c,
            "usage_drop",
            today(),
            None,
            Some("https://example.jp/my"),
        );
        assert_eq!(v["company"], "サンプル管理株式会社");
        assert_eq!(v["usage_rate"], "30%");
        assert_eq!(v["price"], "120,000円");
        assert_eq!(v["days"], "20");
        assert_eq!(v["link"], "https://example.jp/my");
        assert!(!v.contains_key("date"));
        let v = placeholder_values(&c, "renewal_90d", today(), None, None);
        assert_eq!(v["date"], "2027年1月31日");
        assert_eq!(v["days"], "71");
        assert!(!v.contains_key("link"));
        let v = placeholder_values(&c, "payment_overdue", today(), None, None);
        assert_eq!(v["days"], "14");
        // The unpaid invoice's due date, 14 days before today.
        assert_eq!(v["date"], "2026年11月7日");

        let mut person = Customer::new("C-1", CustomerKind::B2c, "山田 花子");
        person.plan = Some("standard".into());
        let start = DateTime::parse_from_rfc3339("2026-11-24T19:00:00+09:00").unwrap();
        let v = placeholder_values(&person, "booking_reminder", today(), Some(start), None);
        assert_eq!(v["plan"], "スタンダードプラン");
        assert_eq!(v["price"], "12,800円");
        assert_eq!(v["date"], "11月24日(火)");
        assert_eq!(v["time"], "19:00");
        assert_eq!(v["days"], "3");
        assert!(!v.contains_key("company"));
    }

    #[test]
    fn compose_prefers_the_tone_and_skips_unfillable_templates() {
        let v = placeholder_values(&b2b(), "usage_drop", today(), None, None);
        let templates = vec![
            template("needs-link", "{{name}}様、こちらから{{link}}", "warm"),
            template("polite", "{{company}}様、今月のご利用率は{{usage_rate}}です。活用方法をご案内します。ご都合のよい日時をお知らせください。", "polite"),
            template("warm", "{{name}}様、いつもありがとうございます。無料の活用相談をご予約ください。", "warm"),
        ];
        let f = compose(&templates, &v, "usage_drop", "b2b", Some("warm")).unwrap();
        assert_eq!(f.template_id, "warm");
        assert_eq!(f.call_to_action, "無料の活用相談をご予約ください。");
        let f = compose(&templates, &v, "usage_drop", "b2b", None).unwrap();
        assert_eq!(f.template_id, "polite");
        assert!(f
            .message
            .starts_with("サンプル管理株式会社様、今月のご利用率は30%です。"));

        let only_link = vec![templates[0].clone()];
        let err = compose(&only_link, &v, "usage_drop", "b2b", None).unwrap_err();
        assert!(err.to_string().contains("{{link}}"), "{err}");
        assert!(matches!(
            compose(&[], &v, "usage_drop", "b2b", None),
            Err(FollowupError::NoTemplates { .. })
        ));
        let broken = vec![
            template("broken", "{{name}}様 {{coupon}}", "warm"),
            templates[2].clone(),
        ];
        assert!(matches!(
            compose(&broken, &v, "usage_drop", "b2b", None),
            Err(FollowupError::Template(
                TemplateProblem::UnknownPlaceholder { .. }
            ))
        ));
    }

    #[test]
    fn long_messages_keep_greeting_and_call_to_action_within_200_chars() {
        let middle = "ご利用状況を拝見し、未利用分を有効に活用していただくための方法をいくつかご用意しました。".repeat(2);
        let body = format!(
            "{{{{name}}}}様、いつもZENBUをご利用いただきありがとうございます。{middle}{middle}{middle}下記より無料の活用相談をご予約ください。"
        );
        let v = placeholder_values(&b2b(), "usage_drop", today(), None, None);
        let t = template("long", &body, "polite");
        assert!(fill(&t.body, &v).chars().count() > MAX_MESSAGE_CHARS);
        let f = compose(&[t], &v, "usage_drop", "b2b", None).unwrap();
        assert!(
            f.message.chars().count() <= MAX_MESSAGE_CHARS,
            "{}",
            f.message.chars().count()
        );
        assert!(f
            .message
            .starts_with("サンプル管理株式会社様、いつもZENBUを"));
        assert!(f
            .message
            .ends_with("下記より無料の活用相談をご予約ください。"));
        assert_eq!(f.call_to_action, "下記より無料の活用相談をご予約ください。");
        assert!(f.message.contains("ご利用状況を拝見し"));
    }

    #[test]
    fn fit_message_bounds_hold_for_any_shape() {
        let huge_first = format!("{}。ご予約ください。", "あ".repeat(400));
        let (m, cta) = fit_message(&huge_first, MAX_MESSAGE_CHARS);
        assert!(m.chars().count() <= MAX_MESSAGE_CHARS);
        assert!(m.ends_with("ご予約ください。"));
        assert_eq!(cta, "ご予約ください。");
        let one = "い".repeat(300);
        let (m, _) = fit_message(&one, MAX_MESSAGE_CHARS);
        assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS);
        let short = "山田様、明日は測定日です。\nご不明点はご返信ください。";
        assert_eq!(fit_message(short, MAX_MESSAGE_CHARS).0, short);
        assert_eq!(
            fit_message(short, MAX_MESSAGE_CHARS).1,
            "ご不明点はご返信ください。"
        );
    }

    #[tokio::test]
    async fn catalog_matches_purpose_or_trigger_and_audience() {
        let filed = |id: &str, trigger: &str, purpose: &str, audience: &str| CatalogTemplate {
            purpose: purpose.into(),
            audience: audience.into(),
            template: MessageTemplate {
                trigger: trigger.into(),
                ..template(id, "x", "warm")
            },
        };
        let source = TemplateCatalog::new(vec![
            filed("usage-b2c", "usage_drop", "outreach", "b2c"),
            filed("usage-b2b", "usage_drop", "outreach", "b2b"),
            filed("renewal", "renewal_90d", "outreach", "all"),
            filed("usage-any", "usage_drop_30d", "outreach", "all"),
            filed("thanks", "booking_created", "followup", "b2b"),
        ]);
        let ids = |purpose: &'static str, audience: &'static str| {
            let source = source.clone();
            async move {
                source
                    .templates(purpose, audience)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|t| t.id)
                    .collect::<Vec<String>>()
            }
        };
        assert_eq!(ids("usage_drop", "b2b").await, ["usage-b2b", "usage-any"]);
        assert_eq!(ids("followup", "b2b").await, ["thanks"]);
        assert!(ids("followup", "b2c").await.is_empty());
    }

    #[test]
    fn catalog_loads_the_knowledge_templates() {
        let dir =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../knowledge/content"));
        let catalog = TemplateCatalog::load_content(dir).unwrap();
        assert!(catalog.len() > 10, "{} templates", catalog.len());
    }
}
