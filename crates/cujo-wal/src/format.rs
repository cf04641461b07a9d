//! The bytes on disk: segment file names, the segment header, the record frame.
//!
//! ```text
//! segment file  <seq:020>.wal
//!   header      "CUJOWAL" | version: u8 = 1 | seq: u64 LE                      16 bytes
//!   record*     magic: 4 bytes | len: u32 LE | crc32(len LE ++ payload): u32 LE  12 bytes
//!               payload: len bytes
//! ```
//!
//! No footer. The CRC covers the length, so a flipped length bit is caught like a flipped
//! payload bit; the magic lets a reader find the next record after a damaged one.
//!
//! The writer writes whole [`BLOCK`]s at block offsets (direct I/O needs that), so a
//! segment's file ends in fewer than [`BLOCK`] zero bytes after its last record: padding,
//! which replay reads as the segment's end, not as a torn record.

use std::path::{Path, PathBuf};

/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// Bytes before each record's payload.
pub const RECORD_HEADER_LEN: u64 = 12;
/// The unit of every write: offsets and lengths are multiples of it, and so is the address
/// of the memory written from (4 KiB covers 512-byte and 4 KiB logical sectors).
pub const BLOCK: usize = 4096;

const SEGMENT_MAGIC: &[u8; 7] = b"CUJOWAL";
const VERSION: u8 = 1;
/// Chosen to be rare in protobuf and text: three bytes above 0x7f.
pub const RECORD_MAGIC: [u8; 4] = [0xC5, 0x1E, 0x9A, 0xF7];
const SUFFIX: &str = ".wal";

/// The file name of segment `seq`; zero-padded so names sort in append order.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SUFFIX}"))
}

/// The sequence number of a segment file name, or `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn segment_header(seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..7].copy_from_slice(SEGMENT_MAGIC);
    h[7] = VERSION;
    h[8..].copy_from_slice(&seq.to_le_bytes());
    h
}

/// Whether `bytes` is the header of segment `seq` in a version this crate reads.
pub fn header_is_valid(bytes: &[u8], seq: u64) -> bool {
    bytes.len() >= SEGMENT_HEADER_LEN as usize && bytes[..16] == segment_header(seq)
}

/// The CRC of a record: its length field and its payload.
pub fn record_crc(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends the framed record to `out`. `payload.len()` must fit in a `u32`
/// (`max_record_size` is validated below 4GiB).
pub fn encode_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&record_header(&[payload]));
    out.extend_from_slice(payload);
}

/// The frame of a record whose payload is `parts` one after the other (the payload is
/// never gathered into one buffer to frame it).
pub fn record_header(parts: &[&[u8]]) -> [u8; RECORD_HEADER_LEN as usize] {
    let len = parts.iter().map(|p| p.len()).sum::<usize>() as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; RECORD_HEADER_LEN as usize];
    out[..4].copy_from_slice(&RECORD_MAGIC);
    out[4..8].copy_from_slice(&len.to_le_bytes());
    out[8..].copy_from_slice(&h.finalize().to_le_bytes());
    out
}

/// A record header as read, not yet checked against its payload.
#[derive(Debug, Clone, Copy)]
pub struct RecordHeader {
    pub len: u32,
    pub crc: u32,
}

/// The header at the start of `bytes` if its magic is right.
pub fn decode_header(bytes: &[u8; RECORD_HEADER_LEN as usize]) -> Option<RecordHeader> {
    if bytes[..4] != RECORD_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    Some(RecordHeader { len, crc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        let dir = Path::new("/d");
        let a = segment_path(dir, 9);
        let b = segment_path(dir, 10);
        assert!(a < b);
        let name = b.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
        assert_eq!(parse_segment_name(name), Some(10));
        assert_eq!(parse_segment_name("LOCK"), None);
        assert_eq!(parse_segment_name("12.wal"), None);
    }

    #[test]
    fn a_record_decodes_and_its_crc_covers_the_length() {
        let mut out = Vec::new();
        encode_record(&mut out, b"hello");
        let head: [u8; 12] = out[..12].try_into().expect("12 bytes");
        let h = decode_header(&head).expect("magic");
        assert_eq!(h.len, 5);
        assert_eq!(h.crc, record_crc(5, b"hello"));
        assert_ne!(h.crc, record_crc(4, b"hello"));
        assert!(header_is_valid(&segment_header(3), 3));
        // Framing the payload in parts gives the same bytes as framing it whole.
        assert_eq!(record_header(&[b"he", b"", b"llo"]), head);
        assert!(!header_is_valid(&segment_header(3), 4));
    }
}
