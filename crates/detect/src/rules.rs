//! Rules as data: the TOML schema, the builtin rule files and compiling a rule.

use std::sync::{Arc, OnceLock};

use regex_automata::{meta, util::syntax};
use regex_syntax::hir::{Hir, HirKind};
use sequester_model::HostPattern;
use serde::Deserialize;

use crate::DetectError;
use crate::detector::Confidence;
use crate::prefilter::{self, MIN_KEYWORD_LEN};
use crate::validate::Validator;

/// The longest text one rule may match, in bytes. PEM blocks are the longest credentials we
/// support (up to 16 KiB of body); the streaming redactor keeps this much context.
pub const MAX_MATCH_LEN: usize = 18 * 1024;

/// The rule files compiled into the binary, by file name.
pub(crate) const BUILTIN_RULE_FILES: &[(&str, &str)] = &[
    ("ai.toml", include_str!("../rules/ai.toml")),
    ("aws.toml", include_str!("../rules/aws.toml")),
    ("azure.toml", include_str!("../rules/azure.toml")),
    ("chat.toml", include_str!("../rules/chat.toml")),
    ("generic.toml", include_str!("../rules/generic.toml")),
    ("github.toml", include_str!("../rules/github.toml")),
    ("gitlab.toml", include_str!("../rules/gitlab.toml")),
    ("google.toml", include_str!("../rules/google.toml")),
    ("keys.toml", include_str!("../rules/keys.toml")),
    ("packages.toml", include_str!("../rules/packages.toml")),
    ("payments.toml", include_str!("../rules/payments.toml")),
    ("sequester.toml", include_str!("../rules/sequester.toml")),
    ("services.toml", include_str!("../rules/services.toml")),
    ("urls.toml", include_str!("../rules/urls.toml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    name: String,
    provider: String,
    keywords: Vec<String>,
    pattern: String,
    #[serde(default)]
    validator: Option<String>,
    #[serde(default)]
    confidence: Option<Confidence>,
    #[serde(default)]
    min_entropy: Option<f64>,
    #[serde(default)]
    min_char_classes: Option<u8>,
    #[serde(default)]
    filters: Option<Vec<String>>,
    #[serde(default)]
    generic: bool,
    /// True for a credential's public half (an AWS access key id): reported by scans, but not
    /// a secret on its own, so the sanitizer leaves it in place.
    #[serde(default)]
    identifier: bool,
    #[serde(default)]
    suggested_hosts: Vec<String>,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    negative_examples: Vec<String>,
}

/// Which stop-lists a rule applies to its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filters {
    /// Examples and templates (`EXAMPLE`, `xxxx`, `${VAR}`, repeated and sequential runs).
    pub placeholder: bool,
    /// Look-alikes: UUIDs, digests with an algorithm prefix, paths, code references, numbers.
    pub lookalike: bool,
    /// Identifiers that name something other than a credential (`public_key`, `key_id`).
    pub identifier: bool,
    /// The value must look machine-generated: letters mixed with digits (or long and mixed
    /// case), not words joined by separators.
    pub random: bool,
}

impl Filters {
    fn parse(rule_id: &str, names: Option<&[String]>) -> Result<Self, DetectError> {
        let Some(names) = names else {
            return Ok(Self {
                placeholder: true,
                ..Self::default()
            });
        };
        let mut f = Self::default();
        for name in names {
            match name.as_str() {
                "placeholder" => f.placeholder = true,
                "lookalike" => f.lookalike = true,
                "identifier" => f.identifier = true,
                "random" => f.random = true,
                _ => {
                    return Err(DetectError::InvalidRule {
                        rule_id: rule_id.to_owned(),
                        field: "filters",
                        reason: format!(
                            "has unknown filter {name:?}; known: placeholder, lookalike, identifier, random"
                        ),
                    });
                }
            }
        }
        Ok(f)
    }
}

/// A detection rule as loaded from a rule file. Read-only.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) info: Arc<RuleInfo>,
    pub(crate) keywords: Vec<String>,
    pub(crate) pattern: String,
    pub(crate) validator: Option<Validator>,
    pub(crate) confidence: Confidence,
    pub(crate) min_entropy: Option<f64>,
    pub(crate) min_char_classes: u8,
    pub(crate) filters: Filters,
    pub(crate) examples: Vec<String>,
    pub(crate) negative_examples: Vec<String>,
}

/// The part of a rule every finding carries (shared, cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct RuleInfo {
    /// Position in the detector's rule list (ties between overlapping findings go to the
    /// rule loaded first).
    pub(crate) order: usize,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) provider: String,
    pub(crate) generic: bool,
    pub(crate) identifier: bool,
    pub(crate) suggested_hosts: Vec<HostPattern>,
}

impl Rule {
    /// The stable rule id, e.g. `github-pat-classic`.
    pub fn id(&self) -> &str {
        &self.info.id
    }
    /// A human-readable name.
    pub fn name(&self) -> &str {
        &self.info.name
    }
    /// The provider that issues this credential, e.g. `github`.
    pub fn provider(&self) -> &str {
        &self.info.provider
    }
    /// The literals one of which every match contains (matched ASCII case-insensitively).
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }
    /// The regular expression (Rust `regex` syntax).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
    /// The offline validator, if the format has one.
    pub fn validator(&self) -> Option<Validator> {
        self.validator
    }
    /// The confidence of a match that passes every check.
    pub fn confidence(&self) -> Confidence {
        self.confidence
    }
    /// Whether this is a generic (context-based) rule rather than a provider format.
    pub fn is_generic(&self) -> bool {
        self.info.generic
    }
    /// Where this credential may legitimately be sent.
    pub fn suggested_hosts(&self) -> &[HostPattern] {
        &self.info.suggested_hosts
    }
    /// Texts the rule must find a secret in.
    pub fn examples(&self) -> &[String] {
        &self.examples
    }
    /// Texts the rule must find nothing in.
    pub fn negative_examples(&self) -> &[String] {
        &self.negative_examples
    }
    /// The stop-lists this rule applies.
    pub fn filters(&self) -> Filters {
        self.filters
    }
    /// Whether the rule matches a distinctive provider format (a high-confidence provider rule,
    /// or a checksummed format) rather than a value found by its context. Only such rules
    /// report a value whose sole stop-list objection is a run (`111111`), at low confidence.
    pub(crate) fn has_distinctive_format(&self) -> bool {
        !self.info.generic
            && (self.confidence == Confidence::High
                || self
                    .validator
                    .is_some_and(|v| v.kind() == crate::validate::ValidatorKind::Checksum))
    }
}

/// A rule ready to run.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) rule: Rule,
    /// The matcher, built the first time the rule is tried: compiling all the builtin
    /// patterns took nine tenths of the detector's start-up (~80 ms), and most rules are never
    /// tried on a given input. Rules from users are built when loaded, so that a pattern the
    /// regex engine refuses is reported then ([`check_user_rules`]).
    regex: OnceLock<Option<meta::Regex>>,
    /// Capture group holding the secret: `secret` if named, else 1 if present, else 0.
    pub(crate) secret_group: usize,
    /// Every match starts at one of the rule's keywords, so the regex runs anchored at each
    /// keyword hit instead of in a window around it.
    pub(crate) anchored: bool,
    /// Per keyword (in the order of [`Rule::keywords`]): the offsets back from a hit at which a
    /// match may start; `None` when they cannot be enumerated.
    pub(crate) keyword_starts: Option<Vec<Vec<usize>>>,
    /// The longest text the regex can match.
    pub(crate) max_len: usize,
}

/// Builds the matchers of rules from users (a pattern the regex engine refuses is an error
/// now, not a silent miss later), and rejects a rule whose pattern can match text that
/// contains none of its keywords: the prefilter only looks around keyword hits, so such
/// matches would be missed without a word. The builtin rules are held to both by tests, not
/// checked at every start. When the automata are too large to decide coverage, the rule is
/// accepted.
pub(crate) fn check_user_rules(rules: &[CompiledRule]) -> Result<(), DetectError> {
    for r in rules {
        let regex = build_regex(&r.rule.pattern).map_err(|reason| DetectError::InvalidPattern {
            rule_id: r.rule.id().to_owned(),
            reason,
        })?;
        let _ = r.regex.set(Some(regex));
        if let crate::coverage::Coverage::Uncovered(text) =
            crate::coverage::check(&r.rule.pattern, &lowercase_keywords(&r.rule.keywords))
        {
            return Err(invalid(
                r.rule.id(),
                "keywords",
                format!(
                    "do not cover every match of the pattern: it can match \"{}\", which contains none of them, and text is only searched around keywords; add a keyword that such matches contain, or narrow the pattern",
                    crate::coverage::escape(&text)
                ),
            ));
        }
    }
    Ok(())
}

/// Keywords as the prefilter holds and compares them: ASCII-lowercased bytes.
pub(crate) fn lowercase_keywords(keywords: &[String]) -> Vec<Vec<u8>> {
    keywords
        .iter()
        .map(|k| k.as_bytes().to_ascii_lowercase())
        .collect()
}

/// Patterns run over bytes with Unicode off: `\w`, `\s`, `\d`, `\b` and (?i) are ASCII-only, which is
/// what credentials are made of and keeps the lazy DFA on its fast path.
fn build_regex(pattern: &str) -> Result<meta::Regex, String> {
    meta::Regex::builder()
        .syntax(syntax::Config::new().utf8(false).unicode(false))
        .configure(meta::Config::new().utf8_empty(false))
        .build(pattern)
        .map_err(|e| e.to_string())
}

/// The capture group that holds the secret: the one named `secret`, else the first, else the
/// whole match (0). Group indices are the same in the regex built from the pattern.
fn secret_group(hir: &Hir) -> usize {
    fn named(hir: &Hir) -> Option<u32> {
        match hir.kind() {
            HirKind::Capture(c) if c.name.as_deref() == Some("secret") => Some(c.index),
            HirKind::Capture(c) => named(&c.sub),
            HirKind::Repetition(r) => named(&r.sub),
            HirKind::Concat(subs) | HirKind::Alternation(subs) => subs.iter().find_map(named),
            _ => None,
        }
    }
    match named(hir) {
        Some(i) => i as usize,
        None if hir.properties().explicit_captures_len() > 0 => 1,
        None => 0,
    }
}

impl CompiledRule {
    /// The rule's matcher (`None` only if the regex engine refuses a pattern that parsed,
    /// which the builtin rules' tests and [`check_user_rules`] exclude).
    pub(crate) fn regex(&self) -> Option<&meta::Regex> {
        self.regex
            .get_or_init(|| build_regex(&self.rule.pattern).ok())
            .as_ref()
    }
}

/// Parses a rule file and compiles its rules.
pub(crate) fn parse_rule_file(
    source_name: &str,
    text: &str,
) -> Result<Vec<CompiledRule>, DetectError> {
    let file: RuleFile = toml::from_str(text).map_err(|e| DetectError::RuleSyntax {
        source_name: source_name.to_owned(),
        message: e.message().to_owned(),
    })?;
    file.rules.into_iter().map(compile).collect()
}

fn invalid(rule_id: &str, field: &'static str, reason: impl Into<String>) -> DetectError {
    DetectError::InvalidRule {
        rule_id: rule_id.to_owned(),
        field,
        reason: reason.into(),
    }
}

fn compile(spec: RuleSpec) -> Result<CompiledRule, DetectError> {
    let id = spec.id.as_str();
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
    {
        return Err(invalid(
            id,
            "id",
            "must be non-empty lowercase letters, digits, '-' or '.'",
        ));
    }
    if spec.provider.is_empty() {
        return Err(invalid(id, "provider", "must not be empty"));
    }
    if spec.keywords.is_empty() {
        return Err(invalid(
            id,
            "keywords",
            "must list at least one literal that every match contains",
        ));
    }
    if let Some(k) = spec
        .keywords
        .iter()
        .find(|k| k.len() < MIN_KEYWORD_LEN || !k.is_ascii() || k.contains('\0'))
    {
        return Err(invalid(
            id,
            "keywords",
            format!(
                "entry {k:?} must be ASCII, without NUL, and at least {MIN_KEYWORD_LEN} characters long"
            ),
        ));
    }
    let validator = match &spec.validator {
        None => None,
        Some(name) => Some(Validator::from_name(name).ok_or_else(|| {
            DetectError::UnknownValidator {
                rule_id: id.to_owned(),
                name: name.clone(),
                known: Validator::ALL
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?),
    };
    if let Some(e) = spec.min_entropy
        && !(0.0..=8.0).contains(&e)
    {
        return Err(invalid(id, "min_entropy", "must be between 0 and 8 bits"));
    }
    let min_char_classes = spec.min_char_classes.unwrap_or(0);
    if min_char_classes > 4 {
        return Err(invalid(id, "min_char_classes", "must be between 0 and 4"));
    }
    let filters = Filters::parse(id, spec.filters.as_deref())?;
    let suggested_hosts = spec
        .suggested_hosts
        .iter()
        .map(|h| HostPattern::parse(h).map_err(|e| invalid(id, "suggested_hosts", e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;

    let bad_pattern = |reason: String| DetectError::InvalidPattern {
        rule_id: id.to_owned(),
        reason,
    };
    // Parsed as the matcher will be (see `build_regex`): bytes, Unicode off.
    let hir = prefilter::parse_pattern(&spec.pattern).map_err(bad_pattern)?;
    let max_len = match hir.properties().maximum_len() {
        Some(n) if n <= MAX_MATCH_LEN => n,
        _ => {
            return Err(bad_pattern(format!(
                "it may match more than {MAX_MATCH_LEN} bytes; bound every repetition, e.g. {{1,200}} instead of + or *"
            )));
        }
    };
    if hir.properties().minimum_len().unwrap_or(0) == 0 {
        return Err(bad_pattern("it can match the empty string".to_owned()));
    }
    let secret_group = secret_group(&hir);

    let lowered = lowercase_keywords(&spec.keywords);
    let keyword_starts = prefilter::start_offsets(&hir, &lowered);
    let anchored = prefilter::starts_at_keywords(keyword_starts.as_deref());

    let info = Arc::new(RuleInfo {
        order: 0,
        id: spec.id,
        name: spec.name,
        provider: spec.provider,
        generic: spec.generic,
        identifier: spec.identifier,
        suggested_hosts,
    });
    Ok(CompiledRule {
        rule: Rule {
            info,
            keywords: spec.keywords,
            pattern: spec.pattern,
            validator,
            confidence: spec.confidence.unwrap_or(Confidence::Medium),
            min_entropy: spec.min_entropy,
            min_char_classes,
            filters,
            examples: spec.examples,
            negative_examples: spec.negative_examples,
        },
        regex: OnceLock::new(),
        secret_group,
        anchored,
        keyword_starts,
        max_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchored(pattern: &str, keywords: &[&str]) -> bool {
        let hir = prefilter::parse_pattern(pattern).unwrap();
        let kw: Vec<Vec<u8>> = keywords.iter().map(|k| k.as_bytes().to_vec()).collect();
        prefilter::starts_at_keywords(prefilter::start_offsets(&hir, &kw).as_deref())
    }

    #[test]
    fn anchoring_analysis() {
        assert!(anchored(r"\b(ghp_[A-Za-z0-9]{36})\b", &["ghp_"]));
        assert!(anchored(
            r"(?i)\b(?:pass(?:word|wd)|pwd)\s*=",
            &["pass", "pwd"]
        ));
        assert!(anchored(
            r"(?:A3T[A-Z0-9]|AKIA|ASIA)[A-Z2-7]{16}",
            &["a3t", "akia", "asia"]
        ));
        assert!(!anchored(r"[a-z]{0,4}token", &["token"]));
        assert!(!anchored(r"\w+token", &["token"]));
        assert!(!anchored(r"(?i)pa", &["pass"]));
    }

    #[test]
    fn unbounded_patterns_are_rejected() {
        let toml = r#"
            [[rules]]
            id = "unbounded"
            name = "x"
            provider = "x"
            keywords = ["tok_"]
            pattern = 'tok_[a-z]+'
        "#;
        let err = parse_rule_file("test", toml).unwrap_err();
        assert_eq!(err.code(), "invalid_rule_pattern");
    }
}
