//! Character statistics used to tell random credentials from words and templates.

/// Shannon entropy of `s` in bits per byte (0 for an empty slice).
pub fn shannon(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let len = f64::from(u32::try_from(s.len()).unwrap_or(u32::MAX));
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// Shannon entropy of `s` with every run of six or more identical bytes counted as one byte:
/// the randomness of the rest of a value that holds such a run (`xoxa-2-511111111-…`).
pub fn shannon_without_runs(s: &[u8]) -> f64 {
    const RUN: usize = 6;
    let mut kept = Vec::with_capacity(s.len());
    for run in s.chunk_by(|a, b| a == b) {
        if run.len() >= RUN {
            kept.extend_from_slice(&run[..1]);
        } else {
            kept.extend_from_slice(run);
        }
    }
    shannon(&kept)
}

/// How many of the classes lowercase, uppercase, digit and other (symbols) occur in `s`.
/// Word separators (`_`, `-`, `.`, space) are not symbols: `open_sesame` is one class.
pub fn char_classes(s: &[u8]) -> u8 {
    let (mut lower, mut upper, mut digit, mut other) = (false, false, false, false);
    for &b in s {
        match b {
            b'a'..=b'z' => lower = true,
            b'A'..=b'Z' => upper = true,
            b'0'..=b'9' => digit = true,
            b'_' | b'-' | b'.' | b' ' => {}
            _ => other = true,
        }
    }
    u8::from(lower) + u8::from(upper) + u8::from(digit) + u8::from(other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_known_strings() {
        assert!(shannon(b"").abs() < 1e-9);
        assert!(shannon(b"aaaa").abs() < 1e-9);
        assert!((shannon(b"ab") - 1.0).abs() < 1e-9);
        assert!((shannon(b"0123456789abcdef") - 4.0).abs() < 1e-9);
    }

    #[test]
    fn runs_count_once_without_runs() {
        assert!((shannon_without_runs(b"ab111111") - shannon(b"ab1")).abs() < 1e-9);
        // Shorter repeats are kept.
        assert!((shannon_without_runs(b"ab11111") - shannon(b"ab11111")).abs() < 1e-9);
        assert!(
            shannon_without_runs(b"xoxa-2-511111111-e039d028")
                > shannon(b"xoxa-2-511111111-e039d028")
        );
    }

    #[test]
    fn classes() {
        assert_eq!(char_classes(b"abc"), 1);
        assert_eq!(char_classes(b"aB3"), 3);
        assert_eq!(char_classes(b"aB3!"), 4);
        assert_eq!(char_classes(b"open_sesame"), 1);
        assert_eq!(char_classes(b"a-b.c_d"), 1);
    }
}
