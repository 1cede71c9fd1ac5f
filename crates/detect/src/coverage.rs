//! The prefilter's contract, checked when rules are loaded: every match of a rule's pattern
//! contains one of the rule's keywords (ASCII case-insensitively). Text is only searched
//! around keyword hits, so a match without a keyword is never found: a rule that allows one
//! misses credentials silently (`-pass=…` under a rule whose keyword is `-pass ` only).
//!
//! The check explores the product of two automata breadth-first: an anchored DFA of the
//! pattern and an Aho-Corasick automaton of the keywords. A path that reaches a match of the
//! pattern without passing through a keyword is a counterexample, and the shortest one is
//! reported, so that the rule's author sees what text would be missed.

use crate::prefilter::{RELAX_STEPS, anchored_dfa, parse_pattern, relax};
use regex_automata::Anchored;
use regex_automata::dfa::{Automaton, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use std::collections::{HashMap, VecDeque};

/// Outcome of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Every match contains a keyword.
    Covered,
    /// The shortest match found that contains none (the match alone, not its context).
    Uncovered(Vec<u8>),
    /// The automata were too large to decide.
    Unknown,
}

/// Largest pattern DFA built for the check.
const DFA_LIMIT: usize = 4 << 20;
/// Most (pattern state, keyword state) pairs explored.
const PAIR_LIMIT: usize = 1 << 18;
/// Most transitions followed (pairs times byte classes), which bounds the time taken.
const STEP_LIMIT: usize = 1 << 23;

/// Whether every match of `pattern` contains one of `keywords` (lowercase, as the prefilter
/// holds them). The exact pattern is tried first; if its DFA is too large, a relaxed copy
/// that matches more (see [`relax`]) can still prove coverage, but not refute it.
pub(crate) fn check(pattern: &str, keywords: &[Vec<u8>]) -> Coverage {
    let Ok(hir) = parse_pattern(pattern) else {
        return Coverage::Unknown;
    };
    let keys = KeywordAutomaton::new(keywords);
    if let Some(dfa) = anchored_dfa(&hir, DFA_LIMIT) {
        return explore(&dfa, &keys);
    }
    for keep in RELAX_STEPS {
        if let Some(dfa) = anchored_dfa(&relax(&hir, keep), DFA_LIMIT) {
            return match explore(&dfa, &keys) {
                Coverage::Covered => Coverage::Covered,
                _ => Coverage::Unknown,
            };
        }
    }
    Coverage::Unknown
}

/// A DFA over ASCII-lowercased bytes whose accepting states are "some keyword has occurred".
struct KeywordAutomaton {
    /// `next[state * 256 + byte]`.
    next: Vec<u32>,
    accepting: Vec<bool>,
    /// The bytes that occur in keywords (lowercase): the others all act alike.
    used: [bool; 256],
}

impl KeywordAutomaton {
    fn new(keywords: &[Vec<u8>]) -> Self {
        // Trie.
        let mut goto: Vec<[Option<u32>; 256]> = vec![[None; 256]];
        let mut accepting = vec![false];
        let mut used = [false; 256];
        for k in keywords {
            let mut s = 0usize;
            for &b in k {
                let b = b.to_ascii_lowercase();
                used[usize::from(b)] = true;
                s = match goto[s][usize::from(b)] {
                    Some(t) => t as usize,
                    None => {
                        goto.push([None; 256]);
                        accepting.push(false);
                        let t = goto.len() - 1;
                        goto[s][usize::from(b)] = Some(t as u32);
                        t
                    }
                };
            }
            accepting[s] = true;
        }
        // Failure links, breadth-first, into a complete transition table.
        let n = goto.len();
        let mut next = vec![0u32; n * 256];
        let mut fail = vec![0usize; n];
        let mut queue = VecDeque::new();
        for b in 0..256 {
            match goto[0][b] {
                Some(t) => {
                    next[b] = t;
                    queue.push_back(t as usize);
                }
                None => next[b] = 0,
            }
        }
        while let Some(s) = queue.pop_front() {
            accepting[s] |= accepting[fail[s]];
            for b in 0..256 {
                match goto[s][b] {
                    Some(t) => {
                        fail[t as usize] = next[fail[s] * 256 + b] as usize;
                        next[s * 256 + b] = t;
                        queue.push_back(t as usize);
                    }
                    None => next[s * 256 + b] = next[fail[s] * 256 + b],
                }
            }
        }
        Self {
            next,
            accepting,
            used,
        }
    }

    fn step(&self, state: u32, byte: u8) -> u32 {
        let b = usize::from(byte.to_ascii_lowercase());
        self.next
            .get(state as usize * 256 + b)
            .copied()
            .unwrap_or(0)
    }

    fn accepts(&self, state: u32) -> bool {
        self.accepting.get(state as usize).copied().unwrap_or(false)
    }
}

/// One byte per class of bytes that both automata treat alike, preferring a readable one.
fn representatives(dfa: &dense::DFA<Vec<u32>>, keys: &KeywordAutomaton) -> Vec<u8> {
    let classes = dfa.byte_classes();
    let mut chosen: HashMap<(u8, u16), u8> = HashMap::new();
    let rank = |b: u8| match b {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => 0,
        0x21..=0x7e => 1,
        b' ' => 2,
        _ => 3,
    };
    for b in 0..=255u8 {
        let lower = b.to_ascii_lowercase();
        let key_class = if keys.used[usize::from(lower)] {
            u16::from(lower)
        } else {
            256
        };
        let key = (classes.get(b), key_class);
        chosen
            .entry(key)
            .and_modify(|r| {
                if rank(b) < rank(*r) {
                    *r = b;
                }
            })
            .or_insert(b);
    }
    let mut reps: Vec<u8> = chosen.into_values().collect();
    reps.sort_unstable_by_key(|&b| (rank(b), b));
    reps
}

/// Breadth-first search of the product automaton from every start context a match can have
/// (start of text, after a word byte, after another byte, after a line break).
fn explore(dfa: &dense::DFA<Vec<u32>>, keys: &KeywordAutomaton) -> Coverage {
    let reps = representatives(dfa, keys);
    type Pair = (StateID, u32);
    // Pair → (parent pair, byte that led here); starts have none.
    let mut seen: HashMap<Pair, Option<(Pair, u8)>> = HashMap::new();
    let mut queue: VecDeque<Pair> = VecDeque::new();
    for behind in [None, Some(b'a'), Some(b' '), Some(b'\n')] {
        let config = start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(behind);
        let Ok(sid) = dfa.start_state(&config) else {
            return Coverage::Unknown;
        };
        if seen.insert((sid, 0), None).is_none() {
            queue.push_back((sid, 0));
        }
    }
    let path_to = |seen: &HashMap<Pair, Option<(Pair, u8)>>, mut at: Pair| -> Vec<u8> {
        let mut bytes = Vec::new();
        while let Some(Some((parent, b))) = seen.get(&at) {
            bytes.push(*b);
            at = *parent;
        }
        bytes.reverse();
        bytes
    };
    let mut steps = 0usize;
    while let Some(pair @ (sid, kst)) = queue.pop_front() {
        steps += 2 * reps.len();
        if steps > STEP_LIMIT {
            return Coverage::Unknown;
        }
        // The text that led here contains no keyword (accepting pairs are never queued).
        // Does a match end here, at the end of the text or before some next byte?
        let ends_here = dfa.is_match_state(dfa.next_eoi_state(sid))
            || reps
                .iter()
                .any(|&b| dfa.is_match_state(dfa.next_state(sid, b)));
        if ends_here {
            let text = path_to(&seen, pair);
            // An empty match is rejected by the loader; it says nothing about keywords.
            if !text.is_empty() {
                return Coverage::Uncovered(text);
            }
        }
        for &b in &reps {
            let next_sid = dfa.next_state(sid, b);
            if dfa.is_dead_state(next_sid) || dfa.is_quit_state(next_sid) {
                continue;
            }
            let next_k = keys.step(kst, b);
            if keys.accepts(next_k) {
                continue;
            }
            let next = (next_sid, next_k);
            if seen.contains_key(&next) {
                continue;
            }
            if seen.len() >= PAIR_LIMIT {
                return Coverage::Unknown;
            }
            seen.insert(next, Some((pair, b)));
            queue.push_back(next);
        }
    }
    Coverage::Covered
}

/// `text` for an error message: printable ASCII as is, anything else as `\xNN`.
pub(crate) fn escape(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Coverage, check};

    fn kw(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|k| k.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_pattern_that_starts_with_its_keyword_is_covered() {
        assert_eq!(
            check(r"\b(ghp_[A-Za-z0-9]{36})\b", &kw(&["ghp_"])),
            Coverage::Covered
        );
        assert_eq!(
            check(r"(?i)api[_.-]?key\s*=\s*([a-z0-9]{20})", &kw(&["key"])),
            Coverage::Covered
        );
    }

    #[test]
    fn keywords_match_case_insensitively() {
        assert_eq!(
            check(r"PASSWORD=([A-Za-z0-9]{8,20})", &kw(&["password"])),
            Coverage::Covered
        );
    }

    #[test]
    fn a_form_without_a_keyword_is_reported_with_the_shortest_example() {
        // `-pass=` is allowed by the pattern but only `-pass ` is a keyword.
        let got = check(r"-pass(?: |=)([A-Za-z0-9]{4})", &kw(&["-pass "]));
        assert_eq!(got, Coverage::Uncovered(b"-pass=0000".to_vec()));
    }

    #[test]
    fn an_optional_keyword_is_not_enough() {
        let got = check(r"(?:token:)?[a-f0-9]{6}", &kw(&["token"]));
        assert_eq!(got, Coverage::Uncovered(b"000000".to_vec()));
    }

    #[test]
    fn one_of_several_keywords_in_each_alternative_is_enough() {
        assert_eq!(
            check(r"(?:sk-|pk-)[A-Za-z0-9]{10}", &kw(&["sk-", "pk-"])),
            Coverage::Covered
        );
        assert!(matches!(
            check(r"(?:sk-|rk-)[A-Za-z0-9]{10}", &kw(&["sk-"])),
            Coverage::Uncovered(t) if t.starts_with(b"rk-")
        ));
    }
}
