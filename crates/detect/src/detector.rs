//! The detector: keyword prefilter, regex at each hit, checks, overlap resolution.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, LazyLock, OnceLock};

use regex_automata::{Anchored, Input};
use sequester_model::HostPattern;
use serde::{Deserialize, Serialize};

use crate::DetectError;
use crate::entropy;
use crate::prefilter::{KeywordIndex, Precheck, all_in_sets};
use crate::rules::{self, BUILTIN_RULE_FILES, CompiledRule, Rule, RuleInfo};
use crate::stoplist::{self, Placeholder};
use crate::validate::ValidatorKind;

/// How sure the detector is that a finding is a live credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Shaped like a credential but unconfirmed: a checksum that does not verify, a provider
    /// format holding a run such as `111111`, or a weak generic match.
    Low,
    /// A generic match in credential context with a random-looking value.
    Medium,
    /// A distinctive provider format, or a checksum that verifies.
    High,
}

impl Confidence {
    /// `low`, `medium` or `high`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the rule's offline validator said about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validation {
    /// The rule has no validator.
    NotApplicable,
    /// The validator confirmed the format (checksum or structure).
    Confirmed,
    /// The checksum did not verify (kept at low confidence unless
    /// [`DetectorOptions::require_valid_checksums`] is set).
    Failed,
}

/// One secret found in the input. Carries the span, never the secret's bytes.
#[derive(Clone)]
pub struct Finding {
    /// Byte range of the secret itself in the input (not the surrounding assignment).
    pub span: Range<usize>,
    /// How sure the detector is.
    pub confidence: Confidence,
    /// What the validator said.
    pub validation: Validation,
    pub(crate) rule: Arc<RuleInfo>,
}

impl Finding {
    /// The id of the rule that matched.
    pub fn rule_id(&self) -> &str {
        &self.rule.id
    }
    /// The human-readable name of the rule that matched.
    pub fn rule_name(&self) -> &str {
        &self.rule.name
    }
    /// The provider that issues this kind of credential.
    pub fn provider(&self) -> &str {
        &self.rule.provider
    }
    /// Whether an offline validator confirmed the finding.
    pub fn validated(&self) -> bool {
        self.validation == Validation::Confirmed
    }
    /// Where this credential may legitimately be sent (Sequester host patterns).
    pub fn suggested_hosts(&self) -> &[HostPattern] {
        &self.rule.suggested_hosts
    }
    /// Whether the rule is generic (context and entropy) rather than a provider format.
    pub fn is_generic(&self) -> bool {
        self.rule.generic
    }
    /// Whether the finding is the public half of a credential (an AWS access key id): worth
    /// reporting, not a secret by itself.
    pub fn is_identifier(&self) -> bool {
        self.rule.identifier
    }

    /// The same finding with its span moved by `delta` bytes (for findings in a window).
    pub(crate) fn shifted(mut self, delta: usize) -> Self {
        self.span = self.span.start + delta..self.span.end + delta;
        self
    }

    /// Ranks overlapping findings: validated, then specific (a provider format over a
    /// generic rule), then confident, then longer, then the rule loaded first.
    fn rank(&self) -> (bool, bool, Confidence, usize, std::cmp::Reverse<usize>) {
        (
            self.validated(),
            !self.rule.generic,
            self.confidence,
            self.span.len(),
            std::cmp::Reverse(self.rule.order),
        )
    }
}

impl fmt::Debug for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finding")
            .field("rule_id", &self.rule.id)
            .field("provider", &self.rule.provider)
            .field("span", &self.span)
            .field("confidence", &self.confidence)
            .field("validation", &self.validation)
            .finish()
    }
}

/// Detector settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorOptions {
    /// Drop candidates of checksummed formats (GitHub, npm, Sequester) whose checksum does not
    /// verify, instead of reporting them at low confidence.
    pub require_valid_checksums: bool,
    /// Report only findings at or above this confidence.
    pub min_confidence: Confidence,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            require_valid_checksums: false,
            min_confidence: Confidence::Low,
        }
    }
}

/// Input bytes whose keyword hits are collected before the windows they open are searched
/// (see [`Engine::candidates`]): well within a core's L2 cache.
const SEGMENT: usize = 256 * 1024;

/// Windows around keyword hits of rules not anchored at their keywords, waiting to be searched,
/// and the positions in them where a match may start (for rules where those are known).
#[derive(Default)]
struct Pending {
    /// Windows `(rule, start, end)` that no longer grow with hits in order (they may still be
    /// merged with others when searched).
    windows: Vec<(usize, usize, usize)>,
    /// The window of each rule that later hits may still extend (hits come in order, so most
    /// windows of a rule overlap the previous one): `windows` gets fewer entries to sort.
    open: Vec<(usize, usize, usize)>,
    /// Per rule (indexed by rule once the first is added): the positions where a match may
    /// start, mostly in increasing order already.
    starts: Vec<Vec<usize>>,
    /// Per rule: how many of its `starts` are sorted and distinct (those before the last
    /// segment's).
    sorted: Vec<usize>,
}

/// Sorts and deduplicates `list`, whose first `sorted` entries already are, touching only the
/// entries from where the new ones go on (the lists are long where keywords are dense, and
/// mostly in order already).
fn sort_new_starts(list: &mut Vec<usize>, sorted: usize) {
    let Some(&least) = list.get(sorted..).and_then(|new| new.iter().min()) else {
        return;
    };
    let from = list
        .get(..sorted)
        .map_or(0, |old| old.partition_point(|&p| p < least));
    // Entries before `from` are below `least`: duplicates can only be in the tail.
    let mut tail = list.split_off(from);
    tail.sort_unstable();
    tail.dedup();
    list.append(&mut tail);
}

/// A compiled rule set with its keyword prefilter.
struct Engine {
    rules: Vec<CompiledRule>,
    prefilter: KeywordIndex,
    /// Bytes past a position that its keywords and its prefilter hash may read: the longest
    /// keyword's length, and at least four.
    keyword_reach: usize,
    /// Prefilter keyword index → the rules that use that keyword.
    keyword_rules: Vec<Vec<Attempt>>,
    /// Per rule: the cheap test run before its regex at a position (`None`: always run it),
    /// built the first time the rule's keyword is seen (most rules never are, and building
    /// them all would double the detector's start-up time).
    prechecks: Vec<OnceLock<Option<Precheck>>>,
    /// Per keyword whose rules all start their matches with it: the bytes that can follow it,
    /// per depth (see [`Engine::follow_sets`]), built with the prechecks at its first hit.
    /// A hit followed by anything else is dropped before any rule is looked at.
    follows: Vec<OnceLock<Option<Vec<[u64; 4]>>>>,
    /// Per rule searched in windows: whether its candidate start positions are known (see
    /// [`Attempt::starts`]), so that windows are searched by anchored attempts at them.
    starts_known: Vec<bool>,
}

/// A rule to try at a hit of one of its keywords.
struct Attempt {
    rule: usize,
    /// For a rule not anchored at its keywords whose match beginnings are enumerable
    /// (`api[_.-]?key`): the offsets back from the hit at which a match may start.
    starts: Vec<usize>,
}

impl Engine {
    fn build(rules: Vec<CompiledRule>) -> Result<Self, DetectError> {
        let mut seen = std::collections::HashSet::new();
        for r in &rules {
            if !seen.insert(r.rule.id()) {
                return Err(DetectError::DuplicateRule {
                    rule_id: r.rule.id().to_owned(),
                });
            }
        }
        let rules: Vec<CompiledRule> = rules
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                let mut info = (*r.rule.info).clone();
                info.order = i;
                r.rule.info = Arc::new(info);
                r
            })
            .collect();
        let mut keywords: Vec<Vec<u8>> = Vec::new();
        let mut keyword_rules: Vec<Vec<Attempt>> = Vec::new();
        let mut prechecks = Vec::with_capacity(rules.len());
        let mut starts_known = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            prechecks.push(OnceLock::new());
            let lowered = rules::lowercase_keywords(&r.rule.keywords);
            let offsets = r.keyword_starts.as_ref().filter(|_| !r.anchored);
            starts_known.push(offsets.is_some());
            for (j, k) in lowered.into_iter().enumerate() {
                let starts = offsets.and_then(|o| o.get(j).cloned()).unwrap_or_default();
                let p = match keywords.iter().position(|x| *x == k) {
                    Some(p) => p,
                    None => {
                        keywords.push(k);
                        keyword_rules.push(Vec::new());
                        keywords.len() - 1
                    }
                };
                let Some(attempts) = keyword_rules.get_mut(p) else {
                    continue;
                };
                match attempts.iter_mut().find(|a| a.rule == i) {
                    Some(a) => {
                        for o in starts {
                            if !a.starts.contains(&o) {
                                a.starts.push(o);
                            }
                        }
                    }
                    None => attempts.push(Attempt { rule: i, starts }),
                }
            }
        }
        let keyword_reach = keywords.iter().map(Vec::len).max().unwrap_or(0).max(4);
        let follows = keywords.iter().map(|_| OnceLock::new()).collect();
        let prefilter = KeywordIndex::new(keywords);
        Ok(Self {
            rules,
            prefilter,
            keyword_reach,
            keyword_rules,
            prechecks,
            follows,
            starts_known,
        })
    }

    /// Passes every candidate of the rules (or of rule `only`) in `hay`, before checks, to
    /// `sink`, in no particular order.
    ///
    /// The input is taken in segments of `segment` bytes ([`SEGMENT`] outside tests): the
    /// keyword hits of a segment are collected, then the windows no later hit can extend are
    /// searched while their bytes are still in the cache (searching them all after one pass
    /// over a large input reads each window from memory again). Windows still open wait for
    /// the next segment, so the result is the same as with one segment.
    fn candidates(
        &self,
        hay: &[u8],
        only: Option<usize>,
        segment: usize,
        mut sink: impl FnMut(Candidate),
    ) {
        let segment = segment.max(1);
        let mut pending = Pending::default();
        // Recent anchored attempts, so overlapping keywords of one rule (`pass`, `password`)
        // do not run the same search twice.
        let mut recent: [(usize, usize); 8] = [(usize::MAX, usize::MAX); 8];
        let mut recent_at = 0usize;
        let mut seg = 0usize;
        loop {
            let seg_end = hay.len().min(seg + segment);
            // Enough bytes past the segment for its last position's longest keyword.
            let part = hay
                .get(seg..hay.len().min(seg_end + self.keyword_reach))
                .unwrap_or_default();
            self.prefilter.for_each_hit(part, |hit| {
                let (start, end) = (seg + hit.start, seg + hit.end);
                if start >= seg_end {
                    return;
                }
                if !self.may_follow(hit.keyword, hay, start, end) {
                    return;
                }
                let Some(attempts) = self.keyword_rules.get(hit.keyword) else {
                    return;
                };
                for a in attempts {
                    let ri = a.rule;
                    if only.is_some_and(|o| o != ri) {
                        continue;
                    }
                    let Some(rule) = self.rules.get(ri) else {
                        continue;
                    };
                    if rule.anchored {
                        let key = (ri, start);
                        if recent.contains(&key) {
                            continue;
                        }
                        recent[recent_at % recent.len()] = key;
                        recent_at += 1;
                        let stop = hay.len().min(start + rule.max_len);
                        if !self.may_match(ri, hay, start, stop) {
                            continue;
                        }
                        let input = Input::new(hay).range(start..stop).anchored(Anchored::Yes);
                        if let Some(c) = capture(rule, ri, &input) {
                            sink(c);
                        }
                    } else {
                        let from = end.saturating_sub(rule.max_len);
                        let to = hay.len().min(start + rule.max_len);
                        add_window(&mut pending.open, &mut pending.windows, (ri, from, to));
                        for &o in &a.starts {
                            let Some(p) = start.checked_sub(o) else {
                                continue;
                            };
                            if pending.starts.is_empty() {
                                pending.starts.resize_with(self.rules.len(), Vec::new);
                                pending.sorted.resize(self.rules.len(), 0);
                            }
                            if let Some(list) = pending.starts.get_mut(ri)
                                && list.last() != Some(&p)
                            {
                                list.push(p);
                            }
                        }
                    }
                }
            });
            let last = seg_end >= hay.len();
            self.flush_windows(hay, &mut pending, (!last).then_some(seg_end), &mut sink);
            if last {
                return;
            }
            seg = seg_end;
        }
    }

    /// Searches the windows of `pending` that no keyword hit at or after `limit` can extend
    /// (all of them when `limit` is `None`: the input has ended), and forgets the match start
    /// positions that no window left can use.
    fn flush_windows(
        &self,
        hay: &[u8],
        pending: &mut Pending,
        limit: Option<usize>,
        sink: &mut impl FnMut(Candidate),
    ) {
        if pending.windows.is_empty() && pending.open.is_empty() {
            return;
        }
        let max_len = |ri: usize| self.rules.get(ri).map_or(usize::MAX, |r| r.max_len);
        // A later hit's window of rule `ri` starts after `limit - max_len(ri)`: a merged window
        // ending before that is final.
        let is_final = |&(ri, _, end): &(usize, usize, usize)| {
            limit.is_none_or(|l| end.saturating_add(max_len(ri)) < l)
        };
        pending.windows.append(&mut pending.open);
        let mut done: Vec<(usize, usize, usize)> = Vec::new();
        let mut left: Vec<(usize, usize, usize)> = Vec::new();
        for w in merged_windows(&mut pending.windows) {
            if is_final(&w) {
                done.push(w);
            } else {
                left.push(w);
            }
        }
        for (list, sorted) in pending.starts.iter_mut().zip(&mut pending.sorted) {
            sort_new_starts(list, *sorted);
            *sorted = list.len();
        }
        if !done.is_empty() {
            self.search_windows(hay, &done, &pending.starts, sink);
        }
        // The last window left of each rule is the one later hits may extend (`left` is
        // sorted by rule, then start).
        pending.windows.clear();
        for (i, w) in left.iter().enumerate() {
            if left.get(i + 1).is_some_and(|n| n.0 == w.0) {
                pending.windows.push(*w);
            } else {
                pending.open.push(*w);
            }
        }
        let Some(limit) = limit else {
            return;
        };
        for (ri, list) in pending.starts.iter_mut().enumerate() {
            // Later hits add positions after `limit - max_len(ri)`; windows left use theirs.
            let keep_from = left
                .iter()
                .find(|w| w.0 == ri)
                .map_or(limit.saturating_sub(max_len(ri)), |w| w.1);
            let cut = list.partition_point(|&p| p < keep_from);
            list.drain(..cut);
            if let Some(sorted) = pending.sorted.get_mut(ri) {
                *sorted = list.len();
            }
        }
    }

    /// False only if no rule of keyword `kw` can match at its hit `start..end` (the bytes
    /// after the keyword cannot follow it in any of them).
    #[inline]
    fn may_follow(&self, kw: usize, hay: &[u8], start: usize, end: usize) -> bool {
        let Some(cell) = self.follows.get(kw) else {
            return true;
        };
        match cell.get_or_init(|| self.follow_sets(kw, end - start)) {
            Some(sets) => all_in_sets(sets, hay.get(end..).unwrap_or_default()),
            None => true,
        }
    }

    /// For keyword `kw` of `len` bytes: if every rule of the keyword is anchored at it, the
    /// union over those rules of their precheck's byte sets for the depths after the keyword
    /// (as many as every rule has). `None` where that says nothing.
    fn follow_sets(&self, kw: usize, len: usize) -> Option<Vec<[u64; 4]>> {
        let attempts = self.keyword_rules.get(kw)?;
        let mut union: Option<Vec<[u64; 4]>> = None;
        for a in attempts {
            let rule = self.rules.get(a.rule)?;
            if !rule.anchored {
                return None;
            }
            let after = self
                .precheck(a.rule)?
                .lead()
                .get(len..)
                .filter(|sets| !sets.is_empty())?;
            union = Some(match union {
                None => after.to_vec(),
                Some(mut sets) => {
                    sets.truncate(after.len());
                    for (set, more) in sets.iter_mut().zip(after) {
                        for (word, m) in set.iter_mut().zip(more) {
                            *word |= m;
                        }
                    }
                    sets
                }
            });
        }
        union.filter(|sets| !sets.is_empty())
    }

    /// Whether rule `ri`'s precheck allows a match starting at `start` and ending by `end`.
    #[inline]
    fn may_match(&self, ri: usize, hay: &[u8], start: usize, end: usize) -> bool {
        self.precheck(ri)
            .is_none_or(|p| p.may_match(hay, start, end))
    }

    /// Rule `ri`'s precheck, built at first use (`None`: the rule has none).
    fn precheck(&self, ri: usize) -> Option<&Precheck> {
        let (cell, rule) = (self.prechecks.get(ri)?, self.rules.get(ri)?);
        cell.get_or_init(|| Precheck::new(&rule.rule.pattern))
            .as_ref()
    }

    /// Runs non-anchored rules over merged windows around their keyword hits: the
    /// leftmost-first matches in each window, one after the other. Where a rule's possible
    /// start positions are known (`starts`, sorted), tries them in order, anchored (the first
    /// one that matches is the window search's leftmost match); otherwise searches the window.
    fn search_windows(
        &self,
        hay: &[u8],
        windows: &[(usize, usize, usize)],
        starts: &[Vec<usize>],
        sink: &mut impl FnMut(Candidate),
    ) {
        for &(ri, start, end) in windows {
            let Some(rule) = self.rules.get(ri) else {
                continue;
            };
            if self.starts_known.get(ri).copied().unwrap_or(false) {
                let mut at = start;
                let list = starts.get(ri).map(Vec::as_slice).unwrap_or_default();
                let from = list.partition_point(|&p| p < start);
                for &p in list.get(from..).unwrap_or_default() {
                    if p >= end {
                        break;
                    }
                    if p < at || !self.may_match(ri, hay, p, end) {
                        continue;
                    }
                    let input = Input::new(hay).range(p..end).anchored(Anchored::Yes);
                    if let Some(c) = capture(rule, ri, &input) {
                        at = c.whole.end.max(p + 1);
                        sink(c);
                    }
                }
                continue;
            }
            search_window(hay, start..end, |input| capture(rule, ri, input), sink);
        }
    }
}

/// Adds window `w` = `(rule, start, end)` to the rule's open window in `open` if they overlap
/// or touch (as [`merged_windows`] would merge them), else moves the open window to `windows`
/// and opens `w`.
fn add_window(
    open: &mut Vec<(usize, usize, usize)>,
    windows: &mut Vec<(usize, usize, usize)>,
    w: (usize, usize, usize),
) {
    let (ri, start, end) = w;
    match open.iter_mut().find(|o| o.0 == ri) {
        Some(o) if start <= o.2 && o.1 <= end => {
            o.1 = o.1.min(start);
            o.2 = o.2.max(end);
        }
        Some(o) => windows.push(std::mem::replace(o, w)),
        None => open.push(w),
    }
}

/// Sorts windows `(rule, start, end)` and yields them with the overlapping windows of each
/// rule merged.
fn merged_windows(
    windows: &mut [(usize, usize, usize)],
) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    windows.sort_unstable();
    let mut rest = windows.iter().copied().peekable();
    std::iter::from_fn(move || {
        let (ri, start, mut end) = rest.next()?;
        while let Some((_, _, e)) = rest.next_if(|&(r, s, _)| r == ri && s <= end) {
            end = end.max(e);
        }
        Some((ri, start, end))
    })
}

/// Passes the leftmost-first matches in `window`, one after the other, as `find` reports
/// them, to `sink`.
fn search_window(
    hay: &[u8],
    window: Range<usize>,
    find: impl Fn(&Input<'_>) -> Option<Candidate>,
    sink: &mut impl FnMut(Candidate),
) {
    let mut at = window.start;
    while at < window.end {
        let Some(c) = find(&Input::new(hay).range(at..window.end)) else {
            break;
        };
        at = c.whole.end.max(at + 1);
        sink(c);
    }
}

fn load_builtin() -> Result<Vec<CompiledRule>, DetectError> {
    let mut all = Vec::new();
    for (name, text) in BUILTIN_RULE_FILES {
        all.extend(rules::parse_rule_file(name, text)?);
    }
    Ok(all)
}

static BUILTIN: LazyLock<Result<Arc<Engine>, String>> = LazyLock::new(|| {
    load_builtin()
        .and_then(Engine::build)
        .map(Arc::new)
        .map_err(|e| e.to_string())
});

/// Scans bytes for secrets. Cheap to clone (the compiled rules are shared).
#[derive(Clone)]
pub struct Detector {
    engine: Arc<Engine>,
    options: DetectorOptions,
}

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("rules", &self.engine.rules.len())
            .field("options", &self.options)
            .finish()
    }
}

/// A candidate before checks: rule index, whole match and secret span.
struct Candidate {
    rule: usize,
    whole: Range<usize>,
    secret: Range<usize>,
}

impl Detector {
    /// The builtin rules (compiled once per process, then shared).
    pub fn builtin() -> Self {
        #[expect(
            clippy::panic,
            reason = "the builtin rules are compiled into the binary and every one is exercised by the rule_examples test; a failure here is a build defect, not an input error"
        )]
        let engine = match &*BUILTIN {
            Ok(engine) => Arc::clone(engine),
            Err(e) => panic!("builtin detection rules do not compile: {e}"),
        };
        Self {
            engine,
            options: DetectorOptions::default(),
        }
    }

    /// The builtin rules followed by the rules in `toml` (same format as the builtin files,
    /// see `rules/README.md`). Rule ids must not clash with builtin ones.
    pub fn with_extra_rules(&self, toml: &str) -> Result<Self, DetectError> {
        let extra = rules::parse_rule_file("extra rules", toml)?;
        rules::check_user_rules(&extra)?;
        let mut all = self.engine.rules.clone();
        all.extend(extra);
        Ok(Self {
            engine: Arc::new(Engine::build(all)?),
            options: self.options,
        })
    }

    /// A detector with only the rules in `toml` (no builtin rules).
    pub fn from_rules(toml: &str) -> Result<Self, DetectError> {
        let rules = rules::parse_rule_file("rules", toml)?;
        rules::check_user_rules(&rules)?;
        Ok(Self {
            engine: Arc::new(Engine::build(rules)?),
            options: DetectorOptions::default(),
        })
    }

    /// The same rules with other options.
    pub fn with_options(&self, options: DetectorOptions) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
            options,
        }
    }

    /// The options in force.
    pub fn options(&self) -> DetectorOptions {
        self.options
    }

    /// Every rule, in load order.
    pub fn rules(&self) -> impl ExactSizeIterator<Item = &Rule> {
        self.engine.rules.iter().map(|r| &r.rule)
    }

    /// The longest text any rule can match; the streaming redactor keeps at least this much
    /// context on each side of a block.
    pub fn max_match_len(&self) -> usize {
        self.engine
            .rules
            .iter()
            .map(|r| r.max_len)
            .max()
            .unwrap_or(0)
    }

    /// Every secret in `hay`, sorted by position, non-overlapping.
    pub fn detect(&self, hay: &[u8]) -> Vec<Finding> {
        self.findings(hay, None)
    }

    /// The candidates of all rules (or of rule `only`) that pass their checks, overlaps
    /// resolved. Candidates are checked as they come, while their bytes are in the cache.
    fn findings(&self, hay: &[u8], only: Option<usize>) -> Vec<Finding> {
        self.findings_by_segment(hay, only, SEGMENT)
    }

    /// [`Self::findings`] with segments of `segment` bytes (tests use small ones).
    fn findings_by_segment(&self, hay: &[u8], only: Option<usize>, segment: usize) -> Vec<Finding> {
        let mut findings: Vec<Finding> = Vec::new();
        self.engine.candidates(hay, only, segment, |c| {
            if let Ok(f) = self.check(hay, c) {
                findings.push(f);
            }
        });
        self.resolve(findings)
    }

    /// Sorts findings by position and resolves overlaps: of overlapping findings, the one of
    /// highest rank stays.
    fn resolve(&self, mut findings: Vec<Finding>) -> Vec<Finding> {
        findings.sort_by(|a, b| {
            a.span
                .start
                .cmp(&b.span.start)
                .then(b.rank().cmp(&a.rank()))
        });
        let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
        for f in findings {
            match kept.last_mut() {
                Some(last) if f.span.start < last.span.end => {
                    if f.rank() > last.rank() {
                        *last = f;
                    }
                }
                _ => kept.push(f),
            }
        }
        kept.retain(|f| f.confidence >= self.options.min_confidence);
        kept
    }

    /// Runs a candidate through its rule's checks; `Err` names the check that rejected it.
    fn check(&self, hay: &[u8], c: Candidate) -> Result<Finding, &'static str> {
        let rule = &self.engine.rules.get(c.rule).ok_or("unknown rule")?.rule;
        let secret = hay.get(c.secret.clone()).ok_or("span out of range")?;
        if secret.is_empty() {
            return Err("empty");
        }
        if stoplist::overlaps_sequester_placeholder(hay, &c.secret) {
            return Err("sequester placeholder");
        }
        let mut confidence = rule.confidence;
        let validation = match rule.validator {
            None => Validation::NotApplicable,
            Some(v) => match (v.check(secret), v.kind()) {
                (true, ValidatorKind::Checksum) => {
                    confidence = confidence.max(Confidence::High);
                    Validation::Confirmed
                }
                (true, ValidatorKind::Structure) => Validation::Confirmed,
                (false, ValidatorKind::Structure) => return Err("validator"),
                (false, ValidatorKind::Checksum) => {
                    if self.options.require_valid_checksums {
                        return Err("checksum");
                    }
                    confidence = Confidence::Low;
                    Validation::Failed
                }
            },
        };
        let checksum_ok = validation == Validation::Confirmed
            && rule
                .validator
                .is_some_and(|v| v.kind() == ValidatorKind::Checksum);
        if !checksum_ok {
            if let Some(min) = rule.min_entropy
                && entropy::shannon(secret) < min
            {
                // A run (`xoxa-2-511111111-…`) lowers a value's entropy: in a distinctive
                // format, measure the rest of the value and report it unconfirmed.
                if !(rule.has_distinctive_format() && entropy::shannon_without_runs(secret) >= min)
                {
                    return Err("entropy");
                }
                confidence = Confidence::Low;
            }
            if entropy::char_classes(secret) < rule.min_char_classes {
                return Err("character classes");
            }
            match stoplist::placeholder(secret).filter(|_| rule.filters.placeholder) {
                None => {}
                // A run such as `111111` in a distinctive provider format: real tokens have
                // them now and then, and a missed key leaks while a false alarm costs only a
                // placeholder. Report it, unconfirmed.
                Some(Placeholder::Runs) if rule.has_distinctive_format() => {
                    confidence = Confidence::Low;
                }
                Some(objection) => return Err(objection.reason()),
            }
            if rule.filters.lookalike && stoplist::is_lookalike(secret) {
                // Some services issue UUIDs as API keys: accept one, at low confidence, only
                // where the name says it is a token or a secret.
                let named_secret = rule.filters.identifier
                    && stoplist::is_uuid(secret)
                    && stoplist::identifier_names_secret(stoplist::identifier_at(
                        hay,
                        c.whole.start,
                        c.secret.start,
                    ));
                if !named_secret {
                    return Err("lookalike");
                }
                confidence = Confidence::Low;
            }
            if rule.filters.random && !stoplist::looks_random(secret) {
                return Err("not random");
            }
            if rule.filters.identifier {
                let ident = stoplist::identifier_at(hay, c.whole.start, c.secret.start);
                if stoplist::identifier_names_non_credential(ident) {
                    return Err("identifier");
                }
                if stoplist::value_echoes_identifier(secret, ident) {
                    return Err("value repeats identifier");
                }
            }
        }
        Ok(Finding {
            span: c.secret,
            confidence,
            validation,
            rule: Arc::clone(&rule.info),
        })
    }

    /// For rule authors: every candidate the rules matched in `hay`, with the check that
    /// rejected it (`None` if it passed; a placeholder names its stop-list check, such as
    /// `template part` or `runs`), before overlaps are resolved. Returns rule ids and
    /// spans only; printing the secret is up to the caller.
    pub fn explain(&self, hay: &[u8]) -> Vec<(String, Range<usize>, Option<&'static str>)> {
        let engine = &*self.engine;
        let mut candidates = Vec::new();
        engine.candidates(hay, None, SEGMENT, |c| candidates.push(c));
        candidates.sort_by_key(|c| (c.secret.start, c.secret.end, c.rule));
        candidates
            .into_iter()
            .map(|c| {
                let id = engine
                    .rules
                    .get(c.rule)
                    .map(|r| r.rule.id().to_owned())
                    .unwrap_or_default();
                let span = c.secret.clone();
                (id, span, self.check(hay, c).err())
            })
            .collect()
    }

    /// Counts keyword hits without running any rule (prefilter throughput measurements).
    #[doc(hidden)]
    pub fn count_keyword_hits(&self, hay: &[u8]) -> usize {
        let mut n = 0usize;
        self.engine.prefilter.for_each_hit(hay, |_| n += 1);
        n
    }

    /// Detection limited to rules that use `validator` (for tests of one format).
    #[doc(hidden)]
    pub fn rule_index(&self, id: &str) -> Option<usize> {
        self.engine.rules.iter().position(|r| r.rule.id() == id)
    }

    /// Runs one rule alone over `hay` (prefilter, regex, checks), for testing a rule's
    /// examples in isolation.
    pub fn detect_with_rule(&self, id: &str, hay: &[u8]) -> Vec<Finding> {
        let Some(ri) = self.rule_index(id) else {
            return Vec::new();
        };
        self.findings(hay, Some(ri))
    }
}

/// If `input` matches `rule`, the candidate with its secret span.
fn capture(rule: &CompiledRule, ri: usize, input: &Input<'_>) -> Option<Candidate> {
    // Most keyword hits do not match: find that out without allocating.
    let half = rule.regex()?.search_half(input)?;
    // The leftmost-first match ends where the half search said: searching only up to there
    // finds the same match and keeps the capture engines' work proportional to the match.
    if half.offset() < input.start() {
        return None;
    }
    captures(rule, ri, &input.clone().range(input.start()..half.offset()))
}

/// The leftmost-first match of `rule` in `input` with its secret span, from the capture
/// engines.
fn captures(rule: &CompiledRule, ri: usize, input: &Input<'_>) -> Option<Candidate> {
    let regex = rule.regex()?;
    let mut caps = regex.create_captures();
    regex.search_captures(input, &mut caps);
    let whole = caps.get_match()?.range();
    let secret = caps
        .get_group(rule.secret_group)
        .map(|s| s.range())
        .unwrap_or_else(|| whole.clone());
    Some(Candidate {
        rule: ri,
        whole,
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builtin_compiles() {
        let d = Detector::builtin();
        assert!(d.rules().len() > 20);
        // The matchers are built lazily: every builtin pattern must build, and the secret
        // group found in the pattern must be the one the regex numbers that way.
        for r in &d.engine.rules {
            let regex = r
                .regex()
                .unwrap_or_else(|| panic!("{} does not build", r.rule.id()));
            let expected = regex
                .group_info()
                .to_index(regex_automata::PatternID::ZERO, "secret")
                .unwrap_or(if regex.captures_len() > 1 { 1 } else { 0 });
            assert_eq!(r.secret_group, expected, "{}", r.rule.id());
        }
    }

    /// The prefilter's contract for the builtin rules (user rules are checked when loaded):
    /// no pattern can match without one of its keywords; rules too large to decide are listed.
    #[test]
    fn every_builtin_match_contains_a_keyword() {
        let d = Detector::builtin();
        let mut undecided = Vec::new();
        let mut uncovered = Vec::new();
        for r in &d.engine.rules {
            let lowered = rules::lowercase_keywords(&r.rule.keywords);
            match crate::coverage::check(&r.rule.pattern, &lowered) {
                crate::coverage::Coverage::Covered => {}
                crate::coverage::Coverage::Uncovered(text) => uncovered.push(format!(
                    "{} can match \"{}\"",
                    r.rule.id(),
                    crate::coverage::escape(&text)
                )),
                crate::coverage::Coverage::Unknown => undecided.push(r.rule.id().to_owned()),
            }
        }
        eprintln!("undecided: {undecided:?}");
        assert!(
            uncovered.is_empty(),
            "matches without any keyword of their rule:\n{}",
            uncovered.join("\n")
        );
        assert!(
            undecided.len() * 10 <= d.engine.rules.len(),
            "too many rules undecided: {undecided:?}"
        );
    }

    /// The detector without its shortcuts: keywords found by a naive search, every rule of a
    /// keyword tried at every hit with no precheck, anchored rules anchored at the hit, the
    /// others searched for in the merged windows around their hits, captures over the whole
    /// search range.
    fn reference(d: &Detector, hay: &[u8]) -> Vec<(String, Range<usize>, Confidence, Validation)> {
        let engine = &*d.engine;
        let full_capture = |rule: &CompiledRule, ri: usize, input: &Input<'_>| {
            rule.regex()?.search_half(input)?;
            captures(rule, ri, input)
        };
        let mut candidates = Vec::new();
        let mut windows = Vec::new();
        for start in 0..hay.len() {
            for (k, kw) in engine.prefilter.keywords().iter().enumerate() {
                let end = start + kw.len();
                if !hay
                    .get(start..end)
                    .is_some_and(|s| s.eq_ignore_ascii_case(kw))
                {
                    continue;
                }
                for a in &engine.keyword_rules[k] {
                    let rule = &engine.rules[a.rule];
                    if rule.anchored {
                        let stop = hay.len().min(start + rule.max_len);
                        let input = Input::new(hay).range(start..stop).anchored(Anchored::Yes);
                        candidates.extend(full_capture(rule, a.rule, &input));
                    } else {
                        windows.push((
                            a.rule,
                            end.saturating_sub(rule.max_len),
                            hay.len().min(start + rule.max_len),
                        ));
                    }
                }
            }
        }
        for (ri, start, end) in merged_windows(&mut windows) {
            let rule = &engine.rules[ri];
            search_window(
                hay,
                start..end,
                |input| full_capture(rule, ri, input),
                &mut |c| candidates.push(c),
            );
        }
        let checked = candidates
            .into_iter()
            .filter_map(|c| d.check(hay, c).ok())
            .collect();
        summary(&d.resolve(checked))
    }

    fn summary(findings: &[Finding]) -> Vec<(String, Range<usize>, Confidence, Validation)> {
        findings
            .iter()
            .map(|f| {
                (
                    f.rule_id().to_owned(),
                    f.span.clone(),
                    f.confidence,
                    f.validation,
                )
            })
            .collect()
    }

    /// Text made of keywords, separators, assignments and values, so that rules, their
    /// prechecks and their windows all come into play.
    fn mixed_input() -> impl Strategy<Value = Vec<u8>> {
        let fragments = prop::sample::select(vec![
            "key",
            "KEY",
            "api",
            "api.key",
            "api_key",
            "apiKey",
            "secret",
            "token",
            "auth",
            "password",
            "pass",
            "pwd",
            "access",
            "private",
            "_pat",
            "pat",
            "credential",
            "Bearer ",
            "Authorization: ",
            "ghp_",
            "glpat-",
            "sk-",
            "sk_live_",
            "xoxb-",
            "AKIA",
            "eyJ",
            "npm_",
            "://",
            "user:",
            "@db.example.com",
            "-----BEGIN RSA PRIVATE KEY-----\n",
            "-----END RSA PRIVATE KEY-----",
            "=",
            " = ",
            ": ",
            ":=",
            "=>",
            "\"",
            "'",
            "`",
            "(",
            ")",
            ",",
            ";",
            "\n",
            " ",
            "\t",
            "_",
            "-",
            ".",
            "/",
            "0",
            "9f",
            "Q7",
            "x",
            "wJalrXUtnFEMI",
            "K7MDENGbPxRfiCY",
            "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xY",
            "4f8e2a9c71d3b6e5f0a2c4e6b8d0f1a3",
            "changeme",
            "${TOKEN}",
            "os.environ['KEY']",
        ]);
        prop_oneof![
            prop::collection::vec(fragments, 0..80).prop_map(|v| v.concat().into_bytes()),
            prop::collection::vec(
                prop::sample::select(b"keyKEYpatsecretokn_:=\"' .-/aZ09x\n".to_vec()),
                0..400
            ),
        ]
    }

    proptest! {
        /// Windows merged into the open window of their rule as they come, then sorted and
        /// merged, are the windows that sorting and merging all of them gives.
        #[test]
        fn open_windows_merge_like_sorted_windows(
            ws in prop::collection::vec((0usize..3, 0usize..200, 0usize..60), 0..40),
        ) {
            let ws: Vec<(usize, usize, usize)> =
                ws.into_iter().map(|(r, s, l)| (r, s, s + l)).collect();
            let mut all = ws.clone();
            let expected: Vec<_> = merged_windows(&mut all).collect();
            let (mut open, mut windows) = (Vec::new(), Vec::new());
            for w in ws {
                add_window(&mut open, &mut windows, w);
            }
            windows.append(&mut open);
            let got: Vec<_> = merged_windows(&mut windows).collect();
            prop_assert_eq!(got, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn shortcuts_do_not_change_findings(hay in mixed_input()) {
            let d = Detector::builtin();
            prop_assert_eq!(summary(&d.detect(&hay)), reference(&d, &hay));
        }

        /// Small segments cut windows, keywords and matches everywhere: the findings stay
        /// those of the reference.
        #[test]
        fn segments_do_not_change_findings(hay in mixed_input(), segment in 1usize..300) {
            let d = Detector::builtin();
            prop_assert_eq!(
                summary(&d.findings_by_segment(&hay, None, segment)),
                reference(&d, &hay)
            );
        }
    }

    #[test]
    fn shortcuts_do_not_change_findings_on_the_rule_examples() {
        let d = Detector::builtin();
        let mut all = Vec::new();
        for r in d.rules() {
            for e in r.examples().iter().chain(r.negative_examples()) {
                assert_eq!(
                    summary(&d.detect(e.as_bytes())),
                    reference(&d, e.as_bytes()),
                    "rule {}",
                    r.id()
                );
                all.extend_from_slice(e.as_bytes());
                all.push(b'\n');
            }
        }
        assert_eq!(summary(&d.detect(&all)), reference(&d, &all));
    }
}
