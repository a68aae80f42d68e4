//! OpenSSH's patterns, shared by ssh_config (`Host`, `IgnoreUnknown`, `Include` globs) and
//! known_hosts (host fields): `*` matches any run of characters, `?` exactly one, and a
//! pattern list matches when some pattern matches and no negated (`!`) pattern does.
//!
//! Owns: the matching rules of OpenSSH's `match_pattern` and `match_pattern_list`.
//! Invariant: matching never recurses and backtracks only to the last `*`, so its cost is
//! bounded by pattern length times text length. Must not know: what the patterns are matched
//! against.

/// Glob matching with `*` (any run, including empty) and `?` (one character), as OpenSSH's
/// `match_pattern`. Comparison is exact; callers lowercase first where OpenSSH does.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` seen and the text position it was tried at, so a failed
    // literal match can let that star absorb one more character.
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((star, tried)) => {
                    pi = star + 1;
                    ti = tried + 1;
                    backtrack = Some((star, tried + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// OpenSSH's pattern-list rule: true if some pattern matches and no negated (`!`) pattern
/// does, whatever its position in the list.
pub fn pattern_list_matches<'a>(patterns: impl IntoIterator<Item = &'a str>, text: &str) -> bool {
    let mut positive = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if wildcard_match(negated, text) => return false,
            Some(_) => {}
            None => positive |= wildcard_match(pattern, text),
        }
    }
    positive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_openssh_does() {
        let cases = [
            ("*", "abc", true),
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a*c", "abcd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.example.com", "x.example.com", true),
            ("*.example.com", "example.com", false),
            ("*a*b", "xaxab", true),
            ("abc", "abd", false),
            ("abc", "ABC", false),
            ("[h]:22*", "[h]:2222", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(wildcard_match(pattern, text), want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn a_negated_pattern_vetoes_the_list_wherever_it_stands() {
        let cases: [(&[&str], &str, bool); 6] = [
            (&["web*"], "web1", true),
            (&["web*", "!web2"], "web2", false),
            (&["!web2", "web*"], "web2", false),
            (&["!web2"], "web1", false),
            (&["db*", "web*"], "web1", true),
            (&[], "web1", false),
        ];
        for (patterns, text, want) in cases {
            assert_eq!(
                pattern_list_matches(patterns.iter().copied(), text),
                want,
                "{patterns:?} vs {text}"
            );
        }
    }

    #[test]
    fn many_stars_against_a_long_text_still_answer() {
        let pattern = "*a".repeat(50);
        assert!(!wildcard_match(&pattern, &("a".repeat(5_000) + "b")));
        assert!(wildcard_match(&pattern, &"a".repeat(5_000)));
    }
}
