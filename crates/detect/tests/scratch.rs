#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
use sequester_detect::Detector;
#[test]
fn scratch() {
    let d = Detector::builtin();
    let Ok(text) = std::fs::read_to_string("/tmp/probe.txt") else { return };
    for line in text.lines() {
        let line = line.replace("\\n", "\n");
        println!("{line:?}");
        for (id, span, why) in d.explain(line.as_bytes()) {
            println!("    {id} {:?} {:?}", &line[span], why);
        }
    }
}
