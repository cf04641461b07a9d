//! Admission: the bytes-in-flight budget, and the hand-off from receivers to the next stage.
//!
//! A request is admitted only if its bytes fit in `max_in_flight`; the [`Lease`] it gets
//! travels with its spans and gives the bytes back when the last of them is delivered or
//! dropped. Together with the bounded channel behind [`SpanSink`], this is what keeps memory
//! bounded under any load: when either is full, the receiver answers with the OTLP spec's
//! retryable refusal and the client retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cujo_wire::SpanBatch;
use tokio::sync::mpsc;

use crate::telemetry::PipelineTelemetry;

/// The bytes-in-flight budget.
pub struct Admission {
    max_bytes: usize,
    in_flight: AtomicUsize,
    telemetry: Arc<PipelineTelemetry>,
}

impl Admission {
    pub fn new(max_bytes: usize, telemetry: Arc<PipelineTelemetry>) -> Arc<Self> {
        telemetry.set_max_in_flight_bytes(max_bytes as u64);
        Arc::new(Self {
            max_bytes,
            in_flight: AtomicUsize::new(0),
            telemetry,
        })
    }

    /// Takes `bytes` from the budget, or `None` if they do not fit. A request larger than the
    /// whole budget is still admitted when nothing else is in flight, so it cannot be refused
    /// forever.
    pub fn try_admit(self: &Arc<Self>, bytes: usize) -> Option<Lease> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current != 0 && current.saturating_add(bytes) > self.max_bytes {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.telemetry.in_flight_bytes_add(bytes as i64);
        Some(Lease {
            admission: self.clone(),
            bytes,
        })
    }

    /// Takes `bytes` without checking the budget: for a stage that re-homes bytes already
    /// admitted (the assembler copying spans out of their requests).
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Lease {
        self.in_flight.fetch_add(bytes, Ordering::AcqRel);
        self.telemetry.in_flight_bytes_add(bytes as i64);
        Lease {
            admission: self.clone(),
            bytes,
        }
    }

    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// Bytes held against the budget; returned on drop.
pub struct Lease {
    admission: Arc<Admission>,
    bytes: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.admission
            .in_flight
            .fetch_sub(self.bytes, Ordering::AcqRel);
        self.admission
            .telemetry
            .in_flight_bytes_add(-(self.bytes as i64));
    }
}

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

/// The receivers' side of the bounded channel to the next stage.
#[derive(Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<Admitted>,
}

/// The next stage's side.
pub type SpanSource = mpsc::Receiver<Admitted>;

impl SpanSink {
    /// A channel holding at most `capacity` accepted requests.
    pub fn channel(capacity: usize) -> (SpanSink, SpanSource) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (SpanSink { tx }, rx)
    }

    /// Hands spans on, waiting while the next stage is full; gives them back if it is gone.
    pub async fn send(&self, admitted: Admitted) -> Result<(), Admitted> {
        self.tx.send(admitted).await.map_err(|e| e.0)
    }

    /// Hands spans on without waiting; gives them back if the next stage is full or gone.
    pub fn try_send(&self, admitted: Admitted) -> Result<(), Admitted> {
        self.tx.try_send(admitted).map_err(|e| match e {
            mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_returned_when_the_lease_drops() {
        let t = Arc::new(PipelineTelemetry::new());
        let a = Admission::new(100, t);
        let first = a.try_admit(60).expect("fits");
        assert!(a.try_admit(50).is_none(), "over budget");
        let second = a.try_admit(40).expect("fits exactly");
        assert_eq!(a.in_flight_bytes(), 100);
        drop(first);
        drop(second);
        assert_eq!(a.in_flight_bytes(), 0);
        let huge = a
            .try_admit(1000)
            .expect("alone, a request larger than the budget passes");
        assert!(a.try_admit(1).is_none());
        drop(huge);
    }
}
