//! The OTLP trace exporter: batches, a bounded queue, concurrent senders with retries.
//!
//! One task owns the batch being built and the queue of batches waiting to be sent; it stops
//! reading its input while the queue is full — in spans (`queue.max_spans`) or in bytes (the
//! exporter's share of the memory budget) — which fills the channel behind the stage before,
//! up to the receivers, which then refuse with a retryable answer. Everything the exporter
//! holds is counted in its account: the batches (their leases move here with them), the
//! encoded request bodies, and the encode buffers kept for reuse.
//! Encoding and compression run on the blocking pool. Every batch ends in exactly one of
//! `exported`, or `dropped{reason}`, counted in [`PipelineTelemetry`].
//!
//! - [`config`]: `exporters.otlp` and its `validate`, resolved into [`ExporterSettings`]
//!   and the [`transport::Downstream`] it sends to.
//! - [`retry`]: backoff schedule honouring the server's delay.
//! - [`transport`]: one attempt over gRPC or HTTP/protobuf, and what the answer means.

pub mod config;
pub mod retry;
pub mod transport;

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cujo_wire::{SpanBatch, Tenant, encode_request};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::{Lease, SpanSource};
use crate::memory::Account;
use crate::telemetry::{DropReason, PipelineTelemetry};
use retry::{Backoff, RetrySettings};
use transport::{Compression, Downstream, Outcome, Protocol};

/// `exporters.otlp`, resolved.
#[derive(Debug, Clone)]
pub struct ExporterSettings {
    pub batch_max_spans: usize,
    /// A batch is sent once its encoded size reaches this (a request is never split for
    /// it: a batch holds at most this plus one request). Bounds the bodies being encoded.
    pub batch_max_bytes: usize,
    pub batch_timeout: Duration,
    pub queue_max_spans: usize,
    /// Requests in flight to the downstream at once.
    pub concurrency: usize,
    pub retry: RetrySettings,
    /// The exporter's share of the memory budget.
    pub memory: Account,
    /// What arrives is already paid for from `memory` (the assembler takes room in the
    /// exporter's share before it releases spans): taking it adds nothing to the account,
    /// so it is taken whatever the account says. Otherwise (the receivers' requests, paid
    /// from their share and moved here when taken) input waits while the account is full.
    pub input_paid: bool,
}

/// Spans of one tenant on their way out, with the leases that pay for their memory.
struct Outgoing {
    /// Whose spans these are (`None`: the default tenant): a request never mixes tenants.
    tenant: Option<Arc<Tenant>>,
    batch: SpanBatch,
    spans: usize,
    /// The batch's encoded size.
    bytes: usize,
    /// The inputs the spans came from, in the batch's order: each with the lease that pays
    /// for it, so a lease goes back as soon as no batch holds any of its spans.
    parts: VecDeque<Part>,
}

/// The spans one input (a request, an assembler step's output) put in a batch.
struct Part {
    lease: Arc<Lease>,
    spans: usize,
    arrived: Instant,
}

impl Outgoing {
    fn empty(tenant: Option<Arc<Tenant>>) -> Self {
        Self {
            tenant,
            batch: SpanBatch::default(),
            spans: 0,
            bytes: 0,
            parts: VecDeque::new(),
        }
    }

    /// When the oldest span in the batch arrived.
    fn since(&self) -> Option<Instant> {
        self.parts.front().map(|p| p.arrived)
    }

    fn tenant_id(&self) -> u64 {
        self.tenant.as_ref().map_or(0, |t| t.id())
    }

    fn split_front(&mut self, n: usize) -> Outgoing {
        let batch = self.batch.split_front(n);
        let spans = batch.span_count();
        let bytes = cujo_wire::encoded_request_len(&batch);
        self.spans -= spans;
        self.bytes = self.bytes.saturating_sub(bytes);
        // The inputs wholly in the front go with it; one cut in two is held by both halves
        // (its bytes return when both are done), and the rest stay.
        let mut parts = VecDeque::new();
        let mut need = spans;
        while need > 0 {
            let Some(part) = self.parts.front_mut() else {
                break;
            };
            if part.spans <= need {
                need -= part.spans;
                parts.extend(self.parts.pop_front());
            } else {
                part.spans -= need;
                parts.push_back(Part {
                    lease: part.lease.clone(),
                    spans: need,
                    arrived: part.arrived,
                });
                need = 0;
            }
        }
        Outgoing {
            tenant: self.tenant.clone(),
            batch,
            spans,
            bytes,
            parts,
        }
    }
}

/// The batches being built, one per tenant with spans waiting.
#[derive(Default)]
struct Building {
    batches: Vec<Outgoing>,
}

impl Building {
    fn spans(&self) -> usize {
        self.batches.iter().map(|b| b.spans).sum()
    }

    /// When the oldest batch is due.
    fn due(&self, timeout: Duration) -> Option<Instant> {
        self.batches
            .iter()
            .filter_map(|b| b.since())
            .min()
            .map(|t| t + timeout)
    }

    /// The batch being built for `tenant`.
    fn of(&mut self, tenant: Option<Arc<Tenant>>) -> &mut Outgoing {
        let id = tenant.as_ref().map_or(0, |t| t.id());
        let i = match self.batches.iter().position(|b| b.tenant_id() == id) {
            Some(i) => i,
            None => {
                self.batches.push(Outgoing::empty(tenant));
                self.batches.len() - 1
            }
        };
        &mut self.batches[i]
    }

    /// Queues every batch (due before `at`, or all when `at` is `None`) and forgets the
    /// empty ones.
    fn flush(
        &mut self,
        at: Option<(Instant, Duration)>,
        queue: &mut VecDeque<Outgoing>,
        queued: &mut usize,
    ) {
        let mut keep = Vec::with_capacity(self.batches.len());
        for b in self.batches.drain(..) {
            let due = match (at, b.since()) {
                (None, _) => true,
                (Some((now, timeout)), Some(since)) => since + timeout <= now,
                (Some(_), None) => false,
            };
            if due && b.spans > 0 {
                *queued += b.spans;
                queue.push_back(b);
            } else if b.spans > 0 {
                keep.push(b);
            }
        }
        self.batches = keep;
    }
}

/// Runs the exporter until its input is closed (all senders gone, or `input_closed`
/// cancelled) and everything taken from it has been delivered or dropped. Cancelling
/// `abandon` (the shutdown deadline) stops retries: what is still held is counted as dropped
/// with reason `shutdown`.
pub async fn run(
    settings: ExporterSettings,
    downstream: Arc<Downstream>,
    telemetry: Arc<PipelineTelemetry>,
    mut source: SpanSource,
    input_closed: CancellationToken,
    abandon: CancellationToken,
) {
    telemetry.set_queue_capacity(settings.queue_max_spans as u64);
    let mut building = Building::default();
    let mut queue: VecDeque<Outgoing> = VecDeque::new();
    let mut queued_spans = 0usize;
    let mut senders: JoinSet<()> = JoinSet::new();
    let mut source_open = true;
    let mut closing = false;
    let max_batch = settings.batch_max_spans.max(1);
    let max_bytes = settings.batch_max_bytes.max(1);
    let memory = settings.memory.clone();
    let buffers = Arc::new(BufferPool::new(
        settings.concurrency.max(1) + 1,
        memory.clone(),
    ));
    loop {
        // A sender encodes its batch into a new body: start one only while the account has
        // room for it, or when none runs (so the queue always moves).
        while senders.len() < settings.concurrency.max(1)
            && (senders.is_empty() || !memory.is_full())
        {
            let Some(next) = queue.pop_front() else { break };
            queued_spans -= next.spans;
            senders.spawn(deliver(
                next,
                memory.clone(),
                buffers.clone(),
                downstream.clone(),
                telemetry.clone(),
                settings.retry.clone(),
                abandon.clone(),
            ));
        }
        let building_spans = building.spans();
        if !source_open && building_spans == 0 && queue.is_empty() && senders.is_empty() {
            return;
        }
        // Take more input only below both limits; a request taken moves its bytes here, so
        // the account holds at most its limit plus one request. Holding nothing, take input
        // whatever the account says: what fills it then is input already charged to it,
        // which only moves once taken. Input paid from this account (the assembler's
        // output) is taken whatever the account says: it is counted here already, and
        // left in the channel it would only keep the account full while senders idle.
        let idle = building_spans == 0 && queue.is_empty() && senders.is_empty();
        let room = queued_spans + building_spans < settings.queue_max_spans
            && (settings.input_paid || !memory.is_full() || idle);
        if !room && memory.is_full() {
            memory.note_full();
        }
        let flush_at = building.due(settings.batch_timeout);
        tokio::select! {
            biased;
            _ = abandon.cancelled() => break,
            // Stop new sends into the channel; what is already in it is still drained.
            _ = input_closed.cancelled(), if source_open && !closing => {
                closing = true;
                source.close();
            }
            Some(_) = senders.join_next(), if !senders.is_empty() => {}
            // Room again for a sender that waits on memory.
            _ = memory.wait_for_room(), if !queue.is_empty() && !senders.is_empty()
                && senders.len() < settings.concurrency.max(1) => {}
            received = source.recv(), if source_open && room => match received {
                Some(admitted) => {
                    let lease = move_lease(admitted.lease, &memory);
                    // Each tenant's spans join that tenant's batch (one part, no copy, when
                    // the request has one tenant).
                    for (tenant, batch) in admitted.batch.split_by_tenant() {
                        let b = building.of(tenant);
                        add(b, batch, &lease, max_batch, max_bytes, &telemetry, &mut queue, &mut queued_spans);
                    }
                    building.batches.retain(|b| b.spans > 0);
                }
                None => {
                    source_open = false;
                    building.flush(None, &mut queue, &mut queued_spans);
                }
            },
            _ = sleep_until(flush_at), if flush_at.is_some() => {
                building.flush(Some((Instant::now(), settings.batch_timeout)), &mut queue, &mut queued_spans);
            }
        }
    }
    // Abandoned: senders see the same token and account for their own batches.
    while senders.join_next().await.is_some() {}
    building.flush(None, &mut queue, &mut queued_spans);
    for out in queue.drain(..) {
        cujo_wire::tenant::settle(&out.batch, false);
        telemetry.queue_add(-(out.spans as i64));
        telemetry.spans_dropped(
            DropReason::Shutdown,
            out.spans as u64,
            "shutdown deadline passed before the batch could be sent",
        );
    }
    source.close();
    while let Some(admitted) = source.recv().await {
        cujo_wire::tenant::settle(&admitted.batch, false);
        telemetry.spans_dropped(
            DropReason::Shutdown,
            admitted.span_count() as u64,
            "shutdown deadline passed before the spans reached the exporter",
        );
    }
}

/// The lease of spans taken from the input, moved to the exporter's account when nothing
/// else shares it (a request the receivers accepted, or the assembler's output).
fn move_lease(lease: Arc<Lease>, to: &Account) -> Arc<Lease> {
    match Arc::try_unwrap(lease) {
        Ok(lease) if lease.component() != to.component() => Arc::new(lease.transfer(to)),
        Ok(lease) => Arc::new(lease),
        Err(shared) => shared,
    }
}

/// Adds `batch` (one tenant's spans, paid for by `lease`) to the batch being built for its
/// tenant, queueing full batches: by spans (`max_batch`) or by encoded bytes (`max_bytes`).
#[allow(clippy::too_many_arguments)]
fn add(
    building: &mut Outgoing,
    mut batch: SpanBatch,
    lease: &Arc<Lease>,
    max_batch: usize,
    max_bytes: usize,
    telemetry: &PipelineTelemetry,
    queue: &mut VecDeque<Outgoing>,
    queued: &mut usize,
) {
    let n = batch.span_count();
    let bytes = cujo_wire::encoded_request_len(&batch);
    telemetry.queue_add(n as i64);
    let queue_whole = |b: &mut Outgoing, queue: &mut VecDeque<Outgoing>, queued: &mut usize| {
        let tenant = b.tenant.clone();
        let out = std::mem::replace(b, Outgoing::empty(tenant));
        *queued += out.spans;
        queue.push_back(out);
    };
    if building.spans > 0 && building.bytes + bytes > max_bytes {
        queue_whole(building, queue, queued);
    }
    building.batch.append(&mut batch);
    building.spans += n;
    building.bytes += bytes;
    if n > 0 {
        building.parts.push_back(Part {
            lease: lease.clone(),
            spans: n,
            arrived: Instant::now(),
        });
    }
    while building.spans >= max_batch {
        let full = building.split_front(max_batch);
        *queued += full.spans;
        queue.push_back(full);
    }
    if building.bytes >= max_bytes {
        queue_whole(building, queue, queued);
    }
    if building.spans == 0 {
        building.parts.clear();
        building.bytes = 0;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Encode buffers of delivered batches, kept for the next ones: a full batch is megabytes,
/// and fresh memory for every batch showed as page faults (the kernel zeroing pages) in a
/// measurable share of the CPU.
struct BufferPool {
    /// Kept buffers, with the lease that counts their capacity.
    free: std::sync::Mutex<(Vec<Vec<u8>>, Lease)>,
    max: usize,
    /// The most the kept buffers may hold together: a quarter of the account's limit.
    max_kept_bytes: usize,
}

impl BufferPool {
    /// Buffers larger than this are not kept (an outsized batch should not pin its memory).
    const MAX_KEPT_BYTES: usize = 64 << 20;

    fn new(max: usize, memory: Account) -> Self {
        Self {
            max_kept_bytes: memory.limit() / 4,
            free: std::sync::Mutex::new((Vec::new(), memory.empty_lease())),
            max,
        }
    }

    /// A kept buffer (its bytes move to `lease`), or a new empty one.
    fn take(&self, lease: &mut Lease) -> Vec<u8> {
        let Ok(mut free) = self.free.lock() else {
            return Vec::new();
        };
        let (bufs, kept) = &mut *free;
        match bufs.pop() {
            Some(buf) => {
                kept.shrink(buf.capacity());
                lease.grow(buf.capacity());
                buf
            }
            None => Vec::new(),
        }
    }

    /// Keeps `buf` for the next batch if the pool has a place and the account has room.
    /// Kept buffers never take more than a quarter of the account's limit: memory nothing
    /// uses must not fill the share, or the exporter would stop taking input (and the stage
    /// before it, waiting for room, would wait for ever).
    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > Self::MAX_KEPT_BYTES {
            return;
        }
        buf.clear();
        if let Ok(mut free) = self.free.lock() {
            let (bufs, kept) = &mut *free;
            let within = kept.bytes() + buf.capacity() <= self.max_kept_bytes;
            if bufs.len() < self.max && within && kept.try_grow(buf.capacity()) {
                bufs.push(buf);
            }
        }
    }

    /// Takes back the buffer of a body that was sent, if nothing else holds it any more.
    fn give_body(&self, body: Bytes) {
        if let Ok(buf) = body.try_into_mut() {
            self.give(Vec::from(buf));
        }
    }
}

/// Encodes `batch` as the request body for `downstream`: protobuf, compressed and framed,
/// in `buf` (cleared first). For gRPC the 5-byte message header is reserved in front and
/// filled in at the end, so the body (megabytes for a full batch) is written once, never
/// copied behind a header. Returns the body and, when compressing, the buffer of the
/// uncompressed encoding, for reuse.
fn encode_body(
    batch: &SpanBatch,
    protocol: Protocol,
    compression: Compression,
    mut buf: Vec<u8>,
) -> std::io::Result<(Bytes, Option<Vec<u8>>)> {
    let header = match protocol {
        Protocol::Grpc => crate::rpc::FRAME_HEADER_LEN,
        Protocol::HttpProtobuf => 0,
    };
    let gzip = compression == Compression::Gzip;
    buf.clear();
    let mut spare = None;
    let mut body = match compression {
        Compression::None => {
            let mut body = buf;
            body.resize(header, 0);
            encode_request(batch, &mut body);
            body
        }
        Compression::Gzip => {
            let mut raw = buf;
            encode_request(batch, &mut raw);
            let mut out = Vec::with_capacity(header + raw.len() / 4);
            out.resize(header, 0);
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            enc.write_all(&raw)?;
            spare = Some(raw);
            enc.finish()?
        }
    };
    if protocol == Protocol::Grpc {
        crate::rpc::write_frame_header(&mut body, gzip)?;
    }
    Ok((Bytes::from(body), spare))
}

/// Sends one batch until it is delivered, refused for good, out of retries, or abandoned.
async fn deliver(
    out: Outgoing,
    memory: Account,
    buffers: Arc<BufferPool>,
    downstream: Arc<Downstream>,
    telemetry: Arc<PipelineTelemetry>,
    retry: RetrySettings,
    abandon: CancellationToken,
) {
    let spans = out.spans as u64;
    let Outgoing {
        batch,
        parts,
        tenant,
        ..
    } = out;
    // What the tenant's share gets back once the batch is done with.
    let tenant = tenant.map(|t| (t, batch.span_bytes()));
    // The spans' write-ahead log segments: the body no longer carries them, and a segment
    // deleted while its spans are still being retried would lose them on a crash. Released
    // once the batch is delivered or dropped with a count.
    let pins = batch.pins();
    let (protocol, compression) = (downstream.protocol(), downstream.compression());
    let pool = buffers.clone();
    // The body is counted before it is written: its encoded size (twice with gzip: the
    // plain encoding, then the compressed copy), then what it really holds.
    let mut body_lease = memory.empty_lease();
    let encoded = tokio::task::spawn_blocking(move || {
        let mut batch = batch;
        batch.compact();
        let plain = crate::rpc::FRAME_HEADER_LEN + cujo_wire::encoded_request_len(&batch);
        let buf = pool.take(&mut body_lease);
        let estimate = match compression {
            Compression::None => plain,
            Compression::Gzip => plain + plain / 2,
        };
        body_lease.grow(estimate.saturating_sub(body_lease.bytes()));
        let body = encode_body(&batch, protocol, compression, buf);
        drop(batch);
        (body, body_lease)
    })
    .await;
    // The spans are in the body now (or gone): their own bytes go back.
    drop(parts);
    let (body, mut body_lease) = match encoded {
        Ok((Ok((body, spare)), mut lease)) => {
            if let Some(spare) = spare {
                lease.shrink(spare.capacity());
                buffers.give(spare);
            }
            lease.set(body.len());
            (body, lease)
        }
        Ok((Err(e), _)) => {
            finish(
                &telemetry,
                spans,
                tenant.as_ref(),
                Err((
                    DropReason::Rejected,
                    format!("compressing the batch failed: {e}"),
                )),
            );
            return;
        }
        Err(e) => {
            finish(
                &telemetry,
                spans,
                tenant.as_ref(),
                Err((DropReason::Internal, format!("encoding task failed: {e}"))),
            );
            return;
        }
    };
    let started = Instant::now();
    let mut backoff = Backoff::new(retry, started);
    let result = loop {
        let sent_at = Instant::now();
        let outcome = tokio::select! {
            _ = abandon.cancelled() => break Err((DropReason::Shutdown, "shutdown deadline passed while sending".to_string())),
            o = downstream.send_as(body.clone(), tenant.as_ref().map_or(&[][..], |(t, _)| t.headers())) => o,
        };
        telemetry.export_attempt_took(sent_at.elapsed());
        match outcome {
            Outcome::Delivered { rejected, message } => break Ok((rejected, message)),
            Outcome::Permanent { error } => {
                telemetry.export_attempt_failed(&error, false);
                break Err((DropReason::Rejected, error));
            }
            Outcome::Retryable { after, error } => {
                let Some(delay) = backoff.next_delay(after, Instant::now()) else {
                    telemetry.export_attempt_failed(&error, false);
                    break Err((
                        DropReason::RetriesExhausted,
                        format!("gave up after {:?}: {error}", started.elapsed()),
                    ));
                };
                telemetry.export_attempt_failed(&error, true);
                tokio::select! {
                    _ = abandon.cancelled() => break Err((DropReason::Shutdown, format!("shutdown deadline passed while waiting to retry: {error}"))),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    finish(&telemetry, spans, tenant.as_ref(), result);
    drop(pins);
    body_lease.shrink(body.len());
    buffers.give_body(body);
}

fn finish(
    telemetry: &PipelineTelemetry,
    spans: u64,
    tenant: Option<&(Arc<Tenant>, usize)>,
    result: Result<(i64, String), (DropReason, String)>,
) {
    telemetry.queue_add(-(spans as i64));
    let (exported, dropped) = match result {
        Ok((rejected, message)) => {
            let rejected = (rejected.max(0) as u64).min(spans);
            telemetry.spans_exported(spans - rejected);
            telemetry.spans_dropped(DropReason::PartiallyRejected, rejected, &message);
            (spans - rejected, rejected)
        }
        Err((reason, error)) => {
            telemetry.spans_dropped(reason, spans, &error);
            (0, spans)
        }
    };
    if let Some((t, bytes)) = tenant {
        t.give_back(*bytes);
        t.counts.exported_spans.fetch_add(exported, Relaxed);
        t.counts.dropped_spans.fetch_add(dropped, Relaxed);
    }
}

/// Where spans go when no exporter is configured: counted as not forwarded, released at once.
/// Ends when the input closes (all senders gone, or `input_closed` cancelled and drained).
pub async fn discard(
    telemetry: Arc<PipelineTelemetry>,
    mut source: SpanSource,
    input_closed: CancellationToken,
) {
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            _ = input_closed.cancelled(), if !closing => {
                closing = true;
                source.close();
            }
            received = source.recv() => match received {
                Some(admitted) => {
                    cujo_wire::tenant::settle(&admitted.batch, false);
                    telemetry.spans_dropped(
                        DropReason::NoExporter,
                        admitted.span_count() as u64,
                        "",
                    )
                }
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn batch(spans: u8) -> SpanBatch {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (1..=spans)
                        .map(|i| Span {
                            trace_id: vec![i; 16],
                            span_id: vec![i; 8],
                            name: format!("span {i}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        cujo_wire::scan_request(&Bytes::from(request.encode_to_vec()))
            .expect("valid request")
            .batch
    }

    fn account() -> Account {
        crate::memory::MemoryBudget::new(64 << 20, crate::memory::Shares::for_stages(false, false))
            .account(crate::memory::Component::Exporter)
    }

    #[test]
    fn encode_buffers_are_reused_once_the_body_is_sent() {
        let memory = account();
        let pool = BufferPool::new(2, memory.clone());
        let mut lease = memory.empty_lease();
        let (first, spare) = encode_body(
            &batch(50),
            Protocol::Grpc,
            Compression::None,
            pool.take(&mut lease),
        )
        .expect("encodes");
        assert!(spare.is_none());
        let at = first.as_ptr();
        let expected = first.to_vec();
        // Still held elsewhere (a retry in flight): not taken back.
        let held = first.clone();
        pool.give_body(first);
        assert_eq!(pool.take(&mut lease).capacity(), 0, "nothing came back");
        pool.give_body(held);
        assert!(memory.used() > 0, "the kept buffer is counted");
        let reused = pool.take(&mut lease);
        assert_eq!(reused.as_ptr(), at, "the sent body's buffer");
        assert_eq!(
            lease.bytes(),
            reused.capacity(),
            "its bytes moved to the taker"
        );
        let (second, _) =
            encode_body(&batch(50), Protocol::Grpc, Compression::None, reused).expect("encodes");
        assert_eq!(second.as_ptr(), at);
        assert_eq!(second.to_vec(), expected, "same bytes from a reused buffer");
        assert_eq!(second[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes([second[1], second[2], second[3], second[4]]) as usize,
            second.len() - crate::rpc::FRAME_HEADER_LEN
        );
    }

    #[test]
    fn gzip_bodies_give_back_the_uncompressed_buffer() {
        let memory = account();
        let pool = BufferPool::new(2, memory.clone());
        let mut lease = memory.empty_lease();
        let (body, spare) = encode_body(
            &batch(50),
            Protocol::Grpc,
            Compression::Gzip,
            pool.take(&mut lease),
        )
        .expect("encodes");
        assert_eq!(body[0], 1, "compressed flag");
        let raw = spare.expect("the uncompressed encoding's buffer");
        let mut gz = flate2::read::GzDecoder::new(&body[crate::rpc::FRAME_HEADER_LEN..]);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut gz, &mut plain).expect("gunzips");
        let mut direct = Vec::new();
        encode_request(&batch(50), &mut direct);
        assert_eq!(plain, direct);
        pool.give(raw);
        assert!(pool.take(&mut lease).capacity() > 0);
    }

    #[test]
    fn a_sent_batch_gives_back_the_bytes_of_its_own_inputs_only() {
        // Inputs of 30 spans, each paid by a lease of 1,000 bytes, into batches of 50: the
        // first batch holds input 1 wholly and 20 spans of input 2.
        let memory = account();
        let telemetry = PipelineTelemetry::new();
        let mut building = Outgoing::empty(None);
        let mut queue = VecDeque::new();
        let mut queued = 0;
        for _ in 0..3 {
            let lease = Arc::new(memory.take(1_000));
            add(
                &mut building,
                batch(30),
                &lease,
                50,
                usize::MAX,
                &telemetry,
                &mut queue,
                &mut queued,
            );
        }
        assert_eq!(memory.used(), 3_000);
        assert_eq!(queue.len(), 1, "one full batch of 50");
        assert_eq!(building.spans, 40);
        let sent = queue.pop_front().expect("the full batch");
        let spans = |o: &Outgoing| o.parts.iter().map(|p| p.spans).collect::<Vec<_>>();
        assert_eq!(spans(&sent), [30, 20], "input 1 whole, 20 spans of input 2");
        assert_eq!(spans(&building), [10, 30], "the rest of input 2, input 3");
        assert_eq!(
            building.since(),
            Some(sent.parts[1].arrived),
            "the batch being built is as old as input 2, the oldest it holds spans of"
        );
        drop(sent);
        assert_eq!(
            memory.used(),
            2_000,
            "input 1's bytes are back; input 2 is still held by the batch being built"
        );
        let rest = building.split_front(40);
        assert!(building.parts.is_empty());
        drop(rest);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn kept_buffers_never_fill_the_exporters_share() {
        // 64 MiB budget, plain forwarding: the exporter's share is 48 MiB.
        let memory = account();
        let pool = BufferPool::new(8, memory.clone());
        for _ in 0..8 {
            pool.give(Vec::with_capacity(10 << 20));
        }
        let kept = memory.used();
        assert!(kept > 0, "some are kept");
        assert!(
            kept <= memory.limit() / 4,
            "kept {kept} bytes of a {} limit",
            memory.limit()
        );
        assert!(!memory.is_full(), "the exporter still takes input");
    }
}
