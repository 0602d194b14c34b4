//! Header match rules as routes and authorization policies both write them: an exact value,
//! present or absent, or a regex the whole value must match.

use std::collections::BTreeMap;

use http::header::{HeaderName, HeaderValue};
use meshproxy_config::{self as config, Problem};
use regex::Regex;

use crate::route::HeaderCheck;

/// Header rules, each compiled to a check; a mistake is reported at `<at>.<key>.<name>`.
pub fn compile_headers(
    headers: &BTreeMap<String, config::HeaderMatch>,
    rule_at: &str,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(HeaderName, HeaderCheck)> {
    let mut compiled = Vec::with_capacity(headers.len());
    for (name, rule) in headers {
        let at = format!("{rule_at}.{key}.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            problems.push(Problem::new(at, format!("'{name}' is not a valid header name")));
            continue;
        };
        let rule = rule.rule();
        let check = match (rule.exact, rule.present, rule.regex) {
            (Some(value), None, None) => match HeaderValue::from_str(&value) {
                Ok(value) => HeaderCheck::Exact(value),
                Err(_) => {
                    problems.push(Problem::new(format!("{at}.exact"), "not a valid header value"));
                    continue;
                }
            },
            (None, Some(present), None) => HeaderCheck::Present(present),
            (None, None, Some(re)) => match anchored(&re) {
                Ok(re) => HeaderCheck::Regex(re),
                Err(e) => {
                    problems.push(Problem::new(format!("{at}.regex"), regex_problem(&e)));
                    continue;
                }
            },
            _ => {
                problems.push(Problem::new(at, "give exactly one of exact, present, regex"));
                continue;
            }
        };
        compiled.push((header, check));
    }
    compiled
}

/// One line; the regex crate's own message draws a diagram under the anchored pattern (shared
/// with the rules that are not header matches: `config::values`).
pub use meshproxy_config::values::regex_problem;

/// The whole subject must match, as a path or header value rule means.
pub fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}
