//! Request body decompression, counted as it inflates and bounded by the decompressed size.
//!
//! The output is paid for from the request's lease part by part before it is written, so a
//! compression bomb (1 MB of gzip inflating to 1 GiB) costs at most the limit: past the
//! receivers' room it is refused retryably, past the limit as too large. An honest body
//! inflates into one buffer of the size it declares (gzip ISIZE, zstd content size). The
//! compressed input is given back once inflated. Large bodies inflate off the async workers.

use std::io::Read;

use bytes::Bytes;

use super::Ingest;
use super::body::Overflow;
use crate::memory::Lease;

/// Content codings the receivers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Zstd,
}

impl Coding {
    /// Parses a `grpc-encoding` / `Content-Encoding` value; `None` if unsupported.
    pub fn parse(value: Option<&str>) -> Option<Coding> {
        match value.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("identity") => Some(Coding::Identity),
            Some("gzip") | Some("x-gzip") => Some(Coding::Gzip),
            Some("zstd") => Some(Coding::Zstd),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("decompressed body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The receivers' share of the memory budget has no room for the inflated body now.
    #[error("no room in the receivers' memory share to inflate the body")]
    Full,
    #[error("body is not valid {coding}: {detail}")]
    Corrupt {
        coding: &'static str,
        detail: String,
    },
}

/// Bodies larger than this are inflated on the blocking pool.
const INLINE_LIMIT: usize = 64 * 1024;
/// Output is produced at most this many bytes at a time.
const CHUNK: usize = 64 * 1024;

/// A compressed body and what of its request's lease pays for it.
pub(crate) struct Compressed {
    pub(crate) bytes: Bytes,
    /// Bytes of the lease the body holds, given back once it is inflated.
    pub(crate) counted: usize,
}

/// Inflates `input` with `coding` into one buffer paid for from `lease`, failing once the
/// output would exceed `limit` bytes or the receivers' share has no room for it. On success
/// the lease pays for the output alone (the input's bytes are given back); on failure it is
/// dropped, and everything it held with it.
pub(crate) async fn decompress(
    ingest: &Ingest,
    coding: Coding,
    input: Compressed,
    limit: usize,
    lease: Lease,
) -> Result<(Bytes, Lease), DecodeError> {
    if coding == Coding::Identity || input.bytes.len() <= INLINE_LIMIT {
        return decode_here(ingest, coding, input, limit, lease);
    }
    let ingest = ingest.clone();
    tokio::task::spawn_blocking(move || inflate(&ingest, coding, input, limit, lease))
        .await
        .unwrap_or_else(|e| {
            Err(DecodeError::Corrupt {
                coding: "body",
                detail: format!("decompression task failed: {e}"),
            })
        })
}

/// [`decompress`] on the calling thread whatever the body's size, with the same limits and
/// the same accounting: `lease` pays for `body` and nothing else (those bytes are given back
/// once it is inflated). The receivers use the async form; this one is for tools and the
/// fuzz targets (`fuzz/`), which must drive exactly what the receivers run.
pub fn decompress_blocking(
    ingest: &Ingest,
    coding: Coding,
    body: Bytes,
    limit: usize,
    lease: Lease,
) -> Result<(Bytes, Lease), DecodeError> {
    let input = Compressed {
        counted: lease.bytes(),
        bytes: body,
    };
    decode_here(ingest, coding, input, limit, lease)
}

fn decode_here(
    ingest: &Ingest,
    coding: Coding,
    input: Compressed,
    limit: usize,
    lease: Lease,
) -> Result<(Bytes, Lease), DecodeError> {
    if coding == Coding::Identity {
        if input.bytes.len() > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        return Ok((input.bytes, lease));
    }
    inflate(ingest, coding, input, limit, lease)
}

fn inflate(
    ingest: &Ingest,
    coding: Coding,
    input: Compressed,
    limit: usize,
    mut lease: Lease,
) -> Result<(Bytes, Lease), DecodeError> {
    let declared = declared_size(coding, &input.bytes).filter(|n| (1..=limit).contains(n));
    let (name, result) = match coding {
        Coding::Identity => unreachable!("identity bodies are not inflated"),
        Coding::Gzip => (
            "gzip",
            read_counted(
                flate2::read::MultiGzDecoder::new(&input.bytes[..]),
                declared,
                limit,
                ingest,
                &mut lease,
            ),
        ),
        Coding::Zstd => (
            "zstd",
            read_counted(
                ZstdFrames::new(&input.bytes),
                declared,
                limit,
                ingest,
                &mut lease,
            ),
        ),
    };
    match result {
        Ok(out) => {
            // The compressed body is no longer needed: its bytes go back.
            drop(input.bytes);
            lease.shrink(input.counted);
            Ok((Bytes::from(out), lease))
        }
        Err(ReadError::Overflow(Overflow::TooLarge)) => Err(DecodeError::TooLarge { limit }),
        Err(ReadError::Overflow(Overflow::Full)) => Err(DecodeError::Full),
        Err(ReadError::Io(e)) => Err(DecodeError::Corrupt {
            coding: name,
            detail: e.to_string(),
        }),
    }
}

/// What the body says its inflated size is (gzip's ISIZE, zstd's frame content size): the
/// size of the first part of the output. Untouched capacity costs no RSS, and a claim
/// larger than the output is given back when the output is sized to fit.
fn declared_size(coding: Coding, input: &[u8]) -> Option<usize> {
    match coding {
        Coding::Identity => None,
        // ISIZE, the last member's size modulo 2^32.
        Coding::Gzip => input.len().checked_sub(4).map(|at| {
            u32::from_le_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]]) as usize
        }),
        Coding::Zstd => zstd::zstd_safe::get_frame_content_size(input)
            .ok()
            .flatten()
            .and_then(|n| usize::try_from(n).ok()),
    }
}

/// A zstd body read frame by frame, each held to what the format requires of it: a frame
/// whose header declares a content size must hold exactly that (libzstd's one-shot decoder
/// says so; its streaming decoder, read in some patterns, gave what it had: an empty last
/// block under a declared 11 KB read as nothing). Found by the `body` fuzz target.
type FrameDecoder<'a> = zstd::stream::read::Decoder<'a, &'a [u8]>;

struct ZstdFrames<'a> {
    rest: &'a [u8],
    /// The frame being read: its decoder, the size it declares, what it gave so far.
    frame: Option<(FrameDecoder<'a>, Option<u64>, u64)>,
    /// Whether a frame was read: a body of no frame at all is not a zstd body.
    started: bool,
}

impl<'a> ZstdFrames<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            rest: input,
            frame: None,
            started: false,
        }
    }
}

fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Read for ZstdFrames<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use zstd::zstd_safe::{find_frame_compressed_size, get_frame_content_size};
        loop {
            if self.frame.is_none() {
                if self.rest.is_empty() {
                    return if self.started {
                        Ok(0)
                    } else {
                        Err(corrupt("no zstd frame"))
                    };
                }
                self.started = true;
                let size = find_frame_compressed_size(self.rest)
                    .map_err(|code| corrupt(zstd::zstd_safe::get_error_name(code)))?;
                if size == 0 || size > self.rest.len() {
                    return Err(corrupt("truncated frame"));
                }
                let (frame, rest) = self.rest.split_at(size);
                self.rest = rest;
                let declared = get_frame_content_size(frame).ok().flatten();
                let decoder = zstd::stream::read::Decoder::with_buffer(frame)?.single_frame();
                self.frame = Some((decoder, declared, 0));
            }
            let Some((decoder, declared, given)) = self.frame.as_mut() else {
                continue;
            };
            let n = decoder.read(buf)?;
            *given += n as u64;
            if declared.is_some_and(|d| *given > d) {
                return Err(corrupt("a frame holds more than its declared content size"));
            }
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if declared.is_some_and(|d| *given != d) {
                return Err(corrupt("a frame holds less than its declared content size"));
            }
            self.frame = None;
        }
    }
}

enum ReadError {
    Overflow(Overflow),
    Io(std::io::Error),
}

/// Reads all of `reader` into parts paid for from `lease` before they are filled — the
/// first of the declared size, the rest [`CHUNK`]s — and stops as soon as the output would
/// pass `limit` or the receivers' room. Parts never move while filling, so a bomb costs at
/// most the limit; several parts are joined into one buffer at the end (paid for too).
fn read_counted(
    mut reader: impl Read,
    declared: Option<usize>,
    limit: usize,
    ingest: &Ingest,
    lease: &mut Lease,
) -> Result<Vec<u8>, ReadError> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    // Bytes of `lease` the parts hold (their capacities).
    let mut counted = 0usize;
    let mut total = 0usize;
    let mut probe = [0u8; 4096];
    loop {
        // Whether there is more, before paying for a part to hold it.
        let n = read_some(&mut reader, &mut probe)?;
        if n == 0 {
            break;
        }
        if total + n > limit {
            return Err(ReadError::Overflow(Overflow::TooLarge));
        }
        let want = match declared {
            Some(d) if parts.is_empty() => d,
            _ => CHUNK,
        };
        let size = want.max(n).min(limit - total);
        if !ingest.try_grow(lease, size) {
            return Err(ReadError::Overflow(Overflow::Full));
        }
        counted += size;
        let mut part = Vec::with_capacity(size);
        part.extend_from_slice(&probe[..n]);
        // Zero and fill a chunk at a time: capacity the output never reaches is never
        // touched, so a size claimed and not delivered costs no RSS.
        while part.len() < size {
            let start = part.len();
            part.resize((start + CHUNK).min(size), 0);
            let got = read_some(&mut reader, &mut part[start..])?;
            part.truncate(start + got);
            if got == 0 {
                break;
            }
        }
        total += part.len();
        let ended = part.len() < size;
        parts.push(part);
        if ended {
            break;
        }
    }
    let out = if parts.len() <= 1 {
        let mut only = parts.pop().unwrap_or_default();
        if only.len() < only.capacity() / 2 {
            // A claim much larger than the output: keep only what came.
            only.shrink_to_fit();
        }
        only
    } else {
        if !ingest.try_grow(lease, total) {
            return Err(ReadError::Overflow(Overflow::Full));
        }
        counted += total;
        let mut joined = Vec::with_capacity(total);
        for part in parts {
            joined.extend_from_slice(&part);
        }
        joined
    };
    // The lease now pays for the output's buffer alone.
    lease.shrink(counted.saturating_sub(out.capacity()));
    Ok(out)
}

fn read_some(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, ReadError> {
    loop {
        match reader.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::tests::ingest_with_budget;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("write");
        Bytes::from(enc.finish().expect("finish"))
    }

    /// `bytes` as a request body whose lease already pays for it.
    fn received(ingest: &Ingest, bytes: Bytes) -> (Compressed, Lease) {
        let lease = ingest.memory.take(bytes.len());
        let counted = bytes.len();
        (Compressed { bytes, counted }, lease)
    }

    #[tokio::test]
    async fn gzip_bomb_stops_at_the_limit_and_gives_everything_back() {
        let (ingest, _next) = ingest_with_budget(64 << 20);
        let (bomb, lease) = received(&ingest, gzip(&vec![0u8; 64 * 1024 * 1024]));
        assert!(bomb.bytes.len() < 1024 * 1024);
        let result = decompress(&ingest, Coding::Gzip, bomb, 1024 * 1024, lease).await;
        assert_eq!(
            result.err(),
            Some(DecodeError::TooLarge { limit: 1024 * 1024 })
        );
        assert_eq!(ingest.memory.used(), 0);
    }

    #[tokio::test]
    async fn inflating_past_the_receivers_room_is_refused_as_full() {
        // Receivers get a quarter of 4 MiB; another request holds most of it.
        let (ingest, _next) = ingest_with_budget(4 << 20);
        let other = ingest.memory.take(ingest.memory.limit() - 100 * 1024);
        let (body, lease) = received(&ingest, gzip(&vec![7u8; 512 * 1024]));
        let result = decompress(&ingest, Coding::Gzip, body, 16 << 20, lease).await;
        assert_eq!(result.err(), Some(DecodeError::Full));
        drop(other);
        assert_eq!(ingest.memory.used(), 0);
    }

    #[tokio::test]
    async fn the_inflated_body_is_paid_for_and_the_compressed_one_given_back() {
        let (ingest, _next) = ingest_with_budget(64 << 20);
        // Compressible like spans, a few times, not a thousandfold.
        let mut x = 1u32;
        let data: Vec<u8> = (0..100_000)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if i % 4 == 0 { (x >> 24) as u8 } else { b'a' }
            })
            .collect();
        // One-shot compression writes the content size into the frame header.
        let z = Bytes::from(zstd::bulk::compress(&data[..], 3).expect("zstd"));
        let (body, lease) = received(&ingest, z);
        let (out, lease) = decompress(&ingest, Coding::Zstd, body, 1 << 20, lease)
            .await
            .expect("inflates");
        assert_eq!(out, Bytes::from(data.clone()));
        // The frame declares its size: one buffer of exactly that, nothing else held.
        assert_eq!(lease.bytes(), data.len());
        assert_eq!(ingest.memory.used(), data.len());
        drop((out, lease));

        let (body, lease) = received(&ingest, gzip(&data));
        let (out, lease) = decompress(&ingest, Coding::Gzip, body, 1 << 20, lease)
            .await
            .expect("inflates");
        assert_eq!(out, Bytes::from(data.clone()));
        assert_eq!(lease.bytes(), data.len(), "gzip's ISIZE sizes the buffer");
    }

    #[tokio::test]
    async fn garbage_is_corrupt() {
        let (ingest, _next) = ingest_with_budget(64 << 20);
        let (body, lease) = received(&ingest, Bytes::from_static(b"not gzip"));
        let err = decompress(&ingest, Coding::Gzip, body, 100, lease).await;
        assert!(matches!(
            err,
            Err(DecodeError::Corrupt { coding: "gzip", .. })
        ));
        assert_eq!(ingest.memory.used(), 0);
    }
}
