//! Knowledge documents and the loader for a content directory.
//!
//! Accepted files (searched recursively, sorted by path, hidden entries and `README.md` skipped):
//! - YAML (`.yaml`, `.yml`): a list of records (or one record). FAQ records have `question` and
//!   `answer`; templates have `title` and `body`; anything else needs `title` and `text`.
//! - Markdown (`.md`): YAML front matter (`id`, `title`, `kind`, `audience`, `tags`, …) then the
//!   body. Without a `title` the first `# ` heading is used.
//! - CSV (`.csv`): a header with `id` and either `title` + `text` or `question` + `answer`;
//!   optional `kind`, `audience`, `tags` (separated by `|` or `,`). One document per row.
//! - JSONL (`.jsonl`): one JSON object per line with the same keys.
//!
//! The kind comes from a `kind` field, else from the directory (`faq/`, `scenarios/`,
//! `templates/`), else from the fields present. Keys the loader does not know are kept in
//! [`Document::metadata`]. A bad file or record becomes a [`LoadProblem`] with its path and
//! line; the other documents still load.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a document is for; stored on every chunk so searches can filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// A question with its answer, kept whole and eligible for direct answers.
    Faq,
    /// How to handle a situation (e.g. a complaint), for the agent.
    Scenario,
    /// A message template with `{{name}}` placeholders.
    Template,
    /// Any other reference text.
    Article,
}

impl DocumentKind {
    pub const ALL: [DocumentKind; 4] = [
        DocumentKind::Faq,
        DocumentKind::Scenario,
        DocumentKind::Template,
        DocumentKind::Article,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Faq => "faq",
            DocumentKind::Scenario => "scenario",
            DocumentKind::Template => "template",
            DocumentKind::Article => "article",
        }
    }

    /// Parses a kind name (case-insensitive; plural forms accepted).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "faq" | "faqs" => Some(DocumentKind::Faq),
            "scenario" | "scenarios" => Some(DocumentKind::Scenario),
            "template" | "templates" => Some(DocumentKind::Template),
            "article" | "articles" | "doc" | "document" => Some(DocumentKind::Article),
            _ => None,
        }
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a document is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Private customers.
    B2c,
    /// Business customers.
    B2b,
    /// Everyone.
    All,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::B2c => "b2c",
            Audience::B2b => "b2b",
            Audience::All => "all",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "b2c" => Some(Audience::B2c),
            "b2b" => Some(Audience::B2b),
            "all" | "" => Some(Audience::All),
            _ => None,
        }
    }

    /// The document audiences a reader of this audience may see: their own and `all`.
    pub fn visible_to(self) -> Vec<Audience> {
        match self {
            Audience::All => vec![Audience::B2c, Audience::B2b, Audience::All],
            own => vec![own, Audience::All],
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One knowledge document. For an FAQ, `title` is the question and `text` the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub kind: DocumentKind,
    pub title: String,
    pub text: String,
    pub audience: Audience,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Fields the loader does not interpret (e.g. a template's `purpose`, `channel`, `tone`;
    /// a scenario's `trigger`).
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Where the document came from, relative to the ingested directory (empty when it was
    /// created through the API).
    #[serde(default)]
    pub source: PathBuf,
}

/// Longest accepted document id.
pub const MAX_ID_LEN: usize = 128;

impl Document {
    /// Checks the id and that title and text are present.
    pub fn validate(&self) -> Result<(), String> {
        validate_id(&self.id)?;
        if self.title.trim().is_empty() {
            return Err(format!("document {} has no title", self.id));
        }
        if self.text.trim().is_empty() {
            return Err(format!("document {} has no text", self.id));
        }
        Ok(())
    }

    /// The source path as stored in the index (forward slashes).
    pub fn source_str(&self) -> String {
        path_to_slash(&self.source)
    }

    /// A string field of the metadata, if present.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

/// Ids are 1–128 characters of ASCII letters, digits, `-`, `_` and `.`, starting with a
/// letter or digit: they appear in URLs, citations and logs.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "the id {id:?} is longer than {MAX_ID_LEN} characters"
        ));
    }
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !first_ok || !rest_ok {
        return Err(format!(
            "the id {id:?} must use only ASCII letters, digits, '-', '_' and '.', and start with a letter or digit"
        ));
    }
    Ok(())
}

/// A file or record that could not be loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadProblem {
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Documents loaded from a directory, and what could not be loaded.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub documents: Vec<Document>,
    pub problems: Vec<LoadProblem>,
}

impl LoadOutcome {
    /// Source files (relative, forward slashes) that had at least one problem: documents that
    /// came from them must not be deleted from the index just because they failed to load now.
    pub fn problem_sources(&self, dir: &Path) -> Vec<String> {
        let mut sources: Vec<String> = self
            .problems
            .iter()
            .map(|p| path_to_slash(p.path.strip_prefix(dir).unwrap_or(&p.path)))
            .collect();
        sources.sort();
        sources.dedup();
        sources
    }
}

/// Loads every document under `dir`. Fails only if `dir` itself cannot be read; problems with
/// single files or records are collected in [`LoadOutcome::problems`].
pub fn load_dir(dir: &Path) -> crate::Result<LoadOutcome> {
    let mut files = Vec::new();
    collect_files(dir, &mut files).map_err(|e| crate::KnowledgeError::io(dir, e))?;
    files.sort();
    let mut outcome = LoadOutcome::default();
    for path in files {
        let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        let (documents, problems) = load_file(&path, &relative);
        outcome.problems.extend(problems);
        outcome.documents.extend(documents);
    }
    drop_duplicates(&mut outcome, dir);
    Ok(outcome)
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            collect_files(&path, files)?;
        } else if is_content_file(&path) {
            files.push(path);
        }
    }
    Ok(())
}

fn is_content_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name == "readme.md" {
        return false;
    }
    matches!(
        extension(path).as_str(),
        "yaml" | "yml" | "md" | "markdown" | "csv" | "jsonl"
    )
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Keeps the first document of each id (in path order) and reports the others.
fn drop_duplicates(outcome: &mut LoadOutcome, dir: &Path) {
    let mut first_seen: HashMap<String, PathBuf> = HashMap::new();
    let mut kept = Vec::with_capacity(outcome.documents.len());
    for doc in std::mem::take(&mut outcome.documents) {
        match first_seen.get(&doc.id) {
            Some(first) => outcome.problems.push(LoadProblem {
                path: dir.join(&doc.source),
                line: doc
                    .metadata
                    .get(LINE_KEY)
                    .and_then(Value::as_u64)
                    .map(|l| l as usize),
                message: format!(
                    "duplicate id {:?} (already defined in {}); this one is skipped",
                    doc.id,
                    first.display()
                ),
            }),
            None => {
                first_seen.insert(doc.id.clone(), doc.source.clone());
                kept.push(doc);
            }
        }
    }
    for doc in &mut kept {
        doc.metadata.remove(LINE_KEY);
    }
    outcome.documents = kept;
}

/// Temporary metadata key holding a record's line until duplicates are checked.
const LINE_KEY: &str = "\u{0}line";

/// Parses one file into documents and problems.
pub fn load_file(path: &Path, relative: &Path) -> (Vec<Document>, Vec<LoadProblem>) {
    let problem = |line: Option<usize>, message: String| LoadProblem {
        path: path.to_path_buf(),
        line,
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return (Vec::new(), vec![problem(None, format!("cannot read: {e}"))]),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            return (
                Vec::new(),
                vec![problem(Some(line), "the file is not valid UTF-8".into())],
            );
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let default_kind = kind_from_path(relative);
    let records = match extension(path).as_str() {
        "yaml" | "yml" => yaml_records(text),
        "md" | "markdown" => markdown_record(text),
        "csv" => csv_records(text),
        "jsonl" => jsonl_records(text),
        _ => Ok(Vec::new()),
    };
    let records = match records {
        Ok(r) => r,
        Err((line, message)) => return (Vec::new(), vec![problem(line, message)]),
    };
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for record in records {
        match record.fields {
            Err(message) => problems.push(problem(record.line, message)),
            Ok(fields) => match document_from_fields(fields, record.body, default_kind, relative) {
                Ok(mut doc) => {
                    if let Some(line) = record.line {
                        doc.metadata.insert(LINE_KEY.into(), Value::from(line));
                    }
                    documents.push(doc);
                }
                Err(message) => problems.push(problem(record.line, message)),
            },
        }
    }
    (documents, problems)
}

/// The kind implied by the nearest directory named after one (`faq/`, `templates/`, …).
fn kind_from_path(relative: &Path) -> Option<DocumentKind> {
    relative
        .parent()?
        .components()
        .rev()
        .find_map(|c| DocumentKind::parse(&c.as_os_str().to_string_lossy()))
}

/// One record found in a file, before it becomes a document.
struct RawRecord {
    line: Option<usize>,
    fields: Result<Map<String, Value>, String>,
    /// The Markdown body (front matter files only).
    body: Option<String>,
}

type FileError = (Option<usize>, String);

fn yaml_records(text: &str) -> Result<Vec<RawRecord>, FileError> {
    let value: Value = serde_yaml::from_str(text).map_err(|e| yaml_error(&e, 0))?;
    match value {
        Value::Array(items) => {
            let lines = top_level_item_lines(text);
            let lines_known = lines.len() == items.len();
            Ok(items
                .into_iter()
                .enumerate()
                .map(|(i, item)| RawRecord {
                    line: if lines_known { Some(lines[i]) } else { None },
                    fields: match item {
                        Value::Object(map) => Ok(map),
                        other => Err(format!(
                            "item {} is not a mapping of fields but {}",
                            i + 1,
                            json_type(&other)
                        )),
                    },
                    body: None,
                })
                .collect())
        }
        Value::Object(map) => Ok(vec![RawRecord {
            line: Some(1),
            fields: Ok(map),
            body: None,
        }]),
        Value::Null => Ok(Vec::new()),
        other => Err((
            Some(1),
            format!("expected a list of documents, found {}", json_type(&other)),
        )),
    }
}

fn yaml_error(e: &serde_yaml::Error, line_offset: usize) -> FileError {
    let line = e.location().map(|l| l.line() + line_offset);
    (line, format!("invalid YAML: {e}"))
}

/// Lines (1-based) where top-level list items start (`- ` at column 0).
fn top_level_item_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| *l == "-" || l.starts_with("- "))
        .map(|(i, _)| i + 1)
        .collect()
}

fn markdown_record(text: &str) -> Result<Vec<RawRecord>, FileError> {
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or_default();
    if first.trim_end() != "---" {
        return Err((
            Some(1),
            "missing YAML front matter (the file must start with a '---' line)".into(),
        ));
    }
    let mut front = String::new();
    let mut closed = false;
    for line in lines.by_ref() {
        if line.trim_end() == "---" {
            closed = true;
            break;
        }
        front.push_str(line);
    }
    if !closed {
        return Err((
            Some(1),
            "the front matter is not closed by a '---' line".into(),
        ));
    }
    let body: String = lines.collect();
    let fields = match serde_yaml::from_str::<Value>(&front) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(other) => Err(format!(
            "the front matter must be a mapping of fields, found {}",
            json_type(&other)
        )),
        Err(e) => return Err(yaml_error(&e, 1)),
    };
    Ok(vec![RawRecord {
        line: Some(1),
        fields,
        body: Some(body),
    }])
}

fn csv_records(text: &str) -> Result<Vec<RawRecord>, FileError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| (Some(1), format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if !headers.iter().any(|h| h == "id") {
        return Err((Some(1), "the CSV header has no 'id' column".into()));
    }
    let mut records = Vec::new();
    for row in reader.records() {
        match row {
            Ok(row) => {
                let line = row.position().map(|p| p.line() as usize);
                let fields = headers
                    .iter()
                    .zip(row.iter())
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
                    .collect();
                records.push(RawRecord {
                    line,
                    fields: Ok(fields),
                    body: None,
                });
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize);
                records.push(RawRecord {
                    line,
                    fields: Err(format!("bad CSV row: {e}")),
                    body: None,
                });
            }
        }
    }
    Ok(records)
}

fn jsonl_records(text: &str) -> Result<Vec<RawRecord>, FileError> {
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| RawRecord {
            line: Some(i + 1),
            fields: match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(other) => Err(format!(
                    "expected a JSON object, found {}",
                    json_type(&other)
                )),
                Err(e) => Err(format!("invalid JSON: {e}")),
            },
            body: None,
        })
        .collect())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Builds a document from a record's fields (and a Markdown body).
fn document_from_fields(
    mut fields: Map<String, Value>,
    body: Option<String>,
    default_kind: Option<DocumentKind>,
    source: &Path,
) -> Result<Document, String> {
    let id = take_scalar(&mut fields, "id")?.ok_or("the record has no 'id'")?;
    let explicit_kind = match take_scalar(&mut fields, "kind")? {
        Some(k) => Some(DocumentKind::parse(&k).ok_or_else(|| {
            format!("{id}: unknown kind {k:?} (expected faq, scenario, template or article)")
        })?),
        None => None,
    };
    let kind = explicit_kind.or(default_kind).unwrap_or_else(|| {
        if fields.contains_key("question") && fields.contains_key("answer") {
            DocumentKind::Faq
        } else if fields.contains_key("body") && body.is_none() {
            DocumentKind::Template
        } else {
            DocumentKind::Article
        }
    });
    let audience = match take_scalar(&mut fields, "audience")? {
        Some(a) => Audience::parse(&a)
            .ok_or_else(|| format!("{id}: unknown audience {a:?} (expected b2c, b2b or all)"))?,
        None => Audience::All,
    };
    let tags = take_tags(&mut fields).map_err(|e| format!("{id}: {e}"))?;
    let (title, text) = match kind {
        DocumentKind::Faq => {
            let question = take_scalar(&mut fields, "question")?
                .or(take_scalar(&mut fields, "title")?)
                .ok_or_else(|| format!("{id}: an FAQ needs a 'question'"))?;
            let answer = take_scalar(&mut fields, "answer")?
                .or(take_scalar(&mut fields, "text")?)
                .or(body.clone())
                .ok_or_else(|| format!("{id}: an FAQ needs an 'answer'"))?;
            (question, answer)
        }
        _ => {
            let text = match body {
                Some(b) => b,
                None => take_scalar(&mut fields, "body")?
                    .or(take_scalar(&mut fields, "text")?)
                    .ok_or_else(|| format!("{id}: the record needs a 'text' (or 'body')"))?,
            };
            let title = take_scalar(&mut fields, "title")?
                .or_else(|| first_heading(&text))
                .ok_or_else(|| format!("{id}: the record needs a 'title'"))?;
            (title, text)
        }
    };
    let doc = Document {
        id,
        kind,
        title: title.trim().to_string(),
        text: text.trim().to_string(),
        audience,
        tags,
        metadata: fields,
        source: source.to_path_buf(),
    };
    doc.validate()?;
    Ok(doc)
}

/// Removes a field and returns it as text (numbers and booleans are accepted as text).
fn take_scalar(fields: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(format!(
            "the field '{key}' must be text, found {}",
            json_type(&other)
        )),
    }
}

fn take_tags(fields: &mut Map<String, Value>) -> Result<Vec<String>, String> {
    let raw: Vec<String> = match fields.remove("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(['|', ',']).map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("a tag must be text, found {}", json_type(&other))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "'tags' must be a list or text, found {}",
                json_type(&other)
            ))
        }
    };
    let mut tags: Vec<String> = raw
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    tags.dedup();
    Ok(tags)
}

fn first_heading(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("# "))
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .filter(|t| !t.is_empty())
}

pub(crate) fn path_to_slash(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, content: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn loads_every_format_with_kinds_and_audiences() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "faq/basics.yaml",
            "- id: faq-price\n  question: 料金はいくらですか？\n  answer: 基本プランは月額3,000円です。\n  audience: b2c\n  tags: [料金, プラン]\n- id: faq-b2b\n  question: 法人契約はできますか？\n  answer: はい、できます。\n  audience: b2b\n",
        );
        write(
            dir.path(),
            "scenarios/noise.md",
            "---\nid: sc-noise\nkind: scenario\ntitle: 騒音の苦情\naudience: all\ntags: [騒音]\ntrigger: 隣人の騒音に困っている\n---\n# 騒音の苦情\n\nまず状況を伺います。\n",
        );
        write(
            dir.path(),
            "templates/t.yaml",
            "- id: tpl-welcome\n  title: ご契約の御礼\n  purpose: 契約直後の挨拶\n  trigger: 契約完了\n  channel: email\n  audience: all\n  tone: 丁寧\n  tags: [挨拶]\n  body: \"{{name}}様、ご契約ありがとうございます。\"\n",
        );
        write(
            dir.path(),
            "extra/rows.csv",
            "id,kind,title,text,audience,tags\nart-1,article,会社概要,ZENBUは騒音測定のサービスです。,all,会社|概要\n",
        );
        write(
            dir.path(),
            "extra/more.jsonl",
            "{\"id\":\"faq-j\",\"question\":\"解約は？\",\"answer\":\"マイページからできます。\"}\n\n",
        );
        write(dir.path(), "README.md", "# formats\n");
        let outcome = load_dir(dir.path()).unwrap();
        assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
        let by_id: HashMap<_, _> = outcome
            .documents
            .iter()
            .map(|d| (d.id.as_str(), d))
            .collect();
        assert_eq!(by_id.len(), 6);
        let price = by_id["faq-price"];
        assert_eq!(price.kind, DocumentKind::Faq);
        assert_eq!(price.title, "料金はいくらですか？");
        assert_eq!(price.text, "基本プランは月額3,000円です。");
        assert_eq!(price.audience, Audience::B2c);
        assert_eq!(price.tags, vec!["料金", "プラン"]);
        assert_eq!(price.source, Path::new("faq/basics.yaml"));
        assert_eq!(by_id["faq-b2b"].audience, Audience::B2b);
        let scenario = by_id["sc-noise"];
        assert_eq!(scenario.kind, DocumentKind::Scenario);
        assert!(scenario.text.contains("まず状況を伺います。"));
        assert_eq!(
            scenario.metadata_str("trigger"),
            Some("隣人の騒音に困っている")
        );
        let template = by_id["tpl-welcome"];
        assert_eq!(template.kind, DocumentKind::Template);
        assert_eq!(template.text, "{{name}}様、ご契約ありがとうございます。");
        assert_eq!(template.metadata_str("channel"), Some("email"));
        let article = by_id["art-1"];
        assert_eq!(article.kind, DocumentKind::Article);
        assert_eq!(article.tags, vec!["会社", "概要"]);
        assert_eq!(by_id["faq-j"].kind, DocumentKind::Faq);
        assert!(!price.metadata.contains_key(LINE_KEY));
    }

    #[test]
    fn reports_bad_files_and_records_with_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "faq/a.yaml",
            "- id: ok-1\n  question: 質問\n  answer: 回答\n- id: bad id\n  question: 質問\n  answer: 回答\n- id: no-answer\n  question: 質問\n",
        );
        write(
            dir.path(),
            "faq/broken.yaml",
            "- id: x\n  question: [unclosed\n",
        );
        write(dir.path(), "notes.md", "no front matter here\n");
        write(
            dir.path(),
            "rows.jsonl",
            "{\"id\":\"j-1\",\"title\":\"t\",\"text\":\"本文\"}\nnot json\n",
        );
        write(
            dir.path(),
            "rows.csv",
            "id,title,text,audience\nc-1,題,本文,b2c\nc-2,題,本文,everyone\n",
        );
        let outcome = load_dir(dir.path()).unwrap();
        let ids: Vec<_> = outcome.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, vec!["ok-1", "c-1", "j-1"]);
        let found = |file: &str, line: Option<usize>, needle: &str| {
            outcome
                .problems
                .iter()
                .any(|p| p.path.ends_with(file) && p.line == line && p.message.contains(needle))
        };
        assert!(found("a.yaml", Some(4), "bad id"), "{:?}", outcome.problems);
        assert!(found("a.yaml", Some(7), "answer"), "{:?}", outcome.problems);
        assert!(
            outcome
                .problems
                .iter()
                .any(|p| p.path.ends_with("broken.yaml") && p.line.is_some()),
            "{:?}",
            outcome.problems
        );
        assert!(found("notes.md", Some(1), "front matter"));
        assert!(found("rows.jsonl", Some(2), "invalid JSON"));
        assert!(found("rows.csv", Some(3), "audience"));
        assert_eq!(outcome.problems.len(), 6, "{:?}", outcome.problems);
        let sources = outcome.problem_sources(dir.path());
        assert!(sources.contains(&"faq/broken.yaml".to_string()));
    }

    #[test]
    fn duplicate_ids_keep_the_first_and_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.jsonl",
            "{\"id\":\"d\",\"title\":\"一\",\"text\":\"最初\"}\n",
        );
        write(
            dir.path(),
            "b.jsonl",
            "{\"id\":\"x\",\"title\":\"二\",\"text\":\"別\"}\n{\"id\":\"d\",\"title\":\"三\",\"text\":\"重複\"}\n",
        );
        let outcome = load_dir(dir.path()).unwrap();
        assert_eq!(outcome.documents.len(), 2);
        let d = outcome.documents.iter().find(|d| d.id == "d").unwrap();
        assert_eq!(d.text, "最初");
        assert_eq!(outcome.problems.len(), 1);
        assert_eq!(outcome.problems[0].line, Some(2));
        assert!(outcome.problems[0].path.ends_with("b.jsonl"));
        assert!(outcome.problems[0].message.contains("duplicate"));
    }

    #[test]
    fn id_rules() {
        assert!(validate_id("faq-001.v2_x").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("-lead").is_err());
        assert!(validate_id("日本語").is_err());
        assert!(validate_id("a b").is_err());
        assert!(validate_id(&"a".repeat(129)).is_err());
    }

    #[test]
    fn audiences_visible_to_a_reader() {
        assert_eq!(
            Audience::B2c.visible_to(),
            vec![Audience::B2c, Audience::All]
        );
        assert_eq!(Audience::All.visible_to().len(), 3);
    }
}
