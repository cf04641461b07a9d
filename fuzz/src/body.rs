//! `body`: the input is a compressed request body after a selector byte: bit 0 picks the
//! coding (gzip, zstd), bits 1-4 the decompressed size limit (64 bytes << n, up to 1 MiB),
//! bit 5 a receivers' memory share too small for the limit.
//!
//! Invariants: what inflates is never larger than the limit and is exactly what the coding's
//! own decoder makes of the body; a body whose output passes the limit is refused as too
//! large (or corrupt, if it is that too), a corrupt one as corrupt, and "full" is answered only when the share is too small;
//! the lease of an inflated body pays for the output (at least its length, at most the
//! limit), and every byte is back once it is dropped.

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
    };

    let expected = reference(coding, input, limit);
    let lease = ingest.memory.take(input.len());
    let result = decompress_blocking(&ingest, coding, Bytes::copy_from_slice(input), limit, lease);
    match (&expected, result) {
        (_, Err(DecodeError::Full)) => assert!(tight, "full with room for the limit twice"),
        (Reference::Fits(want), Ok((out, lease))) => {
            assert!(out.len() <= limit);
            assert_eq!(&out[..], &want[..], "inflated as the coding's decoder does");
            assert!(lease.bytes() >= out.len(), "the lease pays for the output");
            assert!(lease.bytes() <= limit, "and for no more than the limit");
        }
        (Reference::Over, Err(DecodeError::TooLarge { limit: l })) => assert_eq!(l, limit),
        // Too large and corrupt both: which shows first depends on how much is read at a
        // time (zstd checks a whole block before it gives any of it).
        (Reference::Over, Err(DecodeError::Corrupt { .. })) => {}
        (Reference::Corrupt, Err(DecodeError::Corrupt { .. })) => {}
        (want, got) => panic!(
            "{coding:?}, limit {limit}: the decoder says {want:?}, the receiver {:?}",
            got.map(|(out, _)| out.len())
        ),
    }
    assert_eq!(ingest.memory.used(), 0, "every byte is back");
}

/// What the coding's own decoder makes of the body, read up to one byte past the limit.
#[derive(Debug)]
enum Reference {
    Fits(Vec<u8>),
    Over,
    Corrupt,
}

fn reference(coding: Coding, input: &[u8], limit: usize) -> Reference {
    let mut out = Vec::new();
    let cap = limit as u64 + 1;
    let read = match coding {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(input)
            .take(cap)
            .read_to_end(&mut out),
        Coding::Zstd => zstd::stream::read::Decoder::with_buffer(input)
            .and_then(|d| d.take(cap).read_to_end(&mut out)),
        Coding::Identity => Ok(input.len()),
    };
    match read {
        Err(_) => Reference::Corrupt,
        Ok(_) if out.len() > limit => Reference::Over,
        // The zstd reader does not hold a frame to the content size its header declares
        // (a frame declaring 2,816 bytes and holding none reads as empty); libzstd's own
        // streaming decoder, which the receivers use, calls that corruption, as the format
        // says it is. Found by this target.
        Ok(_)
            if coding == Coding::Zstd
                && declared_zstd_size(input).is_some_and(|n| n != out.len() as u64) =>
        {
            Reference::Corrupt
        }
        Ok(_) => Reference::Fits(out),
    }
}

/// The content size the zstd frames of `input` declare together, when every frame declares
/// one and they tile the input exactly.
fn declared_zstd_size(input: &[u8]) -> Option<u64> {
    use zstd::zstd_safe::{find_frame_compressed_size, get_frame_content_size};
    let (mut rest, mut total) = (input, 0u64);
    while !rest.is_empty() {
        let size = find_frame_compressed_size(rest).ok()?;
        if size == 0 || size > rest.len() {
            return None;
        }
        total = total.checked_add(get_frame_content_size(&rest[..size]).ok()??)?;
        rest = &rest[size..];
    }
    Some(total)
}
