//! `tls:` of a listener (`receivers.otlp.grpc.tls`, `receivers.otlp.http.tls`,
//! `exporters.prometheus.tls`): the server's certificate chain and key, the CA whose client
//! certificates are required (mTLS), the oldest TLS version spoken, and how often the files
//! are looked at for a new version.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cujo_config::{HumanDuration, KeyError, fail};
use serde::{Deserialize, Deserializer};

use super::material::Material;

/// A listener's `tls:` section. Present = the listener speaks TLS only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the server's certificate, then any intermediates it needs.
    pub cert_file: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: CA certificates. When set, every client must present a certificate signed by
    /// one of them; a client without one is refused during the handshake.
    pub client_ca_file: Option<PathBuf>,
    /// The oldest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: MinVersion,
    /// How often the three files are read to find a new version (default 5s); a new one is
    /// used for new handshakes, established connections keep theirs.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: HumanDuration,
}

fn default_reload_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

impl TlsConfig {
    /// Every file readable and usable together (`key` is where the section is, e.g.
    /// `receivers.otlp.grpc.tls`): errors name the field and the file, never their content.
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        if self.reload_interval.0.is_zero() {
            return fail(
                format!("{key}.reload_interval"),
                "must be greater than zero",
            );
        }
        Material::load(self).map(drop).map_err(|e| e.at(key))
    }
}

/// The oldest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl fmt::Display for MinVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MinVersion::Tls12 => "1.2",
            MinVersion::Tls13 => "1.3",
        })
    }
}

impl MinVersion {
    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "1.2" => Some(MinVersion::Tls12),
            "1.3" => Some(MinVersion::Tls13),
            _ => None,
        }
    }
}

/// `"1.2"` or `"1.3"`, quoted or not (unquoted YAML reads them as numbers).
impl<'de> Deserialize<'de> for MinVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MinVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MinVersion, E> {
                MinVersion::parse(v)
                    .ok_or_else(|| E::custom(format!("expected \"1.2\" or \"1.3\", found {v:?}")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<MinVersion, E> {
                MinVersion::parse(&v.to_string())
                    .ok_or_else(|| E::custom(format!("expected \"1.2\" or \"1.3\", found {v}")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MinVersion, E> {
                Err(E::custom(format!("expected \"1.2\" or \"1.3\", found {v}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<MinVersion, E> {
                Err(E::custom(format!("expected \"1.2\" or \"1.3\", found {v}")))
            }
        }
        d.deserialize_any(V)
    }
}
