//! User rule files are untrusted input: parsing arbitrary text never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sequester_detect::Detector;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(d) = Detector::from_rules(text)
    {
        let _ = d.detect(b"api_key = \"q8Fz2LwX0pVn7RkYt3Hs\" ghp_ AKIA");
    }
});
