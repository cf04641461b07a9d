//! gzip answers for readers that poll large bodies (`/metrics`, `/api/v1/slos`): content
//! negotiation, and bodies kept across answers whose compressed form is made once.
//!
//! A scrape of thousands of SLI series is megabytes of text that changes once per snapshot,
//! while Prometheus, browsers and scripts ask for it many times a second with
//! `Accept-Encoding: gzip`. Compressing each answer would cost more CPU than sending it plain;
//! instead a [`Prepared`] body is deflated the first time a client asks for gzip, and an
//! answer made of fresh text around prepared parts is one gzip member whose prepared parts are
//! spliced in as they are ([`GzipBody`]): every part ends on a byte boundary (a sync flush),
//! is compressed on its own (no back-reference crosses into another part), the member's
//! CRC-32 is the parts' CRCs combined, and a final empty stored block closes the stream. Any
//! gzip reader reads it as the one member it is.
//!
//! This module owns no policy on which routes compress: handlers ask [`accepts_gzip`].

use std::io::Write as _;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::DeflateEncoder;

/// The `Content-Encoding` value of a gzip answer.
pub const GZIP: &str = "gzip";

/// gzip member header: magic, CM = deflate, no flags, no mtime, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// A final, empty stored block: BFINAL = 1, BTYPE = 00, LEN = 0, NLEN = !0.
const FINAL_BLOCK: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];

/// Whether an `Accept-Encoding` header value takes gzip: `gzip` (or `x-gzip`) with a
/// non-zero q, or `*` with a non-zero q when gzip is not listed itself. No header, or
/// `identity` alone, means plain.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(value) = accept_encoding else {
        return false;
    };
    let mut gzip: Option<f64> = None;
    let mut any: Option<f64> = None;
    for coding in value.split(',') {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
            })
            .find_map(|v| v.parse::<f64>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(gzip.map_or(q, |g: f64| g.max(q)));
        } else if name == "*" {
            any = Some(any.map_or(q, |a: f64| a.max(q)));
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// Raw deflate of `text` ending in a sync flush (non-final blocks, byte aligned,
/// self-contained), with the text's CRC-32 and length.
struct Deflated {
    blocks: Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Deflated {
    fn of(text: &[u8]) -> Deflated {
        let mut crc = crc32fast::Hasher::new();
        crc.update(text);
        Deflated {
            blocks: Bytes::from(deflate_flushed(text)),
            crc,
            len: text.len() as u64,
        }
    }
}

/// `text` deflated at the fast level and sync-flushed; the stream is left unfinished (no
/// final block), so more blocks may follow it.
fn deflate_flushed(text: &[u8]) -> Vec<u8> {
    // Prometheus text and JSON deflate to well under a quarter of their size.
    let mut encoder =
        DeflateEncoder::new(Vec::with_capacity(text.len() / 4 + 64), Compression::fast());
    // Writes into a Vec cannot fail.
    let _ = encoder.write_all(text);
    let _ = encoder.flush();
    // Taken before the encoder is dropped, which would finish the stream into the (now
    // empty) buffer.
    std::mem::take(encoder.get_mut())
}

/// A body kept across answers (one snapshot's rendering), with its gzip forms made on first
/// use.
pub struct Prepared {
    text: Bytes,
    deflated: OnceLock<Deflated>,
    member: OnceLock<Bytes>,
}

impl Prepared {
    pub fn new(text: impl Into<Bytes>) -> Prepared {
        Prepared {
            text: text.into(),
            deflated: OnceLock::new(),
            member: OnceLock::new(),
        }
    }

    /// The plain body.
    pub fn text(&self) -> &Bytes {
        &self.text
    }

    fn deflated(&self) -> &Deflated {
        self.deflated.get_or_init(|| Deflated::of(&self.text))
    }

    /// The whole body as one gzip member, made once.
    pub fn gzip(&self) -> Bytes {
        self.member
            .get_or_init(|| {
                let mut body = GzipBody::new();
                body.push_prepared(self);
                body.finish()
            })
            .clone()
    }
}

/// One gzip member assembled from fresh text (compressed as it is pushed) and [`Prepared`]
/// parts (spliced in, compressed once per prepared body).
pub struct GzipBody {
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Default for GzipBody {
    fn default() -> Self {
        Self::new()
    }
}

impl GzipBody {
    pub fn new() -> GzipBody {
        let mut out = Vec::with_capacity(64 * 1024);
        out.extend_from_slice(&HEADER);
        GzipBody {
            out,
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// Compresses `text` now.
    pub fn push_fresh(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        self.crc.update(text);
        self.len += text.len() as u64;
        self.out.extend_from_slice(&deflate_flushed(text));
    }

    /// Splices in `part`'s deflate blocks (made on first use).
    pub fn push_prepared(&mut self, part: &Prepared) {
        if part.text.is_empty() {
            return;
        }
        let d = part.deflated();
        self.crc.combine(&d.crc);
        self.len += d.len;
        self.out.extend_from_slice(&d.blocks);
    }

    /// Closes the stream: the final block, then CRC-32 and the length mod 2^32.
    pub fn finish(mut self) -> Bytes {
        self.out.extend_from_slice(&FINAL_BLOCK);
        self.out
            .extend_from_slice(&self.crc.finalize().to_le_bytes());
        self.out
            .extend_from_slice(&((self.len & 0xffff_ffff) as u32).to_le_bytes());
        Bytes::from(self.out)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        // A single-member reader: a spliced body must read as one member.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    fn text(seed: u64, len: usize) -> Vec<u8> {
        const LINE: &[u8] = b"cujo_sli_events_total{cuj=\"x\"} 1\n";
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly repetitive text with some noise, as metrics are.
                if i % 7 == 0 {
                    b'a' + (x % 26) as u8
                } else {
                    LINE[i % LINE.len()]
                }
            })
            .collect()
    }

    #[test]
    fn fresh_and_prepared_parts_read_as_one_member() {
        let a = text(1, 100_000);
        let b = Prepared::new(text(2, 300_000));
        let c = text(3, 17);
        let mut body = GzipBody::new();
        body.push_fresh(&a);
        body.push_prepared(&b);
        body.push_fresh(b"");
        body.push_prepared(&Prepared::new(Bytes::new()));
        body.push_fresh(&c);
        body.push_prepared(&b);
        let gz = body.finish();
        let mut want = a.clone();
        want.extend_from_slice(b.text());
        want.extend_from_slice(&c);
        want.extend_from_slice(b.text());
        assert_eq!(gunzip(&gz), want);
        assert!(gz.len() < want.len() / 2, "{} of {}", gz.len(), want.len());
    }

    #[test]
    fn a_prepared_body_alone_and_an_empty_body() {
        let p = Prepared::new(text(4, 50_000));
        let gz = p.gzip();
        assert_eq!(gunzip(&gz), p.text().as_ref());
        assert_eq!(gz, p.gzip(), "made once");
        assert!(gunzip(&GzipBody::new().finish()).is_empty());
    }

    #[test]
    fn accept_encoding_negotiation() {
        for yes in [
            "gzip",
            "gzip, deflate, br",
            "br;q=1.0, gzip;q=0.8, *;q=0.1",
            "*",
            "identity, *;q=0.5",
            "X-GZIP",
        ] {
            assert!(accepts_gzip(Some(yes)), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "*;q=0",
            "gzip;q=0, *",
        ] {
            assert!(!accepts_gzip(Some(no)), "{no}");
        }
        assert!(!accepts_gzip(None));
    }
}
