//! `auth:` of a listener: bearer tokens written in the config (normally through
//! `${env:NAME}`) and token files. Parsing never echoes a value: a token in the wrong place
//! (`auth: ${env:TOKEN}`, a number) is an error naming the key, not the text.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use cujo_config::KeyError;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::BearerAuth;

/// `receivers.otlp.auth`, `exporters.prometheus.auth`, `exporters.prometheus.metrics_auth`:
/// a request must carry `authorization: Bearer <token>` with one of these tokens.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Tokens given in the config; normally `"${env:CUJO_TOKEN_A}"`, so the file holds no
    /// secret.
    pub bearer_tokens: Vec<Token>,
    /// Files of tokens, one a line (blank lines and `#` comments ignored), re-read when they
    /// change so that keys rotate without a restart.
    pub token_files: Vec<PathBuf>,
}

/// The fields as written; [`AuthConfig`]'s own `Deserialize` only makes sure a value that is
/// not a mapping is refused without being shown.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    #[serde(default, deserialize_with = "token_list")]
    bearer_tokens: Vec<Token>,
    #[serde(default)]
    token_files: Vec<PathBuf>,
}

impl AuthConfig {
    /// Every inline token usable, every token file readable and holding usable tokens, at
    /// least one token in all. `key` is where the section is (`receivers.otlp.auth`). Errors
    /// name the key, the file and the line, never a token.
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        BearerAuth::load(self, key).map(drop)
    }
}

/// A bearer token from the config or a token file: compared, never shown (`Debug` prints
/// `<redacted>`; there is no `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(text: impl Into<String>) -> Self {
        Token(text.into())
    }

    /// The token's bytes, for hashing.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Why this text cannot be a token (it names no character of it), or `None`.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        problem(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why `text` cannot be a bearer token: tokens travel as `authorization: Bearer <token>`,
/// so they are visible ASCII without spaces.
pub(crate) fn problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("is empty (an unset or empty environment variable?)")
    } else if text.chars().any(char::is_whitespace) {
        Some(
            "contains whitespace; a token is sent as `authorization: Bearer <token>` and cannot hold a space",
        )
    } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
        Some("contains a character that is not visible ASCII, which a header cannot carry")
    } else {
        None
    }
}

impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = d.deserialize_any(Only::<Fields>::new(
            "a mapping like { bearer_tokens: [\"${env:CUJO_TOKEN}\"] } or { token_files: [/etc/cujo/tokens] }",
        ))?;
        Ok(AuthConfig {
            bearer_tokens: fields.bearer_tokens,
            token_files: fields.token_files,
        })
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Only::<Token>::new(
            "a token as a string (quote it: \"${env:CUJO_TOKEN}\")",
        ))
    }
}

pub(crate) fn token_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Token>, D::Error> {
    d.deserialize_any(Only::<Vec<Token>>::new(
        "a list of tokens like [\"${env:CUJO_TOKEN_A}\", \"${env:CUJO_TOKEN_B}\"]",
    ))
}

/// A visitor that takes one shape (a mapping, a string or a list, by what `T` is) and refuses
/// every other value with `expected`, without the value: serde's own "invalid type" error
/// would print a misplaced token.
struct Only<T> {
    expected: &'static str,
    shape: PhantomData<T>,
}

impl<T> Only<T> {
    fn new(expected: &'static str) -> Self {
        Self {
            expected,
            shape: PhantomData,
        }
    }

    fn refuse<E: de::Error, R>(&self) -> Result<R, E> {
        Err(E::custom(format!("expected {}", self.expected)))
    }
}

/// The visitor methods every [`Only`] refuses (each but the one its shape takes).
macro_rules! refuse {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            self.refuse()
        })*
    };
}

macro_rules! refuse_empty {
    ($($method:ident),* $(,)?) => {
        $(fn $method<E: de::Error>(self) -> Result<Self::Value, E> {
            self.refuse()
        })*
    };
}

impl<'de> Visitor<'de> for Only<Fields> {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Fields, A::Error> {
        Fields::deserialize(de::value::MapAccessDeserializer::new(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Fields, A::Error> {
        self.refuse()
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_bytes(&[u8]),
        visit_str(&str),
    );
    refuse_empty!(visit_none, visit_unit);
}

impl<'de> Visitor<'de> for Only<Token> {
    type Value = Token;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Token, E> {
        Ok(Token(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Token, E> {
        Ok(Token(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Token, A::Error> {
        self.refuse()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Token, A::Error> {
        self.refuse()
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_bytes(&[u8]),
    );
    refuse_empty!(visit_none, visit_unit);
}

impl<'de> Visitor<'de> for Only<Vec<Token>> {
    type Value = Vec<Token>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Token>, A::Error> {
        let mut out = Vec::new();
        while let Some(token) = seq.next_element::<Token>()? {
            out.push(token);
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Vec<Token>, A::Error> {
        self.refuse()
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_bytes(&[u8]),
        visit_str(&str),
    );
    refuse_empty!(visit_none, visit_unit);
}
