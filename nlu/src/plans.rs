//! Which plan a message names, following the "Plans" section of `nlu/DATETIME.md`.

use serde::Serialize;

use crate::text::{char_at, char_before, fold_kana, is_hiragana, is_katakana, normalize};

/// A plan, or the AI mediation add-on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanRef {
    Light,
    Standard,
    Premium,
    Mediation,
}

impl PlanRef {
    /// The id the catalogue and the booking tool use.
    pub fn id(&self) -> &'static str {
        match self {
            PlanRef::Light => "light",
            PlanRef::Standard => "standard",
            PlanRef::Premium => "premium",
            PlanRef::Mediation => "mediation",
        }
    }
}

/// How a spelling must be delimited in the text.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A kana word (matched in hiragana): not inside a longer katakana word (ハイライト,
    /// フライト, プレミアムフライデー); written in hiragana, not inside a hiragana run either
    /// (「くらいと」), unless followed by 「プラン」.
    Kana,
    /// An English word: ASCII-letter boundaries on both sides (not "highlight", "lights").
    Latin,
    /// A phrase that is unambiguous wherever it occurs.
    Phrase,
}

/// Spellings and descriptions that name one plan (`nlu/DATETIME.md`, Plans). Kana spellings are
/// given in hiragana: the text is folded to hiragana before matching.
const SPELLINGS: &[(&str, Kind, PlanRef)] = &[
    ("らいと", Kind::Kana, PlanRef::Light),
    ("light", Kind::Latin, PlanRef::Light),
    ("すたんだーど", Kind::Kana, PlanRef::Standard),
    ("standard", Kind::Latin, PlanRef::Standard),
    ("std", Kind::Latin, PlanRef::Standard),
    ("ぷれみあむ", Kind::Kana, PlanRef::Premium),
    ("premium", Kind::Latin, PlanRef::Premium),
    ("仲裁", Kind::Phrase, PlanRef::Mediation),
    ("mediation", Kind::Latin, PlanRef::Mediation),
    // Descriptions that single out one plan.
    ("一番安いぷらん", Kind::Phrase, PlanRef::Light),
    ("いちばん安いぷらん", Kind::Phrase, PlanRef::Light),
    ("最も安いぷらん", Kind::Phrase, PlanRef::Light),
    ("最安のぷらん", Kind::Phrase, PlanRef::Light),
    ("1時間のぷらん", Kind::Phrase, PlanRef::Light),
    ("1時間測定のぷらん", Kind::Phrase, PlanRef::Light),
    ("cheapest plan", Kind::Latin, PlanRef::Light),
    ("真ん中のぷらん", Kind::Phrase, PlanRef::Standard),
    ("まんなかのぷらん", Kind::Phrase, PlanRef::Standard),
    ("middle plan", Kind::Latin, PlanRef::Standard),
    ("一番高いぷらん", Kind::Phrase, PlanRef::Premium),
    ("いちばん高いぷらん", Kind::Phrase, PlanRef::Premium),
    ("最も高いぷらん", Kind::Phrase, PlanRef::Premium),
    ("弁護士れびゅー付", Kind::Phrase, PlanRef::Premium),
    ("弁護士れびゅーつき", Kind::Phrase, PlanRef::Premium),
    ("弁護士のれびゅー付", Kind::Phrase, PlanRef::Premium),
    ("most expensive plan", Kind::Latin, PlanRef::Premium),
];

/// Whether the match of `word` at byte `start..end` of the folded `text` stands on its own.
/// `orig` is the same text before kana folding (folding keeps byte lengths: both kana blocks
/// are three bytes per char in UTF-8).
fn delimited(kind: Kind, orig: &str, start: usize, end: usize) -> bool {
    match kind {
        // 「1時間のプラン」 must not be found inside 「11時間のプラン」.
        Kind::Phrase => {
            !(orig[start..].starts_with(|c: char| c.is_ascii_digit())
                && char_before(orig, start).is_some_and(|c| c.is_ascii_digit()))
        }
        Kind::Latin => {
            !char_before(orig, start).is_some_and(|c| c.is_ascii_alphanumeric())
                && !char_at(orig, end).is_some_and(|c| c.is_ascii_alphanumeric())
        }
        Kind::Kana => {
            let before = char_before(orig, start);
            let after = char_at(orig, end);
            let plan_follows = fold_kana(&orig[end..]).starts_with("ぷらん");
            let first = char_at(orig, start).unwrap_or(' ');
            if before.is_some_and(is_katakana) {
                return false;
            }
            if after.is_some_and(is_katakana) && !plan_follows {
                return false;
            }
            if is_hiragana(first) && before.is_some_and(is_hiragana) && !plan_follows {
                return false;
            }
            true
        }
    }
}

/// Plans named in `text`, in the order named, without duplicates: any width, kana type or case
/// (ﾗｲﾄ, らいと, Light plan), and the descriptions that single one out (一番安いプラン → light).
pub fn plans_mentioned(text: &str) -> Vec<PlanRef> {
    let orig = normalize(text);
    let folded = fold_kana(&orig);
    debug_assert_eq!(orig.len(), folded.len());
    let mut found: Vec<(usize, PlanRef)> = Vec::new();
    for (word, kind, plan) in SPELLINGS {
        for (start, m) in folded.match_indices(word) {
            if delimited(*kind, &orig, start, start + m.len()) {
                found.push((start, *plan));
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    let mut out: Vec<PlanRef> = Vec::new();
    for (_, plan) in found {
        if !out.contains(&plan) {
            out.push(plan);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use PlanRef::*;

    #[test]
    fn any_spelling() {
        assert_eq!(
            plans_mentioned("ｽﾀﾝﾀﾞｰﾄﾞとプレミアムの違いは？"),
            vec![Standard, Premium]
        );
        assert_eq!(plans_mentioned("らいとぷらんはいくら"), vec![Light]);
        assert_eq!(plans_mentioned("How much is the Light plan?"), vec![Light]);
        assert_eq!(plans_mentioned("std vs PREMIUM"), vec![Standard, Premium]);
        assert_eq!(plans_mentioned("AI仲裁を付けたい"), vec![Mediation]);
        assert_eq!(plans_mentioned("ﾌﾟﾚﾐｱﾑ"), vec![Premium]);
    }

    #[test]
    fn descriptions_name_one_plan() {
        assert_eq!(plans_mentioned("一番安いプランでお願いします"), vec![Light]);
        assert_eq!(plans_mentioned("1時間のプランで"), vec![Light]);
        assert_eq!(plans_mentioned("弁護士レビュー付きのものを"), vec![Premium]);
        assert_eq!(
            plans_mentioned("真ん中のプランって何が違う"),
            vec![Standard]
        );
        assert_eq!(plans_mentioned("一番高いプランは"), vec![Premium]);
    }

    #[test]
    fn order_named_without_duplicates() {
        assert_eq!(
            plans_mentioned("プレミアムとライト、やっぱりプレミアム"),
            vec![Premium, Light]
        );
    }

    #[test]
    fn not_inside_other_words() {
        assert!(plans_mentioned("ハイライトを見たい").is_empty());
        assert!(plans_mentioned("フライトの時間").is_empty());
        assert!(plans_mentioned("1万円くらいと聞きました").is_empty());
        assert!(plans_mentioned("the highlights").is_empty());
        assert!(plans_mentioned("2時間のプラン").is_empty());
    }
}
