//! Rewrites of what goes upstream besides the prefix rewrite (`route`): the path by a regular
//! expression, and the host.

use std::borrow::Cow;

use http::header::HeaderValue;
use http::uri::Authority;
use regex::Regex;
use meshproxy_config::values::regex_problem;
use meshproxy_config::{self as config, Problem};

/// Every match of `pattern` in the path (the query is kept as it is) replaced by
/// `replacement`, which names groups as the regex crate does (`${1}`): translated from the
/// config's `\1`, as Envoy writes them.
#[derive(Debug)]
pub struct RegexRewrite {
    pattern: Regex,
    replacement: String,
}

/// The authority sent upstream instead of the request's: as `Host` to an HTTP/1.1 cluster, as
/// `:authority` to an HTTP/2 one.
#[derive(Debug)]
pub struct HostRewrite {
    pub value: HeaderValue,
    pub authority: Authority,
}

// === impl HostRewrite ===

impl HostRewrite {
    /// `at` is the path of the `host_rewrite` field.
    pub fn compile(host: &str, at: &str, problems: &mut Vec<Problem>) -> Option<HostRewrite> {
        let parsed = (!host.is_empty() && !host.contains('@')).then(|| Authority::try_from(host).ok().zip(HeaderValue::from_str(host).ok())).flatten();
        if parsed.is_none() {
            problems.push(Problem::new(at.to_string(), format!("'{host}' is not a valid host[:port]")));
        }
        parsed.map(|(authority, value)| HostRewrite { value, authority })
    }
}

// === impl RegexRewrite ===

impl RegexRewrite {
    /// `at` is the path of the `regex_rewrite` field.
    pub fn compile(rewrite: &config::RegexRewrite, at: &str, problems: &mut Vec<Problem>) -> Option<RegexRewrite> {
        match Regex::new(&rewrite.pattern) {
            Ok(pattern) => Some(RegexRewrite { pattern, replacement: replacement(&rewrite.substitution) }),
            Err(e) => {
                problems.push(Problem::new(format!("{at}.pattern"), regex_problem(&e)));
                None
            }
        }
    }

    /// The path and query with the path rewritten; borrowed when nothing matched.
    pub fn apply<'p>(&self, path_and_query: &'p str) -> Cow<'p, str> {
        let (path, query) = path_and_query.split_at(path_and_query.find('?').unwrap_or(path_and_query.len()));
        match self.pattern.replace_all(path, self.replacement.as_str()) {
            Cow::Borrowed(_) => Cow::Borrowed(path_and_query),
            Cow::Owned(mut rewritten) => {
                rewritten.push_str(query);
                Cow::Owned(rewritten)
            }
        }
    }
}

/// Envoy's substitution (`\1` a group, `\\` a backslash) as the regex crate's replacement
/// (`${1}`, with a literal `$` written `$$`).
fn replacement(substitution: &str) -> String {
    let mut out = String::with_capacity(substitution.len() + 4);
    let mut chars = substitution.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                chars.next();
                out.push_str(&format!("${{{d}}}"));
            }
            ('\\', Some('\\')) => {
                chars.next();
                out.push('\\');
            }
            ('$', _) => out.push_str("$$"),
            (c, _) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(pattern: &str, substitution: &str) -> RegexRewrite {
        let config = config::RegexRewrite { pattern: pattern.into(), substitution: substitution.into() };
        RegexRewrite::compile(&config, "r", &mut Vec::new()).unwrap_or_else(|| panic!("valid"))
    }

    #[test]
    fn groups_are_written_as_envoy_writes_them_and_the_query_is_kept() {
        let v2 = rewrite("^/v1/(.*)$", "/v2/\\1");
        assert_eq!(v2.apply("/v1/orders/7?x=1"), "/v2/orders/7?x=1");
        assert_eq!(v2.apply("/other?v1"), "/other?v1");
        assert!(matches!(v2.apply("/other"), Cow::Borrowed(_)));
    }

    #[test]
    fn dollars_and_backslashes_in_the_substitution_are_literal() {
        assert_eq!(replacement("/a$1\\\\b\\2"), "/a$$1\\b${2}");
        assert_eq!(rewrite("o", "$").apply("/foo"), "/f$$");
    }

    #[test]
    fn every_match_is_replaced() {
        assert_eq!(rewrite("-", "_").apply("/a-b-c?d-e"), "/a_b_c?d-e");
    }

    #[test]
    fn an_invalid_pattern_is_a_problem_at_its_field() {
        let config = config::RegexRewrite { pattern: "(".into(), substitution: String::new() };
        let mut problems = Vec::new();
        assert!(RegexRewrite::compile(&config, "r.regex_rewrite", &mut problems).is_none());
        assert_eq!(problems[0].path, "r.regex_rewrite.pattern");
    }
}
