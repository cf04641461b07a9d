//! Admission: the hand-off from receivers to the next stage.
//!
//! Accepted spans travel with the [`Lease`] that pays for their memory (see [`crate::memory`]);
//! the bytes go back to the budget when the last of them is delivered or dropped, or move to
//! the next stage's account with them. Together with the bounded channel behind [`SpanSink`],
//! this is what keeps memory bounded under any load: when either is full, the receiver answers
//! with the OTLP spec's retryable refusal and the client retries.
//!
//! - [`config`]: `admission:` — the budget, its split ([`config::SharesConfig::resolve`]
//!   into [`crate::memory::Shares`]), the delay suggested to refused clients.

pub mod config;

use std::sync::Arc;

use cujo_wire::SpanBatch;
use tokio::sync::mpsc;

pub use crate::memory::Lease;

/// Spans accepted by a receiver, with the lease that pays for their memory.
pub struct Admitted {
    pub batch: SpanBatch,
    pub lease: Arc<Lease>,
}

impl Admitted {
    pub fn span_count(&self) -> usize {
        self.batch.span_count()
    }
}

/// The receivers' side of the bounded channel(s) to the next stage. With several shards
/// (the trace assembler's), each batch is split by trace id and every part goes to its
/// shard's channel, all or nothing.
#[derive(Clone)]
pub struct SpanSink {
    txs: Arc<[mpsc::Sender<Admitted>]>,
    /// Which shard a trace id belongs to, given the number of shards.
    shard_of: fn(&[u8; 16], usize) -> usize,
}

/// The next stage's side.
pub type SpanSource = mpsc::Receiver<Admitted>;

fn single_shard(_: &[u8; 16], _: usize) -> usize {
    0
}

impl SpanSink {
    /// A channel holding at most `capacity` accepted requests.
    pub fn channel(capacity: usize) -> (SpanSink, SpanSource) {
        let (sink, mut sources) = Self::sharded(capacity, 1, single_shard);
        let source = sources.pop().unwrap_or_else(|| mpsc::channel(1).1);
        (sink, source)
    }

    /// One channel per shard, each holding at most `capacity` batches; spans go to the shard
    /// `shard_of(trace id, shards)`.
    pub fn sharded(
        capacity: usize,
        shards: usize,
        shard_of: fn(&[u8; 16], usize) -> usize,
    ) -> (SpanSink, Vec<SpanSource>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards.max(1))
            .map(|_| mpsc::channel(capacity.max(1)))
            .unzip();
        (
            SpanSink {
                txs: txs.into(),
                shard_of,
            },
            rxs,
        )
    }

    fn split(&self, admitted: Admitted) -> Vec<Admitted> {
        let n = self.txs.len();
        let shard_of = self.shard_of;
        let lease = admitted.lease;
        admitted
            .batch
            .split_by_trace(n, |t| shard_of(t, n))
            .into_iter()
            .map(|batch| Admitted {
                batch,
                lease: lease.clone(),
            })
            .collect()
    }

    /// Hands spans on, waiting while the next stage is full; gives back what was not handed
    /// on if the next stage is gone.
    pub async fn send(&self, admitted: Admitted) -> Result<(), Admitted> {
        if self.txs.len() == 1 {
            return self.txs[0].send(admitted).await.map_err(|e| e.0);
        }
        let mut parts = self.split(admitted).into_iter().enumerate();
        while let Some((i, part)) = parts.next() {
            if part.batch.is_empty() {
                continue;
            }
            if let Err(e) = self.txs[i].send(part).await {
                let mut back = e.0;
                for (_, mut rest) in parts {
                    back.batch.append(&mut rest.batch);
                }
                return Err(back);
            }
        }
        Ok(())
    }

    /// Hands spans on without waiting; gives them back if a shard's channel is full or gone
    /// (then no shard got any of them).
    pub fn try_send(&self, admitted: Admitted) -> Result<(), Admitted> {
        if self.txs.len() == 1 {
            return self.txs[0].try_send(admitted).map_err(|e| match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            });
        }
        let parts = self.split(admitted);
        let mut permits = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            if part.batch.is_empty() {
                permits.push(None);
                continue;
            }
            match self.txs[i].try_reserve() {
                Ok(p) => permits.push(Some(p)),
                Err(_) => {
                    drop(permits);
                    let back = parts.into_iter().reduce(|mut a, mut b| {
                        a.batch.append(&mut b.batch);
                        a
                    });
                    // No part at all would mean there was nothing to hand on.
                    return back.map_or(Ok(()), Err);
                }
            }
        }
        for (permit, part) in permits.into_iter().zip(parts) {
            if let Some(p) = permit {
                p.send(part);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Account, Component, MemoryBudget, Shares};

    fn test_account() -> Account {
        MemoryBudget::new(1 << 20, Shares::for_stages(false, false)).account(Component::Receivers)
    }

    fn two_traces() -> SpanBatch {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        use prost::Message;
        let span = |t: u8| Span {
            trace_id: vec![t; 16],
            span_id: vec![t; 8],
            name: "s".into(),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1), span(2), span(1)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        cujo_wire::scan_request(&bytes::Bytes::from(req.encode_to_vec()))
            .expect("valid")
            .batch
    }

    #[test]
    fn a_sharded_sink_hands_on_all_or_nothing() {
        let a = test_account();
        let (sink, mut sources) = SpanSink::sharded(1, 2, |t, n| usize::from(t[0]) % n);
        let admitted = || Admitted {
            batch: two_traces(),
            lease: Arc::new(a.take(10)),
        };
        assert!(sink.try_send(admitted()).is_ok());
        // Both shards are full now: the next batch is refused whole.
        let back = sink.try_send(admitted()).expect_err("refused");
        assert_eq!(back.span_count(), 3);
        let first = sources[0].try_recv().expect("shard 0");
        let second = sources[1].try_recv().expect("shard 1");
        assert_eq!((first.span_count(), second.span_count()), (1, 2));
        assert!(sources[0].try_recv().is_err() && sources[1].try_recv().is_err());
        drop((first, second, back));
        assert_eq!(a.used(), 0, "the lease is shared by the parts");
    }

    #[tokio::test]
    async fn a_sharded_sink_sends_each_part_to_its_shard_or_gives_the_rest_back() {
        let a = test_account();
        let (sink, mut sources) = SpanSink::sharded(4, 2, |t, n| usize::from(t[0]) % n);
        let admitted = || Admitted {
            batch: two_traces(),
            lease: Arc::new(a.take(10)),
        };
        assert!(sink.send(admitted()).await.is_ok());
        assert_eq!(sources[0].recv().await.map(|a| a.span_count()), Some(1));
        assert_eq!(sources[1].recv().await.map(|a| a.span_count()), Some(2));
        // Shard 1 gone: shard 0 gets its part, shard 1's part comes back.
        drop(sources.remove(1));
        let back = sink.send(admitted()).await.expect_err("shard 1 is gone");
        assert_eq!(back.span_count(), 2);
        assert_eq!(sources[0].recv().await.map(|a| a.span_count()), Some(1));
    }
}
