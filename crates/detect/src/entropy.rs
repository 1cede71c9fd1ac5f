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
    fn classes() {
        assert_eq!(char_classes(b"abc"), 1);
        assert_eq!(char_classes(b"aB3"), 3);
        assert_eq!(char_classes(b"aB3!"), 4);
        assert_eq!(char_classes(b"open_sesame"), 1);
        assert_eq!(char_classes(b"a-b.c_d"), 1);
    }
}
