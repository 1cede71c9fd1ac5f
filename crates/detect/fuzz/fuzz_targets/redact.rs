//! The streaming redactor on arbitrary bytes and chunkings: never panics, and chunked output
//! equals whole-buffer output. The first byte chooses the chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sequester_detect::{Detector, Finding};
use std::sync::LazyLock;

static DETECTOR: LazyLock<Detector> = LazyLock::new(Detector::builtin);

fn replace(f: &Finding, _: &[u8]) -> Vec<u8> {
    format!("<{}>", f.rule_id()).into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let whole = DETECTOR.redact(input, replace);
    let mut out = Vec::new();
    let mut r = DETECTOR.redactor(replace);
    for piece in input.chunks(chunk) {
        r.push(piece, &mut out);
    }
    r.finish(&mut out);
    assert_eq!(out, whole);
});
