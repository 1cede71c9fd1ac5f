use aho_corasick::packed::{Config, MatchKind as PMK};
use sequester_detect::Detector;
use std::collections::BTreeMap;
use std::time::Instant;
fn main() {
    let data = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let lower = data.to_ascii_lowercase();
    let d = Detector::builtin();
    let mut kws: Vec<Vec<u8>> = Vec::new();
    for r in d.rules() { for k in r.keywords() { let k = k.to_ascii_lowercase().into_bytes(); if !kws.contains(&k) { kws.push(k); } } }
    for n in [2usize, 3, 4] {
        let mut pre: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for k in &kws { *pre.entry(k[..k.len().min(n)].to_vec()).or_default() += 1; }
        println!("distinct {n}-prefixes: {}", pre.len());
    }
    // teddy with first 64 distinct 3-prefixes
    let mut pre: Vec<Vec<u8>> = kws.iter().map(|k| k[..k.len().min(3)].to_vec()).collect();
    pre.sort(); pre.dedup();
    for chunk in pre.chunks(64).take(5) {
        let s = Config::new().match_kind(PMK::LeftmostFirst).builder().extend(chunk.iter()).build();
        let Some(s) = s else { println!("no teddy"); continue };
        let mut best = 1e9f64; let mut n = 0;
        for _ in 0..3 { let t = Instant::now(); n = s.find_iter(&lower).count(); best = best.min(t.elapsed().as_secs_f64()); }
        println!("teddy {} pats: {n} hits {:.0} MB/s (min len {})", chunk.len(), lower.len() as f64 / 1e6 / best, s.minimum_len());
    }
}
