//! The write-ahead log from the receivers' side (`wal:`): a request's spans are appended to
//! the log, and the append synced to disk, before the request is acknowledged; on start,
//! what the log still holds is replayed through the same path as a request.
//!
//! A record is the request's decoded protobuf body after a tag of who sent it: the default
//! tenant, a configured tenant by name, or a pass-through caller by the header values it is
//! forwarded with (so the log directory holds those values: protect it like the config).
//! Every span of the request is pinned to the log segment it was appended to
//! ([`cujo_wire::ResourceHeader::pin`]); the segment's file is deleted once the last of
//! them is exported or dropped.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cujo_wire::{Pin, Tenant, scan_request};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::Ingest;
use crate::admission::Admitted;
use crate::telemetry::{RequestOutcome, Transport};
use crate::tenants::PASS_THROUGH;

const DEFAULT: u8 = 0;
const CONFIGURED: u8 = 1;
const PASSED: u8 = 2;

/// Who sent a logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Default,
    Configured(String),
    /// A pass-through caller: the header names and values it is forwarded with.
    PassThrough(Vec<(String, Bytes)>),
}

/// What a record holds before the request body: who sent it. The log frames it and the
/// body as one record without copying the body here.
pub fn record_head(tenant: Option<&Tenant>) -> Bytes {
    static DEFAULT_HEAD: [u8; 1] = [DEFAULT];
    let Some(t) = tenant else {
        return Bytes::from_static(&DEFAULT_HEAD);
    };
    let mut out = BytesMut::with_capacity(64);
    if t.name() == PASS_THROUGH {
        out.put_u8(PASSED);
        out.put_u16_le(t.headers().len() as u16);
        for (name, value) in t.headers() {
            put_field(&mut out, name.as_bytes());
            put_field(&mut out, value);
        }
    } else {
        out.put_u8(CONFIGURED);
        put_field(&mut out, t.name().as_bytes());
    }
    out.freeze()
}

fn put_field(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.extend_from_slice(b);
}

/// The sender and the body of a record; `None` if it is not one this version writes.
pub fn decode_record(record: &Bytes) -> Option<(Sender, Bytes)> {
    let mut at = 1;
    let field = |at: &mut usize| -> Option<Bytes> {
        let len = record.get(*at..*at + 4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = *at + 4;
        let end = start.checked_add(len).filter(|e| *e <= record.len())?;
        *at = end;
        Some(record.slice(start..end))
    };
    let sender = match *record.first()? {
        DEFAULT => Sender::Default,
        CONFIGURED => {
            let name = field(&mut at)?;
            Sender::Configured(String::from_utf8(name.to_vec()).ok()?)
        }
        PASSED => {
            let n = record.get(1..3)?;
            at = 3;
            let n = u16::from_le_bytes([n[0], n[1]]);
            let mut pairs = Vec::with_capacity(usize::from(n).min(16));
            for _ in 0..n {
                let name = String::from_utf8(field(&mut at)?.to_vec()).ok()?;
                pairs.push((name, field(&mut at)?));
            }
            Sender::PassThrough(pairs)
        }
        _ => return None,
    };
    Some((sender, record.slice(at..)))
}

/// What a replay gave back.
#[derive(Debug, Default, Clone)]
pub struct Replayed {
    pub records: u64,
    pub spans: u64,
    /// Records that could not be read back as a request (another version's, or a tenant
    /// no longer configured): skipped, and counted on `/metrics` as requests with
    /// `transport="wal", outcome="invalid"` (with their spans when they can be read).
    pub unreadable: u64,
    /// The segments the records came from, held weakly: once they are all gone, nothing
    /// of this replay can be replayed again (the SLI engine's guard uses this).
    pub segments: Vec<std::sync::Weak<dyn std::any::Any + Send + Sync>>,
    /// What the log read and skipped: torn tails and damaged stretches (also `cujo_wal_*`).
    pub log: cujo_wal::ReplayCounts,
}

impl Ingest {
    /// Appends the request `body` of `tenant` to the write-ahead log and waits until it is
    /// on disk; the segment to pin its spans to. `None` without a log.
    pub(crate) async fn log(
        &self,
        tenant: Option<&Arc<Tenant>>,
        body: &Bytes,
    ) -> Option<Result<Pin, cujo_wal::AppendError>> {
        let wal = self.wal.as_ref()?;
        let head = record_head(tenant.map(|t| t.as_ref()));
        Some(wal.append_parts(head, body.clone()).await.map(|s| s as Pin))
    }

    /// Hands every record of `replay` to the pipeline as if it had just arrived (waiting for
    /// room as long as it takes, or until `stop`), each span pinned to its segment.
    pub async fn replay(&self, replay: cujo_wal::Replay, stop: &CancellationToken) -> Replayed {
        // The log is read on a blocking thread; a few records ahead at most.
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let reader = tokio::task::spawn_blocking(move || {
            let mut replay = replay;
            for record in replay.by_ref() {
                if tx.blocking_send(record).is_err() {
                    break;
                }
            }
            replay.counts()
        });
        let mut done = Replayed::default();
        'records: while let Some(record) = rx.recv().await {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "write-ahead log: cannot read a segment; the rest of it is skipped");
                    continue;
                }
            };
            done.records += 1;
            let pin: Pin = record.segment;
            if !done
                .segments
                .last()
                .is_some_and(|w| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(&pin)))
            {
                done.segments.push(Arc::downgrade(&pin));
            }
            let Some((sender, body)) = decode_record(&record.payload) else {
                self.unreadable(&mut done, 0, "a record of an unknown form");
                continue;
            };
            let tenant = match self.replay_tenant(&sender) {
                Ok(t) => t,
                Err(reason) => {
                    let spans = scan_request(&body).map_or(0, |s| s.batch.span_count() as u64);
                    self.unreadable(&mut done, spans, &reason);
                    continue;
                }
            };
            let Ok(scanned) = scan_request(&body) else {
                self.unreadable(&mut done, 0, "not an ExportTraceServiceRequest");
                continue;
            };
            let mut batch = scanned.batch;
            let spans = batch.span_count() as u64;
            if spans == 0 {
                continue;
            }
            let mut lease = self.memory.empty_lease();
            let need = body.len() + batch.handle_bytes();
            while !lease.try_grow(need) {
                // The pipeline is full: replay goes at its pace (a lease alone always fits).
                tokio::select! {
                    // Stopped: what was not handed on stays in the log for the next start;
                    // the reader still says what it skipped so far.
                    _ = stop.cancelled() => break 'records,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            if let Some(t) = &tenant {
                batch.set_tenant(t);
                t.take(batch.span_bytes());
                t.counts
                    .accepted_spans
                    .fetch_add(spans, std::sync::atomic::Ordering::Relaxed);
            }
            batch.set_pin(&pin);
            self.telemetry
                .request(Transport::Wal, RequestOutcome::Accepted, spans);
            done.spans += spans;
            let admitted = Admitted {
                batch,
                lease: Arc::new(lease),
            };
            if let Err(back) = self.sink.send(admitted).await {
                // The pipeline is gone (shutting down): what was not handed on stays in the
                // log for the next start.
                self.telemetry
                    .undo_accepted(Transport::Wal, back.batch.span_count() as u64);
                break;
            }
        }
        drop(rx);
        if let Ok(counts) = reader.await {
            done.log = counts;
        }
        done
    }

    /// A replayed record that cannot be taken back as a request: counted and skipped.
    fn unreadable(&self, done: &mut Replayed, spans: u64, reason: &str) {
        done.unreadable += 1;
        self.telemetry
            .request(Transport::Wal, RequestOutcome::Invalid, spans);
        tracing::warn!(
            reason,
            spans,
            "write-ahead log: a replayed record was skipped"
        );
    }

    fn replay_tenant(&self, sender: &Sender) -> Result<Option<Arc<Tenant>>, String> {
        match sender {
            Sender::Default => Ok(None),
            Sender::Configured(name) => self
                .tenants
                .as_ref()
                .and_then(|t| t.by_name(name))
                .map(Some)
                .ok_or_else(|| format!("tenant {name:?} is no longer configured")),
            Sender::PassThrough(pairs) => {
                let Some(tenants) = &self.tenants else {
                    return Err("pass-through headers are no longer configured".into());
                };
                let mut headers = HeaderMap::new();
                for (name, value) in pairs {
                    let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_bytes(value),
                    ) else {
                        return Err("a pass-through header that is not one".into());
                    };
                    headers.insert(n, v);
                }
                tenants
                    .pass_through_of(&headers)
                    .map_err(|_| "its pass-through caller cannot be taken back now".to_string())
            }
        }
    }
}

/// `cujo_wal_*` on `/metrics`: what the write-ahead log wrote, refused, holds and replayed.
pub fn render(stats: &cujo_wal::WalStats, out: &mut crate::prom::Exposition) {
    use crate::prom::Family;
    let s = stats.snapshot();
    Family::counter(out, "cujo_wal_appended_records_total", "Requests appended to the write-ahead log (each synced to disk before it was acknowledged).")
        .sample(&[], s.appended_records as f64);
    Family::counter(
        out,
        "cujo_wal_appended_bytes_total",
        "Bytes appended to the write-ahead log.",
    )
    .sample(&[], s.appended_bytes as f64);
    Family::counter(
        out,
        "cujo_wal_fsyncs_total",
        "Syncs of the write-ahead log (one covers every append of its group).",
    )
    .sample(&[], s.fsyncs as f64);
    Family::counter(
        out,
        "cujo_wal_fsync_seconds_sum",
        "Time spent syncing the write-ahead log.",
    )
    .sample(&[], s.fsync_sum_us as f64 / 1e6);
    Family::gauge(
        out,
        "cujo_wal_fsync_max_seconds",
        "The longest sync of the write-ahead log since start.",
    )
    .sample(&[], s.fsync_max_us as f64 / 1e6);
    let mut refused = Family::counter(
        out,
        "cujo_wal_refused_total",
        "Appends refused, by reason: full (wal.max_size), busy (wal.max_pending waiting for the disk), too_large (wal.max_record_size), io (a write or sync failed, e.g. the disk is full); the requests were refused, retryably but for too_large.",
    );
    for (reason, n) in [
        ("full", s.refused_full),
        ("busy", s.refused_busy),
        ("too_large", s.refused_too_large),
        ("io", s.refused_io),
    ] {
        refused.sample(&[("reason", reason)], n as f64);
    }
    Family::gauge(
        out,
        "cujo_wal_live_bytes",
        "Bytes of the write-ahead log's segments on disk (what wal.max_size bounds).",
    )
    .sample(&[], s.live_bytes as f64);
    Family::gauge(
        out,
        "cujo_wal_live_segments",
        "Segments of the write-ahead log on disk.",
    )
    .sample(&[], s.live_segments as f64);
    Family::counter(
        out,
        "cujo_wal_segments_deleted_total",
        "Segments deleted once every span of them was exported or dropped.",
    )
    .sample(&[], s.segments_deleted as f64);
    Family::counter(
        out,
        "cujo_wal_replayed_records_total",
        "Records replayed at start (acknowledged before a restart and not yet exported then).",
    )
    .sample(&[], s.replayed_records as f64);
    Family::counter(
        out,
        "cujo_wal_replayed_bytes_total",
        "Payload bytes of the records replayed at start.",
    )
    .sample(&[], s.replayed_bytes as f64);
    Family::counter(out, "cujo_wal_lost_records_total", "Records lost to a torn tail at start (a crash while they were written: never acknowledged).")
        .sample(&[], s.lost_records as f64);
    Family::counter(
        out,
        "cujo_wal_lost_bytes_total",
        "Bytes after the last complete record of a segment (torn tails), dropped at start.",
    )
    .sample(&[], s.lost_bytes as f64);
    Family::counter(
        out,
        "cujo_wal_corrupt_skips_total",
        "Damaged stretches of a segment (a record or more each) skipped at start to the next valid record.",
    )
    .sample(&[], s.corrupt_skips as f64);
    Family::counter(
        out,
        "cujo_wal_corrupt_bytes_total",
        "Bytes of damaged records skipped at start.",
    )
    .sample(&[], s.corrupt_bytes as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record for `body` sent by `tenant`, as the log holds it.
    fn encode_record(tenant: Option<&Tenant>, body: &[u8]) -> Bytes {
        let mut out = BytesMut::from(&record_head(tenant)[..]);
        out.extend_from_slice(body);
        out.freeze()
    }

    #[test]
    fn records_say_who_sent_them() {
        let body = b"\x0a\x00";
        let back = decode_record(&encode_record(None, body)).expect("default");
        assert_eq!(back, (Sender::Default, Bytes::from_static(body)));
        let team = Tenant::new(1, 7, "team-a", Vec::new(), None);
        let back = decode_record(&encode_record(Some(&team), body)).expect("configured");
        assert_eq!(back.0, Sender::Configured("team-a".into()));
        let caller = Tenant::new(
            2,
            9,
            PASS_THROUGH,
            vec![("x-honeycomb-team".into(), Bytes::from_static(b"k3y"))],
            None,
        );
        let back = decode_record(&encode_record(Some(&caller), body)).expect("pass-through");
        assert_eq!(
            back,
            (
                Sender::PassThrough(vec![(
                    "x-honeycomb-team".into(),
                    Bytes::from_static(b"k3y")
                )]),
                Bytes::from_static(body)
            )
        );
        assert_eq!(decode_record(&Bytes::from_static(b"\x09")), None);
        assert_eq!(
            decode_record(&Bytes::from_static(b"\x01\xff\xff\xff\xff")),
            None
        );
    }
}
