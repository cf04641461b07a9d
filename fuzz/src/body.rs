//! `body`: the input is a compressed request body after a selector byte: bit 0 picks the
//! coding (gzip, zstd), bits 1-4 the decompressed size limit (64 bytes << n, up to 1 MiB),
//! bit 5 a receivers' memory share too small for the limit.
//!
//! Invariants: what inflates is never larger than the limit and is exactly what the coding's
//! own decoder makes of the body (for zstd, one of libzstd's two decoders: they disagree on
//! some malformed frames); a body whose output passes the limit is refused as too large (or
//! corrupt, if it is that too), a corrupt one as corrupt, and "full" is answered only when
//! the share is too small; the lease of an inflated body pays for the output (at least its
//! length, at most the limit), and every byte is back once it is dropped.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use cujo_otlp::admission::SpanSink;
use cujo_otlp::memory::{Component, MemoryBudget, Shares};
use cujo_otlp::receiver::decode::{Coding, DecodeError, decompress_blocking};
use cujo_otlp::receiver::{Ingest, ReceiverLimits};
use cujo_otlp::telemetry::PipelineTelemetry;

/// The fuzz entry point.
pub fn run(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let coding = if selector & 1 == 0 {
        Coding::Gzip
    } else {
        Coding::Zstd
    };
    let limit = 64usize << ((selector >> 1) & 0x0f).min(14);
    let tight = selector & 0x20 != 0;
    // Only the receivers' account matters here: give it the whole budget.
    let total = if tight {
        input.len() + limit / 2
    } else {
        input.len() + 4 * limit
    };
    let budget = MemoryBudget::new(total, Shares([1.0, 0.0, 0.0, 0.0, 0.0]));
    let (sink, _next) = SpanSink::channel(1);
    let ingest = Ingest {
        memory: budget.account(Component::Receivers),
        sink,
        telemetry: Arc::new(PipelineTelemetry::new()),
        limits: ReceiverLimits::default(),
        tenants: None,
        wal: None,
    };

    let readings = reference(coding, input, limit);
    let lease = ingest.memory.take(input.len());
    let result = decompress_blocking(&ingest, coding, Bytes::copy_from_slice(input), limit, lease);
    match result {
        Err(DecodeError::Full) => assert!(tight, "full with room for the limit twice"),
        Ok((out, lease)) => {
            assert!(out.len() <= limit);
            assert!(
                readings
                    .iter()
                    .any(|r| matches!(r, Reference::Fits(want) if want[..] == out[..])),
                "{coding:?}, limit {limit}: the receiver inflated {} bytes, the decoders say {readings:?}",
                out.len()
            );
            assert!(lease.bytes() >= out.len(), "the lease pays for the output");
            assert!(lease.bytes() <= limit, "and for no more than the limit");
        }
        Err(DecodeError::TooLarge { limit: l }) => {
            assert_eq!(l, limit);
            assert!(
                readings.iter().any(|r| matches!(r, Reference::Over)),
                "{coding:?}, limit {limit}: too large, the decoders say {readings:?}"
            );
        }
        // Too large and corrupt both: which shows first depends on how much is read at a
        // time (zstd checks a whole block before it gives any of it).
        Err(DecodeError::Corrupt { .. }) => assert!(
            readings
                .iter()
                .any(|r| matches!(r, Reference::Over | Reference::Corrupt)),
            "{coding:?}, limit {limit}: corrupt, the decoders say {readings:?}"
        ),
    }
    assert_eq!(ingest.memory.used(), 0, "every byte is back");
}

#[derive(Debug)]
enum Reference {
    Fits(Vec<u8>),
    Over,
    Corrupt,
}

/// What the coding's own decoders make of the body, read up to one byte past the limit: one
/// reading for gzip; for zstd, libzstd's streaming and one-shot decoders, which each let
/// through what the other refuses (the streaming one a frame holding less than its declared
/// content size, or a compressed block of no bytes; the one-shot one a block larger than the
/// frame's window). The receivers must agree with one of them.
fn reference(coding: Coding, input: &[u8], limit: usize) -> Vec<Reference> {
    let cap = limit as u64 + 1;
    let judge = |read: std::io::Result<usize>, out: Vec<u8>| match read {
        Err(_) => Reference::Corrupt,
        Ok(_) if out.len() > limit => Reference::Over,
        Ok(_) => Reference::Fits(out),
    };
    match coding {
        Coding::Gzip => {
            let mut out = Vec::new();
            let read = flate2::read::MultiGzDecoder::new(input)
                .take(cap)
                .read_to_end(&mut out);
            vec![judge(read, out)]
        }
        Coding::Zstd => {
            let mut out = Vec::new();
            let read = zstd::stream::read::Decoder::with_buffer(input)
                .and_then(|d| d.take(cap).read_to_end(&mut out));
            let one_shot = match zstd::bulk::decompress(input, limit + 1) {
                Ok(v) if v.len() > limit => Reference::Over,
                Ok(v) => Reference::Fits(v),
                Err(e) if e.to_string().contains("too small") => Reference::Over,
                Err(_) => Reference::Corrupt,
            };
            vec![judge(read, out), one_shot]
        }
        Coding::Identity => vec![Reference::Fits(input.to_vec())],
    }
}
