//! The keyword prefilter: finds every occurrence of every rule keyword, ASCII
//! case-insensitively, in one pass.
//!
//! Why not Aho-Corasick or Teddy: with a few hundred case-insensitive keywords no SIMD literal
//! searcher applies (Teddy's buckets saturate past ~64 literals) and an automaton walks every
//! byte through a table too big for L1. Here each position costs a shift, one multiply, a
//! shift and two byte loads: the hash of its case-folded first three bytes indexes a 64 KiB
//! table of keyword trigrams, whose entry is the set of classes of the bytes that follow the
//! trigram in keywords (see [`assign_classes`]), and the class of the position's fourth byte
//! must be in it (`ion_` is a keyword, the `ion(` of every `function(` does not get past).
//! Positions are hashed 8 at a time from two 8-byte loads with no dependency from one position
//! to the next, and a block of 8 with no candidate (the common case) costs one branch. In a
//! block that has one, the positions with a candidate are hashed again and their folded first
//! four bytes select a verification bucket by trigram hash and fourth-byte class; each keyword
//! in the bucket is compared in full, eight bytes at a time. (With blocks of 16, more blocks
//! have a candidate and cost 16 hashes again: more than the extra branches of blocks of 8.)

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
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
/// Verification buckets: the top bits of the 16-bit hash, and the class of the fourth byte
/// (see [`assign_classes`]; a 3-byte keyword is in the buckets of all classes).
const BUCKET_SHIFT: u32 = 6;
const CLASSES: usize = 8;
const BUCKETS: usize = (TABLE_LEN >> BUCKET_SHIFT) * CLASSES;
/// Positions hashed per step of the main loop, and the bytes a step reads (the first four bytes
/// of each position).
const BLOCK: usize = 8;
const BLOCK_READ: usize = BLOCK + 5;
/// Stands in for bytes past the end of the input: folds to a non-ASCII byte, which no keyword
/// contains.
const PAST_END: u8 = 0x80;

/// Table value for a trigram that a 3-byte keyword starts with: any fourth byte will do.
const ANY_CLASS: u8 = 0xFF;

/// The class of the bytes that follow no keyword's first three bytes: no table entry has it
/// (but [`ANY_CLASS`]), so a position whose fourth byte is one of them is no candidate.
const NEVER_CLASS: u8 = CLASSES as u8 - 1;

/// The class (0 to 7) of each byte that may follow a keyword's first three bytes, the same
/// for both cases of a letter. The bytes that follow no keyword trigram are [`NEVER_CLASS`];
/// the others are spread over the remaining classes so that as few as possible share a class
/// with a byte that does not follow the same trigrams (greedily, the bytes that follow the
/// most trigrams first): `api` followed by a space is then rarely a candidate because `api_`
/// and `api-` are keywords.
fn assign_classes(keywords: &[Vec<u8>]) -> [u8; 256] {
    // Per table entry (trigram hash): the folded bytes that follow it in keywords.
    // Entries of a 3-byte keyword take any fourth byte: they do not count.
    let slot = |k: &[u8]| match k {
        [a, b, c, ..] => Some(hash(u32::from_le_bytes([*a, *b, *c, 0]) | FOLD)),
        _ => None,
    };
    let any: Vec<usize> = keywords
        .iter()
        .filter(|k| k.len() == 3)
        .filter_map(|k| slot(k))
        .collect();
    let mut follows: std::collections::BTreeMap<usize, Vec<u8>> = Default::default();
    for k in keywords {
        if let (Some(s), Some(d)) = (slot(k), k.get(3))
            && !any.contains(&s)
        {
            let list = follows.entry(s).or_default();
            if !list.contains(&(d | 0x20)) {
                list.push(d | 0x20);
            }
        }
    }
    let mut bytes: Vec<u8> = follows.values().flatten().copied().collect();
    bytes.sort_unstable();
    bytes.dedup();
    let count = |b: u8| follows.values().filter(|l| l.contains(&b)).count();
    bytes.sort_by_key(|&b| std::cmp::Reverse(count(b)));
    let mut class = [NEVER_CLASS; 256];
    let mut members: Vec<Vec<u8>> = vec![Vec::new(); usize::from(NEVER_CLASS)];
    for &b in &bytes {
        // Pairs (entry, byte) that putting `b` in a class would make candidates wrongly.
        let cost = |m: &Vec<u8>| {
            follows
                .values()
                .map(|l| {
                    let (has_b, wrong) = (l.contains(&b), m.iter().filter(|x| !l.contains(x)));
                    if has_b {
                        wrong.count()
                    } else {
                        m.iter().filter(|x| l.contains(x)).count().min(1)
                    }
                })
                .sum::<usize>()
        };
        let Some((c, _)) = members
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| (cost(m), m.len()))
        else {
            continue;
        };
        if let Some(m) = members.get_mut(c) {
            m.push(b);
        }
        // Lossless: `c` is below NEVER_CLASS.
        class[usize::from(b)] = c as u8;
    }
    // A byte and its folded form are one class (the folded form is what is looked up).
    for b in 0..=255u8 {
        class[usize::from(b)] = class[usize::from(b | 0x20)];
    }
    class
}

/// The verification bucket of a position whose first four bytes, folded, are `folded`: by
/// trigram hash and by the class of the fourth byte.
#[inline(always)]
fn bucket_of(class: &[u8; 256], folded: u32) -> usize {
    ((hash(folded) >> BUCKET_SHIFT) * CLASSES) | usize::from(class[(folded >> 24) as usize])
}

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
/// keywords, under `mask`), its index and length, and where its [`Chunk`]s are.
#[derive(Debug, Clone, Copy)]
struct Entry {
    mask: u32,
    folded: u32,
    keyword: usize,
    len: usize,
    /// `chunks[chunks_at..chunks_at + len.div_ceil(8)]`.
    chunks_at: usize,
}

/// Eight bytes of a keyword, for an exact ASCII case-insensitive comparison with eight bytes
/// of input `h` at once: they match when `(h & keep) | fold == lower`. `lower` holds the
/// keyword's bytes lowercased, `fold` has bit 5 set where the keyword has a letter (the only
/// bytes equal to a lowercase letter with bit 5 set are that letter and its uppercase), and
/// `keep` is `0xFF` for each byte of the keyword (bytes past its end are zero in all three).
#[derive(Debug, Clone, Copy)]
struct Chunk {
    lower: u64,
    fold: u64,
    keep: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct KeywordIndex {
    /// The keywords, for tests that compare with a naive search.
    #[cfg(test)]
    keywords: Vec<Vec<u8>>,
    /// Where some keyword's folded first three bytes hash: the class bits of the fourth
    /// bytes of those keywords ([`ANY_CLASS`] for a 3-byte keyword). 0 elsewhere.
    table: Box<[u8; TABLE_LEN]>,
    /// The class of each byte (see [`assign_classes`]), and `1 << class`.
    class: [u8; 256],
    class_bit: [u8; 256],
    /// `entries[starts[b]..starts[b + 1]]` are the keywords of bucket `b` (see [`bucket_of`]),
    /// in keyword order.
    starts: Box<[u32; BUCKETS + 1]>,
    entries: Vec<Entry>,
    chunks: Vec<Chunk>,
}

impl KeywordIndex {
    /// Builds the index. Keywords shorter than [`MIN_KEYWORD_LEN`] must be rejected earlier
    /// (they are ignored here).
    pub(crate) fn new(keywords: Vec<Vec<u8>>) -> Self {
        let class = assign_classes(&keywords);
        let class_bit = class.map(|c| 1u8 << c);
        let mut table = Box::new([0u8; TABLE_LEN]);
        let mut keyed: Vec<(usize, Entry)> = Vec::new();
        let mut chunks = Vec::new();
        for (i, k) in keywords.iter().enumerate() {
            let (mask, folded) = match k.as_slice() {
                [a, b, c] => (0x00FF_FFFF, u32::from_le_bytes([*a, *b, *c, 0]) | FOLD),
                [a, b, c, d, ..] => (u32::MAX, u32::from_le_bytes([*a, *b, *c, *d]) | FOLD),
                _ => continue,
            };
            let h = hash(folded);
            table[h] |= match k.get(3) {
                Some(&d) => class_bit[usize::from(d)],
                None => ANY_CLASS,
            };
            let chunks_at = chunks.len();
            for part in k.chunks(8) {
                let (mut lower, mut fold, mut keep) = ([0u8; 8], [0u8; 8], [0u8; 8]);
                for (j, &b) in part.iter().enumerate() {
                    lower[j] = b.to_ascii_lowercase();
                    fold[j] = if b.is_ascii_alphabetic() { 0x20 } else { 0 };
                    keep[j] = 0xFF;
                }
                chunks.push(Chunk {
                    lower: u64::from_le_bytes(lower),
                    fold: u64::from_le_bytes(fold),
                    keep: u64::from_le_bytes(keep),
                });
            }
            let entry = Entry {
                mask,
                folded: folded & mask,
                keyword: i,
                len: k.len(),
                chunks_at,
            };
            if k.len() == 3 {
                // Any fourth byte.
                let first = (h >> BUCKET_SHIFT) * CLASSES;
                keyed.extend((first..first + CLASSES).map(|b| (b, entry)));
            } else {
                keyed.push((bucket_of(&class, folded), entry));
            }
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
            class,
            class_bit,
            #[cfg(test)]
            keywords,
            table,
            starts,
            entries: keyed.into_iter().map(|(_, e)| e).collect(),
            chunks,
        }
    }

    /// Calls `f` for every keyword occurrence in `hay`, in order of start offset (for one
    /// start offset, in keyword order).
    pub(crate) fn for_each_hit(&self, hay: &[u8], mut f: impl FnMut(Hit)) {
        let (table, class_bit) = (&*self.table, &self.class_bit);
        let mut i = 0usize;
        while let Some(block) = hay.get(i..i + BLOCK_READ) {
            let word = |at: usize| -> u64 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&block[at..at + 8]);
                u64::from_le_bytes(b)
            };
            // Two loads cover the first four bytes at the 8 offsets.
            let (af, bf) = (word(0) | FOLD64, word(5) | FOLD64);
            let mut any = 0u8;
            for k in 0..BLOCK {
                any |= entry_bits(table, class_bit, block_word(af, bf, k));
            }
            if any != 0 {
                self.verify_block(hay, i, [af, bf], &mut f);
            }
            i += BLOCK;
        }
        // The last positions, one at a time, with missing bytes past the end.
        for i in i..hay.len() {
            let folded = first_four(hay, i) | FOLD;
            if entry_bits(table, &self.class_bit, folded) != 0 {
                self.verify(hay, i, folded, &mut f);
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
    fn verify_block(&self, hay: &[u8], i: usize, [a, b]: [u64; 2], f: &mut impl FnMut(Hit)) {
        // The positions whose trigram has an entry for the class of their fourth byte.
        let mut mask = 0u32;
        for k in 0..BLOCK {
            mask |=
                u32::from(entry_bits(&self.table, &self.class_bit, block_word(a, b, k)) != 0) << k;
        }
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.verify(hay, i + k, block_word(a, b, k), f);
        }
    }

    /// Reports the keywords that start at `i`, whose first four bytes (with [`PAST_END`] past
    /// the end), folded, are `folded`.
    #[inline(always)]
    fn verify(&self, hay: &[u8], i: usize, folded: u32, f: &mut impl FnMut(Hit)) {
        let bucket = bucket_of(&self.class, folded);
        let (Some(&from), Some(&to)) = (self.starts.get(bucket), self.starts.get(bucket + 1))
        else {
            return;
        };
        let Some(entries) = self.entries.get(from as usize..to as usize) else {
            return;
        };
        for e in entries {
            if folded & e.mask == e.folded && self.matches_at(hay, i, e) {
                f(Hit {
                    keyword: e.keyword,
                    start: i,
                    end: i + e.len,
                });
            }
        }
    }

    /// Whether the keyword of `e` occurs at `i` (ASCII case-insensitively).
    #[inline(always)]
    fn matches_at(&self, hay: &[u8], i: usize, e: &Entry) -> bool {
        let words = e.len.div_ceil(8);
        let Some(chunks) = self.chunks.get(e.chunks_at..e.chunks_at + words) else {
            return false;
        };
        if hay.len() >= i + 8 * words {
            // Whole words can be read: compare eight bytes at a time.
            for (j, c) in chunks.iter().enumerate() {
                let at = i + 8 * j;
                let Some(w) = hay
                    .get(at..at + 8)
                    .and_then(|w| <[u8; 8]>::try_from(w).ok())
                else {
                    return false;
                };
                if ((u64::from_le_bytes(w) & c.keep) | c.fold) != c.lower {
                    return false;
                }
            }
            return true;
        }
        // Near the end of the input: byte by byte.
        let Some(s) = hay.get(i..i + e.len) else {
            return false;
        };
        s.iter().enumerate().all(|(j, &h)| {
            let (lower, fold) = chunks.get(j / 8).map_or((0, 0), |c| {
                (c.lower >> (8 * (j % 8)), c.fold >> (8 * (j % 8)))
            });
            (h | fold as u8) == lower as u8
        })
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
    /// The anchored start state, which is the same at every position because the relaxed
    /// pattern has no look-behind (`None` if the DFA says otherwise: it is then computed per
    /// position).
    start: Option<StateID>,
    /// `lead[d]`: every byte that can be the `d`-th of a match, as a 256-bit set, for the first
    /// few bytes (up to [`LEAD_LEN`], fewer where a match may already have ended). Checked
    /// before the DFA: the sets are tested with independent loads, whereas each step of the DFA
    /// waits for the previous one, and the transition tables of a few hundred rules are
    /// rarely all in the L1 cache when a keyword hit comes.
    lead: Vec<[u64; 4]>,
}

/// Bytes of a match covered by [`Precheck::lead`] at most.
const LEAD_LEN: usize = 8;
/// States followed per byte while computing [`Precheck::lead`] (the sets stop where more
/// would be needed).
const LEAD_STATES: usize = 64;

/// Counted repetitions with a larger maximum are relaxed, keeping at most this minimum (tried
/// in order until the DFA fits).
pub(crate) const RELAX_STEPS: [u32; 3] = [16, 4, 1];
/// Largest DFA kept per rule.
const PRECHECK_DFA_LIMIT: usize = 64 * 1024;

/// An anchored DFA reporting every match of `hir` (captures ignored), or `None` if it would
/// exceed `limit` bytes. Walked by hand: no acceleration, no minimization.
pub(crate) fn anchored_dfa(hir: &Hir, limit: usize) -> Option<dense::DFA<Vec<u32>>> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .utf8(false)
                .which_captures(thompson::WhichCaptures::None),
        )
        .build_from_hir(hir)
        .ok()?;
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .match_kind(MatchKind::All)
                .accelerate(false)
                .minimize(false)
                .dfa_size_limit(Some(limit))
                .determinize_size_limit(Some(4 * limit)),
        )
        .build_from_nfa(&nfa)
        .ok()
}

impl Precheck {
    /// The precheck for `pattern`, or `None` when even the most relaxed DFA is too large (the
    /// rule then runs its regex at every keyword hit).
    pub(crate) fn new(pattern: &str) -> Option<Self> {
        let hir = parse_pattern(pattern).ok()?;
        RELAX_STEPS.iter().find_map(|&k| {
            let dfa = anchored_dfa(&relax(&hir, k), PRECHECK_DFA_LIMIT)?;
            let start = dfa.universal_start_state(Anchored::Yes);
            let lead = start.map(|sid| lead_sets(&dfa, sid)).unwrap_or_default();
            Some(Self { dfa, start, lead })
        })
    }

    /// Per depth from a match's start, the bytes that can be there (see the field).
    pub(crate) fn lead(&self) -> &[[u64; 4]] {
        &self.lead
    }

    /// False only if no match of the rule can start at `start` and end by `end`.
    pub(crate) fn may_match(&self, hay: &[u8], start: usize, end: usize) -> bool {
        let Some(bytes) = hay.get(start..end) else {
            return true;
        };
        if !all_in_sets(&self.lead, bytes) {
            return false;
        }
        let mut sid = match self.start {
            Some(sid) => sid,
            None => {
                let input = Input::new(hay).range(start..end).anchored(Anchored::Yes);
                let Ok(sid) = self.dfa.start_state_forward(&input) else {
                    return true;
                };
                sid
            }
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

/// Whether each of the first bytes of `bytes` is in the set for its depth (as far as both go).
#[inline]
pub(crate) fn all_in_sets(sets: &[[u64; 4]], bytes: &[u8]) -> bool {
    sets.iter()
        .zip(bytes)
        .all(|(set, &b)| set[usize::from(b >> 6)] >> (b & 63) & 1 == 1)
}

/// The sets of [`Precheck::lead`]: from the start state, level by level, the bytes that do not
/// lead to the dead state. Stops after a level where a transition reaches a match (or any
/// other special) state, since anything may follow a match, or where the next level would
/// have more than [`LEAD_STATES`] states.
fn lead_sets(dfa: &dense::DFA<Vec<u32>>, start: StateID) -> Vec<[u64; 4]> {
    let mut lead = Vec::new();
    let mut level = vec![start];
    while lead.len() < LEAD_LEN && !level.is_empty() {
        let mut set = [0u64; 4];
        let mut next: Vec<StateID> = Vec::new();
        let mut open = false;
        for &sid in &level {
            for b in 0..=255u8 {
                let to = dfa.next_state(sid, b);
                if dfa.is_dead_state(to) {
                    continue;
                }
                set[usize::from(b >> 6)] |= 1 << (b & 63);
                if dfa.is_special_state(to) {
                    open = true;
                } else if !next.contains(&to) {
                    next.push(to);
                }
            }
        }
        lead.push(set);
        if open || next.len() > LEAD_STATES {
            break;
        }
        level = next;
    }
    lead
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
pub(crate) fn relax(hir: &Hir, keep: u32) -> Hir {
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

/// The four bytes at offset `k` (below [`BLOCK`]) of a block loaded as two words at offsets 0
/// and 5.
#[inline(always)]
fn block_word(a: u64, b: u64, k: usize) -> u32 {
    match k {
        0..5 => (a >> (8 * k)) as u32,
        _ => (b >> (8 * (k - 5))) as u32,
    }
}

/// Whether the folded four bytes `w` start with a keyword trigram that some keyword continues
/// with a fourth byte of `w`'s class (any fourth byte for a 3-byte keyword): `w` has a
/// keyword candidate.
#[inline(always)]
fn entry_bits(table: &[u8; TABLE_LEN], class_bit: &[u8; 256], w: u32) -> u8 {
    table[hash(w)] & class_bit[(w >> 24) as usize]
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

    #[test]
    fn classes_keep_keyword_continuations_apart_from_other_bytes() {
        let kw = |s: &str| s.as_bytes().to_vec();
        let keywords = vec![
            kw("api_key"),
            kw("api-"),
            kw("apify_"),
            kw("key"),
            kw("key ="),
        ];
        let index = KeywordIndex::new(keywords.clone());
        let class = assign_classes(&keywords);
        // A space only follows `key`, which takes any fourth byte anyway.
        assert_eq!(class[usize::from(b' ')], NEVER_CLASS);
        assert_eq!(class[usize::from(b'(')], NEVER_CLASS);
        for b in [b'_' | 0x20, b'-', b'f'] {
            assert_ne!(class[usize::from(b)], NEVER_CLASS);
        }
        assert_eq!(class[usize::from(b'F')], class[usize::from(b'f')]);
        let candidate = |text: &[u8]| {
            let w = u32::from_le_bytes([text[0], text[1], text[2], text[3]]) | FOLD;
            entry_bits(&index.table, &index.class_bit, w) != 0
        };
        assert!(candidate(b"api_") && candidate(b"API-") && candidate(b"apif"));
        assert!(!candidate(b"api ") && !candidate(b"api("));
        assert!(candidate(b"key(") && candidate(b"KEY "));
    }

    #[test]
    fn lead_sets_reject_early_and_stop_at_a_match() {
        let p = Precheck::new(r"\bpat[A-Za-z0-9]{14}\.[a-f0-9]{64}").unwrap();
        // `p`, `a`, `t`, then alphanumerics as far as the sets go.
        assert_eq!(p.lead.len(), LEAD_LEN);
        let has = |d: usize, b: u8| p.lead[d][usize::from(b >> 6)] >> (b & 63) & 1 == 1;
        assert!(has(0, b'p') && !has(0, b'P') && has(3, b'Z') && !has(4, b'='));
        let path = b"path=/v1/users";
        assert!(!p.may_match(path, 0, path.len()));
        let token = format!("patABCDEFGHIJKLMN.{}", "a".repeat(64));
        assert!(p.may_match(token.as_bytes(), 0, token.len()));
        // A match may end after two bytes: the DFA says so at the third, which may then be
        // anything, and the sets stop there.
        let short = Precheck::new("ab|abc[0-9]+").unwrap();
        assert_eq!(short.lead.len(), 3);
        assert_eq!(short.lead[2], [u64::MAX; 4]);
        assert!(short.may_match(b"ab!", 0, 3));
    }

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

    fn index_of(kws: &[&str]) -> (KeywordIndex, Vec<Vec<u8>>) {
        let kws: Vec<Vec<u8>> = kws.iter().map(|s| s.as_bytes().to_vec()).collect();
        (KeywordIndex::new(kws.clone()), kws)
    }

    #[test]
    fn finds_keywords_at_every_offset_and_at_the_ends() {
        // Keywords sharing a trigram (one 3-byte, others in different fourth-byte buckets),
        // longer than one and two 8-byte words, placed at every offset of buffers of every
        // length around the block size, so that they start and end in the block loop, in the
        // one-at-a-time tail and at the very end of the input.
        let (index, kws) = index_of(&[
            "key",
            "key_",
            "key=",
            "key-id",
            "secret_access_key",
            "abskqmvkcm9jaxbzzwn",
            "://",
        ]);
        for kw in [
            "KEY",
            "kEy_",
            "key=",
            "Key-Id",
            "SECRET_access_KEY",
            "ABSKqmvkcm9jaxbzzwn",
        ] {
            for len in 0..2 * BLOCK_READ + kw.len() {
                for at in 0..=len.saturating_sub(kw.len()) {
                    let mut hay = vec![b'.'; len];
                    let end = (at + kw.len()).min(len);
                    hay[at..end].copy_from_slice(&kw.as_bytes()[..end - at]);
                    assert_eq!(
                        hits(&index, &hay),
                        naive(&kws, &hay),
                        "{kw} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn near_misses_are_not_hits() {
        // Bytes that fold to the same value under `| 0x20` but are not case variants (`_` and
        // DEL, `@` and `` ` ``, `[` and `{`, 0xC1 and 0xE1), and mismatches in the last byte
        // of a long keyword, in a whole word and near the end of the input.
        let (index, kws) = index_of(&["key_", "@pat", "[tok", "sk-", "secret_access_key"]);
        for hay in [
            &b"KEY\x7f key\x7f `pat `PAT {tok {TOK"[..],
            b"s\xcb-  \xd3k-  secret_access_kez secret_access_keY",
            b"xx secret_access_ke",
            b"secret_access_kex",
            b"\xe1\xc1key_\xff\x80@PAT\xc0[tok\xe0",
        ] {
            assert_eq!(hits(&index, hay), naive(&kws, hay), "{hay:?}");
        }
        assert_eq!(hits(&index, b"KEY\x7f `pat {tok").len(), 0);
    }

    #[test]
    fn word_compare_matches_ignoring_ascii_case_only() {
        // Every byte against every keyword byte class: a letter, a digit, punctuation.
        let (index, kws) = index_of(&["abcdefghij", "a1_-z9.:~x"]);
        for kw in &kws {
            for pos in 0..kw.len() {
                for b in 0..=255u8 {
                    let mut hay = kw.clone();
                    hay[pos] = b;
                    hay.extend_from_slice(b"........");
                    assert_eq!(hits(&index, &hay), naive(&kws, &hay), "byte {b} at {pos}");
                    hay.truncate(kw.len());
                    assert_eq!(hits(&index, &hay), naive(&kws, &hay), "byte {b} at {pos}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_a_naive_search_on_long_keywords_and_any_bytes(
            kws in proptest::collection::vec("[a-cA-C_@`{\\[-]{3,20}", 1..10),
            hay in proptest::collection::vec(
                proptest::sample::select(b"abcABC_@`{[-\x7f\x80\xc1\xe1\xff .".to_vec()),
                0..300,
            ),
        ) {
            let kws: Vec<Vec<u8>> = kws.into_iter().map(|k| k.to_ascii_lowercase().into_bytes()).collect();
            let index = KeywordIndex::new(kws.clone());
            prop_assert_eq!(hits(&index, &hay), naive(&kws, &hay));
        }

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
