//! The keyword prefilter: finds every occurrence of every rule keyword, ASCII
//! case-insensitively, in one pass.
//!
//! Why not Aho-Corasick: with a few hundred case-insensitive keywords no byte-skipping
//! prefilter applies and the automaton walks every byte through a table too big for L1. Here
//! each position costs one 4-byte load, two multiplies and two tests against 64 Kbit (8 KiB)
//! bitmaps of hashed, case-folded keyword prefixes (the first four bytes of longer keywords,
//! all three bytes of 3-byte ones), with no dependency from one position to the next; only
//! the rare positions whose bit is set are checked exactly. Keywords are at least 3 bytes.

/// Case folding used for hashing: sets bit 5 of every byte, which maps `A-Z` to `a-z` (and
/// merges a few punctuation pairs, which only adds candidates; the exact check is
/// `eq_ignore_ascii_case`).
const FOLD: u32 = 0x2020_2020;
/// The same folding for three bytes (the fourth cleared).
const FOLD3: u32 = 0x0020_2020;
const BITMAP_WORDS: usize = 1024; // 65,536 bits

/// Shortest keyword the prefilter accepts.
pub(crate) const MIN_KEYWORD_LEN: usize = 3;

#[inline(always)]
fn hash(folded: u32) -> usize {
    (folded.wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// A keyword occurrence: keyword index and start offset (the end is start + keyword length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub(crate) keyword: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct KeywordIndex {
    keywords: Vec<Vec<u8>>,
    /// Hashes of the folded first four bytes of keywords of four or more bytes.
    bitmap4: Box<[u64; BITMAP_WORDS]>,
    /// Hashes of the folded three bytes of 3-byte keywords.
    bitmap3: Box<[u64; BITMAP_WORDS]>,
    /// (folded first four bytes, keyword) for keywords of four or more bytes, sorted.
    long: Vec<(u32, usize)>,
    /// (folded three bytes, keyword) for 3-byte keywords, sorted.
    short: Vec<(u32, usize)>,
}

impl KeywordIndex {
    /// Builds the index. Keywords shorter than [`MIN_KEYWORD_LEN`] must be rejected earlier.
    pub(crate) fn new(keywords: Vec<Vec<u8>>) -> Self {
        let mut bitmap4 = Box::new([0u64; BITMAP_WORDS]);
        let mut bitmap3 = Box::new([0u64; BITMAP_WORDS]);
        let mut long = Vec::new();
        let mut short = Vec::new();
        let set = |bitmap: &mut [u64; BITMAP_WORDS], h: usize| bitmap[h >> 6] |= 1u64 << (h & 63);
        for (i, k) in keywords.iter().enumerate() {
            match k.len() {
                0..MIN_KEYWORD_LEN => {}
                3 => {
                    let w = u32::from_le_bytes([k[0], k[1], k[2], 0]) | FOLD3;
                    set(&mut bitmap3, hash(w));
                    short.push((w, i));
                }
                _ => {
                    let w = u32::from_le_bytes([k[0], k[1], k[2], k[3]]) | FOLD;
                    set(&mut bitmap4, hash(w));
                    long.push((w, i));
                }
            }
        }
        long.sort_unstable();
        short.sort_unstable();
        Self {
            keywords,
            bitmap4,
            bitmap3,
            long,
            short,
        }
    }

    /// Calls `f` for every keyword occurrence in `hay`, in order of start offset (for one start
    /// offset, 3-byte keywords first, then the others in keyword order).
    pub(crate) fn for_each_hit(&self, hay: &[u8], mut f: impl FnMut(Hit)) {
        let n = hay.len();
        let (b4, b3) = (&*self.bitmap4, &*self.bitmap3);
        let probe = |word: u32| -> u64 {
            let folded = word | FOLD;
            let h4 = hash(folded);
            let h3 = hash(folded & 0x00FF_FFFF);
            ((b4[h4 >> 6] >> (h4 & 63)) | (b3[h3 >> 6] >> (h3 & 63))) & 1
        };
        // Eight positions per step from two overlapping 8-byte loads; a block with no bit set
        // (the common case) costs one branch.
        let mut i = 0usize;
        while i + 12 <= n {
            let (Ok(a), Ok(b)) = (
                <[u8; 8]>::try_from(&hay[i..i + 8]),
                <[u8; 8]>::try_from(&hay[i + 4..i + 12]),
            ) else {
                break;
            };
            let (a, b) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
            let w = |k: usize| -> u32 {
                if k < 5 {
                    (a >> (8 * k)) as u32
                } else {
                    (b >> (8 * (k - 4))) as u32
                }
            };
            let mut hits = [0u64; 8];
            let mut any = 0u64;
            for (k, slot) in hits.iter_mut().enumerate() {
                *slot = probe(w(k));
                any |= *slot;
            }
            if any != 0 {
                for (k, &bit) in hits.iter().enumerate() {
                    if bit != 0 {
                        self.verify(hay, i + k, &mut f);
                    }
                }
            }
            i += 8;
        }
        while i + 4 <= n {
            let Ok(bytes) = <[u8; 4]>::try_from(&hay[i..i + 4]) else {
                break;
            };
            if probe(u32::from_le_bytes(bytes)) != 0 {
                self.verify(hay, i, &mut f);
            }
            i += 1;
        }
        // The last three positions have no full 4-byte window: check them exactly.
        for i in i..n {
            self.verify(hay, i, &mut f);
        }
    }

    #[inline(never)]
    fn verify(&self, hay: &[u8], i: usize, f: &mut impl FnMut(Hit)) {
        let rest = &hay[i..];
        let mut b = [0u8; 4];
        for (slot, byte) in b.iter_mut().zip(rest) {
            *slot = *byte;
        }
        let word = u32::from_le_bytes(b);
        let mut check = |table: &[(u32, usize)], key: u32| {
            let from = table.partition_point(|(k, _)| *k < key);
            for &(k, kw) in &table[from..] {
                if k != key {
                    break;
                }
                let kw_bytes = &self.keywords[kw];
                if rest.len() >= kw_bytes.len()
                    && rest[..kw_bytes.len()].eq_ignore_ascii_case(kw_bytes)
                {
                    f(Hit {
                        keyword: kw,
                        start: i,
                        end: i + kw_bytes.len(),
                    });
                }
            }
        };
        check(&self.short, (word & 0x00FF_FFFF) | 0x0020_2020);
        check(&self.long, word | FOLD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(keywords: &[Vec<u8>], hay: &[u8]) -> Vec<Hit> {
        let mut out = Vec::new();
        for start in 0..hay.len() {
            for (k, kw) in keywords.iter().enumerate() {
                if hay.len() - start >= kw.len()
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
        out.sort_by_key(|h| (h.start, h.keyword));
        out.dedup();
        out
    }

    #[test]
    fn finds_overlapping_case_insensitive_keywords() {
        let kws: Vec<Vec<u8>> = ["key", "pass", "password", "sk-", "ghp_", "://"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let index = KeywordIndex::new(kws.clone());
        let hay = b"PASSWORD=x; api_KEY: https://h sk- ghp_ key";
        assert_eq!(hits(&index, hay), naive(&kws, hay));
        assert_eq!(hits(&index, b"key").len(), 1);
        assert_eq!(hits(&index, b"ke").len(), 0);
    }

    proptest! {
        #[test]
        fn agrees_with_a_naive_search(
            kws in proptest::collection::vec("[a-dA-D_:-]{3,6}", 1..12),
            hay in proptest::collection::vec(proptest::sample::select(b"abcdABCD_:-x\0\xff".to_vec()), 0..200),
        ) {
            let kws: Vec<Vec<u8>> = kws.into_iter().map(String::into_bytes).collect();
            let index = KeywordIndex::new(kws.clone());
            prop_assert_eq!(hits(&index, &hay), naive(&kws, &hay));
        }
    }
}
