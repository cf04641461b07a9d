//! `tenants:` as written: each tenant's name, the tokens that identify (and authenticate) it,
//! the headers its spans are sent downstream with, and its share of the memory budget.
//! Header values are secrets (a tenant's own API key): `Debug` names the headers only.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use cujo_config::{ByteSize, KeyError, fail, outbound};
use serde::Deserialize;

use crate::auth::{AuthConfig, BearerAuth, Token};

/// One entry of `tenants:`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's label on its metrics (`cujo_tenant_*{tenant="team-a"}`).
    pub name: String,
    /// A request carrying `authorization: Bearer <one of these>` is this tenant's (these
    /// tokens also authenticate).
    #[serde(default, deserialize_with = "crate::auth::config::token_list")]
    pub bearer_tokens: Vec<Token>,
    /// Files of tokens, one a line, re-read as they change (as in `auth:`).
    #[serde(default)]
    pub token_files: Vec<PathBuf>,
    /// Headers its spans are sent downstream with, over `exporters.otlp.headers` of the same
    /// name (its own Honeycomb key: `x-honeycomb-team`).
    #[serde(default)]
    pub headers: cujo_config::outbound::Headers,
    /// Most bytes of its spans in the process at once (accepted, not yet exported or
    /// dropped); its requests are refused retryably beyond it.
    pub max_in_flight: Option<ByteSize>,
}

impl fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantConfig")
            .field("name", &self.name)
            .field("bearer_tokens", &self.bearer_tokens)
            .field("token_files", &self.token_files)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl TenantConfig {
    /// The tokens as an `auth:` section, when it has any.
    pub fn auth(&self) -> Option<AuthConfig> {
        (!self.bearer_tokens.is_empty() || !self.token_files.is_empty()).then(|| AuthConfig {
            bearer_tokens: self.bearer_tokens.clone(),
            token_files: self.token_files.clone(),
        })
    }
}

/// Checks `tenants:` (at `key`): names given, distinct and usable as label values; each
/// tenant identified by tokens (a tenant nothing identifies would never be used); tokens
/// usable and never shared by two tenants; headers valid; shares not zero.
pub fn validate(tenants: &[TenantConfig], key: &str) -> Result<(), KeyError> {
    let mut names = HashSet::new();
    let mut digests: Vec<(String, [u8; 32])> = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        let at = |field: &str| format!("{key}[{i}].{field}");
        if t.name.is_empty() {
            return fail(at("name"), "is empty");
        }
        if t.name.len() > 64 || !t.name.chars().all(|c| c.is_ascii_graphic()) {
            return fail(
                at("name"),
                "expected at most 64 visible ASCII characters (it labels metrics)",
            );
        }
        if t.name == super::PASS_THROUGH {
            return fail(
                at("name"),
                format!(
                    "{:?} is the label of pass-through callers",
                    super::PASS_THROUGH
                ),
            );
        }
        if !names.insert(t.name.as_str()) {
            return fail(
                at("name"),
                format!("{:?} is used by another tenant", t.name),
            );
        }
        let Some(auth) = t.auth() else {
            return fail(
                key.to_string() + &format!("[{i}]"),
                format!(
                    "tenant {:?} has no bearer_tokens or token_files: nothing would identify it",
                    t.name
                ),
            );
        };
        let guard = BearerAuth::load(&auth, &format!("{key}[{i}]"))?;
        for d in guard.digests() {
            if let Some((other, _)) = digests.iter().find(|(_, have)| *have == d) {
                return fail(
                    format!("{key}[{i}]"),
                    format!(
                        "a token of tenant {:?} is also a token of tenant {other:?}",
                        t.name
                    ),
                );
            }
            digests.push((t.name.clone(), d));
        }
        outbound::check_headers(&at("headers"), &t.headers)?;
        if t.max_in_flight.is_some_and(|b| b.0 == 0) {
            return fail(at("max_in_flight"), "must be more than 0");
        }
    }
    Ok(())
}
