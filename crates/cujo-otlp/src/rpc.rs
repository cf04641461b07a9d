//! gRPC plumbing shared by the receiver and the exporter: status codes, the
//! `google.rpc.Status` / `RetryInfo` messages carried in `grpc-status-details-bin`, and
//! message framing.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::{BufMut, Bytes, BytesMut};

/// gRPC status codes cujo uses or classifies.
pub mod code {
    pub const OK: i32 = 0;
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const DATA_LOSS: i32 = 15;
    pub const UNAUTHENTICATED: i32 = 16;
}

pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl RpcStatus {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: delay.as_secs() as i64,
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        self.details.push(ProtoAny {
            type_url: RETRY_INFO_TYPE_URL.into(),
            value: prost::Message::encode_to_vec(&info),
        });
        self
    }

    /// The delay of the first `RetryInfo` detail, if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details
            .iter()
            .filter(|d| d.type_url == RETRY_INFO_TYPE_URL)
            .find_map(|d| <RetryInfo as prost::Message>::decode(d.value.as_slice()).ok())
            .and_then(|info| info.retry_delay)
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
    }

    /// Value of the `grpc-status-details-bin` header (base64 of the encoded status).
    pub fn details_header(&self) -> String {
        STANDARD_NO_PAD.encode(prost::Message::encode_to_vec(self))
    }

    /// Parses an encoded `google.rpc.Status` (the decoded `grpc-status-details-bin`).
    pub fn from_details_bytes(bytes: &[u8]) -> Option<Self> {
        <RpcStatus as prost::Message>::decode(bytes).ok()
    }

    /// Parses a `grpc-status-details-bin` header value (padded or not).
    pub fn from_details_header(value: &[u8]) -> Option<Self> {
        let trimmed: Vec<u8> = value.iter().copied().filter(|b| *b != b'=').collect();
        let bytes = STANDARD_NO_PAD
            .decode(&trimmed)
            .or_else(|_| STANDARD.decode(value))
            .ok()?;
        <RpcStatus as prost::Message>::decode(bytes.as_slice()).ok()
    }
}

/// Percent-encodes a `grpc-message` value as the gRPC HTTP/2 protocol requires.
pub fn encode_grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded `grpc-message` value.
pub fn decode_grpc_message(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let hex = value
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let (b'%', Some(b)) = (value[i], hex) {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Frames one message: compressed flag, big-endian length, payload.
/// Bytes of a gRPC message header: the compressed flag and the big-endian length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Fills in the gRPC message header over the first [`FRAME_HEADER_LEN`] bytes of `buf`,
/// which the payload follows; an error when the payload is too long for the header.
pub fn write_frame_header(buf: &mut [u8], compressed: bool) -> std::io::Result<()> {
    let len = buf.len().saturating_sub(FRAME_HEADER_LEN);
    let len = u32::try_from(len).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a gRPC message cannot carry {len} bytes (limit 4 GiB)"),
        )
    })?;
    let Some(header) = buf.get_mut(..FRAME_HEADER_LEN) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no room for the gRPC message header",
        ));
    };
    header[0] = u8::from(compressed);
    header[1..].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

pub fn frame(payload: &[u8], compressed: bool) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(u8::from(compressed));
    buf.put_u32(payload.len() as u32);
    buf.extend_from_slice(payload);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_written_in_place_equals_framing_a_copy() {
        let payload = b"spans".repeat(1000);
        for compressed in [false, true] {
            let mut buf = vec![0; FRAME_HEADER_LEN];
            buf.extend_from_slice(&payload);
            write_frame_header(&mut buf, compressed).expect("fits");
            assert_eq!(buf, frame(&payload, compressed).to_vec());
        }
        assert!(write_frame_header(&mut [0; 3], false).is_err());
    }

    #[test]
    fn retry_info_round_trips_through_the_header() {
        let status =
            RpcStatus::new(code::UNAVAILABLE, "busy").with_retry_delay(Duration::from_millis(1500));
        let parsed =
            RpcStatus::from_details_header(status.details_header().as_bytes()).expect("parses");
        assert_eq!(parsed.code, code::UNAVAILABLE);
        assert_eq!(parsed.retry_delay(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn grpc_message_percent_encoding_round_trips() {
        let text = "bad span: 100% wrong — ünïcode\n";
        assert_eq!(
            decode_grpc_message(encode_grpc_message(text).as_bytes()),
            text
        );
    }
}
