//! The detector: keyword prefilter, regex at each hit, checks, overlap resolution.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use regex_automata::{Anchored, Input};
use sequester_model::HostPattern;
use serde::{Deserialize, Serialize};

use crate::DetectError;
use crate::entropy;
use crate::prefilter::KeywordIndex;
use crate::rules::{self, BUILTIN_RULE_FILES, CompiledRule, Rule, RuleInfo};
use crate::stoplist;
use crate::validate::ValidatorKind;

/// How sure the detector is that a finding is a live credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// Shaped like a credential but unconfirmed: a checksum that does not verify, or a weak
    /// generic match.
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

/// A compiled rule set with its keyword prefilter.
struct Engine {
    rules: Vec<CompiledRule>,
    prefilter: KeywordIndex,
    /// Prefilter pattern index → indexes of the rules that use that keyword.
    keyword_rules: Vec<Vec<usize>>,
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
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for k in &r.rule.keywords {
                let k = k.as_bytes().to_ascii_lowercase();
                match keywords.iter().position(|x| *x == k) {
                    Some(p) => {
                        if !keyword_rules[p].contains(&i) {
                            keyword_rules[p].push(i);
                        }
                    }
                    None => {
                        keywords.push(k);
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        let prefilter = KeywordIndex::new(keywords);
        Ok(Self {
            rules,
            prefilter,
            keyword_rules,
        })
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
        let engine = &*self.engine;
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut windows: Vec<(usize, usize, usize)> = Vec::new();
        // Recent anchored attempts, so overlapping keywords of one rule (`pass`, `password`)
        // do not run the same search twice.
        let mut recent: [(usize, usize); 8] = [(usize::MAX, usize::MAX); 8];
        let mut recent_at = 0usize;

        engine.prefilter.for_each_hit(hay, |hit| {
            let Some(rule_ids) = engine.keyword_rules.get(hit.keyword) else {
                return;
            };
            for &ri in rule_ids {
                let Some(rule) = engine.rules.get(ri) else {
                    continue;
                };
                if rule.anchored {
                    let key = (ri, hit.start);
                    if recent.contains(&key) {
                        continue;
                    }
                    recent[recent_at % recent.len()] = key;
                    recent_at += 1;
                    let end = hay.len().min(hit.start + rule.max_len);
                    let input = Input::new(hay)
                        .range(hit.start..end)
                        .anchored(Anchored::Yes);
                    if let Some(c) = capture(rule, ri, &input) {
                        candidates.push(c);
                    }
                } else {
                    let start = hit.end.saturating_sub(rule.max_len);
                    let end = hay.len().min(hit.start + rule.max_len);
                    windows.push((ri, start, end));
                }
            }
        });
        if !windows.is_empty() {
            search_windows(engine, hay, &mut windows, &mut candidates);
        }
        self.finish(hay, candidates)
    }

    /// Applies the checks to candidates and resolves overlaps.
    fn finish(&self, hay: &[u8], candidates: Vec<Candidate>) -> Vec<Finding> {
        let mut findings: Vec<Finding> = candidates
            .into_iter()
            .filter_map(|c| self.check(hay, c).ok())
            .collect();
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
                return Err("entropy");
            }
            if entropy::char_classes(secret) < rule.min_char_classes {
                return Err("character classes");
            }
            if rule.filters.placeholder && stoplist::is_placeholder(secret) {
                return Err("placeholder");
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
    /// rejected it (`None` if it passed), before overlaps are resolved. Returns rule ids and
    /// spans only; printing the secret is up to the caller.
    pub fn explain(&self, hay: &[u8]) -> Vec<(String, Range<usize>, Option<&'static str>)> {
        let engine = &*self.engine;
        let mut candidates = Vec::new();
        let mut windows = Vec::new();
        engine.prefilter.for_each_hit(hay, |hit| {
            let Some(rule_ids) = engine.keyword_rules.get(hit.keyword) else {
                return;
            };
            for &ri in rule_ids {
                let Some(rule) = engine.rules.get(ri) else {
                    continue;
                };
                if rule.anchored {
                    let end = hay.len().min(hit.start + rule.max_len);
                    let input = Input::new(hay)
                        .range(hit.start..end)
                        .anchored(Anchored::Yes);
                    candidates.extend(capture(rule, ri, &input));
                } else {
                    windows.push((
                        ri,
                        hit.end.saturating_sub(rule.max_len),
                        hay.len().min(hit.start + rule.max_len),
                    ));
                }
            }
        });
        if !windows.is_empty() {
            search_windows(engine, hay, &mut windows, &mut candidates);
        }
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
        let Some(rule) = self.engine.rules.get(ri) else {
            return Vec::new();
        };
        let mut candidates = Vec::new();
        let mut windows = Vec::new();
        self.engine.prefilter.for_each_hit(hay, |hit| {
            let uses = self
                .engine
                .keyword_rules
                .get(hit.keyword)
                .is_some_and(|r| r.contains(&ri));
            if !uses {
                return;
            }
            if rule.anchored {
                let end = hay.len().min(hit.start + rule.max_len);
                let input = Input::new(hay)
                    .range(hit.start..end)
                    .anchored(Anchored::Yes);
                candidates.extend(capture(rule, ri, &input));
            } else {
                windows.push((
                    ri,
                    hit.end.saturating_sub(rule.max_len),
                    hay.len().min(hit.start + rule.max_len),
                ));
            }
        });
        if !windows.is_empty() {
            search_windows(&self.engine, hay, &mut windows, &mut candidates);
        }
        self.finish(hay, candidates)
    }
}

/// If `input` matches `rule`, the candidate with its secret span.
fn capture(rule: &CompiledRule, ri: usize, input: &Input<'_>) -> Option<Candidate> {
    // Most keyword hits do not match: find that out without allocating.
    rule.regex.search_half(input)?;
    let mut caps = rule.regex.create_captures();
    rule.regex.search_captures(input, &mut caps);
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

/// Runs non-anchored rules over the merged windows around their keyword hits.
fn search_windows(
    engine: &Engine,
    hay: &[u8],
    windows: &mut [(usize, usize, usize)],
    candidates: &mut Vec<Candidate>,
) {
    windows.sort_unstable();
    let mut i = 0;
    while i < windows.len() {
        let (ri, start, mut end) = windows[i];
        let mut j = i + 1;
        while j < windows.len() && windows[j].0 == ri && windows[j].1 <= end {
            end = end.max(windows[j].2);
            j += 1;
        }
        i = j;
        let Some(rule) = engine.rules.get(ri) else {
            continue;
        };
        let mut at = start;
        while at < end {
            let input = Input::new(hay).range(at..end);
            let Some(c) = capture(rule, ri, &input) else {
                break;
            };
            at = if c.whole.end > at {
                c.whole.end
            } else {
                at + 1
            };
            candidates.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_compiles() {
        let d = Detector::builtin();
        assert!(d.rules().len() > 20);
    }
}
