//! The detector on arbitrary bytes: never panics; findings are sorted, disjoint, in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sequester_detect::Detector;
use std::sync::LazyLock;

static DETECTOR: LazyLock<Detector> = LazyLock::new(Detector::builtin);

fuzz_target!(|data: &[u8]| {
    let findings = DETECTOR.detect(data);
    let mut last_end = 0;
    for f in &findings {
        assert!(f.span.start >= last_end && f.span.start < f.span.end && f.span.end <= data.len());
        last_end = f.span.end;
    }
});
