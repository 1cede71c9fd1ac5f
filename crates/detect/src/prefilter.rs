//! The keyword prefilter: finds every occurrence of every rule keyword, ASCII
//! case-insensitively, in one pass.
//!
//! Why not Aho-Corasick or Teddy: with a few hundred case-insensitive keywords no SIMD literal
//! searcher applies (Teddy's buckets saturate past ~64 literals) and an automaton walks every
//! byte through a table too big for L1. Here each position costs a shift, one multiply, a
//! shift and one byte load: the hash of its case-folded first three bytes indexes a 64 KiB
//! table of keyword trigrams (keywords are at least three bytes). Positions are hashed 16 at a
//! time from three 8-byte loads with no dependency from one position to the next, and a block
//! of 16 with no entry set (the common case) costs one branch. Only the rare positions whose
//! entry is set are checked exactly: their folded first four bytes select a short bucket of
//! candidate keywords, each compared in full.

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::{Anchored, Input, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind, Repetition};

/// Case folding used for hashing: sets bit 5 of every byte, which maps `A-Z` to `a-z` (and
/// merges a few punctuation pairs, which only adds candidates; the exact check is
/// `eq_ignore_ascii_case`).
const FOLD: u32 = 0x2020_2020;
const FOLD64: u64 = 0x2020_2020_2020_2020;
/// Multiplier of the trigram hash (Fibonacci hashing).
const MUL: u32 = 0x9E37_79B1;
/// Entries in the trigram table (the hash is 16 bits).
const TABLE_LEN: usize = 1 << 16;
/// Verification buckets: the top bits of the 16-bit hash.
const BUCKET_SHIFT: u32 = 6;
const BUCKETS: usize = TABLE_LEN >> BUCKET_SHIFT;
/// Positions hashed per step of the main loop, and the bytes a step reads.
const BLOCK: usize = 16;
const BLOCK_READ: usize = 20;
/// Stands in for bytes past the end of the input: folds to a non-ASCII byte, which no keyword
/// contains.
const PAST_END: u8 = 0x80;

/// Shortest keyword the prefilter accepts.
pub(crate) const MIN_KEYWORD_LEN: usize = 3;

/// The table index of the trigram in the low three bytes of `word` (folded). The fourth byte
/// is shifted out, so callers can pass any four bytes starting at the position.
#[inline(always)]
fn hash(word: u32) -> usize {
    ((word << 8).wrapping_mul(MUL) >> 16) as usize
}

/// A keyword occurrence: keyword index and start offset (the end is start + keyword length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) keyword: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// One keyword in a verification bucket: its folded first four bytes (three for 3-byte
/// keywords, under `mask`) and its index.
#[derive(Debug, Clone, Copy)]
struct Entry {
    mask: u32,
    folded: u32,
    keyword: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct KeywordIndex {
    keywords: Vec<Vec<u8>>,
    /// 1 where some keyword's folded first three bytes hash, else 0.
    table: Box<[u8; TABLE_LEN]>,
    /// `entries[starts[b]..starts[b + 1]]` are the keywords whose trigram hash has top bits `b`.
    starts: Box<[u32; BUCKETS + 1]>,
    entries: Vec<Entry>,
}

impl KeywordIndex {
    /// Builds the index. Keywords shorter than [`MIN_KEYWORD_LEN`] must be rejected earlier
    /// (they are ignored here).
    pub(crate) fn new(keywords: Vec<Vec<u8>>) -> Self {
        let mut table = Box::new([0u8; TABLE_LEN]);
        let mut keyed: Vec<(usize, Entry)> = Vec::new();
        for (i, k) in keywords.iter().enumerate() {
            let (mask, folded) = match k.as_slice() {
                [a, b, c] => (0x00FF_FFFF, u32::from_le_bytes([*a, *b, *c, 0]) | FOLD),
                [a, b, c, d, ..] => (u32::MAX, u32::from_le_bytes([*a, *b, *c, *d]) | FOLD),
                _ => continue,
            };
            let h = hash(folded);
            table[h] = 1;
            keyed.push((
                h >> BUCKET_SHIFT,
                Entry {
                    mask,
                    folded: folded & mask,
                    keyword: i,
                },
            ));
        }
        keyed.sort_by_key(|(b, e)| (*b, e.keyword));
        let mut starts = Box::new([0u32; BUCKETS + 1]);
        for (b, _) in &keyed {
            starts[b + 1] += 1;
        }
        for b in 0..BUCKETS {
            starts[b + 1] += starts[b];
        }
        Self {
            keywords,
            table,
            starts,
            entries: keyed.into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// Calls `f` for every keyword occurrence in `hay`, in order of start offset (for one
    /// start offset, in keyword order).
    pub(crate) fn for_each_hit(&self, hay: &[u8], mut f: impl FnMut(Hit)) {
        let table = &*self.table;
        let mut i = 0usize;
        while let Some(block) = hay.get(i..i + BLOCK_READ) {
            let word = |at: usize| -> u64 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&block[at..at + 8]);
                u64::from_le_bytes(b)
            };
            // Three loads cover the trigrams at the 16 offsets.
            let (a, b, c) = (word(0), word(6), word(12));
            let (af, bf, cf) = (a | FOLD64, b | FOLD64, c | FOLD64);
            let mut any = 0u8;
            for k in 0..BLOCK {
                any |= table[hash(block_word(af, bf, cf, k))];
            }
            if any != 0 {
                self.verify_block(hay, i, [af, bf, cf], &mut f);
            }
            i += BLOCK;
        }
        // The last positions, one at a time, with missing bytes past the end.
        for i in i..hay.len() {
            if table[hash(first_four(hay, i) | FOLD)] != 0 {
                self.verify(hay, i, &mut f);
            }
        }
    }

    /// The keywords, by index.
    #[cfg(test)]
    pub(crate) fn keywords(&self) -> &[Vec<u8>] {
        &self.keywords
    }

    /// Reports the keywords that start in the block of [`BLOCK`] positions at `i` (out of line,
    /// so the hashes of the main loop stay in registers).
    #[inline(never)]
    fn verify_block(&self, hay: &[u8], i: usize, [a, b, c]: [u64; 3], f: &mut impl FnMut(Hit)) {
        // Table entries are 0 or 1.
        let mut mask = 0u32;
        for k in 0..BLOCK {
            mask |= u32::from(self.table[hash(block_word(a, b, c, k))]) << k;
        }
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.verify(hay, i + k, f);
        }
    }

    /// Reports the keywords that start at `i`.
    #[inline(always)]
    fn verify(&self, hay: &[u8], i: usize, f: &mut impl FnMut(Hit)) {
        let folded = first_four(hay, i) | FOLD;
        let bucket = hash(folded) >> BUCKET_SHIFT;
        let (Some(&from), Some(&to)) = (self.starts.get(bucket), self.starts.get(bucket + 1))
        else {
            return;
        };
        let Some(entries) = self.entries.get(from as usize..to as usize) else {
            return;
        };
        for e in entries {
            if folded & e.mask != e.folded {
                continue;
            }
            let Some(kw) = self.keywords.get(e.keyword) else {
                continue;
            };
            let end = i + kw.len();
            if hay.get(i..end).is_some_and(|s| s.eq_ignore_ascii_case(kw)) {
                f(Hit {
                    keyword: e.keyword,
                    start: i,
                    end,
                });
            }
        }
    }
}

/// A cheap necessary condition for a rule's regex to match from a position: an anchored DFA of
/// a relaxed copy of the pattern, walked byte by byte until it dies or matches (usually within
/// a few bytes of the keyword, where the pattern wants an assignment, a separator or a
/// value-shaped run). The relaxed pattern drops look-around assertions and captures and turns
/// long counted repetitions `X{n,m}` into `X{min(n,k),}`, so it matches a superset of what the
/// rule matches while its DFA stays small: when it cannot match within the search range,
/// neither can the rule, and the regex is not run.
#[derive(Debug, Clone)]
pub(crate) struct Precheck {
    dfa: dense::DFA<Vec<u32>>,
}

/// Counted repetitions with a larger maximum are relaxed, keeping at most this minimum (tried
/// in order until the DFA fits).
const RELAX_STEPS: [u32; 3] = [16, 4, 1];
/// Largest DFA kept per rule.
const PRECHECK_DFA_LIMIT: usize = 64 * 1024;

impl Precheck {
    /// The precheck for `pattern`, or `None` when even the most relaxed DFA is too large (the
    /// rule then runs its regex at every keyword hit).
    pub(crate) fn new(pattern: &str) -> Option<Self> {
        let hir = parse_pattern(pattern).ok()?;
        RELAX_STEPS.iter().find_map(|&k| {
            let relaxed = relax(&hir, k);
            let nfa = thompson::Compiler::new()
                .configure(
                    thompson::Config::new()
                        .utf8(false)
                        .which_captures(thompson::WhichCaptures::None),
                )
                .build_from_hir(&relaxed)
                .ok()?;
            let dfa = dense::Builder::new()
                .configure(
                    dense::Config::new()
                        .start_kind(StartKind::Anchored)
                        .match_kind(MatchKind::All)
                        .accelerate(false)
                        .minimize(false)
                        .dfa_size_limit(Some(PRECHECK_DFA_LIMIT))
                        .determinize_size_limit(Some(4 * PRECHECK_DFA_LIMIT)),
                )
                .build_from_nfa(&nfa)
                .ok()?;
            Some(Self { dfa })
        })
    }

    /// False only if no match of the rule can start at `start` and end by `end`.
    pub(crate) fn may_match(&self, hay: &[u8], start: usize, end: usize) -> bool {
        let Some(bytes) = hay.get(start..end) else {
            return true;
        };
        let input = Input::new(hay).range(start..end).anchored(Anchored::Yes);
        let Ok(mut sid) = self.dfa.start_state_forward(&input) else {
            return true;
        };
        for &b in bytes {
            sid = self.dfa.next_state(sid, b);
            if self.dfa.is_special_state(sid) {
                // Dead: no match. Match (or anything unexpected): let the regex decide.
                return !self.dfa.is_dead_state(sid);
            }
        }
        self.dfa.is_match_state(self.dfa.next_eoi_state(sid))
    }
}

/// Parses a rule pattern the way rules are compiled: over bytes, with Unicode off (`\w`, `\s`,
/// `\d`, `\b` and `(?i)` are ASCII-only). `Err` says what is wrong with the pattern.
pub(crate) fn parse_pattern(pattern: &str) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new()
        .utf8(false)
        .unicode(false)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())
}

/// A pattern matching everything `hir` matches: look-around assertions become empty,
/// captures disappear, and repetitions with a maximum above `keep` become
/// `X{min(n, keep),}`.
fn relax(hir: &Hir, keep: u32) -> Hir {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Hir::empty(),
        HirKind::Literal(_) | HirKind::Class(_) => hir.clone(),
        HirKind::Capture(cap) => relax(&cap.sub, keep),
        HirKind::Repetition(rep) => {
            let (min, max) = match rep.max {
                Some(max) if max <= keep => (rep.min, Some(max)),
                _ => (rep.min.min(keep), None),
            };
            Hir::repetition(Repetition {
                min,
                max,
                greedy: true,
                sub: Box::new(relax(&rep.sub, keep)),
            })
        }
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(|s| relax(s, keep)).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.iter().map(|s| relax(s, keep)).collect())
        }
    }
}

/// For each of `keywords` (lowercase), the offsets back from an occurrence of it at which a
/// match of `hir` may start: every match begins with one of a few enumerable strings, each
/// containing a keyword at a known offset. `None` when the pattern's beginnings cannot be
/// enumerated or one of them contains no keyword (the rule is then searched in a window
/// around each hit). When every offset is 0, every match starts with a keyword
/// ([`starts_at_keywords`]); otherwise (`api[_.-]?key`) the rule is tried at those offsets.
pub(crate) fn start_offsets(hir: &Hir, keywords: &[Vec<u8>]) -> Option<Vec<Vec<usize>>> {
    let mut offsets = vec![Vec::new(); keywords.len()];
    for p in prefixes(hir)? {
        let (kw, at) = (0..p.text.len()).find_map(|at| {
            let kw = keywords
                .iter()
                .position(|k| !k.is_empty() && p.text[at..].starts_with(k))?;
            Some((kw, at))
        })?;
        let list = offsets.get_mut(kw)?;
        if !list.contains(&at) {
            list.push(at);
        }
    }
    for list in &mut offsets {
        list.sort_unstable();
    }
    Some(offsets)
}

/// Whether [`start_offsets`] says that every match starts with a keyword, so the rule can run
/// anchored at each keyword hit.
pub(crate) fn starts_at_keywords(offsets: Option<&[Vec<usize>]>) -> bool {
    offsets.is_some_and(|o| o.iter().flatten().all(|&at| at == 0))
}

/// Leading text of a pattern, lowercased: `exact` when the text is everything the
/// sub-pattern can match, so that what follows may be appended.
#[derive(Clone)]
struct Prefix {
    text: Vec<u8>,
    exact: bool,
}

const PREFIX_LIMIT: usize = 64;
const PREFIX_MAX_LEN: usize = 40;

/// Every match of `hir` begins with the text of one of the returned prefixes (compared ASCII
/// case-insensitively); `None` when there are too many to enumerate.
fn prefixes(hir: &Hir) -> Option<Vec<Prefix>> {
    let exact = |text: Vec<u8>| Prefix { text, exact: true };
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(vec![exact(Vec::new())]),
        HirKind::Literal(lit) => Some(vec![exact(lit.0.to_ascii_lowercase())]),
        HirKind::Class(class) => Some(
            class_members(class)?
                .into_iter()
                .map(|b| exact(vec![b]))
                .collect(),
        ),
        HirKind::Capture(cap) => prefixes(&cap.sub),
        HirKind::Repetition(rep) => {
            let mut p = prefixes(&rep.sub)?;
            let once = rep.max == Some(1);
            for x in &mut p {
                x.exact &= once;
            }
            if rep.min == 0 {
                // Optional: absent (nothing known after it unless it is `?`), or present.
                p.push(Prefix {
                    text: Vec::new(),
                    exact: once,
                });
            }
            (p.len() <= PREFIX_LIMIT).then_some(p)
        }
        HirKind::Alternation(subs) => {
            let mut all = Vec::new();
            for s in subs {
                all.extend(prefixes(s)?);
                if all.len() > PREFIX_LIMIT {
                    return None;
                }
            }
            Some(all)
        }
        HirKind::Concat(subs) => {
            let mut acc = vec![exact(Vec::new())];
            for s in subs {
                if acc
                    .iter()
                    .all(|p| !p.exact || p.text.len() >= PREFIX_MAX_LEN)
                {
                    break;
                }
                // An unknown part (a large class): what came before is still a prefix.
                let Some(next) = prefixes(s) else {
                    for p in &mut acc {
                        p.exact = false;
                    }
                    break;
                };
                let mut grown = Vec::new();
                for p in &acc {
                    if !p.exact || p.text.len() >= PREFIX_MAX_LEN {
                        grown.push(Prefix {
                            text: p.text.clone(),
                            exact: false,
                        });
                        continue;
                    }
                    for n in &next {
                        let mut text = p.text.clone();
                        text.extend_from_slice(&n.text);
                        grown.push(Prefix {
                            text,
                            exact: n.exact,
                        });
                    }
                    if grown.len() > PREFIX_LIMIT {
                        return None;
                    }
                }
                acc = grown;
            }
            Some(acc)
        }
    }
}

/// The lowercased members of a small class (`[Pp]`, `[_.-]`), or `None` for a large one.
fn class_members(class: &Class) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut push = |c: u32| -> Option<()> {
        let b = u8::try_from(c).ok()?.to_ascii_lowercase();
        if !out.contains(&b) {
            out.push(b);
        }
        (out.len() <= 4).then_some(())
    };
    match class {
        Class::Unicode(u) => {
            for r in u.ranges() {
                let (s, e) = (u32::from(r.start()), u32::from(r.end()));
                if e.saturating_sub(s) > 8 {
                    return None;
                }
                for c in s..=e {
                    push(c)?;
                }
            }
        }
        Class::Bytes(b) => {
            for r in b.ranges() {
                if r.end().saturating_sub(r.start()) > 8 {
                    return None;
                }
                for c in r.start()..=r.end() {
                    push(u32::from(c))?;
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The (at least three) bytes at offset `k` of a block loaded as three words at offsets 0, 6
/// and 12.
#[inline(always)]
fn block_word(a: u64, b: u64, c: u64, k: usize) -> u32 {
    match k {
        0..6 => (a >> (8 * k)) as u32,
        6..12 => (b >> (8 * (k - 6))) as u32,
        _ => (c >> (8 * (k - 12))) as u32,
    }
}

/// The four bytes at `i`, with [`PAST_END`] for those past the end of `hay`.
#[inline(always)]
fn first_four(hay: &[u8], i: usize) -> u32 {
    if let Some(&[a, b, c, d]) = hay.get(i..i + 4) {
        return u32::from_le_bytes([a, b, c, d]);
    }
    let mut b = [PAST_END; 4];
    for (slot, byte) in b.iter_mut().zip(hay.get(i..).unwrap_or_default()) {
        *slot = *byte;
    }
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(keywords: &[Vec<u8>], hay: &[u8]) -> Vec<Hit> {
        let mut out = Vec::new();
        for start in 0..hay.len() {
            for (k, kw) in keywords.iter().enumerate() {
                if kw.len() >= MIN_KEYWORD_LEN
                    && hay.len() - start >= kw.len()
                    && hay[start..start + kw.len()].eq_ignore_ascii_case(kw)
                {
                    out.push(Hit {
                        keyword: k,
                        start,
                        end: start + kw.len(),
                    });
                }
            }
        }
        out
    }

    fn hits(index: &KeywordIndex, hay: &[u8]) -> Vec<Hit> {
        let mut out = Vec::new();
        index.for_each_hit(hay, |h| out.push(h));
        out
    }

    #[test]
    fn finds_overlapping_case_insensitive_keywords() {
        let kws: Vec<Vec<u8>> = ["key", "pass", "password", "sk-", "ghp_", "://", "_pat"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let index = KeywordIndex::new(kws.clone());
        let hay = b"PASSWORD=x; api_KEY: https://h sk- ghp_ key \x7fPAT _PAT";
        assert_eq!(hits(&index, hay), naive(&kws, hay));
        assert_eq!(hits(&index, b"key").len(), 1);
        assert_eq!(hits(&index, b"ke").len(), 0);
        let long = [&[b'.'; 40][..], b"Password"].concat();
        assert_eq!(hits(&index, &long), naive(&kws, &long));
    }

    proptest! {
        #[test]
        fn agrees_with_a_naive_search(
            kws in proptest::collection::vec("[a-dA-D_:-]{3,6}", 1..12),
            hay in proptest::collection::vec(proptest::sample::select(b"abcdABCD_:-x\0\xff\x7f\x80".to_vec()), 0..200),
        ) {
            let kws: Vec<Vec<u8>> = kws.into_iter().map(|k| k.to_ascii_lowercase().into_bytes()).collect();
            let index = KeywordIndex::new(kws.clone());
            // Hits come in start order; for one start, in keyword order.
            prop_assert_eq!(hits(&index, &hay), naive(&kws, &hay));
        }
    }
}
