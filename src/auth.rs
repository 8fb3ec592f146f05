//! API keys (README "Configuration", `server.apiKeys`): `Authorization: Bearer <key>` checked against `server.apiKeys`
//! in constant time, so response timing does not reveal how much of a key was right.

/// Whether `authorization` (the raw header) carries one of `keys`. Always true when no keys
/// are configured.
pub fn authorized(keys: &[String], authorization: Option<&str>) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(token) = authorization.and_then(bearer_token) else {
        return false;
    };
    // Every key is compared in full, with no early exit, whatever matched.
    keys.iter().fold(false, |found, key| {
        found | constant_time_eq(key.as_bytes(), token.as_bytes())
    })
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares every byte position of the longer input; only the lengths leak, which a key
/// of fixed format already tells.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_keys_means_open() {
        assert!(authorized(&[], None));
    }

    #[test]
    fn bearer_key_must_match_one_of_the_keys() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert!(authorized(&keys, Some("Bearer beta")));
        assert!(authorized(&keys, Some("bearer  alpha ")));
        assert!(!authorized(&keys, Some("Bearer alph")));
        assert!(!authorized(&keys, Some("Bearer alphaa")));
        assert!(!authorized(&keys, Some("Basic alpha")));
        assert!(!authorized(&keys, Some("alpha")));
        assert!(!authorized(&keys, None));
    }

    #[test]
    fn prefix_bytes_with_nul_do_not_match() {
        assert!(!constant_time_eq(b"ab", b"ab\0"));
        assert!(constant_time_eq(b"", b""));
    }
}
