//! The value types every cujo component's config is written in, and the error a component's
//! `validate` returns.
//!
//! Each component owns its config type, in its own crate (`exporters.otlp_metrics` in
//! `cujo-slo`, `receivers:` in `cujo-otlp`, `assembler:` in `cujo-assembler`, …), and checks
//! it with `validate(&self, key)`, naming the key path of what is wrong; the binary composes
//! the sections and adds the file name. This crate owns only what those
//! types share, so a duration or a header map reads and fails the same way in every section.
//! It depends on no other crate of ours and knows no component.
//!
//! # Layout
//! - [`KeyError`]: a value that parsed but cannot be used, with its key path.
//! - [`HumanDuration`], [`ByteSize`], [`Endpoint`], [`Fraction`]: `30s`, `256MiB`,
//!   `127.0.0.1:4317`, `25%`.
//! - [`outbound`]: what every exporter's destination is configured with: URL, headers, TLS,
//!   compression, protocol; [`outbound::Secret`], an API key that `Debug` never shows.
//! - [`presets`]: each backend's documented OTLP contract (Honeycomb, Datadog, New Relic,
//!   Mackerel), the defaults `preset:` fills in both exporters.
#![forbid(unsafe_code)]

pub mod outbound;
pub mod presets;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A config value that parsed but cannot be used: where (`exporters.otlp_metrics.interval`)
/// and why. The binary prefixes the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {detail}")]
pub struct KeyError {
    pub key: String,
    pub detail: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            detail: detail.into(),
        }
    }
}

/// `Err(KeyError)` at `key`, for `validate` functions.
pub fn fail<T>(key: impl Into<String>, detail: impl Into<String>) -> Result<T, KeyError> {
    Err(KeyError::new(key, detail))
}

/// A `host:port` listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub String);

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = s.parse::<SocketAddr>().is_ok()
            || s.rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if ok {
            Ok(Endpoint(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "expected a listen address like \"127.0.0.1:4317\" or \"0.0.0.0:4317\", found {s:?}"
            )))
        }
    }
}

/// A size like `256MiB`, `16MB`, `512KiB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Option<u64> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" | "ki" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" | "mi" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" | "gi" => 1 << 30,
            _ => return None,
        };
        let v = num * mult as f64;
        (v.is_finite() && v >= 0.0).then_some(v as u64)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"256MiB\", \"16MB\" or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("expected a size, found {v}")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map(ByteSize).ok_or_else(|| {
                    E::custom(format!(
                        "expected a size like \"256MiB\" or \"16MB\", found {v:?}"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration like `200ms`, `30s`, `5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"300ms\", \"30s\" or \"5m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v.trim())
                    .map(HumanDuration)
                    .map_err(|_| {
                        E::custom(format!(
                            "expected a duration like \"300ms\", \"30s\" or \"5m\", found {v:?}"
                        ))
                    })
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                if v == 0 {
                    Ok(HumanDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "expected a duration with a unit like \"{v}s\" or \"{v}ms\", found {v}"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A fraction: `0.25` or `25%`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let value = match Raw::deserialize(d)? {
            Raw::Number(n) => n,
            Raw::Text(t) => match t.trim().strip_suffix('%') {
                Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected a fraction like 0.25 or 25%, found {t:?}"
                    ))
                })?,
                None => t.trim().parse::<f64>().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "expected a fraction like 0.25 or 25%, found {t:?}"
                    ))
                })?,
            },
        };
        if !(0.0..=1.0).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "expected a fraction between 0 and 1 (or 0% and 100%), found {value}"
            )));
        }
        Ok(Fraction(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("256MiB"), Some(256 << 20));
        assert_eq!(ByteSize::parse("16MB"), Some(16_000_000));
        assert_eq!(ByteSize::parse("1.5GiB"), Some(3 << 29));
        assert_eq!(ByteSize::parse("12 parsecs"), None);
    }

    #[test]
    fn durations_need_a_unit_unless_zero() {
        let d: HumanDuration = serde_yaml_ng::from_str("\"250ms\"").expect("parses");
        assert_eq!(d.0, Duration::from_millis(250));
        let zero: HumanDuration = serde_yaml_ng::from_str("0").expect("zero");
        assert!(zero.0.is_zero());
        let e = serde_yaml_ng::from_str::<HumanDuration>("30").expect_err("no unit");
        assert!(
            e.to_string().contains("expected a duration with a unit"),
            "{e}"
        );
    }
}
