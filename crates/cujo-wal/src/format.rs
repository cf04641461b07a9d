//! The bytes on disk: segment file names, the segment header, the record frame.
//!
//! ```text
//! segment file  <seq:020>.wal
//!   header      "CUJOWAL" | version: u8 = 1 | seq: u64 LE                      16 bytes
//!   record*     magic: 4 bytes | len: u32 LE | crc32(len LE ++ payload): u32 LE  12 bytes
//!               payload: len bytes
//! ```
//!
//! No padding, no footer. The CRC covers the length, so a flipped length bit is caught like
//! a flipped payload bit; the magic lets a reader find the next record after a damaged one.

use std::path::{Path, PathBuf};

/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// Bytes before each record's payload.
pub const RECORD_HEADER_LEN: u64 = 12;

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
    let len = payload.len() as u32;
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
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
        assert!(!header_is_valid(&segment_header(3), 4));
    }
}
