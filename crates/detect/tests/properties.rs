#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
//! Property tests: no input makes the detector or the redactor panic, findings are sorted,
//! non-overlapping and in bounds, and redacting in chunks equals redacting whole.

mod fakes;

use proptest::prelude::*;
use sequester_detect::{Detector, Finding};

fn placeholder(f: &Finding, _: &[u8]) -> Vec<u8> {
    format!("<{}>", f.rule_id()).into_bytes()
}

/// Arbitrary bytes, or text built from credential-ish fragments (so rules actually fire).
fn input() -> impl Strategy<Value = Vec<u8>> {
    let fragments = prop::sample::select(vec![
        "ghp_".to_owned(),
        "password=".to_owned(),
        "api_key: \"".to_owned(),
        "-----BEGIN RSA PRIVATE KEY-----\n".to_owned(),
        "-----END RSA PRIVATE KEY-----".to_owned(),
        "postgres://u:".to_owned(),
        "@host/db".to_owned(),
        "eyJ".to_owned(),
        "AKIA".to_owned(),
        "<<SECRET_".to_owned(),
        ">>".to_owned(),
        "\n".to_owned(),
        " ".to_owned(),
        fakes::github_classic(1),
        fakes::sequester_token(2),
        fakes::jwt(3),
        fakes::random_alnum(4, 40),
        fakes::pem_block(5),
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2000),
        prop::collection::vec(fragments, 0..40).prop_map(|v| v.concat().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn detector_never_panics_and_findings_are_well_formed(hay in input()) {
        let d = Detector::builtin();
        let findings = d.detect(&hay);
        let mut last_end = 0;
        for f in &findings {
            prop_assert!(f.span.start >= last_end);
            prop_assert!(f.span.start < f.span.end && f.span.end <= hay.len());
            last_end = f.span.end;
        }
    }

    #[test]
    fn chunked_redaction_equals_whole(hay in input(), cuts in prop::collection::vec(1usize..700, 1..8)) {
        let d = Detector::builtin();
        let whole = d.redact(&hay, placeholder);
        let mut out = Vec::new();
        let mut r = d.redactor(placeholder);
        let mut rest = &hay[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            r.push(&rest[..n], &mut out);
            rest = &rest[n..];
            i += 1;
        }
        r.finish(&mut out);
        prop_assert_eq!(out, whole);
    }
}
