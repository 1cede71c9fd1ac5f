//! Gateway routing: `/{service}/rest` with the rest checked so that nothing can climb out of
//! the service's base URL.

use sequester_model::ServiceName;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("give the service as the first path segment, like /openai/v1/models")]
    NoService,
    #[error("{0:?} is not a service name")]
    BadService(String),
    #[error("the path holds a dot segment (. or ..), possibly encoded; it is refused")]
    DotSegment,
    #[error("the path holds an encoded slash, backslash or NUL; it is refused")]
    EncodedSeparator,
    #[error("the path holds a backslash or a control character; it is refused")]
    BadCharacter,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes once; invalid escapes stay as they are.
fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Checks one path segment, decoding up to twice (a double-encoded `%252e%252e` becomes `..`
/// at an upstream that decodes twice).
fn check_segment(raw: &str) -> Result<(), RouteError> {
    if raw.bytes().any(|b| b == b'\\' || b.is_ascii_control()) {
        return Err(RouteError::BadCharacter);
    }
    let once = decode(raw.as_bytes());
    let twice = decode(&once);
    for form in [raw.as_bytes(), &once, &twice] {
        if form == b"." || form == b".." {
            return Err(RouteError::DotSegment);
        }
    }
    for form in [&once, &twice] {
        if form.iter().any(|&b| b == b'/' || b == b'\\' || b == 0) {
            return Err(RouteError::EncodedSeparator);
        }
    }
    Ok(())
}

/// Splits `path` (no query) into the service and the rest (`""` or starting with `/`).
pub fn route(path: &str) -> Result<(ServiceName, &str), RouteError> {
    let rest = path.strip_prefix('/').ok_or(RouteError::NoService)?;
    let (service, rest) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if service.is_empty() {
        return Err(RouteError::NoService);
    }
    check_segment(service)?;
    let service = ServiceName::parse(service)
        .map_err(|_| RouteError::BadService(service.chars().take(64).collect()))?;
    for segment in rest.split('/') {
        check_segment(segment)?;
    }
    Ok((service, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn routes() {
        let (s, rest) = route("/openai/v1/chat/completions").unwrap();
        assert_eq!((s.as_str(), rest), ("openai", "/v1/chat/completions"));
        let (s, rest) = route("/openai").unwrap();
        assert_eq!((s.as_str(), rest), ("openai", ""));
        assert_eq!(route("/openai/").unwrap().1, "/");
        assert_eq!(route("/github/repos/a%20b/c").unwrap().1, "/repos/a%20b/c");
    }

    #[test]
    fn refuses_escapes() {
        for (path, want) in [
            ("", RouteError::NoService),
            ("/", RouteError::NoService),
            ("//x", RouteError::NoService),
            ("/openai/../admin", RouteError::DotSegment),
            ("/openai/./v1", RouteError::DotSegment),
            ("/openai/v1/..", RouteError::DotSegment),
            ("/openai/%2e%2e/admin", RouteError::DotSegment),
            ("/openai/%2E./admin", RouteError::DotSegment),
            ("/openai/%252e%252e/admin", RouteError::DotSegment),
            ("/openai/v1%2f..%2fadmin", RouteError::EncodedSeparator),
            ("/openai/v1%2Fx", RouteError::EncodedSeparator),
            ("/openai/v1%252Fx", RouteError::EncodedSeparator),
            ("/openai/v1%5cx", RouteError::EncodedSeparator),
            ("/openai/v1%00", RouteError::EncodedSeparator),
            ("/openai/v1\\..\\x", RouteError::BadCharacter),
            ("/..", RouteError::DotSegment),
            ("/%2e%2e/x", RouteError::DotSegment),
            ("/open%2fai/x", RouteError::EncodedSeparator),
            ("/bad name/x", RouteError::BadService("bad name".into())),
        ] {
            assert_eq!(route(path).unwrap_err(), want, "{path}");
        }
    }

    proptest! {
        /// Whatever is accepted, no segment of the rest decodes to a dot segment or hides a
        /// separator.
        #[test]
        fn accepted_paths_stay_inside(path in "(/[a-z.%25A-F0-9]{0,6}){1,5}") {
            if let Ok((_, rest)) = route(&path) {
                for seg in rest.split('/') {
                    let d = decode(&decode(seg.as_bytes()));
                    prop_assert!(d != b"." && d != b"..");
                    prop_assert!(!d.contains(&b'/'));
                }
            }
        }
    }
}
