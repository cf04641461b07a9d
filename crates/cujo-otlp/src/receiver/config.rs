//! `receivers:`: where the OTLP receivers listen and their limits, their `validate`, and the
//! [`ReceiverLimits`] and [`ServerLimits`] they resolve into.

use std::time::Duration;

use cujo_config::{ByteSize, Endpoint, HumanDuration, KeyError, fail};
use serde::Deserialize;

use super::ReceiverLimits;
use crate::auth::AuthConfig;
use crate::server::{ConnectionMemory, ServerLimits};
use crate::tls::TlsConfig;

/// `receivers:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receivers {
    pub otlp: Option<OtlpReceivers>,
}

impl Receivers {
    /// Each receiver configured, under `key.otlp` (`key` is `receivers`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        match &self.otlp {
            Some(otlp) => otlp.validate(&format!("{key}.otlp")),
            None => Ok(()),
        }
    }
}

/// `receivers.otlp`: each transport is on when its section is present.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceivers {
    pub grpc: Option<GrpcReceiver>,
    pub http: Option<HttpReceiver>,
    /// Bearer tokens both receivers require (`authorization: Bearer <token>`).
    pub auth: Option<AuthConfig>,
}

impl OtlpReceivers {
    /// The gRPC receiver, then the HTTP one, then `auth` (`key` is `receivers.otlp`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        if let Some(grpc) = &self.grpc {
            grpc.validate(&format!("{key}.grpc"))?;
        }
        if let Some(http) = &self.http {
            http.validate(&format!("{key}.http"))?;
        }
        if let Some(auth) = &self.auth {
            auth.validate(&format!("{key}.auth"))?;
        }
        Ok(())
    }
}

/// `receivers.otlp.grpc`. The limits below are the HTTP receiver's too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcReceiver {
    pub endpoint: Endpoint,
    #[serde(default = "default_max_message")]
    pub max_recv_msg_size: ByteSize,
    /// Connections open at once (default 4096). Each also takes a fixed cost (128 KiB) from
    /// the receivers' share of admission.max_in_flight, which may allow fewer: then a new
    /// connection takes the place of the one idle the longest.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Streams one HTTP/2 connection may have open at once (default 100, RFC 9113's minimum
    /// recommendation).
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// A connection with no request in flight this long is closed, with a GOAWAY on HTTP/2
    /// (default 60s, the Collector's idle_timeout).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Time a client has to send a whole request body once its headers arrived (default
    /// 30s); a slower one is cut off and the memory its body held is given back.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: HumanDuration,
    /// Serve TLS (and with `client_ca_file`, require client certificates) instead of
    /// plaintext.
    pub tls: Option<TlsConfig>,
}

/// `receivers.otlp.http`: the same limits (and `tls`) as the gRPC receiver's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpReceiver {
    pub endpoint: Endpoint,
    #[serde(default = "default_max_message")]
    pub max_request_body_size: ByteSize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    #[serde(default = "default_body_timeout")]
    pub body_timeout: HumanDuration,
    pub tls: Option<TlsConfig>,
}

fn default_max_message() -> ByteSize {
    ByteSize(16 * 1024 * 1024)
}

fn default_max_connections() -> usize {
    4096
}

fn default_max_concurrent_streams() -> u32 {
    100
}

fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_body_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl GrpcReceiver {
    /// Limits that let a request through, then `tls` (`key` is `receivers.otlp.grpc`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        self.limits().validate(key)?;
        match &self.tls {
            Some(tls) => tls.validate(&format!("{key}.tls")),
            None => Ok(()),
        }
    }

    /// How a request is read: its size limit and body timeout, `retry_after` suggested
    /// when refused for overload (`admission.retry_after`), beside `connections`.
    pub fn receiver_limits(
        &self,
        retry_after: Duration,
        connections: &ConnectionMemory,
    ) -> ReceiverLimits {
        self.limits().receiver(retry_after, connections)
    }

    /// How its connections are served, each paying to `connections`.
    pub fn server_limits(&self, connections: &ConnectionMemory) -> ServerLimits {
        self.limits().server(connections)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body: self.max_recv_msg_size,
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
        }
    }
}

impl HttpReceiver {
    /// Limits that let a request through, then `tls` (`key` is `receivers.otlp.http`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        self.limits().validate(key)?;
        match &self.tls {
            Some(tls) => tls.validate(&format!("{key}.tls")),
            None => Ok(()),
        }
    }

    /// How a request is read: its size limit and body timeout, `retry_after` suggested
    /// when refused for overload (`admission.retry_after`), beside `connections`.
    pub fn receiver_limits(
        &self,
        retry_after: Duration,
        connections: &ConnectionMemory,
    ) -> ReceiverLimits {
        self.limits().receiver(retry_after, connections)
    }

    /// How its connections are served, each paying to `connections`.
    pub fn server_limits(&self, connections: &ConnectionMemory) -> ServerLimits {
        self.limits().server(connections)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_body: self.max_request_body_size,
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
        }
    }
}

/// What both receivers' sections set, whatever their key names for it.
struct Limits {
    max_body: ByteSize,
    max_connections: usize,
    max_concurrent_streams: u32,
    idle_timeout: HumanDuration,
    body_timeout: HumanDuration,
}

impl Limits {
    fn validate(&self, at: &str) -> Result<(), KeyError> {
        let err = |key: &str, detail: &str| fail(format!("{at}.{key}"), detail);
        if self.max_connections == 0 {
            return err("max_connections", "must be at least 1");
        }
        if self.max_concurrent_streams == 0 {
            return err("max_concurrent_streams", "must be at least 1");
        }
        if self.idle_timeout.0.is_zero() {
            return err("idle_timeout", "must be greater than zero");
        }
        if self.body_timeout.0.is_zero() {
            return err("body_timeout", "must be greater than zero");
        }
        Ok(())
    }

    fn receiver(&self, retry_after: Duration, connections: &ConnectionMemory) -> ReceiverLimits {
        ReceiverLimits {
            max_message_bytes: self.max_body.0 as usize,
            body_timeout: self.body_timeout.0,
            retry_after,
            connections: Some(connections.clone()),
        }
    }

    fn server(&self, connections: &ConnectionMemory) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections,
            http2_max_concurrent_streams: self.max_concurrent_streams,
            idle_timeout: self.idle_timeout.0,
            memory: Some(connections.clone()),
            ..ServerLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section as the binary reads it: parsed, then checked under `receivers`.
    fn parse(yaml: &str) -> Result<OtlpReceivers, String> {
        let r: Receivers = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        r.validate("receivers").map_err(|e| e.to_string())?;
        Ok(r.otlp.unwrap_or_default())
    }

    #[test]
    fn limits_default_like_the_collector_and_are_checked() {
        let otlp = parse("otlp:\n  grpc: { endpoint: \"127.0.0.1:4317\" }\n  http: { endpoint: \"127.0.0.1:4318\", idle_timeout: 5s, body_timeout: 2s, max_connections: 10, max_concurrent_streams: 8 }\n")
            .expect("parses");
        let grpc = otlp.grpc.expect("grpc");
        assert_eq!(
            (grpc.max_connections, grpc.max_concurrent_streams),
            (4096, 100)
        );
        assert_eq!(grpc.idle_timeout.0, Duration::from_secs(60));
        assert_eq!(grpc.body_timeout.0, Duration::from_secs(30));
        assert_eq!(grpc.max_recv_msg_size, ByteSize(16 << 20));
        let http = otlp.http.expect("http");
        assert_eq!((http.max_connections, http.max_concurrent_streams), (10, 8));
        assert_eq!(http.idle_timeout.0, Duration::from_secs(5));
        assert_eq!(http.body_timeout.0, Duration::from_secs(2));
        assert_eq!(http.max_request_body_size, ByteSize(16 << 20));
        for (key, value, detail) in [
            (
                "grpc",
                "idle_timeout: 0",
                "idle_timeout: must be greater than zero",
            ),
            (
                "grpc",
                "body_timeout: 0",
                "body_timeout: must be greater than zero",
            ),
            (
                "http",
                "max_connections: 0",
                "max_connections: must be at least 1",
            ),
            (
                "http",
                "max_concurrent_streams: 0",
                "max_concurrent_streams: must be at least 1",
            ),
        ] {
            let e = parse(&format!(
                "otlp:\n  {key}: {{ endpoint: \"127.0.0.1:0\", {value} }}\n"
            ))
            .expect_err(value);
            assert_eq!(e, format!("receivers.otlp.{key}.{detail}"));
        }
    }

    #[test]
    fn limits_resolve_for_the_receiver_and_its_server() {
        let otlp = parse("otlp:\n  http: { endpoint: \"127.0.0.1:4318\", max_request_body_size: 1MiB, idle_timeout: 5s, body_timeout: 2s, max_connections: 10, max_concurrent_streams: 8 }\n")
            .expect("parses");
        let http = otlp.http.expect("http");
        let budget = crate::memory::MemoryBudget::new(
            1 << 20,
            crate::memory::Shares::for_stages(false, false),
        );
        let connections =
            ConnectionMemory::new(budget.account(crate::memory::Component::Receivers));
        let r = http.receiver_limits(Duration::from_secs(3), &connections);
        assert_eq!(
            (r.max_message_bytes, r.body_timeout, r.retry_after),
            (1 << 20, Duration::from_secs(2), Duration::from_secs(3))
        );
        assert!(r.connections.is_some());
        let s = http.server_limits(&connections);
        assert_eq!(
            (
                s.max_connections,
                s.http2_max_concurrent_streams,
                s.idle_timeout
            ),
            (10, 8, Duration::from_secs(5))
        );
        assert!(s.memory.is_some());
        let d = ServerLimits::default();
        assert_eq!(
            (s.header_read_timeout, s.http2_stream_window),
            (d.header_read_timeout, d.http2_stream_window)
        );
    }
}
