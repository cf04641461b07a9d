//! Tenants: who a request comes from, decided on its headers before its body is read.
//!
//! - A **configured tenant** (`tenants:`) is identified by its bearer token; its spans are
//!   sent downstream with its own headers (its Honeycomb key) and count against its own
//!   share of the memory budget (`max_in_flight`).
//! - A **pass-through caller** (`exporters.otlp.pass_headers`): a request of no configured
//!   tenant that carries one of those headers is sent downstream with the caller's own
//!   values. Callers with the same values are one tenant; at most
//!   `exporters.otlp.pass_max_tenants` are known at once (beyond, while none can be
//!   forgotten, requests with new values are refused retryably). Their counters carry the
//!   label `tenant="pass-through"`.
//! - Everything else is the **default tenant** (`None`): the exporter's own headers.
//!
//! Every tenant but the default holds its traces under its own keys
//! ([`cujo_wire::tenant`]), so propagation and the root cache never carry one tenant's
//! values onto another's spans, and the exporter never puts two tenants' spans in one
//! request. What identifies a tenant (tokens, header values) never reaches a log line, an
//! answer or a metric.
//!
//! Owns: `tenants:` ([`config`]), the [`Tenants`] registry and the `cujo_tenant_*` metrics.
//! Must not touch: batches (the receivers tag them, [`cujo_wire::SpanBatch::set_tenant`]).

pub mod config;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use cujo_wire::Tenant;
use http::{HeaderMap, HeaderName};

use crate::auth::{BearerAuth, Refusal};
use crate::prom;
pub use config::TenantConfig;

/// The label of pass-through callers' counters.
pub const PASS_THROUGH: &str = "pass-through";

/// Default of `exporters.otlp.pass_max_tenants`.
pub const DEFAULT_PASS_MAX_TENANTS: usize = 1024;

/// Why a request has no tenant to be counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unidentified {
    /// Its credentials are missing or wrong (not retryable).
    Refused(Refusal),
    /// It would be a new pass-through caller and the table of them is full (retryable).
    TooManyCallers,
    /// A pass-through header's value is longer than [`MAX_PASS_VALUE_BYTES`] (not
    /// retryable): the table of callers keeps the values, so their size is bounded.
    PassValueTooLong(HeaderName),
}

/// Longest value of a pass-through header (an API key is tens of bytes).
pub const MAX_PASS_VALUE_BYTES: usize = 256;

/// Who may send and as whom: the configured tenants, the pass-through callers, and the
/// receivers' own `auth:` (which authenticates the default tenant).
pub struct Tenants {
    configured: Vec<(Arc<Tenant>, BearerAuth)>,
    /// `receivers.otlp.auth`.
    auth: Option<BearerAuth>,
    pass: Option<PassThrough>,
    seed: std::hash::RandomState,
    next_id: AtomicU64,
}

struct PassThrough {
    headers: Vec<HeaderName>,
    max: usize,
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// By a keyed hash of the header values: the table holds no value as a key.
    callers: HashMap<u64, Arc<Tenant>>,
    /// Counts of callers no longer known, so the pass-through counters never go back.
    retired: [u64; 4],
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field(
                "configured",
                &self
                    .configured
                    .iter()
                    .map(|(t, _)| t.name())
                    .collect::<Vec<_>>(),
            )
            .field("auth", &self.auth)
            .field("pass_headers", &self.pass.as_ref().map(|p| &p.headers))
            .finish()
    }
}

impl Tenants {
    /// The registry for `tenants` (at `key`), the receivers' `auth`, and the pass-through
    /// headers. Token files are read now; errors name the key, never a token.
    pub fn new(
        tenants: &[TenantConfig],
        key: &str,
        auth: Option<BearerAuth>,
        pass_headers: &[String],
        pass_max_tenants: usize,
    ) -> Result<Tenants, cujo_config::KeyError> {
        config::validate(tenants, key)?;
        let seed = std::hash::RandomState::new();
        let mut next_id = 1;
        let mut configured = Vec::with_capacity(tenants.len());
        for (i, t) in tenants.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let Some(auth_config) = t.auth() else {
                return cujo_config::fail(at, "has no tokens");
            };
            let guard = BearerAuth::load(&auth_config, &at)?;
            let headers =
                cujo_config::outbound::header_pairs(&format!("{at}.headers"), &t.headers)?
                    .into_iter()
                    .map(|(k, v)| (Box::from(k.as_str()), Bytes::copy_from_slice(v.as_bytes())))
                    .collect();
            let salt = keyed(&seed, &[b"configured", t.name.as_bytes()]);
            let tenant = Tenant::new(
                next_id,
                salt,
                &t.name,
                headers,
                t.max_in_flight.map(|b| b.0),
            );
            next_id += 1;
            configured.push((Arc::new(tenant), guard));
        }
        let pass = if pass_headers.is_empty() {
            None
        } else {
            let headers = pass_headers
                .iter()
                .map(|h| {
                    HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        cujo_config::KeyError::new(
                            "exporters.otlp.pass_headers",
                            format!("{h:?} is not a valid header name"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(PassThrough {
                headers,
                max: pass_max_tenants.max(1),
                known: Mutex::default(),
            })
        };
        Ok(Tenants {
            configured,
            auth,
            pass,
            seed,
            next_id: AtomicU64::new(next_id),
        })
    }

    /// Whether a request must carry a valid token: `receivers.otlp.auth` is set, or some
    /// tenant is identified by tokens.
    pub fn requires_token(&self) -> bool {
        self.auth.is_some() || !self.configured.is_empty()
    }

    /// Whether requests can be of any tenant but the default.
    pub fn any(&self) -> bool {
        !self.configured.is_empty() || self.pass.is_some()
    }

    /// The tenant of a request with `headers`: a configured tenant whose token it carries,
    /// else (authenticated by `receivers.otlp.auth` when that is set) a pass-through caller
    /// by its header values, else the default tenant (`None`). Every configured tenant's
    /// tokens are compared whatever the earlier ones gave.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Option<Arc<Tenant>>, Unidentified> {
        let mut found = None;
        for (tenant, guard) in &self.configured {
            if guard.accepts(headers).is_ok() && found.is_none() {
                found = Some(tenant.clone());
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        if let Some(auth) = &self.auth {
            auth.check(headers).map_err(Unidentified::Refused)?;
        } else if self.requires_token() {
            let refusal = match headers.get(http::header::AUTHORIZATION) {
                None => Refusal::Missing,
                Some(_) => Refusal::Invalid,
            };
            return Err(Unidentified::Refused(refusal));
        }
        match &self.pass {
            Some(pass) => self.pass_through(pass, headers),
            None => Ok(None),
        }
    }

    fn pass_through(
        &self,
        pass: &PassThrough,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Tenant>>, Unidentified> {
        let values: Vec<(&HeaderName, &[u8])> = pass
            .headers
            .iter()
            .filter_map(|name| headers.get(name).map(|v| (name, v.as_bytes())))
            .collect();
        if values.is_empty() {
            return Ok(None);
        }
        if let Some((name, _)) = values.iter().find(|(_, v)| v.len() > MAX_PASS_VALUE_BYTES) {
            return Err(Unidentified::PassValueTooLong((*name).clone()));
        }
        let mut parts: Vec<&[u8]> = vec![b"pass-through"];
        for (name, value) in &values {
            parts.push(name.as_str().as_bytes());
            parts.push(value);
        }
        let key = keyed(&self.seed, &parts);
        let mut known = pass.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = known.callers.get(&key) {
            // Two value sets under one 64-bit key would be one tenant: never send one
            // caller's spans with another's values.
            let same = t.headers().len() == values.len()
                && t.headers()
                    .iter()
                    .zip(&values)
                    .all(|((n, v), (name, value))| **n == *name.as_str() && v[..] == **value);
            return if same {
                Ok(Some(t.clone()))
            } else {
                Err(Unidentified::TooManyCallers)
            };
        }
        if known.callers.len() >= pass.max {
            // Forget the callers with nothing in flight; their counts stay in the totals.
            let mut retired = known.retired;
            known.callers.retain(|_, t| {
                let keep = t.in_flight() > 0;
                if !keep {
                    for (sum, n) in retired.iter_mut().zip(counts(t)) {
                        *sum += n;
                    }
                }
                keep
            });
            known.retired = retired;
            if known.callers.len() >= pass.max {
                known.retired[1] += 1;
                return Err(Unidentified::TooManyCallers);
            }
        }
        let headers = values
            .iter()
            .map(|(name, value)| (Box::from(name.as_str()), Bytes::copy_from_slice(value)))
            .collect();
        // The salt comes from the values, so a caller forgotten and seen again keys its
        // traces (and finds its root cache entries) as before.
        let salt = keyed(&self.seed, &[&key.to_le_bytes(), b"salt"]);
        let id = self.next_id.fetch_add(1, Relaxed);
        let tenant = Arc::new(Tenant::new(id, salt, PASS_THROUGH, headers, None));
        known.callers.insert(key, tenant.clone());
        Ok(Some(tenant))
    }

    /// The configured tenant named `name` (a write-ahead log record's).
    pub fn by_name(&self, name: &str) -> Option<Arc<Tenant>> {
        self.configured
            .iter()
            .find(|(t, _)| t.name() == name)
            .map(|(t, _)| t.clone())
    }

    /// The pass-through caller of `headers` (a write-ahead log record's, so already
    /// authenticated when it was appended): `None` without pass-through headers.
    pub fn pass_through_of(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Tenant>>, Unidentified> {
        match &self.pass {
            Some(pass) => self.pass_through(pass, headers),
            None => Ok(None),
        }
    }

    /// Pass-through callers known now.
    pub fn pass_through_callers(&self) -> usize {
        self.pass.as_ref().map_or(0, |p| {
            p.known
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .callers
                .len()
        })
    }

    /// The `cujo_tenant_*` families: one series per configured tenant, and one for all
    /// pass-through callers together.
    pub fn render(&self, out: &mut prom::Exposition) {
        if !self.any() {
            return;
        }
        let mut rows: Vec<(&str, [u64; 4], u64, Option<u64>)> = self
            .configured
            .iter()
            .map(|(t, _)| (t.name(), counts(t), t.in_flight(), t.limit()))
            .collect();
        if let Some(pass) = &self.pass {
            let known = pass.known.lock().unwrap_or_else(PoisonError::into_inner);
            let mut sum = known.retired;
            let mut in_flight = 0;
            for t in known.callers.values() {
                for (s, n) in sum.iter_mut().zip(counts(t)) {
                    *s += n;
                }
                in_flight += t.in_flight();
            }
            rows.push((PASS_THROUGH, sum, in_flight, None));
            let mut m = prom::Family::gauge(
                out,
                "cujo_tenant_pass_through_callers",
                "Pass-through callers known now (distinct values of exporters.otlp.pass_headers).",
            );
            m.sample(&[], known.callers.len() as f64);
        }
        let families: [(&str, &str); 4] = [
            (
                "cujo_tenant_accepted_spans_total",
                "Spans accepted from each tenant.",
            ),
            (
                "cujo_tenant_refused_requests_total",
                "Requests of each tenant refused (retryably) because it was over its share of the memory budget, or was a new pass-through caller while the table of them was full.",
            ),
            (
                "cujo_tenant_exported_spans_total",
                "Spans of each tenant delivered downstream.",
            ),
            (
                "cujo_tenant_dropped_spans_total",
                "Spans of each tenant dropped (the reasons are in cujo_exporter_dropped_spans_total).",
            ),
        ];
        for (i, (name, help)) in families.iter().enumerate() {
            let mut m = prom::Family::counter(out, name, help);
            for (tenant, c, _, _) in &rows {
                m.sample(&[("tenant", tenant)], c[i] as f64);
            }
        }
        let mut m = prom::Family::gauge(
            out,
            "cujo_tenant_in_flight_bytes",
            "Bytes of each tenant's spans accepted and not yet exported or dropped.",
        );
        for (tenant, _, in_flight, _) in &rows {
            m.sample(&[("tenant", tenant)], *in_flight as f64);
        }
        let mut m = prom::Family::gauge(
            out,
            "cujo_tenant_max_in_flight_bytes",
            "Each tenant's share of the memory budget (tenants[].max_in_flight), where set.",
        );
        for (tenant, _, _, limit) in &rows {
            if let Some(limit) = limit {
                m.sample(&[("tenant", tenant)], *limit as f64);
            }
        }
    }
}

fn counts(t: &Tenant) -> [u64; 4] {
    let c = &t.counts;
    [
        c.accepted_spans.load(Relaxed),
        c.refused_requests.load(Relaxed),
        c.exported_spans.load(Relaxed),
        c.dropped_spans.load(Relaxed),
    ]
}

/// A keyed hash of `parts` (each length-prefixed, so no two lists hash alike by
/// concatenation).
fn keyed(seed: &std::hash::RandomState, parts: &[&[u8]]) -> u64 {
    let mut h = seed.build_hasher();
    for p in parts {
        h.write_usize(p.len());
        h.write(p);
    }
    h.finish()
}

#[cfg(test)]
mod tests;
