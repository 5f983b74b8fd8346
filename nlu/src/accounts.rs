//! Which account a message names: by id (`B-2003`, `Ｂ－２００３`, `b2003`) or by name, following
//! the "Accounts" section of `nlu/DATETIME.md`.

use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use crate::text::{fold_kana, normalize};

/// Words that are not part of a name (`nlu/DATETIME.md`, Accounts): legal forms and honorifics.
const NOT_NAME: &[&str] = &[
    "株式会社",
    "(株)",
    "有限会社",
    "(有)",
    "御中",
    "さん",
    "様",
    "さま",
    "殿",
];

/// A name this long or longer may be written with one wrong, missing or extra character.
const TYPO_MIN_CHARS: usize = 5;

fn id_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Letters, a hyphen, digits (C-1001, B-2003, CUST-00042); the one-letter form may drop the
    // hyphen (B2003). Runs on upper-cased NFKC text; `ー` is what a Japanese IME often types
    // for a hyphen in full-width mode.
    RE.get_or_init(|| {
        Regex::new(r"([A-Z][A-Z0-9]{0,7})[-ー](\d{2,})|([A-Z])(\d{3,})").expect("valid regex")
    })
}

/// Ids with their char offsets in the NFKC text.
fn find_ids(text: &str) -> Vec<(usize, String)> {
    let upper = normalize(text).to_uppercase();
    let mut out: Vec<(usize, String)> = Vec::new();
    for caps in id_re().captures_iter(&upper) {
        let whole = caps.get(0).expect("group 0");
        // ASCII boundaries by hand: Japanese runs straight into ids (「B-2003は」), where a
        // Unicode word boundary would not match; 「BK-1234」 must not yield 「K-1234」.
        let before = upper[..whole.start()].chars().next_back();
        let after = upper[whole.end()..].chars().next();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            || after.is_some_and(|c| c.is_ascii_alphanumeric())
        {
            continue;
        }
        let (prefix, digits) = match (caps.get(1), caps.get(2)) {
            (Some(p), Some(d)) => (p.as_str(), d.as_str()),
            _ => (&caps[3], &caps[4]),
        };
        // Booking numbers are not accounts.
        if prefix == "BK" {
            continue;
        }
        let id = format!("{prefix}-{digits}");
        let at = upper[..whole.start()].chars().count();
        if !out.iter().any(|(_, seen)| *seen == id) {
            out.push((at, id));
        }
    }
    out
}

/// Account ids mentioned in a text, in order, without duplicates: `C-1001`, `B-2003`,
/// `CUST-00042` in any width (NFKC) and case, and the one-letter form without its hyphen
/// (`B2003` → `B-2003`). Booking numbers (`BK-…`) are not accounts.
pub fn mentioned_ids(text: &str) -> Vec<String> {
    find_ids(text).into_iter().map(|(_, id)| id).collect()
}

/// One account as the directory matches it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Entry {
    id: String,
    /// The name folded for matching (see [`name_key`]).
    key: Vec<char>,
}

/// Accounts by id and by name, for reading which account a manager means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountDirectory {
    entries: Vec<Entry>,
}

/// A name as it is matched: NFKC, lower case, katakana as hiragana, without spaces and without
/// legal forms or honorifics (`nlu/DATETIME.md`, Accounts).
fn name_key(name: &str) -> Vec<char> {
    let mut s = fold_kana(&normalize(name));
    for w in NOT_NAME {
        s = s.replace(&fold_kana(w), "");
    }
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '・')
        .collect()
}

/// The text as names are matched in it, each char with its offset in the NFKC text.
fn text_key(text: &str) -> Vec<(char, usize)> {
    fold_kana(&normalize(text))
        .chars()
        .enumerate()
        .filter(|(_, c)| !c.is_whitespace() && *c != '・')
        .map(|(i, c)| (c, i))
        .collect()
}

/// A match of one name in the text.
#[derive(Debug, Clone, Copy)]
struct Hit {
    entry: usize,
    dist: usize,
    /// Char offsets (into the key text) of the matched span, end exclusive.
    start: usize,
    end: usize,
}

/// The best occurrence of `pat` in `text` within `k` edits (Sellers' approximate substring
/// match): fewest edits first, then the earliest.
fn best_occurrence(pat: &[char], text: &[char], k: usize) -> Option<(usize, usize, usize)> {
    let m = pat.len();
    if m == 0 {
        return None;
    }
    if k == 0 {
        return text
            .windows(m)
            .position(|w| w == pat)
            .map(|s| (0, s, s + m));
    }
    // prev[i]: (edits, start) of the best alignment of pat[..i] ending before text[j].
    let mut prev: Vec<(usize, usize)> = (0..=m).map(|i| (i, 0)).collect();
    let mut best: Option<(usize, usize, usize)> = None;
    for (j, &ch) in text.iter().enumerate() {
        let mut cur = vec![(0usize, j + 1); m + 1];
        for i in 1..=m {
            let sub = (
                prev[i - 1].0 + usize::from(pat[i - 1] != ch),
                if i == 1 { j } else { prev[i - 1].1 },
            );
            let del = (cur[i - 1].0 + 1, cur[i - 1].1); // pattern char missing in text
            let ins = (prev[i].0 + 1, prev[i].1); // extra char in text
            cur[i] = [sub, del, ins]
                .into_iter()
                .min_by_key(|(d, s)| (*d, std::cmp::Reverse(*s)))
                .expect("three options");
        }
        let (d, s) = cur[m];
        if d <= k && best.is_none_or(|(bd, _, _)| d < bd) {
            best = Some((d, s, j + 1));
        }
        prev = cur;
    }
    best
}

impl AccountDirectory {
    /// A directory of `(id, name)` pairs.
    pub fn new(accounts: impl IntoIterator<Item = (String, String)>) -> Self {
        let entries = accounts
            .into_iter()
            .map(|(id, name)| Entry {
                id: id.trim().to_uppercase(),
                key: name_key(&name),
            })
            .collect();
        Self { entries }
    }

    /// Account ids the text names, by id or by name, in the order named and without
    /// duplicates. Ids must be in the directory. A name that fits two accounts equally well
    /// (the same name twice, or two names one typo away) names none of them.
    pub fn resolve(&self, text: &str) -> Vec<String> {
        let mut found: Vec<(usize, String)> = find_ids(text)
            .into_iter()
            .filter(|(_, id)| self.entries.iter().any(|e| e.id == *id))
            .collect();

        let keyed = text_key(text);
        let chars: Vec<char> = keyed.iter().map(|(c, _)| *c).collect();
        let mut hits: Vec<Hit> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(entry, e)| {
                let k = usize::from(e.key.len() >= TYPO_MIN_CHARS);
                best_occurrence(&e.key, &chars, k).map(|(dist, start, end)| Hit {
                    entry,
                    dist,
                    start,
                    end,
                })
            })
            .collect();
        hits.sort_by_key(|h| (h.start, h.end));

        // Overlapping hits are one mention; the closest and then longest name wins it.
        let mut groups: Vec<Vec<Hit>> = Vec::new();
        for hit in hits {
            match groups.last_mut() {
                Some(g) if g.iter().any(|h| h.end > hit.start) => g.push(hit),
                _ => groups.push(vec![hit]),
            }
        }
        for group in groups {
            let best = group
                .iter()
                .map(|h| (h.dist, std::cmp::Reverse(self.entries[h.entry].key.len())))
                .min()
                .expect("non-empty group");
            let winners: Vec<&Hit> = group
                .iter()
                .filter(|h| (h.dist, std::cmp::Reverse(self.entries[h.entry].key.len())) == best)
                .collect();
            if let [only] = winners.as_slice() {
                found.push((keyed[only.start].1, self.entries[only.entry].id.clone()));
            }
        }

        found.sort_by_key(|(at, _)| *at);
        let mut out: Vec<String> = Vec::new();
        for (_, id) in found {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> AccountDirectory {
        AccountDirectory::new(
            [
                ("B-2001", "さくら不動産管理株式会社"),
                ("B-2003", "青葉プロパティマネジメント株式会社"),
                ("B-2004", "ひかりハウジング株式会社"),
                ("B-2009", "青葉住宅管理株式会社"),
                ("B-2010", "ひかりハウジング株式会社"),
                ("B-2012", "若葉住宅管理株式会社"),
                ("C-1001", "山田 花子"),
                ("C-1012", "小林 誠"),
                ("C-1044", "林 誠"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn ids_in_any_width_and_form() {
        assert_eq!(mentioned_ids("Ｂ－２００３の状況"), vec!["B-2003"]);
        assert_eq!(mentioned_ids("b2003とc-1001"), vec!["B-2003", "C-1001"]);
        assert_eq!(mentioned_ids("CUST-00042は？"), vec!["CUST-00042"]);
        assert_eq!(mentioned_ids("Ｂー２００３"), vec!["B-2003"]);
    }

    #[test]
    fn booking_numbers_are_not_accounts() {
        assert!(mentioned_ids("予約BK-1234をキャンセル").is_empty());
        assert!(mentioned_ids("BK-3f2a9c01d4e5").is_empty());
        assert!(mentioned_ids("12,800円で10年").is_empty());
    }

    #[test]
    fn names_ignore_legal_form_honorific_kana_and_width() {
        let d = dir();
        assert_eq!(d.resolve("さくら不動産管理さんの状況は？"), vec!["B-2001"]);
        assert_eq!(d.resolve("(株)サクラ不動産管理"), vec!["B-2001"]);
        assert_eq!(d.resolve("山田花子様"), vec!["C-1001"]);
        assert_eq!(d.resolve("青葉ﾌﾟﾛﾊﾟﾃｨﾏﾈｼﾞﾒﾝﾄ御中"), vec!["B-2003"]);
    }

    #[test]
    fn one_typo_in_a_long_name() {
        let d = dir();
        assert_eq!(d.resolve("さくら不動産菅理の件"), vec!["B-2001"]);
        assert_eq!(d.resolve("さくら不動管理の件"), vec!["B-2001"]);
        // Exact beats one typo away: 若葉 is one character from 青葉.
        assert_eq!(d.resolve("若葉住宅管理"), vec!["B-2012"]);
        // Short names must be exact.
        assert!(d.resolve("山田花代").is_empty());
    }

    #[test]
    fn ambiguous_names_give_nothing() {
        let d = dir();
        assert!(d.resolve("ひかりハウジングの状況").is_empty());
        // 小林誠 contains 林誠; the longer name wins the mention.
        assert_eq!(d.resolve("小林誠さん"), vec!["C-1012"]);
        // Two typo-distance fits, neither exact.
        assert!(d.resolve("黄葉住宅管理").is_empty());
    }

    #[test]
    fn ids_and_names_in_order() {
        let d = dir();
        assert_eq!(
            d.resolve("さくら不動産管理とB-2003を比べて"),
            vec!["B-2001", "B-2003"]
        );
        // Unknown ids are not accounts of this directory.
        assert!(d.resolve("B-9999の状況").is_empty());
    }
}
