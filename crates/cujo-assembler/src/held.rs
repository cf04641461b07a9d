//! How a trace is held until its release, laid out for memory: a held span costs its
//! encoded bytes, 8 bytes of facts, and its share of its trace's entry.
//!
//! A trace's spans are copied one after another into one buffer that grows once per
//! request that brings spans of the trace (to exactly what they need), so a span pins
//! nothing else and costs no allocation of its own. Each span's facts (where its bytes end,
//! its resource/scope and what release needs to know of it) fit 8 bytes, in a list that
//! also grows once per request, exactly; what release needs besides (start time, ids) it
//! reads from the span's leading fields.
//! Resources and scopes are interned shard-wide ([`GroupTable`]); a trace keeps a short list
//! of the ones its spans arrived under.

use std::sync::Arc;

use bytes::Bytes;
use cujo_wire::alloc::{allocation_size, vec_bytes};
use cujo_wire::{ResourceHeader, ScopeGroup};

use crate::origin::Origin;
use crate::table::{CountedMap, table_bytes};
use crate::{IdMap, TraceId};

/// A resource and scope, shared by every held span that arrived under them.
pub(crate) struct Group {
    pub resource: Arc<ResourceHeader>,
    pub scope: Bytes,
    /// The resource's `service.name` (empty when it has none), read once.
    pub service: Box<str>,
}

impl Group {
    /// What an interned group holds: its two blocks and the copies of its bytes.
    fn heap_bytes(&self) -> usize {
        allocation_size(16 + std::mem::size_of::<Group>())
            + allocation_size(16 + std::mem::size_of::<ResourceHeader>())
            + allocation_size(self.resource.bytes.len())
            + allocation_size(self.scope.len())
            + allocation_size(self.service.len())
    }
}

/// Facts of a span besides its bytes.
pub(crate) mod span_flags {
    pub use crate::origin::flags::{COLLIDES, CUJO};
    /// The span that became its trace's root (gets `cujo.trace.*`).
    pub const ROOT: u8 = 4;
    /// A CONSUMER span with a parent: its trace's async hops need the span ids.
    pub const CONSUMER_CHILD: u8 = 8;
    /// Whether release must look at the span's own attributes ([`crate::origin::enrich`]).
    pub const READ_ATTRIBUTES: u8 = COLLIDES | CUJO;
}

/// A held span: 8 bytes.
#[derive(Clone, Copy)]
pub(crate) struct HeldSpan {
    /// Where the span's bytes end in [`Trace::data`] (they start where the previous span's
    /// end).
    pub end: u32,
    /// Index in [`Trace::groups`].
    pub group: u8,
    /// [`span_flags`].
    pub flags: u8,
}

pub(crate) struct Trace {
    pub first_seen_ms: u64,
    /// When the trace is next due for release.
    pub due_ms: u64,
    /// Latest end time of any span seen, for `cujo.trace.duration_ms`.
    pub last_end_ns: u64,
    /// The observer's classification bits of every span seen, OR-ed.
    pub span_bits: u64,
    /// Every span seen, parts released earlier included.
    pub span_count: u64,
    /// The held spans' bytes, one after another.
    pub data: Vec<u8>,
    pub spans: Vec<HeldSpan>,
    /// The resources and scopes the held spans arrived under.
    pub groups: Vec<Arc<Group>>,
    /// The trace's own root, once it has arrived (boxed: most held traces have none yet).
    pub root: Option<Box<Origin>>,
    /// Another trace this one continues (the first span link to a different trace).
    pub link: Option<TraceId>,
    /// Spans of the request being taken in that wait to be copied in: the first and last
    /// in the step's list of [`Pending`] spans ([`NONE`] when there are none), and their
    /// bytes.
    pub pending_head: u32,
    pub pending_tail: u32,
    pub pending_bytes: u32,
    /// [`Trace::heap_bytes`] as last counted in the assembler's memory.
    pub accounted: usize,
    /// A span with a remote parent arrived (with [`crate::AssemblerSettings::release_on_remote_parent`]).
    pub remote_entry: bool,
    /// A CONSUMER span with a parent arrived: the trace's async hops need its span tree, so
    /// a span goes before release only once its path to the root is known.
    pub consumer: bool,
    /// In a trace with a consumer: the async hops of the spans that went out before release,
    /// by span id, for the spans still to come whose path to the root runs through them.
    pub streamed_hops: Option<Box<IdMap<u64, u32>>>,
}

/// No pending span.
pub(crate) const NONE: u32 = u32::MAX;

/// A span read in this step, waiting to be copied into its trace.
pub(crate) struct Pending<'a> {
    pub bytes: &'a [u8],
    pub fact: HeldSpan,
    /// The trace's next pending span in the step's list, or [`NONE`].
    pub next: u32,
}

impl Trace {
    pub fn new(now_ms: u64, due_ms: u64) -> Self {
        Trace {
            first_seen_ms: now_ms,
            due_ms,
            last_end_ns: 0,
            span_bits: 0,
            span_count: 0,
            data: Vec::new(),
            spans: Vec::new(),
            groups: Vec::new(),
            root: None,
            link: None,
            pending_head: NONE,
            pending_tail: NONE,
            pending_bytes: 0,
            accounted: 0,
            remote_entry: false,
            consumer: false,
            streamed_hops: None,
        }
    }

    /// What the trace holds on the heap, its own block included (its slot in the trace
    /// table is counted with the table).
    pub fn heap_bytes(&self) -> usize {
        allocation_size(std::mem::size_of::<Trace>())
            + allocation_size(self.data.capacity())
            + vec_bytes::<HeldSpan>(self.spans.capacity())
            + vec_bytes::<Arc<Group>>(self.groups.capacity())
            + self.root.as_ref().map_or(0, |o| {
                allocation_size(std::mem::size_of::<Origin>()) + o.heap_bytes()
            })
            + self.streamed_hops.as_ref().map_or(0, |m| {
                allocation_size(std::mem::size_of::<IdMap<u64, u32>>())
                    + table_bytes::<(u64, u32)>(m.capacity())
            })
    }

    /// The index of `group` in the trace's list, added if new; `None` when the list is full.
    pub fn group_index(&mut self, group: &Arc<Group>, max: usize) -> Option<u8> {
        // Spans of one request come in runs under one group: try the last one first.
        if let Some(last) = self.groups.last()
            && Arc::ptr_eq(last, group)
        {
            return Some((self.groups.len() - 1) as u8);
        }
        if let Some(i) = self.groups.iter().position(|g| Arc::ptr_eq(g, group)) {
            return Some(i as u8);
        }
        if self.groups.len() >= max.clamp(1, u8::MAX as usize + 1) {
            return None;
        }
        if self.groups.len() == self.groups.capacity() {
            // Four at a time: a trace's spans come from a few services, each under a scope
            // or two.
            self.groups.reserve_exact(4);
        }
        self.groups.push(group.clone());
        Some((self.groups.len() - 1) as u8)
    }

    /// Adds a span read in this step to the trace's pending ones (`index` in `pending`).
    pub fn add_pending(&mut self, pending: &mut [Pending<'_>], index: u32) {
        if self.pending_tail == NONE {
            self.pending_head = index;
        } else if let Some(p) = pending.get_mut(self.pending_tail as usize) {
            p.next = index;
        }
        self.pending_tail = index;
        let bytes = pending.get(index as usize).map_or(0, |p| p.bytes.len());
        self.pending_bytes = self.pending_bytes.saturating_add(bytes as u32);
    }

    /// The trace's spans waiting in `pending`, in arrival order.
    pub fn pending_in<'p, 'a>(
        &self,
        pending: &'p [Pending<'a>],
    ) -> impl Iterator<Item = &'p Pending<'a>> + Clone + use<'p, 'a> {
        std::iter::successors(pending.get(self.pending_head as usize), move |p| {
            pending.get(p.next as usize)
        })
    }

    /// Copies the pending spans into the trace: the buffer and the facts grow once, to
    /// exactly what they need (rounded up to the allocator's size class).
    pub fn copy_pending(&mut self, pending: &[Pending<'_>]) {
        if self.pending_head == NONE {
            return;
        }
        let mut n = 0usize;
        let mut at = self.pending_head;
        while let Some(p) = pending.get(at as usize) {
            n += 1;
            at = p.next;
        }
        let want = allocation_size(self.data.len() + self.pending_bytes as usize);
        if want > self.data.capacity() {
            self.data.reserve_exact(want - self.data.len());
        }
        let facts = vec_bytes::<HeldSpan>(self.spans.len() + n) / std::mem::size_of::<HeldSpan>();
        if facts > self.spans.capacity() {
            self.spans.reserve_exact(facts - self.spans.len());
        }
        let mut at = self.pending_head;
        while let Some(p) = pending.get(at as usize) {
            self.data.extend_from_slice(p.bytes);
            self.spans.push(HeldSpan {
                end: self.data.len() as u32,
                ..p.fact
            });
            at = p.next;
        }
        self.pending_head = NONE;
        self.pending_tail = NONE;
        self.pending_bytes = 0;
    }

    /// Where each held span's bytes are in `data` (the trace's buffer, taken out of it for
    /// release), with its facts and group.
    pub fn spans_in<'a>(
        &'a self,
        data: &'a [u8],
    ) -> impl Iterator<Item = (std::ops::Range<usize>, &'a HeldSpan, &'a Arc<Group>)> + 'a {
        let mut start = 0usize;
        self.spans.iter().map(move |s| {
            let end = (s.end as usize).min(data.len());
            let range = start.min(end)..end;
            start = end;
            (range, s, &self.groups[s.group as usize])
        })
    }

    /// Forgets the held spans (released in a part); the trace stays open.
    pub fn clear_held(&mut self) {
        self.data = Vec::new();
        self.spans = Vec::new();
        self.groups = Vec::new();
    }
}

/// Resources and scopes interned once per shard, so thousands of held traces share one copy
/// of each. Counted: every group's copies and the table itself.
pub(crate) struct GroupTable {
    /// Keyed by tenant id, pin, resource, scope: two tenants never share a group, nor two
    /// write-ahead log segments (each group keeps its spans' segment alive).
    groups: CountedMap<(u64, usize, Bytes, Bytes), Arc<Group>>,
    /// Heap bytes of the groups in the table.
    bytes: usize,
    /// Size of the table after the last sweep of unused groups.
    swept_at: usize,
    /// Groups made with a pin (a write-ahead log segment) since the last sweep: an unused
    /// one keeps its segment on disk until swept, so they are swept on time as well.
    pinned: usize,
    /// When pinned groups are next swept (ms).
    next_pin_sweep_ms: u64,
}

/// How often unused groups holding a pin are swept: at most this long past its last span's
/// export does a write-ahead log segment wait for the table to let go of it.
const PIN_SWEEP_MS: u64 = 1_000;

impl GroupTable {
    pub fn new() -> Self {
        Self {
            groups: CountedMap::new(),
            bytes: 0,
            swept_at: 0,
            pinned: 0,
            next_pin_sweep_ms: 0,
        }
    }

    /// Sweeps, at most every [`PIN_SWEEP_MS`], when groups holding a pin were made.
    pub fn sweep_pins(&mut self, now_ms: u64) {
        if self.pinned > 0 && now_ms >= self.next_pin_sweep_ms {
            self.sweep();
            self.next_pin_sweep_ms = now_ms + PIN_SWEEP_MS;
        }
    }

    /// When [`GroupTable::sweep_pins`] next has work: groups holding a pin exist.
    pub fn next_pin_sweep_ms(&self) -> Option<u64> {
        (self.pinned > 0).then_some(self.next_pin_sweep_ms)
    }

    /// The shared group for `group`'s resource and scope.
    pub fn intern(&mut self, group: &ScopeGroup) -> Arc<Group> {
        let tenant = group.resource.tenant_id();
        let pin = group.resource.pin_id();
        let key = (
            tenant,
            pin,
            group.resource.bytes.clone(),
            group.scope.clone(),
        );
        if let Some(g) = self.groups.get(&key) {
            return g.clone();
        }
        if self.groups.len() >= 2 * self.swept_at + 1024 {
            self.sweep();
        }
        // Own copies, so held spans do not pin the request buffer.
        let resource = Bytes::copy_from_slice(&group.resource.bytes);
        let scope = Bytes::copy_from_slice(&group.scope);
        let g = Arc::new(Group {
            resource: Arc::new(ResourceHeader {
                bytes: resource.clone(),
                tenant: group.resource.tenant.clone(),
                pin: group.resource.pin.clone(),
            }),
            scope: scope.clone(),
            service: cujo_wire::span::service_name(&group.resource.bytes)
                .unwrap_or_default()
                .into(),
        });
        self.bytes += g.heap_bytes();
        self.pinned += usize::from(pin != 0);
        self.groups
            .insert((tenant, pin, resource, scope), g.clone());
        g
    }

    /// Drops the groups no held span uses any more.
    pub fn sweep(&mut self) {
        let mut freed = 0;
        let mut pinned = 0;
        self.groups.retain(|key, g| {
            let used = Arc::strong_count(g) > 1;
            if !used {
                freed += g.heap_bytes();
            } else if key.1 != 0 {
                pinned += 1;
            }
            used
        });
        self.pinned = pinned;
        self.bytes -= freed;
        self.swept_at = self.groups.len();
        if self.groups.capacity() > 4 * self.groups.len() + 64 {
            let n = self.groups.len();
            self.groups.shrink_to(2 * n);
        }
    }

    /// Memory the table holds: the groups and the table's slots.
    pub fn memory_bytes(&self) -> usize {
        self.bytes + self.groups.bytes()
    }
}
