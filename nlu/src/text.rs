//! Text normalisation shared by the grammars (`nlu/DATETIME.md`: "width, kana type").

use unicode_normalization::UnicodeNormalization;

/// NFKC (full-width digits and letters become ASCII, half-width katakana become standard),
/// ASCII lower case, and the dashes and tildes people type between two numbers folded to
/// `-` and `~`, so one pattern covers 「10〜13時」「10～13時」「10-13時」.
pub(crate) fn normalize(text: &str) -> String {
    text.nfkc()
        .map(|c| match c {
            '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
            '\u{301C}' | '\u{223C}' | '\u{FF5E}' => '~',
            '\u{3000}' => ' ',
            '\u{2018}' | '\u{2019}' => '\'',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Katakana folded to hiragana (「サクラ」 and 「さくら」 are the same name). The long-vowel
/// mark `ー` is kept as is.
pub(crate) fn fold_kana(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{30A1}'..='\u{30F6}' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            c => c,
        })
        .collect()
}

pub(crate) fn is_katakana(c: char) -> bool {
    matches!(c, '\u{30A1}'..='\u{30FA}' | '\u{30FC}')
}

pub(crate) fn is_hiragana(c: char) -> bool {
    matches!(c, '\u{3041}'..='\u{3096}')
}

/// The character just before byte offset `at`.
pub(crate) fn char_before(text: &str, at: usize) -> Option<char> {
    text[..at].chars().next_back()
}

/// The character at byte offset `at`.
pub(crate) fn char_at(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_folds_width_and_dashes() {
        assert_eq!(normalize("１０〜１３時"), "10~13時");
        assert_eq!(normalize("ｽﾀﾝﾀﾞｰﾄﾞ"), "スタンダード");
        assert_eq!(normalize("Ｂ－２００３"), "b-2003");
    }

    #[test]
    fn fold_kana_keeps_long_vowel() {
        assert_eq!(fold_kana("スタンダード"), "すたんだーど");
    }
}
