//! Keyword side of hybrid search: Japanese content words from lindera (IPADIC) turned into
//! sparse vectors.
//!
//! Text is NFKC-normalised and lowercased, segmented by lindera, and only content words are
//! kept (nouns, verbs, adjectives, adverbs, unknown words; particles, auxiliaries, symbols,
//! prefixes and dependent words are dropped); verbs and adjectives are reduced to their base
//! form so conjugations match. Each term becomes a dimension by a stable hash (FNV-1a, 32
//! bits), so no vocabulary file is needed.
//!
//! Weights: the document side carries a BM25 term-frequency part,
//! `tf·(k1+1) / (tf + k1·(1 − b + b·len/avg_len))`, with a fixed average length; the query
//! side is 1 per distinct term; Qdrant applies the inverse document frequency itself
//! (`Modifier::Idf` on the sparse vector), so IDF follows the live collection without
//! re-encoding anything when documents change. Together that is BM25 with a fixed average
//! document length.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use lindera::dictionary::{DictionaryBuilder, Metadata};
use lindera::mode::Mode;
use lindera::segmenter::Segmenter;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::error::{KnowledgeError, Result};

/// Bumped whenever tokenisation or weighting changes, so the next ingest re-encodes.
pub const SPARSE_VERSION: u32 = 1;

const BM25_K1: f32 = 1.2;
const BM25_B: f32 = 0.75;
/// Typical number of content words in a chunk (FAQ answers run 30–80, long chunks ~150).
const AVERAGE_TERMS: f32 = 60.0;

/// Words that are content words by part of speech but say nothing about a topic.
const STOP_WORDS: &[&str] = &[
    "する",
    "ある",
    "いる",
    "なる",
    "できる",
    "れる",
    "られる",
    "こと",
    "もの",
    "よう",
    "ため",
    "とき",
    "ところ",
    "これ",
    "それ",
    "あれ",
    "どれ",
    "ここ",
    "そこ",
    "いう",
    "思う",
    "ください",
    "くださる",
    "いただく",
    "おる",
    "もらう",
    "くれる",
    "いたす",
    "ござる",
];

/// A sparse vector: sorted, distinct dimensions and their weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl SparseVector {
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    fn from_map(map: HashMap<u32, f32>) -> Self {
        let mut pairs: Vec<(u32, f32)> = map.into_iter().collect();
        pairs.sort_by_key(|(i, _)| *i);
        let (indices, values) = pairs.into_iter().unzip();
        Self { indices, values }
    }
}

/// The dimension of a term: FNV-1a over its UTF-8 bytes (stable across runs and platforms).
pub fn term_id(term: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in term.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Turns Japanese text into content words and sparse vectors.
pub struct SparseEncoder {
    segmenter: Segmenter,
}

impl std::fmt::Debug for SparseEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseEncoder").finish_non_exhaustive()
    }
}

impl SparseEncoder {
    /// Loads a lindera IPADIC dictionary built by `scripts/setup-lindera`.
    pub fn load(dictionary_dir: &Path) -> Result<Self> {
        if !dictionary_dir.join("metadata.json").is_file() {
            return Err(KnowledgeError::Tokenizer(format!(
                "no lindera dictionary at {} (run scripts/setup-lindera)",
                dictionary_dir.display()
            )));
        }
        let dictionary = lindera::dictionary::load_fs_dictionary(dictionary_dir).map_err(|e| {
            KnowledgeError::Tokenizer(format!(
                "cannot load the dictionary at {}: {e}",
                dictionary_dir.display()
            ))
        })?;
        Ok(Self {
            segmenter: Segmenter::new(Mode::Normal, dictionary, None),
        })
    }

    /// The content words of `text`, in order, normalised.
    pub fn content_words(&self, text: &str) -> Result<Vec<String>> {
        let normalized: String = text.nfkc().collect::<String>().to_lowercase();
        let mut tokens = self
            .segmenter
            .segment(Cow::Owned(normalized))
            .map_err(|e| KnowledgeError::Tokenizer(e.to_string()))?;
        let mut words = Vec::new();
        for token in tokens.iter_mut() {
            let surface = token.surface.to_string();
            let details = token.details();
            if let Some(word) = content_word(&surface, &details) {
                words.push(word);
            }
        }
        Ok(words)
    }

    /// A document's vector: BM25 term-frequency weights (IDF is applied by the index).
    pub fn encode_document(&self, text: &str) -> Result<SparseVector> {
        let words = self.content_words(text)?;
        let length = words.len() as f32;
        let mut counts: HashMap<u32, f32> = HashMap::new();
        for word in &words {
            *counts.entry(term_id(word)).or_default() += 1.0;
        }
        let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * length / AVERAGE_TERMS);
        let weights = counts
            .into_iter()
            .map(|(id, tf)| (id, tf * (BM25_K1 + 1.0) / (tf + norm)))
            .collect();
        Ok(SparseVector::from_map(weights))
    }

    /// A query's vector: 1 per distinct content word.
    pub fn encode_query(&self, text: &str) -> Result<SparseVector> {
        let words = self.content_words(text)?;
        Ok(SparseVector::from_map(
            words.iter().map(|w| (term_id(w), 1.0)).collect(),
        ))
    }
}

/// Keeps content words (IPADIC part of speech in `details[0..2]`, base form in `details[6]`).
fn content_word(surface: &str, details: &[&str]) -> Option<String> {
    let pos = details.first().copied().unwrap_or("");
    let sub = details.get(1).copied().unwrap_or("");
    let keep = match pos {
        "名詞" => match sub {
            "非自立" | "代名詞" | "特殊" => false,
            // Suffixes such as 料 or 額 carry meaning; kana ones (さん, たち) do not.
            "接尾" | "副詞可能" => !is_kana_only(surface),
            _ => true,
        },
        "動詞" | "形容詞" => sub != "非自立" && sub != "接尾",
        "副詞" => !is_kana_only(surface),
        // Words the dictionary does not know (product names, romaji): keep.
        "UNK" | "未知語" => true,
        _ => false,
    };
    if !keep {
        return None;
    }
    let base = details
        .get(6)
        .copied()
        .filter(|b| !b.is_empty() && *b != "*")
        .unwrap_or(surface);
    let word = base.trim();
    if word.is_empty()
        || word.chars().all(|c| !c.is_alphanumeric())
        || STOP_WORDS.contains(&word)
        || (word.chars().count() == 1 && is_kana_only(word))
    {
        return None;
    }
    Some(word.to_string())
}

fn is_kana_only(text: &str) -> bool {
    text.chars()
        .all(|c| matches!(c, '\u{3040}'..='\u{309f}' | '\u{30a0}'..='\u{30ff}'))
}

/// Compiles a lindera dictionary from MeCab IPADIC sources already converted to UTF-8
/// (`*.csv`, `char.def`, `unk.def`, `matrix.def`) into `out_dir`.
pub fn build_ipadic_dictionary(src_dir: &Path, out_dir: &Path) -> Result<()> {
    for required in ["char.def", "unk.def", "matrix.def"] {
        if !src_dir.join(required).is_file() {
            return Err(KnowledgeError::Tokenizer(format!(
                "{} has no {required}: not an IPADIC source directory",
                src_dir.display()
            )));
        }
    }
    // lindera's default metadata is IPADIC's schema and context ids.
    let metadata = Metadata {
        name: "ipadic".to_string(),
        encoding: "UTF-8".to_string(),
        ..Metadata::default()
    };
    DictionaryBuilder::new(metadata)
        .build_dictionary(src_dir, out_dir)
        .map_err(|e| KnowledgeError::Tokenizer(format!("building the dictionary failed: {e}")))
}

/// Where `scripts/setup-lindera` puts the dictionary, relative to the repository root.
pub const DEFAULT_DICTIONARY_DIR: &str = "models/lindera-ipadic";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The dictionary for tests: `KIZUNA_LINDERA_DIR` or the repository's models directory.
    /// `None` (test skipped with a message) only when `KIZUNA_SKIP_MODEL_TESTS=1`.
    pub(crate) fn test_encoder() -> Option<SparseEncoder> {
        let dir = std::env::var_os("KIZUNA_LINDERA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(DEFAULT_DICTIONARY_DIR)
            });
        if !dir.join("metadata.json").is_file()
            && std::env::var("KIZUNA_SKIP_MODEL_TESTS").as_deref() == Ok("1")
        {
            eprintln!(
                "skipped: no lindera dictionary at {} and KIZUNA_SKIP_MODEL_TESTS=1",
                dir.display()
            );
            return None;
        }
        Some(SparseEncoder::load(&dir).unwrap_or_else(|e| {
            panic!("{e}\n(run scripts/setup-lindera, or set KIZUNA_SKIP_MODEL_TESTS=1 to skip)")
        }))
    }

    #[test]
    fn term_ids_are_stable_fnv1a() {
        // Reference values of FNV-1a 32-bit.
        assert_eq!(term_id(""), 0x811c_9dc5);
        assert_eq!(term_id("a"), 0xe40c_292c);
        assert_eq!(term_id("foobar"), 0xbf9c_f968);
        assert_ne!(term_id("騒音"), term_id("測定"));
    }

    #[test]
    fn keeps_content_words_with_base_forms() {
        let Some(encoder) = test_encoder() else {
            return;
        };
        let words = encoder
            .content_words("騒音を測定したいのですが、料金はいくらかかりますか？")
            .unwrap();
        assert!(words.contains(&"騒音".to_string()), "{words:?}");
        assert!(words.contains(&"測定".to_string()), "{words:?}");
        assert!(words.contains(&"料金".to_string()), "{words:?}");
        assert!(words.contains(&"かかる".to_string()), "{words:?}");
        for dropped in ["を", "の", "です", "は", "か", "？", "、", "する", "たい"] {
            assert!(
                !words.contains(&dropped.to_string()),
                "{dropped} in {words:?}"
            );
        }
        // NFKC and lowercase: full-width letters and digits match their ASCII forms.
        let wide = encoder
            .content_words("ＺＥＮＢＵの３０００円プラン")
            .unwrap();
        assert!(wide.contains(&"zenbu".to_string()), "{wide:?}");
        assert!(wide.iter().any(|w| w.contains("3000")), "{wide:?}");
    }

    #[test]
    fn document_weights_saturate_and_queries_are_binary() {
        let Some(encoder) = test_encoder() else {
            return;
        };
        let doc = encoder.encode_document("騒音。騒音。騒音。測定。").unwrap();
        let noise = term_id("騒音");
        let measure = term_id("測定");
        let weight = |v: &SparseVector, id: u32| {
            v.indices
                .iter()
                .position(|&i| i == id)
                .map(|p| v.values[p])
                .unwrap()
        };
        assert!(weight(&doc, noise) > weight(&doc, measure));
        assert!(weight(&doc, noise) < 3.0 * weight(&doc, measure));
        assert!(doc.indices.windows(2).all(|w| w[0] < w[1]));
        let query = encoder.encode_query("騒音の騒音を測定").unwrap();
        assert_eq!(query.indices.len(), 2);
        assert!(query.values.iter().all(|&v| v == 1.0));
    }
}
