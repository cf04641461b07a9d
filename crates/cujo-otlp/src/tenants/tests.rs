use http::{HeaderMap, HeaderValue, header};

use super::*;
use crate::auth::{AuthConfig, Token};

const TOKEN_A: &str = "tok-team-a-41f0";
const TOKEN_B: &str = "tok-team-b-9c2e";
const GATEWAY: &str = "tok-gateway-77d1";
const KEY_A: &str = "hc-key-a-secret";

fn tenant(name: &str, token: &str, key: &str, share: Option<u64>) -> TenantConfig {
    TenantConfig {
        name: name.into(),
        bearer_tokens: vec![Token::new(token)],
        token_files: Vec::new(),
        headers: [("x-honeycomb-team".to_string(), key.to_string())].into(),
        max_in_flight: share.map(cujo_config::ByteSize),
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("value"),
    );
    h
}

fn gateway_auth() -> BearerAuth {
    BearerAuth::load(
        &AuthConfig {
            bearer_tokens: vec![Token::new(GATEWAY)],
            token_files: Vec::new(),
        },
        "receivers.otlp.auth",
    )
    .expect("auth")
}

#[test]
fn a_token_names_its_tenant_and_the_gateway_token_the_default() {
    let t = Tenants::new(
        &[
            tenant("team-a", TOKEN_A, KEY_A, None),
            tenant("team-b", TOKEN_B, "hc-key-b", Some(1 << 20)),
        ],
        "tenants",
        Some(gateway_auth()),
        &[],
        8,
    )
    .expect("loads");
    let a = t.identify(&bearer(TOKEN_A)).expect("a").expect("a tenant");
    assert_eq!(a.name(), "team-a");
    assert_eq!(&a.headers()[0].1[..], KEY_A.as_bytes());
    let b = t.identify(&bearer(TOKEN_B)).expect("b").expect("b tenant");
    assert_eq!((b.name(), b.limit()), ("team-b", Some(1 << 20)));
    assert_ne!(a.id(), b.id());
    assert!(t.identify(&bearer(GATEWAY)).expect("gateway").is_none());
    assert_eq!(
        t.identify(&HeaderMap::new()).err(),
        Some(Unidentified::Refused(Refusal::Missing))
    );
    assert_eq!(
        t.identify(&bearer("tok-nobody")).err(),
        Some(Unidentified::Refused(Refusal::Invalid))
    );
}

#[test]
fn tenants_without_a_receivers_auth_still_require_a_token() {
    let t = Tenants::new(
        &[tenant("team-a", TOKEN_A, KEY_A, None)],
        "tenants",
        None,
        &[],
        8,
    )
    .expect("loads");
    assert!(t.requires_token());
    assert!(t.identify(&bearer(TOKEN_A)).expect("a").is_some());
    assert!(matches!(
        t.identify(&HeaderMap::new()),
        Err(Unidentified::Refused(Refusal::Missing))
    ));
}

fn team(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-honeycomb-team",
        HeaderValue::from_str(key).expect("value"),
    );
    h
}

#[test]
fn pass_through_callers_are_one_tenant_per_value_and_bounded() {
    let t = Tenants::new(&[], "tenants", None, &["x-honeycomb-team".into()], 2).expect("loads");
    assert!(!t.requires_token() && t.any());
    assert!(t.identify(&HeaderMap::new()).expect("none").is_none());
    let one = t.identify(&team("key-1")).expect("1").expect("tenant");
    let again = t.identify(&team("key-1")).expect("1").expect("tenant");
    assert!(Arc::ptr_eq(&one, &again));
    assert_eq!(one.name(), PASS_THROUGH);
    assert_eq!(&one.headers()[0].1[..], b"key-1");
    let two = t.identify(&team("key-2")).expect("2").expect("tenant");
    assert_ne!(one.id(), two.id());
    assert_ne!(
        one.trace_key(&[5; 16]),
        two.trace_key(&[5; 16]),
        "two callers' traces never meet"
    );
    // Both have spans in flight: a third value waits.
    one.take(10);
    two.take(10);
    one.counts.accepted_spans.fetch_add(3, Relaxed);
    assert_eq!(
        t.identify(&team("key-3")).err(),
        Some(Unidentified::TooManyCallers)
    );
    // Once the first is done with, it is forgotten for the third; its counts stay.
    one.give_back(10);
    let three = t.identify(&team("key-3")).expect("3").expect("tenant");
    assert_eq!(t.pass_through_callers(), 2);
    let mut out = prom::Exposition::new(prom::Format::Prometheus);
    t.render(&mut out);
    let text = out.finish();
    assert!(
        text.contains("cujo_tenant_accepted_spans_total{tenant=\"pass-through\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("cujo_tenant_refused_requests_total{tenant=\"pass-through\"} 1"),
        "{text}"
    );
    // A value longer than an API key is refused, not remembered.
    assert_eq!(
        t.identify(&team(&"k".repeat(MAX_PASS_VALUE_BYTES + 1)))
            .err(),
        Some(Unidentified::PassValueTooLong(HeaderName::from_static(
            "x-honeycomb-team"
        )))
    );
    // Seen again, a forgotten caller keys its traces as before.
    three.give_back(0);
    two.give_back(10);
    let one_again = t.identify(&team("key-1")).expect("1").expect("tenant");
    assert_eq!(one_again.trace_key(&[5; 16]), one.trace_key(&[5; 16]));
    assert!(!text.contains("key-1"), "{text}");
}

#[test]
fn config_errors_name_the_key_and_never_a_secret() {
    let check = |tenants: &[TenantConfig]| {
        config::validate(tenants, "tenants")
            .map_err(|e| format!("{}: {}", e.key, e.detail))
            .err()
            .unwrap_or_default()
    };
    let a = tenant("team-a", TOKEN_A, KEY_A, None);
    let mut dup = tenant("team-a", TOKEN_B, "k", None);
    assert!(check(&[a.clone(), dup.clone()]).starts_with("tenants[1].name: \"team-a\" is used"));
    dup.name = "team-b".into();
    dup.bearer_tokens = vec![Token::new(TOKEN_A)];
    let shared = check(&[a.clone(), dup]);
    assert!(
        shared.starts_with("tenants[1]: a token of tenant"),
        "{shared}"
    );
    assert!(!shared.contains(TOKEN_A));
    let mut none = tenant("team-c", TOKEN_B, "k", None);
    none.bearer_tokens.clear();
    assert!(check(&[none]).contains("nothing would identify it"));
    let reserved = tenant(PASS_THROUGH, TOKEN_B, "k", None);
    assert!(check(&[reserved]).starts_with("tenants[0].name"));
    let mut bad = tenant("team-d", TOKEN_B, "k", None);
    bad.headers = [("x-honeycomb-team".to_string(), "a\nb".to_string())].into();
    assert_eq!(
        check(&[bad]),
        "tenants[0].headers.x-honeycomb-team: is not a valid header value"
    );
    let zero = tenant("team-e", TOKEN_B, "k", Some(0));
    assert_eq!(
        check(&[zero]),
        "tenants[0].max_in_flight: must be more than 0"
    );
    let shown = format!("{a:?}");
    assert!(
        !shown.contains(KEY_A) && !shown.contains(TOKEN_A),
        "{shown}"
    );
    let t = Tenants::new(&[a], "tenants", None, &[], 1).expect("loads");
    let shown = format!("{t:?} {:?}", t.identify(&bearer(TOKEN_A)));
    assert!(
        !shown.contains(KEY_A) && !shown.contains(TOKEN_A),
        "{shown}"
    );
}
