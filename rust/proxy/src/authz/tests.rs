use super::*;
use http::header::HeaderValue;
use serde_json::Value;

pub(super) const SHOP_WEB: &str = "spiffe://mesh.local/ns/shop/sa/web";

pub(super) fn policies(doc: serde_json::Value) -> Vec<config::AuthzPolicy> {
    serde_json::from_value(doc).unwrap()
}

pub(super) fn compiled(doc: serde_json::Value) -> (Authorization, AuthzCounters) {
    let counters = AuthzCounters::default();
    let mut problems = Vec::new();
    let authz = Authorization::compile(
        &policies(doc),
        Some("mesh.local"),
        "inbound",
        "listeners[0]",
        &counters,
        &mut problems,
    );
    assert_eq!(problems, vec![]);
    (authz, counters)
}

#[derive(Clone, Debug)]
pub(super) struct Probe {
    pub(super) peer: Option<SpiffeId>,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) headers: HeaderMap,
}

pub(super) fn probe(peer: Option<&str>, method: &str, path: &str) -> Probe {
    Probe {
        peer: peer.map(|p| SpiffeId::parse(p).unwrap()),
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        path: path.to_string(),
        headers: HeaderMap::new(),
    }
}

impl Probe {
    pub(super) fn header(mut self, name: &'static str, value: &'static str) -> Probe {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }

    pub(super) fn request(&self) -> AuthzRequest<'_> {
        AuthzRequest { peer: self.peer.as_ref(), method: &self.method, path: &self.path, headers: &self.headers }
    }
}

pub(super) fn allowed(authz: &Authorization, probe: &Probe) -> bool {
    authz.decide(&probe.request()) == Decision::Allow
}

pub(super) fn deny(policy: &str, rule: Option<&str>) -> Decision {
    Decision::Deny { policy: policy.into(), rule: rule.map(Into::into) }
}

pub(super) fn counter(counters: &AuthzCounters, pointer: &str) -> u64 {
    counters
        .json()
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {}", counters.json()))
}

#[test]
fn no_policies_allow_everything_and_say_so() {
    let (authz, _) = compiled(serde_json::json!([]));
    assert!(authz.is_empty());
    assert!(allowed(&authz, &probe(None, "DELETE", "/admin")));
    assert!(Authorization::default().is_empty());
}

#[test]
fn a_deny_rule_wins_over_a_matching_allow_rule() {
    let (authz, counters) = compiled(serde_json::json!([
        {"name": "open", "rules": [{"name": "all", "action": "allow"}]},
        {"name": "guard", "rules": [{"name": "admin", "action": "deny", "paths": ["/admin/*"]}]},
    ]));
    assert_eq!(authz.decide(&probe(Some(SHOP_WEB), "GET", "/admin/users").request()), deny("guard", Some("admin")));
    assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/orders")));
    assert_eq!(counter(&counters, "/inbound/guard/denied"), 1);
    assert_eq!(counter(&counters, "/inbound/open/allowed"), 1);
    assert_eq!(counter(&counters, "/inbound/open/rules/all/matches"), 2);
    assert_eq!(counter(&counters, "/inbound/guard/rules/admin/matches"), 1);
}

#[test]
fn once_an_allow_rule_exists_requests_matching_none_are_denied() {
    let (authz, counters) = compiled(serde_json::json!([
        {"name": "deny-only", "rules": [{"name": "no-delete", "action": "deny", "methods": ["delete"]}]},
        {"name": "reads", "rules": [{"name": "get", "action": "allow", "methods": ["GET"]}]},
    ]));
    assert!(allowed(&authz, &probe(None, "GET", "/")));
    assert_eq!(authz.decide(&probe(None, "POST", "/").request()), deny("reads", None));
    assert_eq!(authz.decide(&probe(None, "DELETE", "/").request()), deny("deny-only", Some("no-delete")));
    assert_eq!(counter(&counters, "/inbound/reads/denied"), 1);
    assert_eq!(counter(&counters, "/inbound/deny-only/denied"), 1);
}

#[test]
fn deny_rules_alone_allow_the_rest() {
    let (authz, counters) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "deny", "paths": ["/admin"]}]},
    ]));
    assert!(!authz.is_empty());
    assert!(allowed(&authz, &probe(None, "GET", "/admin/x")));
    assert!(!allowed(&authz, &probe(None, "GET", "/admin")));
    assert_eq!(counter(&counters, "/inbound/p/allowed"), 0, "allowed counts allows by a rule only");
}

#[test]
fn a_dry_run_policy_counts_what_it_would_deny_without_denying() {
    let (authz, counters) = compiled(serde_json::json!([
        {"name": "open", "rules": [{"name": "all", "action": "allow"}]},
        {"name": "trial", "dry_run": true, "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}]},
    ]));
    assert!(allowed(&authz, &probe(None, "GET", "/admin/x")));
    assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/admin/y")));
    assert!(allowed(&authz, &probe(None, "GET", "/other")));
    assert_eq!(counter(&counters, "/inbound/trial/dry_run_denied"), 2);
    assert_eq!(counter(&counters, "/inbound/trial/denied"), 0);
    assert_eq!(counter(&counters, "/inbound/trial/rules/no-admin/matches"), 2);
    assert_eq!(counter(&counters, "/inbound/open/allowed"), 3);
}

#[test]
fn a_dry_run_allow_policy_would_turn_on_default_deny() {
    let (authz, counters) = compiled(serde_json::json!([
        {"name": "trial", "dry_run": true, "rules": [{"name": "shop", "action": "allow", "namespaces": ["shop"]}]},
    ]));
    assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/")));
    assert!(allowed(&authz, &probe(Some("spiffe://mesh.local/ns/other/sa/x"), "GET", "/")));
    assert!(allowed(&authz, &probe(None, "GET", "/")));
    assert_eq!(counter(&counters, "/inbound/trial/dry_run_denied"), 2);
}

#[test]
fn a_dry_run_policy_does_not_count_what_is_denied_anyway() {
    let (authz, counters) = compiled(serde_json::json!([
        {"name": "guard", "rules": [{"name": "all", "action": "deny"}]},
        {"name": "trial", "dry_run": true, "rules": [{"name": "all", "action": "deny"}]},
    ]));
    assert_eq!(authz.decide(&probe(None, "GET", "/").request()), deny("guard", Some("all")));
    assert_eq!(counter(&counters, "/inbound/trial/dry_run_denied"), 0);
    assert_eq!(counter(&counters, "/inbound/trial/rules/all/matches"), 1);
}

#[test]
fn identity_and_namespace_rules_never_match_a_plain_text_peer() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [
            {"name": "no-bad", "action": "deny", "identities": ["*"], "paths": ["/secret"]},
            {"name": "any-peer", "action": "allow", "identities": ["*"]},
            {"name": "shop", "action": "allow", "namespaces": ["shop"]},
        ]},
    ]));
    assert!(!allowed(&authz, &probe(None, "GET", "/")), "no allow rule matches a plain-text peer");
    assert!(
        allowed(&authz, &probe(Some("spiffe://mesh.local/anything"), "GET", "/")),
        "'*' is any authenticated peer"
    );
    assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/secret")));

    let (deny_only, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "shop", "action": "deny", "namespaces": ["shop"]}]},
    ]));
    assert!(allowed(&deny_only, &probe(None, "GET", "/")), "a deny rule on identity does not match plain text");
    assert!(!allowed(&deny_only, &probe(Some(SHOP_WEB), "GET", "/")));
}

#[test]
fn identities_match_exactly_or_by_prefix() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow", "identities": [
            "spiffe://mesh.local/ns/shop/*", "spiffe://mesh.local/ns/ops/sa/admin",
        ]}]},
    ]));
    assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/")));
    assert!(allowed(&authz, &probe(Some("spiffe://mesh.local/ns/ops/sa/admin"), "GET", "/")));
    assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/ops/sa/admin2"), "GET", "/")));
    assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/shopx/sa/web"), "GET", "/")));
    assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/shop"), "GET", "/")));
}

#[test]
fn namespaces_match_the_segment_after_ns() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow", "namespaces": ["shop", "ops"]}]},
    ]));
    assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/")));
    assert!(allowed(&authz, &probe(Some("spiffe://mesh.local/ns/ops/sa/x"), "GET", "/")));
    assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/dev/sa/shop"), "GET", "/")));
    assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/shop/ns"), "GET", "/")));
    assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local"), "GET", "/")));
}

#[test]
fn paths_match_exactly_or_by_prefix() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow", "paths": ["/health", "/orders/*", "/v1*"]}]},
    ]));
    for (path, want) in [
        ("/health", true),
        ("/health/x", false),
        ("/healthz", false),
        ("/orders/", true),
        ("/orders/1/items", true),
        ("/orders", false),
        ("/v1", true),
        ("/v12/x", true),
        ("/", false),
    ] {
        assert_eq!(allowed(&authz, &probe(None, "GET", path)), want, "{path}");
    }
    let (any, _) =
        compiled(serde_json::json!([{"name": "p", "rules": [{"name": "r", "action": "allow", "paths": ["*"]}]}]));
    assert!(allowed(&any, &probe(None, "GET", "/anything")));
}

#[test]
fn methods_match_any_listed_in_any_case() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow", "methods": ["get", "HEAD", "PURGE"]}]},
    ]));
    for (method, want) in [("GET", true), ("HEAD", true), ("PURGE", true), ("POST", false), ("get", false)] {
        assert_eq!(allowed(&authz, &probe(None, method, "/")), want, "{method}");
    }
}

#[test]
fn headers_match_as_route_header_matches_do() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow", "headers": {
            "X-Tenant": "acme", "x-debug": {"present": false}, "x-version": {"regex": "v[12]"},
        }}]},
    ]));
    let base = || probe(None, "GET", "/").header("x-tenant", "acme").header("x-version", "v2");
    assert!(allowed(&authz, &base()));
    assert!(!allowed(&authz, &base().header("x-debug", "1")), "present: false");
    assert!(
        !allowed(&authz, &probe(None, "GET", "/").header("x-tenant", "acme").header("x-version", "v22")),
        "regex is anchored"
    );
    assert!(!allowed(&authz, &probe(None, "GET", "/").header("x-tenant", "acme2").header("x-version", "v1")));
}

#[test]
fn every_condition_of_a_rule_must_hold() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow",
            "namespaces": ["shop"], "paths": ["/orders/*"], "methods": ["POST"], "headers": {"x-a": "1"}}]},
    ]));
    let ok = || probe(Some(SHOP_WEB), "POST", "/orders/1").header("x-a", "1");
    assert!(allowed(&authz, &ok()));
    assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "POST", "/orders/1")));
    assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/orders/1").header("x-a", "1")));
    assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "POST", "/cart").header("x-a", "1")));
    assert!(!allowed(&authz, &probe(None, "POST", "/orders/1").header("x-a", "1")));
}

#[test]
fn a_negation_holds_when_no_entry_of_its_list_matches() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow",
            "not_identities": ["spiffe://mesh.local/ns/shop/sa/bad"], "not_namespaces": ["dev"],
            "not_paths": ["/admin/*", "/debug"], "not_methods": ["delete"], "not_headers": {"x-env": "prod", "x-debug": {"present": true}}}]},
    ]));
    let ok = || probe(Some(SHOP_WEB), "GET", "/orders");
    assert!(allowed(&authz, &ok()));
    assert!(allowed(&authz, &ok().header("x-env", "test")), "another value of a negated exact match");
    assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/shop/sa/bad"), "GET", "/orders")));
    assert!(!allowed(&authz, &probe(Some("spiffe://mesh.local/ns/dev/sa/web"), "GET", "/orders")));
    assert!(allowed(&authz, &probe(Some("spiffe://mesh.local/no-namespace"), "GET", "/orders")), "no namespace is not 'dev'");
    assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/admin/users")));
    assert!(allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/admin")), "'/admin/*' does not cover '/admin'");
    assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "GET", "/debug")));
    assert!(!allowed(&authz, &probe(Some(SHOP_WEB), "DELETE", "/orders")));
    assert!(!allowed(&authz, &ok().header("x-env", "prod")));
    assert!(!allowed(&authz, &ok().header("x-debug", "")));
}

#[test]
fn an_identity_negation_grants_plain_text_nothing_and_excuses_it_nothing() {
    // allow: not_namespaces would let anyone outside 'dev' in; a peer without an identity
    // is not 'outside dev', it is unknown.
    let (allow, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow", "not_namespaces": ["dev"]}]},
    ]));
    assert!(allowed(&allow, &probe(Some(SHOP_WEB), "GET", "/")));
    assert!(!allowed(&allow, &probe(None, "GET", "/")));
    let (allow_ids, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow", "not_identities": [SHOP_WEB]}]},
    ]));
    assert!(!allowed(&allow_ids, &probe(None, "GET", "/")));
    assert!(allowed(&allow_ids, &probe(Some("spiffe://mesh.local/ns/ops/sa/x"), "GET", "/")));

    // deny: 'everyone but frontend' includes plain text.
    let (deny_rule, counters) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "only-frontend", "action": "deny", "not_namespaces": ["frontend"]}]},
    ]));
    assert_eq!(deny_rule.decide(&probe(None, "GET", "/").request()), deny("p", Some("only-frontend")));
    assert!(!allowed(&deny_rule, &probe(Some(SHOP_WEB), "GET", "/")));
    assert!(allowed(&deny_rule, &probe(Some("spiffe://mesh.local/ns/frontend/sa/web"), "GET", "/")));
    assert_eq!(counter(&counters, "/inbound/p/denied"), 2);
    let (deny_ids, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "deny", "not_identities": ["spiffe://mesh.local/ns/frontend/*"]}]},
    ]));
    assert!(!allowed(&deny_ids, &probe(None, "GET", "/")));
}

#[test]
fn a_negated_path_or_method_says_nothing_about_identity() {
    let (authz, _) = compiled(serde_json::json!([
        {"name": "p", "rules": [{"name": "r", "action": "allow", "not_paths": ["/admin/*"], "not_methods": ["POST"]}]},
    ]));
    assert!(allowed(&authz, &probe(None, "GET", "/orders")));
    assert!(!allowed(&authz, &probe(None, "GET", "/admin/x")));
    assert!(!allowed(&authz, &probe(None, "POST", "/orders")));
}

#[test]
fn counters_outlive_a_recompile() {
    let counters = AuthzCounters::default();
    let doc = serde_json::json!([{"name": "p", "rules": [{"name": "r", "action": "deny"}]}]);
    for _ in 0..2 {
        let authz =
            Authorization::compile(&policies(doc.clone()), None, "in", "listeners[0]", &counters, &mut Vec::new());
        authz.decide(&probe(None, "GET", "/").request());
    }
    assert_eq!(
        counters.json(),
        serde_json::json!({"in": {"p": {"allowed": 0, "denied": 2, "dry_run_denied": 0, "rules": {"r": {"matches": 2}}}}})
    );
}

#[test]
fn each_mistake_is_reported_at_its_field_path() {
    let doc = serde_json::json!([
        {"name": "p", "rules": [
            {"name": "r", "action": "allow", "identities": [
                "*", "spiffe://mesh.local/ns/a/*", "spiffe://other.org/ns/a/sa/b", "spiffe://Mesh.local/x",
                "spiffe://mesh.local/*/sa/x", "spiffe://mesh.local*", "spiffe://other.org/*", "web",
            ]},
            {"name": "r", "action": "deny", "paths": ["orders", "/a/*/b", "/ok/*"], "methods": ["GET", "BAD METHOD"]},
            {"name": "s", "action": "deny", "namespaces": ["shop", "a/b", ""], "identities": []},
            {"name": "t", "action": "deny", "headers": {"bad name": "x", "x-re": {"regex": "(unclosed"}, "x-two": {"exact": "a", "present": true}}},
            {"name": "u", "action": "allow", "not_identities": ["spiffe://other.org/*"], "not_namespaces": ["a/b"],
                "not_paths": [], "not_methods": ["BAD METHOD"], "not_headers": {"x-re": {"regex": "(unclosed"}}},
        ]},
        {"name": "p", "rules": []},
    ]);
    let mut problems = Vec::new();
    Authorization::compile(
        &policies(doc),
        Some("mesh.local"),
        "in",
        "listeners[3]",
        &AuthzCounters::default(),
        &mut problems,
    );
    let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let at = "listeners[3].authorization";
    let expect = [
        format!("{at}[0].rules[0].identities[2]: 'spiffe://other.org/ns/a/sa/b' is in trust domain 'other.org', but peers can only have IDs in this sidecar's trust domain 'mesh.local'"),
        format!("{at}[0].rules[0].identities[3]: 'spiffe://Mesh.local/x' is not a valid identity pattern: the trust domain contains 'M'"),
        format!("{at}[0].rules[0].identities[4]: 'spiffe://mesh.local/*/sa/x' is not a valid identity pattern: '*' may appear only once, at the end"),
        format!("{at}[0].rules[0].identities[5]: 'spiffe://mesh.local*' is not a valid identity pattern: a prefix must name the whole trust domain and a '/'"),
        format!("{at}[0].rules[0].identities[6]: 'spiffe://other.org/*' is in trust domain 'other.org'"),
        format!("{at}[0].rules[0].identities[7]: 'web' is not a valid identity pattern: it must start with 'spiffe://'"),
        format!("{at}[0].rules[1].name: duplicate rule name 'r'; already used by rules[0]"),
        format!("{at}[0].rules[1].paths[0]: 'orders' is not a valid path pattern: it must start with '/'"),
        format!("{at}[0].rules[1].paths[1]: '/a/*/b' is not a valid path pattern: '*' may appear only once, at the end"),
        format!("{at}[0].rules[1].methods[1]: 'BAD METHOD' is not a valid HTTP method"),
        format!("{at}[0].rules[2].identities: give at least one entry, or leave out 'identities' to match any"),
        format!("{at}[0].rules[2].namespaces[1]: 'a/b' is not a valid namespace: it contains '/'"),
        format!("{at}[0].rules[2].namespaces[2]: '' is not a valid namespace"),
        format!("{at}[0].rules[3].headers.bad name: 'bad name' is not a valid header name"),
        format!("{at}[0].rules[3].headers.x-re.regex: not a valid regular expression"),
        format!("{at}[0].rules[3].headers.x-two: give exactly one of exact, present, regex"),
        format!("{at}[0].rules[4].not_identities[0]: 'spiffe://other.org/*' is in trust domain 'other.org'"),
        format!("{at}[0].rules[4].not_namespaces[0]: 'a/b' is not a valid namespace: it contains '/'"),
        format!("{at}[0].rules[4].not_paths: give at least one entry, or leave out 'not_paths' to match any"),
        format!("{at}[0].rules[4].not_methods[0]: 'BAD METHOD' is not a valid HTTP method"),
        format!("{at}[0].rules[4].not_headers.x-re.regex: not a valid regular expression"),
        format!("{at}[1].name: duplicate policy name 'p'; already used by authorization[0]"),
        format!("{at}[1].rules: a policy needs at least one rule"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for (got, want) in got.iter().zip(&expect) {
        assert!(got.starts_with(want.as_str()), "\n got: {got}\nwant: {want}");
    }
}

#[test]
fn without_a_trust_domain_any_valid_domain_is_accepted() {
    let doc = serde_json::json!([{"name": "p", "rules": [{"name": "r", "action": "allow", "identities": ["spiffe://other.org/x", "spiffe://b.org/*"]}]}]);
    let mut problems = Vec::new();
    Authorization::compile(&policies(doc), None, "in", "listeners[0]", &AuthzCounters::default(), &mut problems);
    assert_eq!(problems, vec![]);
}
