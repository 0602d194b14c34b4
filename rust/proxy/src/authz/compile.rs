//! Authorization policies compiled: rules, identity and path patterns, header matches; each
//! mistake reported at its field path.

use super::*;
use crate::header_match::compile_headers;

pub(super) fn compile_rule(
    rule: &config::AuthzRule,
    trust_domain: Option<&str>,
    at: &str,
    counters: &PolicyCounters,
    problems: &mut Vec<Problem>,
) -> Rule {
    let identity = |pattern: &str| identity_pattern(pattern, trust_domain);
    let namespace = |ns: &str| namespace_problem(ns).map_or_else(|| Ok(ns.to_string()), Err);
    let method = |name: &str| {
        Method::from_bytes(name.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("'{name}' is not a valid HTTP method; expected a token such as GET or POST"))
    };
    Rule {
        name: rule.name.as_str().into(),
        action: rule.action,
        // In the order of the config keys, which is the order problems are reported in.
        identities: compile_list(&rule.identities, at, "identities", problems, identity),
        namespaces: compile_list(&rule.namespaces, at, "namespaces", problems, namespace),
        paths: compile_list(&rule.paths, at, "paths", problems, path_pattern),
        methods: compile_list(&rule.methods.as_ref().map(config::Methods::to_vec), at, "methods", problems, method),
        headers: compile_headers(&rule.headers, at, "headers", problems),
        not_identities: compile_list(&rule.not_identities, at, "not_identities", problems, identity),
        not_namespaces: compile_list(&rule.not_namespaces, at, "not_namespaces", problems, namespace),
        not_paths: compile_list(&rule.not_paths, at, "not_paths", problems, path_pattern),
        not_methods: compile_list(&rule.not_methods.as_ref().map(config::Methods::to_vec), at, "not_methods", problems, method),
        not_headers: compile_headers(&rule.not_headers, at, "not_headers", problems),
        counters: counters.rule(&rule.name),
    }
}

/// A list condition: each entry compiled at `{at}.{key}[k]`; an empty list (which nothing
/// could match, or, negated, nothing could fail) is a problem, as in the Python schema.
pub(super) fn compile_list<T>(
    entries: &Option<Vec<String>>,
    at: &str,
    key: &str,
    problems: &mut Vec<Problem>,
    compile: impl Fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    let entries = entries.as_ref()?;
    if entries.is_empty() {
        problem(problems, format!("{at}.{key}"), format!("give at least one entry, or leave out '{key}' to match any"));
    }
    let mut compiled = Vec::with_capacity(entries.len());
    for (k, entry) in entries.iter().enumerate() {
        match compile(entry) {
            Ok(entry) => compiled.push(entry),
            Err(message) => problem(problems, format!("{at}.{key}[{k}]"), message),
        }
    }
    Some(compiled)
}

pub(super) fn identity_pattern(pattern: &str, trust_domain: Option<&str>) -> Result<IdentityPattern, String> {
    if pattern == "*" {
        return Ok(IdentityPattern::Any);
    }
    let invalid = |problem: &str| format!("'{pattern}' is not a valid identity pattern: {problem}; {IDENTITY_RULE}");
    let prefix = pattern.strip_suffix('*');
    if prefix.unwrap_or(pattern).contains('*') {
        return Err(invalid("'*' may appear only once, at the end"));
    }
    let (compiled, domain) = match prefix {
        Some(prefix) => {
            let domain = spiffe::check_prefix(prefix).map_err(|e| invalid(e.problem()))?;
            (IdentityPattern::Prefix(prefix.to_string()), domain)
        }
        None => {
            let id = SpiffeId::parse(pattern).map_err(|e| invalid(e.problem()))?;
            let domain = id.trust_domain().to_string();
            return match trust_domain {
                Some(want) if want != domain => Err(other_domain(pattern, &domain, want)),
                _ => Ok(IdentityPattern::Exact(id)),
            };
        }
    };
    match trust_domain {
        Some(want) if want != domain => Err(other_domain(pattern, domain, want)),
        _ => Ok(compiled),
    }
}

pub(super) fn other_domain(pattern: &str, domain: &str, want: &str) -> String {
    format!(
        "'{pattern}' is in trust domain '{domain}', but peers can only have IDs in this sidecar's \
         trust domain '{want}' (identity.trust_domain), e.g. 'spiffe://{want}/ns/default/sa/web'"
    )
}

/// A namespace is one path segment of a SPIFFE ID.
pub(super) fn namespace_problem(ns: &str) -> Option<String> {
    let valid = "a namespace is one SPIFFE ID path segment: letters, digits, '.', '-' and '_'";
    let bad_char = ns.chars().find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    match (ns, bad_char) {
        ("" | "." | "..", _) => Some(format!("'{ns}' is not a valid namespace; {valid}")),
        (_, Some(c)) => Some(format!("'{ns}' is not a valid namespace: it contains {c:?}; {valid}")),
        _ => None,
    }
}

pub(super) fn path_pattern(pattern: &str) -> Result<PathPattern, String> {
    if pattern == "*" {
        return Ok(PathPattern::Any);
    }
    let invalid = |problem: &str| format!("'{pattern}' is not a valid path pattern: {problem}; {PATH_RULE}");
    if !pattern.starts_with('/') {
        return Err(invalid("it must start with '/'"));
    }
    if pattern.contains('?') {
        return Err(invalid("the query is not part of the path"));
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => Ok(PathPattern::Prefix(prefix.to_string())),
        None if !pattern.contains('*') => Ok(PathPattern::Exact(pattern.to_string())),
        _ => Err(invalid("'*' may appear only once, at the end")),
    }
}

pub(super) fn problem(problems: &mut Vec<Problem>, path: String, message: impl Into<String>) {
    problems.push(Problem { path, message: message.into() });
}
