//! Protobuf wire primitives: varints, tags and a reader that yields one field at a time.

use crate::WireError;

pub const WT_VARINT: u8 = 0;
pub const WT_I64: u8 = 1;
pub const WT_LEN: u8 = 2;
pub const WT_I32: u8 = 5;

/// One field as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(&'a [u8]),
}

impl Value<'_> {
    pub fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => WT_VARINT,
            Value::I64(_) => WT_I64,
            Value::I32(_) => WT_I32,
            Value::Len(_) => WT_LEN,
        }
    }
}

/// A field read from a message: its number, its value, and where it sits in the buffer
/// (`start..end` covers tag, length prefix and payload), so callers can slice it out whole.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    pub start: usize,
    pub end: usize,
}

/// Reads `buf` one field at a time. `message` names the message for error texts.
pub struct FieldReader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> FieldReader<'a> {
    pub fn new(buf: &'a [u8], message: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            message,
        }
    }

    /// A reader whose next field starts at `pos`.
    pub fn starting_at(buf: &'a [u8], pos: usize, message: &'static str) -> Self {
        Self { buf, pos, message }
    }

    /// Where the next field starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next field, `None` at the end, or an error if the bytes are not a valid field.
    #[inline]
    pub fn next_field(&mut self) -> Option<Result<Field<'a>, WireError>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some(self.read_field())
    }

    #[inline]
    fn read_field(&mut self) -> Result<Field<'a>, WireError> {
        let start = self.pos;
        let tag = read_varint(self.buf, &mut self.pos).ok_or(WireError::BadVarint(self.message))?;
        let number = tag >> 3;
        if number == 0 {
            return Err(WireError::FieldZero(self.message));
        }
        let number = u32::try_from(number).map_err(|_| WireError::BadVarint(self.message))?;
        let wire_type = (tag & 7) as u8;
        let value = match wire_type {
            WT_VARINT => Value::Varint(
                read_varint(self.buf, &mut self.pos).ok_or(WireError::BadVarint(self.message))?,
            ),
            WT_I64 => {
                let bytes = self.take(8)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(bytes);
                Value::I64(u64::from_le_bytes(b))
            }
            WT_I32 => {
                let bytes = self.take(4)?;
                let mut b = [0u8; 4];
                b.copy_from_slice(bytes);
                Value::I32(u32::from_le_bytes(b))
            }
            WT_LEN => {
                let len = read_varint(self.buf, &mut self.pos)
                    .ok_or(WireError::BadVarint(self.message))?;
                let len = usize::try_from(len).map_err(|_| WireError::Truncated(self.message))?;
                Value::Len(self.take(len)?)
            }
            other => {
                return Err(WireError::UnsupportedWireType {
                    message: self.message,
                    wire_type: other,
                });
            }
        };
        Ok(Field {
            number,
            value,
            start,
            end: self.pos,
        })
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError::Truncated(self.message))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// Reads a base-128 varint at `*pos`, advancing it. `None` if truncated or longer than 10 bytes.
#[inline]
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    // Tags and most lengths fit in one byte.
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    read_varint_slow(buf, pos)
}

#[cold]
fn read_varint_slow(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && byte > 1 {
                return None;
            }
            return Some(value);
        }
    }
    None
}

/// Number of bytes `value` takes as a varint.
#[inline]
pub fn varint_len(value: u64) -> usize {
    // 1 + floor(log128(value)), with 0 taking one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Writes the tag and length prefix of a length-delimited field.
#[inline]
pub fn put_len_prefix(out: &mut Vec<u8>, field: u32, len: usize) {
    put_varint(out, (u64::from(field) << 3) | u64::from(WT_LEN));
    put_varint(out, len as u64);
}

/// Bytes taken by a length-delimited field with a payload of `len` bytes.
#[inline]
pub fn len_field_size(field: u32, len: usize) -> usize {
    varint_len((u64::from(field) << 3) | 2) + varint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_length() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "length of {v}");
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn varint_rejects_overlong_and_truncated() {
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80; 11], &mut pos), None);
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80, 0x80], &mut pos), None);
        let mut pos = 0;
        let mut ten = vec![0xff; 9];
        ten.push(0x02);
        assert_eq!(read_varint(&ten, &mut pos), None);
    }

    #[test]
    fn reader_reports_truncated_length() {
        // field 1, LEN, length 5, only 2 bytes follow
        let buf = [0x0a, 0x05, 1, 2];
        let mut r = FieldReader::new(&buf, "Test");
        assert_eq!(
            r.next_field().map(|f| f.map(|_| ())),
            Some(Err(WireError::Truncated("Test")))
        );
    }
}
