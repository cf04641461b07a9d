//! What every exporter's destination is configured with, whatever it sends (spans, OTLP
//! metrics, webhooks): a URL, headers, TLS trust, compression and protocol. The transport
//! that uses them is `cujo_otlp::exporter::transport`; this module only reads and checks
//! the values.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use crate::{KeyError, fail};

/// Deadline of one export attempt unless a section says otherwise.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS settings of an `https://` destination.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted besides the public roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
}

/// `headers:` of a destination: names and values as written. The values are secrets (API
/// keys): `Debug` shows the names only, so a config printed whole shows no key.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

impl std::ops::Deref for Headers {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

impl<const N: usize> From<[(String, String); N]> for Headers {
    fn from(pairs: [(String, String); N]) -> Self {
        Headers(pairs.into())
    }
}

/// A secret value (an API key): `Debug` never shows it.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// OTLP's two transports.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// `key` holds an `http://` or `https://` URL with a host. `example` is shown in the error
/// (`"https://api.honeycomb.io:443"`); the value is not: a webhook URL is a secret, and a
/// misplaced `${env:}` may have put a key there.
pub fn check_url(key: &str, url: &str, example: &str) -> Result<(), KeyError> {
    let problem = match url.parse::<Uri>() {
        Err(_) if url.contains("://") || url.contains(char::is_whitespace) => "is not a URL",
        Err(_) => "has no scheme",
        Ok(u) => match (u.scheme_str(), u.authority()) {
            (Some("http") | Some("https"), Some(_)) => return Ok(()),
            (None, _) => "has no scheme",
            (Some("http") | Some("https"), None) => "has no host",
            (Some(_), _) => "has a scheme other than http:// or https://",
        },
    };
    fail(
        key,
        format!(
            "expected a URL like \"{example}\" (https:// = TLS, http:// = plaintext); the value {problem}"
        ),
    )
}

/// Every header at `key` has a valid name and value.
pub fn check_headers(key: &str, headers: &BTreeMap<String, String>) -> Result<(), KeyError> {
    header_pairs(key, headers).map(drop)
}

/// The headers at `key` as sent; fails as [`check_headers`] does.
pub fn header_pairs(
    key: &str,
    headers: &BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, KeyError> {
    headers
        .iter()
        .map(|(name, value)| {
            let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                return fail(key, format!("{name:?} is not a valid header name"));
            };
            let Ok(v) = HeaderValue::from_str(value) else {
                return fail(format!("{key}.{name}"), "is not a valid header value");
            };
            Ok((n, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_show_their_names_never_their_values() {
        let h = Headers::from([("x-honeycomb-team".to_string(), "hc-secret-1".to_string())]);
        let shown = format!("{h:?}");
        assert!(
            shown.contains("x-honeycomb-team") && !shown.contains("hc-secret-1"),
            "{shown}"
        );
        assert_eq!(h["x-honeycomb-team"], "hc-secret-1");
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(check_url("k", "https://api.honeycomb.io:443", "x").is_ok());
        assert!(check_url("k", "http://127.0.0.1:9/alerts", "x").is_ok());
        for (bad, problem) in [
            ("api.honeycomb.io:443", "has no scheme"),
            ("ftp://x", "has a scheme other than http:// or https://"),
            ("not a url", "is not a URL"),
            (
                "hooks.slack.com/services/T0/B0/secret-part",
                "has no scheme",
            ),
        ] {
            let e = check_url("exporters.otlp.endpoint", bad, "https://e:1").expect_err(bad);
            assert_eq!(e.key, "exporters.otlp.endpoint");
            assert!(
                e.detail.starts_with("expected a URL like \"https://e:1\""),
                "{e}"
            );
            assert!(e.detail.ends_with(problem), "{e}");
            assert!(
                !e.detail.contains("secret-part"),
                "the value is not shown: {e}"
            );
        }
    }

    #[test]
    fn header_errors_name_the_header() {
        let mut h = BTreeMap::new();
        h.insert("x-team".to_string(), "secret".to_string());
        assert_eq!(header_pairs("k", &h).expect("valid").len(), 1);
        h.insert("a b".into(), "c".into());
        let e = check_headers("k", &h).expect_err("name");
        assert_eq!(e.to_string(), "k: \"a b\" is not a valid header name");
        h.remove("a b");
        h.insert("x-bad".into(), "line\nbreak".into());
        let e = check_headers("k", &h).expect_err("value");
        assert_eq!(e.to_string(), "k.x-bad: is not a valid header value");
    }
}
