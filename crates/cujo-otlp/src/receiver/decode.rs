//! Request body decompression, bounded by the decompressed size.
//!
//! A compression bomb (1 MB of gzip inflating to 1 GiB) is stopped after `limit` bytes of
//! output: memory never grows past the limit. Large bodies are inflated off the async workers.

use std::io::Read;

use bytes::Bytes;

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
    #[error("body is not valid {coding}: {detail}")]
    Corrupt {
        coding: &'static str,
        detail: String,
    },
}

/// Bodies larger than this are inflated on the blocking pool.
const INLINE_LIMIT: usize = 64 * 1024;

/// Decompresses `body` with `coding`, failing once the output would exceed `limit` bytes.
pub async fn decompress(coding: Coding, body: Bytes, limit: usize) -> Result<Bytes, DecodeError> {
    if coding == Coding::Identity {
        return if body.len() > limit {
            Err(DecodeError::TooLarge { limit })
        } else {
            Ok(body)
        };
    }
    if body.len() <= INLINE_LIMIT {
        return decompress_blocking(coding, &body, limit);
    }
    match tokio::task::spawn_blocking(move || decompress_blocking(coding, &body, limit)).await {
        Ok(result) => result,
        Err(e) => Err(DecodeError::Corrupt {
            coding: "body",
            detail: format!("decompression task failed: {e}"),
        }),
    }
}

fn decompress_blocking(coding: Coding, body: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
    let (name, result) = match coding {
        Coding::Identity => return Ok(Bytes::copy_from_slice(body)),
        Coding::Gzip => (
            "gzip",
            read_bounded(flate2::read::MultiGzDecoder::new(body), limit),
        ),
        Coding::Zstd => match zstd::stream::read::Decoder::with_buffer(body) {
            Ok(d) => ("zstd", read_bounded(d, limit)),
            Err(e) => ("zstd", Err(ReadError::Io(e))),
        },
    };
    match result {
        Ok(out) => Ok(Bytes::from(out)),
        Err(ReadError::TooLarge) => Err(DecodeError::TooLarge { limit }),
        Err(ReadError::Io(e)) => Err(DecodeError::Corrupt {
            coding: name,
            detail: e.to_string(),
        }),
    }
}

enum ReadError {
    TooLarge,
    Io(std::io::Error),
}

/// Reads all of `reader` in 64 KiB chunks, failing as soon as more than `limit` bytes come
/// out; a bomb costs at most `limit` bytes of chunks, however much it would inflate. A body
/// within the limit is joined into one buffer of exactly its size.
fn read_bounded(mut reader: impl Read, limit: usize) -> Result<Vec<u8>, ReadError> {
    const CHUNK: usize = 64 * 1024;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        total += filled;
        if total > limit {
            return Err(ReadError::TooLarge);
        }
        chunk.truncate(filled);
        let last = filled < CHUNK;
        chunks.push(chunk);
        if last {
            break;
        }
    }
    if chunks.len() == 1 {
        // Small bodies are held until exported: do not keep a 64 KiB buffer for them.
        let mut only = chunks.pop().unwrap_or_default();
        only.shrink_to_fit();
        return Ok(only);
    }
    let mut out = Vec::with_capacity(total);
    for c in chunks {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("write");
        Bytes::from(enc.finish().expect("finish"))
    }

    #[tokio::test]
    async fn gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 1024 * 1024);
        let err = decompress(Coding::Gzip, bomb, 1024 * 1024)
            .await
            .expect_err("too large");
        assert_eq!(err, DecodeError::TooLarge { limit: 1024 * 1024 });
    }

    #[tokio::test]
    async fn zstd_round_trips_and_garbage_is_corrupt() {
        let data = b"hello otlp".repeat(100);
        let z = Bytes::from(zstd::encode_all(&data[..], 3).expect("zstd"));
        assert_eq!(
            decompress(Coding::Zstd, z, 10_000).await.expect("ok"),
            Bytes::from(data)
        );
        let err = decompress(Coding::Gzip, Bytes::from_static(b"not gzip"), 100).await;
        assert!(matches!(
            err,
            Err(DecodeError::Corrupt { coding: "gzip", .. })
        ));
    }
}
