//! Request bodies read into one buffer that is paid for from the receivers' memory account
//! as it grows: each frame's bytes are counted before they are kept, so a body costs what
//! has arrived, never what its client declared, and never two copies of itself.
//!
//! The buffer's *capacity* is what is counted (that is what the allocator holds). It grows
//! geometrically, and goes straight to a declared size (gRPC message length, Content-Length)
//! once that size is within [`TRUST_FACTOR`] of what arrived: a client that lies about its
//! size gets at most that factor of what it sent, and an honest one gets an exact fit after
//! a couple of steps.

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::Ingest;
use crate::memory::Lease;

/// The smallest buffer a body starts with when its size is not known.
const MIN_CAPACITY: usize = 16 * 1024;
/// A declared size is believed once what arrived is at least 1/`TRUST_FACTOR` of it.
const TRUST_FACTOR: usize = 8;

/// Why a body could not be kept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Past the receiver's size limit: permanent, not retryable.
    TooLarge,
    /// The receivers' share of the memory budget has no room now: retryable.
    Full,
}

/// One growing buffer whose capacity is counted in a [`Lease`].
pub(crate) struct CountedBuf {
    buf: Vec<u8>,
    /// Bytes of the lease that pay for `buf` (its capacity when last grown).
    counted: usize,
    /// The largest size accepted.
    limit: usize,
    /// The size the sender declared, if any: a hint, never a promise.
    declared: Option<usize>,
}

impl CountedBuf {
    pub(crate) fn new(limit: usize, declared: Option<usize>) -> Self {
        Self {
            buf: Vec::new(),
            counted: 0,
            limit,
            declared,
        }
    }

    pub(crate) fn declare(&mut self, size: usize) {
        self.declared = Some(size);
    }

    /// Makes room for `additional` more bytes, paying for the new capacity first.
    pub(crate) fn reserve(
        &mut self,
        room: &Ingest,
        lease: &mut Lease,
        additional: usize,
    ) -> Result<(), Overflow> {
        let need = self.buf.len().saturating_add(additional);
        if need > self.limit {
            return Err(Overflow::TooLarge);
        }
        if need <= self.buf.capacity() {
            return Ok(());
        }
        let capacity = next_capacity(self.buf.capacity(), need, self.declared, self.limit);
        // Old and new buffer are both alive while the bytes move: pay for both, then give
        // the old one back.
        if !room.try_grow(lease, capacity) {
            return Err(Overflow::Full);
        }
        self.buf.reserve_exact(capacity - self.buf.len());
        lease.shrink(self.counted);
        self.counted = capacity;
        Ok(())
    }

    /// Appends `data`, paying for the room first.
    pub(crate) fn extend(
        &mut self,
        room: &Ingest,
        lease: &mut Lease,
        data: &[u8],
    ) -> Result<(), Overflow> {
        self.reserve(room, lease, data.len())?;
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The bytes, without copying unless more than half the buffer is unused (a declared
    /// size that was a lie, a small body of unknown size): then they move to a buffer of
    /// their size, and the lease gives back the difference.
    pub(crate) fn into_bytes(mut self, lease: &mut Lease) -> Bytes {
        if self.buf.len() < self.buf.capacity() / 2 {
            self.buf.shrink_to_fit();
            lease.shrink(self.counted.saturating_sub(self.buf.capacity()));
        }
        Bytes::from(self.buf)
    }
}

/// The capacity to grow to so that `need` bytes fit: double, but go to the declared size
/// once it is close enough to be believed, and never past the limit.
fn next_capacity(current: usize, need: usize, declared: Option<usize>, limit: usize) -> usize {
    match declared {
        Some(d) if d >= need && d <= need.saturating_mul(TRUST_FACTOR) => d,
        Some(d) if d >= need => current.saturating_mul(2).max(MIN_CAPACITY).max(need).min(d),
        _ => current
            .saturating_mul(2)
            .max(MIN_CAPACITY)
            .max(need)
            .min(limit),
    }
}

/// Why reading a body failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Overflow(Overflow),
    /// The whole body did not arrive within the body timeout.
    Timeout,
    /// The client reset the stream or the connection broke.
    Failed(String),
}

impl From<Overflow> for ReadError {
    fn from(o: Overflow) -> Self {
        ReadError::Overflow(o)
    }
}

/// How a receiver frames its bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// The body is what it is; `Content-Length`, if any, is the declared size.
    Plain { content_length: Option<u64> },
    /// One gRPC message: its 5-byte prefix declares the length that follows.
    Grpc,
}

/// Reads `body` into one counted buffer by `deadline`, each frame paid for from the
/// receivers' account (in `lease`) before it is kept.
pub(crate) async fn read(
    room: &Ingest,
    lease: &mut Lease,
    body: &mut Body,
    framing: Framing,
    limit: usize,
    deadline: Instant,
) -> Result<CountedBuf, ReadError> {
    let (limit, declared) = match framing {
        Framing::Plain { content_length } => {
            let declared = content_length.and_then(|n| usize::try_from(n).ok());
            if declared.is_some_and(|n| n > limit) {
                return Err(Overflow::TooLarge.into());
            }
            (limit, declared)
        }
        // The limit is on the message; its prefix comes on top.
        Framing::Grpc => (limit.saturating_add(5), None),
    };
    let mut buf = CountedBuf::new(limit, declared);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(None) => return Ok(buf),
            Ok(Some(Err(e))) => return Err(ReadError::Failed(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we keep
        };
        if framing == Framing::Grpc
            && buf.declared.is_none()
            && let Some(len) = grpc_length(&buf.buf, &data)
        {
            if len > limit - 5 {
                return Err(Overflow::TooLarge.into());
            }
            buf.declare(len + 5);
        }
        buf.extend(room, lease, &data)?;
    }
}

/// Reads and discards what is left of an HTTP/1 body refused before its end (at most `max`
/// bytes, until `deadline`), so that a client still sending reads the answer rather than a
/// reset, and the connection can carry its next request. Nothing is kept.
pub(crate) fn linger(mut body: Body, max: usize, deadline: Instant) {
    tokio::spawn(async move {
        let mut left = max;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            if n > left {
                return;
            }
            left -= n;
        }
    });
}

/// The message length in a gRPC prefix split between what was kept and the next frame;
/// `None` until all 5 bytes are there.
fn grpc_length(kept: &[u8], next: &[u8]) -> Option<usize> {
    let mut prefix = [0u8; 5];
    let have = kept.len().min(5);
    prefix[..have].copy_from_slice(&kept[..have]);
    let take = (5 - have).min(next.len());
    prefix[have..have + take].copy_from_slice(&next[..take]);
    (have + take == 5)
        .then(|| u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::tests::ingest_with_budget;

    /// A body arriving in `frame`-byte frames.
    fn framed(bytes: Vec<u8>, frame: usize) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(frame)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures_util::stream::iter(frames))
    }

    fn grpc_message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend((len as u32).to_be_bytes());
        m.resize(5 + len, 7);
        m
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    #[tokio::test]
    async fn an_honest_grpc_message_ends_in_one_buffer_of_its_size() {
        let (ingest, _next) = ingest_with_budget(64 << 20);
        let mut lease = ingest.memory.empty_lease();
        let mut body = framed(grpc_message(100_000), 16 * 1024);
        let buf = read(
            &ingest,
            &mut lease,
            &mut body,
            Framing::Grpc,
            1 << 20,
            soon(),
        )
        .await
        .expect("read");
        let bytes = buf.into_bytes(&mut lease);
        assert_eq!(bytes.len(), 100_005);
        assert_eq!(lease.bytes(), 100_005, "counted once, exactly");
        assert_eq!(ingest.memory.used(), 100_005);
    }

    #[tokio::test]
    async fn a_body_past_the_receivers_room_is_refused_as_it_arrives() {
        // Receivers get 1 MiB; another request holds 900 KiB of it.
        let (ingest, _next) = ingest_with_budget(4 << 20);
        let other = ingest.memory.take(900 * 1024);
        let mut lease = ingest.memory.empty_lease();
        let mut body = framed(vec![7; 512 * 1024], 16 * 1024);
        let framing = Framing::Plain {
            content_length: None,
        };
        let result = read(&ingest, &mut lease, &mut body, framing, 16 << 20, soon()).await;
        assert!(matches!(result, Err(ReadError::Overflow(Overflow::Full))));
        assert!(
            lease.bytes() <= 124 * 1024,
            "at most the room: {}",
            lease.bytes()
        );
        drop((lease, other));
        assert_eq!(ingest.memory.used(), 0);
    }

    #[tokio::test]
    async fn a_declared_size_over_the_limit_is_refused_before_the_body_is_read() {
        let (ingest, _next) = ingest_with_budget(64 << 20);
        let mut lease = ingest.memory.empty_lease();
        let mut body = framed(grpc_message(2 << 20), 16 * 1024);
        let result = read(
            &ingest,
            &mut lease,
            &mut body,
            Framing::Grpc,
            1 << 20,
            soon(),
        )
        .await;
        assert!(matches!(
            result,
            Err(ReadError::Overflow(Overflow::TooLarge))
        ));
        assert_eq!(lease.bytes(), 0, "nothing was kept");
        let framing = Framing::Plain {
            content_length: Some(2 << 20),
        };
        let result = read(&ingest, &mut lease, &mut body, framing, 1 << 20, soon()).await;
        assert!(matches!(
            result,
            Err(ReadError::Overflow(Overflow::TooLarge))
        ));
    }

    #[test]
    fn capacity_doubles_until_the_declared_size_is_close_then_fits_it() {
        let limit = 16 << 20;
        assert_eq!(next_capacity(0, 100, None, limit), MIN_CAPACITY);
        assert_eq!(
            next_capacity(MIN_CAPACITY, MIN_CAPACITY + 1, None, limit),
            2 * MIN_CAPACITY
        );
        // A declared size within the trust factor of what arrived is allocated exactly.
        assert_eq!(next_capacity(0, 5_000, Some(5_000), limit), 5_000);
        assert_eq!(next_capacity(0, 16_384, Some(130_000), limit), 130_000);
        // A larger claim is not believed on one frame's strength.
        assert_eq!(next_capacity(0, 10, Some(16 << 20), limit), MIN_CAPACITY);
        // Never past the limit, and a claim smaller than what arrived is ignored.
        assert_eq!(
            next_capacity(limit / 2 + 1, limit / 2 + 2, None, limit),
            limit
        );
        assert_eq!(next_capacity(64, 100, Some(50), limit), MIN_CAPACITY);
    }

    #[test]
    fn the_grpc_prefix_is_read_across_frames() {
        assert_eq!(grpc_length(&[], &[0, 0, 0, 1, 0, 9]), Some(256));
        assert_eq!(grpc_length(&[0, 0], &[0]), None);
        assert_eq!(grpc_length(&[0, 0], &[0, 0, 7, 1]), Some(7));
        assert_eq!(grpc_length(&[0, 0, 0, 0, 3, 1], &[]), Some(3));
    }
}
