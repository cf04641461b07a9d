//! Who sent a span: the tenant a request was identified as, travelling with its spans.
//!
//! A tenant rides on the [`ResourceHeader`](crate::ResourceHeader) its spans arrived under, so
//! every stage sees it without a lookup: the trace assembler keys traces by
//! [`Tenant::trace_key`] (two tenants' traces never meet, even when their trace ids collide),
//! and the span exporter batches per tenant and sends each batch with that tenant's downstream
//! headers. Spans with no tenant (`None`) are the default tenant: their keys are their trace
//! ids as sent.
//!
//! A tenant also carries its share of the memory budget as a byte count that moves with its
//! spans: taken at admission (their encoded bytes), grown by what propagation appends, and
//! given back as they are exported or dropped. Receivers refuse a tenant's requests while
//! that count is over its limit, so one tenant's flood cannot fill the budget the others need.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use bytes::Bytes;

/// One tenant, shared (`Arc`) by every span it sent. Its header values are secrets (API
/// keys): `Debug` shows their names only.
pub struct Tenant {
    /// Unique in this process; batches are grouped by it.
    id: u64,
    /// Mixed into the high half of every trace id of this tenant (never 0).
    salt: u64,
    /// The label its counters carry: a configured tenant's name, or `pass-through`.
    name: Box<str>,
    /// Headers its spans are sent downstream with, beside the exporter's own.
    headers: Box<[(Box<str>, Bytes)]>,
    /// Its share of the memory budget, in bytes; `None` = only the budget's own limits.
    limit: Option<u64>,
    in_flight: AtomicI64,
    /// Counters, for the metrics of whoever owns the tenant.
    pub counts: TenantCounts,
}

/// What happened to a tenant's requests and spans.
#[derive(Debug, Default)]
pub struct TenantCounts {
    pub accepted_spans: AtomicU64,
    /// Requests refused because the tenant was over its share.
    pub refused_requests: AtomicU64,
    pub exported_spans: AtomicU64,
    pub dropped_spans: AtomicU64,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .field("name", &self.name)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("limit", &self.limit)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Tenant {
    /// A tenant with a process-unique `id` and a `salt` drawn from a keyed hash of what
    /// identifies it (0 is made 1: 0 would be the default tenant's keys).
    pub fn new(
        id: u64,
        salt: u64,
        name: &str,
        headers: Vec<(Box<str>, Bytes)>,
        limit: Option<u64>,
    ) -> Tenant {
        Tenant {
            id,
            salt: salt.max(1),
            name: name.into(),
            headers: headers.into(),
            limit,
            in_flight: AtomicI64::new(0),
            counts: TenantCounts::default(),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Downstream headers (name, value); the values are secrets.
    pub fn headers(&self) -> &[(Box<str>, Bytes)] {
        &self.headers
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Bytes of this tenant's spans accepted and not yet exported or dropped.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed).max(0) as u64
    }

    /// Whether `more` bytes fit the tenant's share now.
    pub fn has_room(&self, more: u64) -> bool {
        self.limit
            .is_none_or(|limit| self.in_flight().saturating_add(more) <= limit)
    }

    /// Counts `bytes` of spans as in flight (admitted, or grown by propagation).
    pub fn take(&self, bytes: usize) {
        self.in_flight.fetch_add(bytes as i64, Relaxed);
    }

    /// Gives back `bytes` of spans that were exported or dropped.
    pub fn give_back(&self, bytes: usize) {
        self.in_flight.fetch_sub(bytes as i64, Relaxed);
    }

    /// The key the assembler holds this tenant's trace `id` under: the high half mixed
    /// with the tenant's salt, the low half (which picks the shard) as sent.
    pub fn trace_key(&self, id: &[u8; 16]) -> [u8; 16] {
        salted(id, self.salt)
    }
}

fn salted(id: &[u8; 16], salt: u64) -> [u8; 16] {
    let mut out = *id;
    let mut high = [0u8; 8];
    high.copy_from_slice(&id[..8]);
    out[..8].copy_from_slice(&(u64::from_le_bytes(high) ^ salt).to_le_bytes());
    out
}

/// Gives back the share of every tenant's spans in `batch`, which have left the process:
/// delivered (`true`) or dropped (`false`), counted as such.
pub fn settle(batch: &crate::SpanBatch, delivered: bool) {
    for g in &batch.groups {
        if let Some(t) = &g.resource.tenant {
            t.give_back(g.span_bytes());
            let counter = if delivered {
                &t.counts.exported_spans
            } else {
                &t.counts.dropped_spans
            };
            counter.fetch_add(g.spans.len() as u64, Relaxed);
        }
    }
}

/// The assembler's key for trace `id` of `tenant` (the id itself for the default tenant).
pub fn trace_key(tenant: Option<&Tenant>, id: &[u8; 16]) -> [u8; 16] {
    match tenant {
        Some(t) => t.trace_key(id),
        None => *id,
    }
}

/// The trace id as sent, from the assembler's key ([`trace_key`] undone).
pub fn trace_id_of_key(tenant: Option<&Tenant>, key: &[u8; 16]) -> [u8; 16] {
    // XOR is its own inverse.
    trace_key(tenant, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_between_tenants_and_come_back_to_the_id() {
        let a = Tenant::new(1, 0x1234, "a", Vec::new(), None);
        let b = Tenant::new(2, 0x5678, "b", Vec::new(), None);
        let id = [7u8; 16];
        let (ka, kb) = (a.trace_key(&id), b.trace_key(&id));
        assert_ne!(ka, kb);
        assert_ne!(ka, id);
        assert_eq!(&ka[8..], &id[8..], "the shard half is kept");
        assert_eq!(trace_id_of_key(Some(&a), &ka), id);
        assert_eq!(trace_key(None, &id), id);
        let zero = Tenant::new(3, 0, "z", Vec::new(), None);
        assert_ne!(
            zero.trace_key(&id),
            id,
            "a zero salt is not the default tenant's key"
        );
    }

    #[test]
    fn the_share_follows_what_is_taken_and_given_back() {
        let t = Tenant::new(
            1,
            9,
            "a",
            vec![("x-k".into(), Bytes::from_static(b"secret"))],
            Some(100),
        );
        assert!(t.has_room(100));
        t.take(60);
        assert!(!t.has_room(41));
        assert!(t.has_room(40));
        t.give_back(60);
        assert_eq!(t.in_flight(), 0);
        assert!(!format!("{t:?}").contains("secret"), "{t:?}");
    }
}
