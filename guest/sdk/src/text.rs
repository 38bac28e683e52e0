//! BERT WordPiece tokenization inside the sandbox: text in, token ids out.
//!
//! [`WordPiece`] reproduces, id for id, what HuggingFace `tokenizers` produces with the
//! `tokenizer.json` of BERT-style models such as all-MiniLM-L6-v2 (`BertNormalizer` +
//! `BertPreTokenizer` + `WordPiece` + the `[CLS] A [SEP]` template), used as
//! sentence-transformers uses it: no padding, truncation to a maximum total length. The
//! vocabulary comes from the model's `vocab.txt` ([`WordPiece::from_vocab`]); the steps
//! [`WordPiece::encode`] runs, in this order, are:
//!
//! 1. **Special tokens.** The literal strings `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` and
//!    `[MASK]` (the last one if the vocabulary has it) are found in the raw text,
//!    case-sensitively, leftmost first, and become their own ids, as `tokenizers` does with
//!    the non-normalized added tokens of BERT's `tokenizer.json`. The text between them goes
//!    through steps 2 to 4.
//! 2. **Normalize** (`BertNormalizer` with `clean_text`, `handle_chinese_chars`, accent
//!    stripping and lowercasing all on):
//!    a. remove U+0000, U+FFFD and every "other" character (general categories Cc, Cf, Cn,
//!    Co, Cs) except `\t`, `\n` and `\r`; then replace each whitespace character by a space;
//!    b. put a space on each side of every CJK ideograph (the ranges of BERT's
//!    `_is_chinese_char`; Hiragana, Katakana and Hangul are not among them);
//!    c. decompose to NFD and remove nonspacing marks (Mn), which strips accents;
//!    d. lowercase each character on its own (`char::to_lowercase`, so a final Σ becomes σ,
//!    not ς).
//! 3. **Pre-tokenize** (`BertPreTokenizer`): split on whitespace, which is dropped, and
//!    make each punctuation character (ASCII punctuation or general category P*) a word of
//!    its own.
//! 4. **WordPiece**: split each word greedily into the longest vocabulary entries from the
//!    left, pieces after the first carrying the `##` prefix. A word longer than 100
//!    characters, or one that cannot be split completely, becomes a single `[UNK]`.
//! 5. **Template and truncation.** The ids are `[CLS]`, the word pieces, `[SEP]`; pieces
//!    are dropped from the end so that the total is at most `max_len`.
//!
//! The Unicode character classes are those `tokenizers` itself uses (the
//! `unicode_categories` crate); NFD comes from `unicode-normalization`. Nothing here
//! panics on any input text or vocabulary bytes.
//!
//! ```ignore
//! let vocab: &[u8] = include_bytes!("vocab.txt"); // or bytes from a weight or an input
//! let tokenizer = tensorlet_sdk::text::WordPiece::from_vocab(vocab)?;
//! let ids = tokenizer.encode("Héllo, world!", 256);
//! // [CLS] hello , world ! [SEP]
//! ```

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// The classification token every encoding starts with.
pub const CLS: &str = "[CLS]";
/// The separator token every encoding ends with.
pub const SEP: &str = "[SEP]";
/// The padding token (never produced by [`WordPiece::encode`], which does not pad).
pub const PAD: &str = "[PAD]";
/// The token standing for a word that cannot be split into vocabulary entries.
pub const UNK: &str = "[UNK]";
/// The masked-language-model token (optional in a vocabulary).
pub const MASK: &str = "[MASK]";
/// The prefix of a word piece that continues a word.
pub const CONTINUATION_PREFIX: &str = "##";
/// Words with more characters than this become a single [`UNK`].
pub const MAX_INPUT_CHARS_PER_WORD: usize = 100;

/// Marks an empty slot of the lookup table.
const EMPTY: u32 = u32::MAX;

/// The first bytes of a vocabulary index ([`WordPiece::from_vocab_and_index`]).
const INDEX_MAGIC: &[u8; 4] = b"WPIX";
/// The index layout this code reads and writes.
const INDEX_VERSION: u32 = 1;
/// Bytes before an index's spans: magic, version, count, bits, digest.
const INDEX_HEADER: usize = 24;

/// The vocabulary bytes as text: UTF-8, and short enough for `u32` offsets.
fn vocab_text(vocab_txt: &[u8]) -> Result<&str> {
    let text = std::str::from_utf8(vocab_txt)
        .map_err(|e| Error::invalid_input(format!("vocabulary is not UTF-8: {e}")))?;
    vocab_len(text.as_bytes())?;
    Ok(text)
}

/// Refuses a vocabulary too long for `u32` offsets.
fn vocab_len(vocab_txt: &[u8]) -> Result<()> {
    if u32::try_from(vocab_txt.len()).is_err() {
        return Err(Error::limit_exceeded(format!(
            "vocabulary is {} bytes; at most {} are supported",
            vocab_txt.len(),
            u32::MAX
        )));
    }
    Ok(())
}

/// The little-endian `u32` at byte `at` of `bytes`, if they reach that far.
#[inline]
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The `i`-th `(u32, u32)` pair (little-endian) of the pairs that start at byte `at`.
#[inline]
fn pair(bytes: &[u8], at: usize, i: usize) -> Option<(u32, u32)> {
    let at = at + 8 * i;
    Some((u32_at(bytes, at)?, u32_at(bytes, at + 4)?))
}

/// A BERT WordPiece tokenizer over one vocabulary: see the [module documentation](self)
/// for exactly what [`encode`](Self::encode) does.
#[derive(Clone, Debug)]
pub struct WordPiece {
    /// The vocabulary text (UTF-8: checked by [`WordPiece::from_vocab`], or by whoever made
    /// the index for exactly these bytes), every token a byte range of it.
    text: Vec<u8>,
    /// The lookup tables in the layout of [`WordPiece::from_vocab_and_index`]'s index, read
    /// in place (a request does not decode 100,000 pairs to look up a few dozen): after the
    /// header, the byte range of each id's token in `text` (line `i` is id `i`), then the
    /// open-addressing hash table (linear probing) of `(id, low 32 bits of the token's
    /// hash)`, id `EMPTY` where free, whose length is a power of two.
    index: Vec<u8>,
    /// Ids (token spans) in `index`.
    count: usize,
    /// `64 - log2(slot count)`: the table index is the hash's top bits.
    shift: u32,
    /// The longest token in bytes: longer candidates are never looked up.
    max_token_bytes: usize,
    cls: u32,
    sep: u32,
    pad: u32,
    unk: u32,
    mask: Option<u32>,
}

impl WordPiece {
    /// Builds the tokenizer from the bytes of a `vocab.txt`: UTF-8, one token per line, the
    /// token on line `i` (from 0) having id `i`.
    ///
    /// Lines end with `\n` or `\r\n`, and trailing whitespace is trimmed from each, as
    /// `tokenizers` reads the file; a final newline does not start another token. If a token
    /// appears twice the later line's id wins (the earlier id then has no token). Errors
    /// (`invalid-input`) if the bytes are not UTF-8, there are no tokens, there are 2³² − 1
    /// or more, or `[CLS]`, `[SEP]`, `[UNK]` or `[PAD]` is missing.
    pub fn from_vocab(vocab_txt: &[u8]) -> Result<WordPiece> {
        let text = vocab_text(vocab_txt)?;
        let bytes = text.as_bytes();
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        // One token per line; an empty file has none (an empty body line is an empty token).
        let count = if text.is_empty() {
            0
        } else {
            body.iter().filter(|&&b| b == b'\n').count() + 1
        };
        if count == 0 {
            return Err(Error::invalid_input("vocabulary is empty"));
        }
        if count >= EMPTY as usize {
            return Err(Error::invalid_input(format!(
                "vocabulary has {count} tokens; at most {} are supported",
                EMPTY - 1
            )));
        }
        let table_len = count
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .ok_or_else(|| Error::limit_exceeded("vocabulary too large for a lookup table"))?;
        let bits = table_len.max(16).trailing_zeros();
        let shift = 64 - bits;
        let mask = (1usize << bits) - 1;
        let mut spans = Vec::with_capacity(count);
        let mut slots = vec![(EMPTY, 0u32); 1 << bits];
        // One pass: find each line, trim it, hash it and insert its id.
        let mut start = 0;
        for id in 0..count as u32 {
            let line_end = body[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(body.len(), |n| start + n);
            let line = &bytes[start..line_end];
            // Trailing whitespace is trimmed as `str::trim_end` does; a line ending in a
            // non-space ASCII byte (nearly every line) needs no char decoding for that.
            let token_len = match line.last() {
                Some(b) if b.is_ascii() && !b.is_ascii_whitespace() => line.len(),
                _ => text.get(start..line_end).map_or(0, |l| l.trim_end().len()),
            };
            let token = &line[..token_len];
            spans.push((start as u32, (start + token_len) as u32));
            let hash = fx_hash(token);
            let mut slot = (hash >> shift) as usize;
            loop {
                let (existing, tag) = slots[slot];
                let same = || {
                    spans
                        .get(existing as usize)
                        .is_some_and(|&(s, e)| bytes.get(s as usize..e as usize) == Some(token))
                };
                if existing == EMPTY || (tag == hash as u32 && same()) {
                    // A duplicate token takes the later id, as `tokenizers` does.
                    slots[slot] = (id, hash as u32);
                    break;
                }
                slot = (slot + 1) & mask;
            }
            start = line_end + 1;
        }
        let mut index = Vec::with_capacity(INDEX_HEADER + 8 * (spans.len() + slots.len()));
        index.extend_from_slice(INDEX_MAGIC);
        for w in [INDEX_VERSION, spans.len() as u32, bits] {
            index.extend_from_slice(&w.to_le_bytes());
        }
        index.extend_from_slice(&fx_hash(bytes).to_le_bytes());
        for &(a, b) in spans.iter().chain(&slots) {
            index.extend_from_slice(&a.to_le_bytes());
            index.extend_from_slice(&b.to_le_bytes());
        }
        WordPiece::finish(bytes.to_vec(), index, count, shift)
    }

    /// Builds the tokenizer from the bytes of a `vocab.txt` and a lookup index made for them
    /// ahead of time ([`WordPiece::index`], or `models/data/convert.py`), which saves
    /// building the table: for a 30,522-token vocabulary that is most of what a one-sentence
    /// request spends in the sandbox outside the kernels.
    ///
    /// The index (little-endian) is the magic `WPIX`, a `u32` version (1), a `u32` token
    /// count, a `u32` `bits`, the `u64` [`fx_hash`] of the whole `vocab.txt`, then for each id
    /// the byte range `(start, end)` of its token as two `u32`s, then `2^bits` slots of
    /// `(id, low 32 bits of the token's hash)` (`u32::MAX` for a free slot), a token at the
    /// first free-or-matching slot from index `hash >> (64 - bits)` on, linear probing.
    ///
    /// Both are taken as they are, not decoded or copied: the index is read in place, and
    /// the text is not checked for UTF-8 again (that is [`WordPiece::from_vocab`]'s check
    /// when the index is made, and the digest ties the index to those bytes); a token whose
    /// bytes are not UTF-8 could only never match.
    ///
    /// Errors (`invalid-input`) on no tokens or a missing special token, as
    /// [`WordPiece::from_vocab`], and on an index that is not of that layout, has no free
    /// slot, or was made for other bytes (its digest differs): a vocabulary edited after its
    /// index was made. Lookups compare the token text itself, so an index that passes these
    /// checks can make a token unknown but never give a wrong id.
    pub fn from_vocab_and_index(vocab_txt: Vec<u8>, index: Vec<u8>) -> Result<WordPiece> {
        vocab_len(&vocab_txt)?;
        let bad = |what: String| Error::invalid_input(format!("vocabulary index: {what}"));
        let word = |at: usize| u32_at(&index, at).unwrap_or(0);
        if index.len() < INDEX_HEADER || &index[..4] != INDEX_MAGIC || word(4) != INDEX_VERSION {
            return Err(bad(format!(
                "not a version-{INDEX_VERSION} index (it starts with `WPIX` and version \
                 {INDEX_VERSION}, a {INDEX_HEADER}-byte header)"
            )));
        }
        let (count, bits) = (word(8) as usize, word(12));
        if count == 0 || count >= EMPTY as usize || !(4..=31).contains(&bits) {
            return Err(bad(format!(
                "{count} tokens in 2^{bits} slots; expected 1 to {} tokens and 4 to 31 bits",
                EMPTY - 1
            )));
        }
        let slot_count = 1usize << bits;
        let expected = count
            .checked_add(slot_count)
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| n.checked_add(INDEX_HEADER));
        if expected != Some(index.len()) {
            return Err(bad(format!(
                "{} bytes; {count} tokens and 2^{bits} slots take {}",
                index.len(),
                expected.map_or_else(|| "more than memory holds".to_owned(), |n| n.to_string())
            )));
        }
        let digest = u64::from(word(16)) | (u64::from(word(20)) << 32);
        if digest != fx_hash(&vocab_txt) {
            return Err(bad(
                "it was made for another vocab.txt (its digest differs); make it again from \
                 this one, or leave it out"
                    .to_owned(),
            ));
        }
        // Probing for an unknown token stops at a free slot: there must be one.
        let slots = INDEX_HEADER + 8 * count;
        if !(0..slot_count).any(|i| pair(&index, slots, i).is_some_and(|(id, _)| id == EMPTY)) {
            return Err(bad("no free slot".to_owned()));
        }
        WordPiece::finish(vocab_txt, index, count, 64 - bits)
    }

    /// The lookup index of this tokenizer, for [`WordPiece::from_vocab_and_index`] with the
    /// same `vocab.txt` bytes.
    pub fn index(&self) -> Vec<u8> {
        self.index.clone()
    }

    /// The tokenizer over `text` with its `index` (of `count` token spans, checked to be
    /// of that layout): finds the special tokens (`[CLS]`, `[SEP]`, `[UNK]`, `[PAD]`
    /// required).
    fn finish(text: Vec<u8>, index: Vec<u8>, count: usize, shift: u32) -> Result<WordPiece> {
        let max_token_bytes = (0..count)
            .filter_map(|id| pair(&index, INDEX_HEADER, id))
            .map(|(s, e)| e.saturating_sub(s) as usize)
            .max()
            .unwrap_or(0);
        let mut wp = WordPiece {
            text,
            index,
            count,
            shift,
            max_token_bytes,
            cls: 0,
            sep: 0,
            pad: 0,
            unk: 0,
            mask: None,
        };
        let require = |token: &str| {
            wp.id(token)
                .ok_or_else(|| Error::invalid_input(format!("vocabulary has no `{token}` token")))
        };
        let (cls, sep, unk, pad) = (require(CLS)?, require(SEP)?, require(UNK)?, require(PAD)?);
        let mask_id = wp.id(MASK);
        wp.cls = cls;
        wp.sep = sep;
        wp.unk = unk;
        wp.pad = pad;
        wp.mask = mask_id;
        Ok(wp)
    }

    /// Token ids for `text`: `[CLS]`, its word pieces, `[SEP]`, at most `max_len` ids in
    /// all (word pieces are dropped from the end; `[SEP]` is kept). A `max_len` below 2 is
    /// taken as 2, so the result is always at least `[CLS] [SEP]` (which is also what an
    /// empty or whitespace-only text gives); `tokenizers` instead ignores such a limit and
    /// does not truncate at all.
    ///
    /// Only as much of `text` as fits is normalized and split, so a long text truncated
    /// to a few hundred tokens costs little more than its first few hundred words.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        // Ids before the final [SEP]: [CLS] and up to `max_len - 2` pieces.
        let limit = max_len.max(2) - 1;
        let mut ids = Vec::with_capacity(limit.min(text.len() + 1) + 1);
        ids.push(self.cls);
        let mut scratch = Scratch::default();
        let mut rest = text;
        while ids.len() < limit {
            match self.find_special(rest) {
                Some((at, len, id)) => {
                    self.encode_plain(&rest[..at], &mut ids, limit, &mut scratch);
                    if ids.len() < limit {
                        ids.push(id);
                    }
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_plain(rest, &mut ids, limit, &mut scratch);
                    break;
                }
            }
        }
        ids.truncate(limit);
        ids.push(self.sep);
        ids
    }

    /// The token with id `id`, if there is one (a token's earlier id, shadowed by a later
    /// duplicate, has none).
    pub fn token(&self, id: u32) -> Option<&str> {
        let token = std::str::from_utf8(self.token_at(id)).ok()?;
        (self.id(token) == Some(id)).then_some(token)
    }

    /// The id of vocabulary entry `token` (whole entries only: `"##ing"`, not `"ing"` for a
    /// continuation), if there is one.
    pub fn id(&self, token: &str) -> Option<u32> {
        let mask = (1usize << (64 - self.shift)) - 1;
        let slots = INDEX_HEADER + 8 * self.count;
        let hash = fx_hash(token.as_bytes());
        let mut slot = (hash >> self.shift) as usize;
        loop {
            let (id, tag) = pair(&self.index, slots, slot)?;
            if id == EMPTY {
                return None;
            }
            if tag == hash as u32 && self.token_at(id) == token.as_bytes() {
                return Some(id);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The number of ids: the vocabulary's line count, one more than the largest id.
    pub fn vocab_size(&self) -> usize {
        self.count
    }

    /// The id of `[CLS]`, which starts every encoding.
    pub fn cls_id(&self) -> u32 {
        self.cls
    }

    /// The id of `[SEP]`, which ends every encoding.
    pub fn sep_id(&self) -> u32 {
        self.sep
    }

    /// The id of `[PAD]`, for callers that pad a batch themselves.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The id of `[UNK]`, given to words that cannot be split into vocabulary entries.
    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    /// The id of `[MASK]`, if the vocabulary has it.
    pub fn mask_id(&self) -> Option<u32> {
        self.mask
    }

    /// The token text of `id`, which is always in range.
    fn token_at(&self, id: u32) -> &[u8] {
        // Past the spans the index holds the slots, not tokens.
        if id as usize >= self.count {
            return b"";
        }
        pair(&self.index, INDEX_HEADER, id as usize)
            .and_then(|(s, e)| self.text.get(s as usize..e as usize))
            .unwrap_or(b"")
    }

    /// The leftmost special token in `text`: its byte offset, byte length and id.
    fn find_special(&self, text: &str) -> Option<(usize, usize, u32)> {
        let specials = [
            (CLS, Some(self.cls)),
            (SEP, Some(self.sep)),
            (PAD, Some(self.pad)),
            (UNK, Some(self.unk)),
            (MASK, self.mask),
        ];
        for (at, _) in text.match_indices('[') {
            let tail = &text[at..];
            let found = specials
                .iter()
                .filter_map(|&(token, id)| Some((token, id?)))
                .filter(|(token, _)| tail.starts_with(token))
                .max_by_key(|(token, _)| token.len());
            if let Some((token, id)) = found {
                return Some((at, token.len(), id));
            }
        }
        None
    }

    /// Normalizes, pre-tokenizes and splits `text` (which holds no special token), pushing
    /// ids onto `ids` until it has `limit` of them.
    ///
    /// The text is normalized one whitespace-separated chunk at a time, so that a long text
    /// costs only as much as the part that fits: cleaning turns exactly the characters
    /// [`becomes_space`] accepts into spaces, and NFD, accent stripping and lowercasing never
    /// act across a space (a starter), so the chunks normalize as the whole would.
    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>, limit: usize, scratch: &mut Scratch) {
        let mut normalized = std::mem::take(&mut scratch.normalized);
        for chunk in text.split(becomes_space).filter(|c| !c.is_empty()) {
            if ids.len() >= limit {
                break;
            }
            normalize(chunk, &mut scratch.cleaned, &mut normalized);
            for word in normalized
                .split(char::is_whitespace)
                .flat_map(split_punctuation)
            {
                if ids.len() >= limit {
                    break;
                }
                self.push_word(word, ids, scratch);
            }
        }
        scratch.normalized = normalized;
    }

    /// Pushes the word pieces of `word` (non-empty, no whitespace), or one `[UNK]`.
    fn push_word(&self, word: &str, ids: &mut Vec<u32>, scratch: &mut Scratch) {
        if word.char_indices().nth(MAX_INPUT_CHARS_PER_WORD).is_some() {
            ids.push(self.unk);
            return;
        }
        let bounds = &mut scratch.bounds;
        bounds.clear();
        bounds.extend(word.char_indices().map(|(i, _)| i));
        bounds.push(word.len());
        let pieces_start = ids.len();
        let key = &mut scratch.key;
        let mut start = 0; // index into `bounds`
        while start + 1 < bounds.len() {
            let prefix = if start > 0 { CONTINUATION_PREFIX } else { "" };
            let mut found = None;
            // Longest first; candidates longer than any token cannot match.
            let mut end = bounds.len() - 1;
            while end > start {
                let piece = &word[bounds[start]..bounds[end]];
                if prefix.len() + piece.len() <= self.max_token_bytes {
                    key.clear();
                    key.push_str(prefix);
                    key.push_str(piece);
                    if let Some(id) = self.id(key) {
                        found = Some(id);
                        break;
                    }
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(pieces_start);
                    ids.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// Buffers reused across the words and segments of one [`WordPiece::encode`].
#[derive(Default)]
struct Scratch {
    cleaned: String,
    normalized: String,
    key: String,
    bounds: Vec<usize>,
}

/// `BertNormalizer` (clean text, CJK spacing, NFD minus Mn, per-char lowercase) of `text`
/// into `out`, using `cleaned` as the intermediate buffer.
fn normalize(text: &str, cleaned: &mut String, out: &mut String) {
    cleaned.clear();
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        let c = if is_whitespace(c) { ' ' } else { c };
        if is_chinese_char(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    out.clear();
    if cleaned.is_ascii() {
        // NFD, Mn and lowercasing are trivial on ASCII.
        out.push_str(cleaned);
        out.make_ascii_lowercase();
        return;
    }
    for c in cleaned.nfd().filter(|c| !c.is_mark_nonspacing()) {
        out.extend(c.to_lowercase());
    }
}

/// `BertPreTokenizer`'s punctuation split of a whitespace-free `word`: runs of
/// non-punctuation, and each punctuation character alone.
fn split_punctuation(word: &str) -> impl Iterator<Item = &str> {
    let mut rest = word;
    std::iter::from_fn(move || {
        let mut chars = rest.char_indices();
        let (_, first) = chars.next()?;
        let len = if is_bert_punctuation(first) {
            first.len_utf8()
        } else {
            chars
                .find(|&(_, c)| is_bert_punctuation(c))
                .map_or(rest.len(), |(i, _)| i)
        };
        let (piece, tail) = rest.split_at(len);
        rest = tail;
        Some(piece)
    })
}

/// Whether text cleaning turns `c` into a space: whitespace that is not removed first as
/// a control character.
fn becomes_space(c: char) -> bool {
    is_whitespace(c) && !is_control(c)
}

/// HF's `is_whitespace`: `\t`, `\n`, `\r` or Unicode `White_Space`.
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// HF's `is_control`: general category C* (Cc, Cf, Cn, Co, Cs) except `\t`, `\n`, `\r`.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// HF's `is_bert_punc`: ASCII punctuation or general category P*.
fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// HF's `is_chinese_char`: the CJK ideograph blocks BERT spaces out.
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// FxHash (rustc's hasher) over `bytes`, eight at a time, seeded with the length: with
/// `mix(h, w) = (h.rotate_left(5) ^ w) · 0x517cc1b727220a95` (wrapping), `h = mix(0, len)`,
/// then `h = mix(h, w)` for each little-endian 8-byte word of `bytes`, the last one
/// zero-padded. The lookup table's hash, and the digest of a vocabulary index
/// ([`WordPiece::from_vocab_and_index`]), which other tools compute the same way.
pub fn fx_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut h = mix(0, bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(w));
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        h = mix(h, u64::from_le_bytes(w));
    }
    h
}

#[cfg(test)]
mod tests {
    //! Hand-computed cases over a small vocabulary. They touch no WIT import, so they run
    //! natively (`cargo test -p tensorlet-sdk --target x86_64-unknown-linux-gnu`).

    #![allow(clippy::unwrap_used)]

    use super::*;

    const VOCAB: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n,\n!\nun\n##aff\n##able\n\
                         中\n国\na\n##a\n[\n]\nmask\nσασ\ncafe\n.\n'\ns\nnaive\n";
    const PAD_ID: u32 = 0;
    const UNK_ID: u32 = 1;
    const CLS_ID: u32 = 2;
    const SEP_ID: u32 = 3;
    const MASK_ID: u32 = 4;

    fn tokenizer() -> WordPiece {
        WordPiece::from_vocab(VOCAB.as_bytes()).unwrap()
    }

    /// The tokens of `text` (between `[CLS]` and `[SEP]`, which are checked).
    fn tokens(text: &str) -> Vec<String> {
        let wp = tokenizer();
        let ids = wp.encode(text, 512);
        assert_eq!(ids.first(), Some(&CLS_ID), "{text:?}: {ids:?}");
        assert_eq!(ids.last(), Some(&SEP_ID), "{text:?}: {ids:?}");
        ids[1..ids.len() - 1]
            .iter()
            .map(|&id| wp.token(id).unwrap().to_owned())
            .collect()
    }

    /// FxHash by hand: `mix(h, w) = (h.rotate_left(5) ^ w) · K`, seeded with the length.
    #[test]
    fn fx_hash_is_the_documented_mix() {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        assert_eq!(fx_hash(b""), 0);
        // "ab": mix(0, 2) = 2K; then the word 0x6261 (zero-padded).
        let h = 2u64.wrapping_mul(K);
        assert_eq!(fx_hash(b"ab"), (h.rotate_left(5) ^ 0x6261).wrapping_mul(K));
        // Nine bytes: one whole word, then 0x39 ("9") padded.
        let h = 9u64.wrapping_mul(K);
        let h = (h.rotate_left(5) ^ u64::from_le_bytes(*b"12345678")).wrapping_mul(K);
        assert_eq!(
            fx_hash(b"123456789"),
            (h.rotate_left(5) ^ 0x39).wrapping_mul(K)
        );
    }

    #[test]
    fn an_index_gives_the_same_tokenizer() {
        let built = tokenizer();
        let index = built.index();
        // Header: magic, version 1, 25 tokens, 2^6 slots (twice the tokens, rounded up to a
        // power of two), digest.
        assert_eq!(&index[..4], b"WPIX");
        assert_eq!(index[4..8], 1u32.to_le_bytes());
        assert_eq!(index[8..12], 25u32.to_le_bytes());
        assert_eq!(index[12..16], 6u32.to_le_bytes());
        assert_eq!(index[16..24], fx_hash(VOCAB.as_bytes()).to_le_bytes());
        assert_eq!(index.len(), 24 + 8 * (25 + 64));
        let indexed =
            WordPiece::from_vocab_and_index(VOCAB.as_bytes().to_vec(), index.clone()).unwrap();
        for id in 0..built.vocab_size() as u32 {
            assert_eq!(indexed.token(id), built.token(id), "id {id}");
        }
        for text in [
            "Hello, world!",
            "unaffable naïve café",
            "中国 [MASK] σασ",
            "zzz",
        ] {
            assert_eq!(indexed.encode(text, 16), built.encode(text, 16), "{text:?}");
        }
        assert_eq!(indexed.id("##able"), Some(11));
        assert_eq!(indexed.id("able"), None);
    }

    #[test]
    fn a_bad_index_is_refused_by_name() {
        let index = tokenizer().index();
        let refused = |vocab: &str, index: &[u8]| {
            let e = WordPiece::from_vocab_and_index(vocab.as_bytes().to_vec(), index.to_vec())
                .unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
            e.message().to_owned()
        };
        // Another vocabulary than the one it was made for.
        let edited = VOCAB.replace("hello", "howdy");
        assert!(refused(&edited, &index).contains("another vocab.txt"));
        // Truncated, wrong magic, wrong version.
        assert!(refused(VOCAB, &index[..index.len() - 8]).contains("bytes"));
        assert!(refused(VOCAB, &index[..10]).contains("WPIX"));
        let mut other = index.clone();
        other[0] = b'X';
        assert!(refused(VOCAB, &other).contains("WPIX"));
        let mut other = index.clone();
        other[4] = 2;
        assert!(refused(VOCAB, &other).contains("version"));
        // Bits out of range; every slot taken (an unknown token would probe forever).
        let mut other = index.clone();
        other[12..16].copy_from_slice(&40u32.to_le_bytes());
        assert!(refused(VOCAB, &other).contains("bits"));
        let mut full = index[..24 + 8 * 25].to_vec();
        full[12..16].copy_from_slice(&4u32.to_le_bytes());
        full[8..12].copy_from_slice(&25u32.to_le_bytes());
        full.extend(
            (0..16u32)
                .flat_map(|i| [i.to_le_bytes(), 0u32.to_le_bytes()])
                .flatten(),
        );
        assert!(refused(VOCAB, &full).contains("no free slot"));
        // Garbage of the right length never panics: lookups compare the token text.
        let mut noise = index.clone();
        for (i, b) in noise[24..].iter_mut().enumerate() {
            *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        if let Ok(wp) = WordPiece::from_vocab_and_index(VOCAB.as_bytes().to_vec(), noise) {
            let _ = wp.encode("hello world", 16);
        }
    }

    #[test]
    fn special_ids_and_lookup() {
        let wp = tokenizer();
        assert_eq!(
            (
                wp.pad_id(),
                wp.unk_id(),
                wp.cls_id(),
                wp.sep_id(),
                wp.mask_id()
            ),
            (PAD_ID, UNK_ID, CLS_ID, SEP_ID, Some(MASK_ID))
        );
        assert_eq!(wp.vocab_size(), 25);
        for (id, token) in VOCAB.lines().enumerate() {
            assert_eq!(wp.id(token), Some(id as u32), "{token}");
            assert_eq!(wp.token(id as u32), Some(token));
        }
        assert_eq!(wp.id("aff"), None);
        assert_eq!(wp.id(""), None);
        assert_eq!(wp.token(25), None);
        assert_eq!(wp.token(u32::MAX), None);
    }

    #[test]
    fn accents_are_stripped_and_text_lowercased() {
        assert_eq!(tokens("Héllo WORLD"), ["hello", "world"]);
        assert_eq!(tokens("CAFÉ naïve"), ["cafe", "naive"]);
        // Combining marks (Mn) go too; the decomposed form gives the same tokens.
        assert_eq!(tokens("he\u{301}llo\u{308}"), ["hello"]);
        // Each character is lowercased alone: the final sigma is σ, not ς.
        assert_eq!(tokens("ΣΑΣ"), ["σασ"]);
    }

    #[test]
    fn cjk_ideographs_are_split_but_kana_and_hangul_are_not() {
        assert_eq!(tokens("中国"), ["中", "国"]);
        assert_eq!(tokens("hello中world"), ["hello", "中", "world"]);
        // Hiragana and Hangul are not spaced out: the whole run is one unknown word.
        assert_eq!(tokens("ひらがな"), ["[UNK]"]);
        assert_eq!(tokens("한국"), ["[UNK]"]);
    }

    #[test]
    fn punctuation_is_isolated() {
        assert_eq!(tokens("hello,world!!"), ["hello", ",", "world", "!", "!"]);
        assert_eq!(tokens("a.s'"), ["a", ".", "s", "'"]);
        // Non-ASCII punctuation (general category P*) splits too, and is unknown here.
        assert_eq!(tokens("hello¿world"), ["hello", "[UNK]", "world"]);
        // ASCII symbols that are not Unicode punctuation still count, as in BERT.
        assert_eq!(tokens("a$a"), ["a", "[UNK]", "a"]);
    }

    #[test]
    fn word_pieces_continue_with_the_prefix() {
        assert_eq!(tokens("unaffable"), ["un", "##aff", "##able"]);
        assert_eq!(tokens("aaa"), ["a", "##a", "##a"]);
        // Longest match first: "un" then "##aff"..., never a shorter piece.
        assert_eq!(
            tokens("UNAFFABLE hello"),
            ["un", "##aff", "##able", "hello"]
        );
    }

    #[test]
    fn unknown_words_become_one_unk() {
        assert_eq!(tokens("xyz"), ["[UNK]"]);
        // A word that cannot be split completely is one [UNK], not partial pieces.
        assert_eq!(tokens("unaffablex hello"), ["[UNK]", "hello"]);
        assert_eq!(tokens("aab"), ["[UNK]"]);
        // 100 characters are split; 101 are one [UNK] (characters, not bytes).
        let hundred = "a".repeat(MAX_INPUT_CHARS_PER_WORD);
        assert_eq!(tokens(&hundred).len(), 100);
        assert_eq!(tokens(&format!("{hundred}a")), ["[UNK]"]);
        assert_eq!(tokens(&"á".repeat(100)).len(), 100);
        assert_eq!(tokens(&"á".repeat(101)), ["[UNK]"]);
    }

    #[test]
    fn control_characters_are_removed_and_whitespace_splits() {
        assert_eq!(tokens("hel\u{0}lo"), ["hello"]);
        assert_eq!(tokens("hel\u{7}lo"), ["hello"]);
        assert_eq!(tokens("hel\u{200b}lo\u{feff}"), ["hello"]);
        assert_eq!(tokens("hel\u{ad}lo\u{fffd}"), ["hello"]);
        assert_eq!(
            tokens("hello\tworld\nhello\r\nworld"),
            ["hello", "world", "hello", "world"]
        );
        assert_eq!(tokens("hello\u{3000}world\u{a0}"), ["hello", "world"]);
        // U+000B is a control character before it is whitespace: removed, not a space.
        assert_eq!(tokens("hello\u{b}world"), ["[UNK]"]);
    }

    #[test]
    fn empty_and_whitespace_only_text_is_cls_sep() {
        let wp = tokenizer();
        assert_eq!(wp.encode("", 256), [CLS_ID, SEP_ID]);
        assert_eq!(wp.encode(" \t\n\r\u{3000} ", 256), [CLS_ID, SEP_ID]);
        assert_eq!(wp.encode("\u{0}\u{200b}", 256), [CLS_ID, SEP_ID]);
    }

    #[test]
    fn special_tokens_in_the_text_are_kept() {
        let wp = tokenizer();
        assert_eq!(
            wp.encode("hello [MASK] world", 256),
            [CLS_ID, 5, MASK_ID, 6, SEP_ID]
        );
        assert_eq!(wp.encode("a[SEP]a", 256), [CLS_ID, 14, SEP_ID, 14, SEP_ID]);
        // Case-sensitive and exact: "[mask]" is ordinary text.
        assert_eq!(tokens("[mask]"), ["[", "mask", "]"]);
        assert_eq!(tokens("[[MASK]]"), ["[", "[MASK]", "]"]);
    }

    #[test]
    fn truncation_keeps_cls_and_sep() {
        let wp = tokenizer();
        assert_eq!(wp.encode("hello world hello", 4), [CLS_ID, 5, 6, SEP_ID]);
        assert_eq!(wp.encode("hello world hello", 5), [CLS_ID, 5, 6, 5, SEP_ID]);
        assert_eq!(wp.encode("hello world hello", 6), [CLS_ID, 5, 6, 5, SEP_ID]);
        // Truncation can cut a word's pieces.
        assert_eq!(wp.encode("unaffable", 4), [CLS_ID, 9, 10, SEP_ID]);
        assert_eq!(
            wp.encode("hello [MASK] world", 4),
            [CLS_ID, 5, MASK_ID, SEP_ID]
        );
        for max_len in 0..=2 {
            assert_eq!(wp.encode("hello world", max_len), [CLS_ID, SEP_ID]);
        }
        let long = "hello ".repeat(5_000);
        let ids = wp.encode(&long, 256);
        assert_eq!(ids.len(), 256);
        assert_eq!((ids[0], ids[1], ids[254], ids[255]), (CLS_ID, 5, 5, SEP_ID));
    }

    #[test]
    fn vocabulary_lines() {
        // `\r\n`, trailing whitespace and no final newline.
        let wp = WordPiece::from_vocab(b"[PAD]\r\n[UNK] \r\n[CLS]\n[SEP]\nhello").unwrap();
        assert_eq!(wp.vocab_size(), 5);
        assert_eq!(
            (wp.unk_id(), wp.id("hello"), wp.mask_id()),
            (1, Some(4), None)
        );
        assert_eq!(wp.encode("Hello", 8), [2, 4, 3]);
        // A final newline does not add an id, an empty line does.
        assert_eq!(
            WordPiece::from_vocab(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
                .unwrap()
                .vocab_size(),
            4
        );
        assert_eq!(
            WordPiece::from_vocab(b"[PAD]\n\n[UNK]\n[CLS]\n[SEP]")
                .unwrap()
                .vocab_size(),
            5
        );
        // A duplicate token takes its later id; the earlier id has no token.
        let wp = WordPiece::from_vocab(b"[PAD]\nhello\n[UNK]\n[CLS]\n[SEP]\nhello\n").unwrap();
        assert_eq!(wp.id("hello"), Some(5));
        assert_eq!((wp.token(1), wp.token(5)), (None, Some("hello")));
        assert_eq!(wp.encode("hello", 8), [3, 5, 4]);
    }

    #[test]
    fn bad_vocabularies_are_invalid_input() {
        let message = |bytes: &[u8]| match WordPiece::from_vocab(bytes) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected invalid-input, got {other:?}"),
        };
        assert!(message(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\n").contains("UTF-8"));
        assert!(message(b"").contains("empty"));
        assert!(message(b"[PAD]\n[UNK]\n[CLS]\nhello\n").contains("[SEP]"));
        assert!(message(b"[PAD]\n[CLS]\n[SEP]\n").contains("[UNK]"));
        assert!(message(b"[UNK]\n[CLS]\n[SEP]\n").contains("[PAD]"));
        assert!(message(b"[PAD]\n[UNK]\n[SEP]\n").contains("[CLS]"));
    }

    #[test]
    fn any_text_encodes_without_panicking() {
        let wp = tokenizer();
        let samples = [
            "\u{10ffff}\u{e000}\u{1f468}\u{200d}\u{1f469}",
            "[",
            "[MASK",
            "]]][[[",
            "\u{301}\u{301}",
            "ǅ İ ẞ ﬁ",
        ];
        for s in samples {
            for max_len in [0, 1, 2, 3, 256] {
                let ids = wp.encode(s, max_len);
                assert!(ids.len() >= 2 && ids.len() <= max_len.max(2), "{s:?}");
            }
        }
    }
}
