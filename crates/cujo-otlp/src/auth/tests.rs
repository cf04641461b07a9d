use std::path::PathBuf;

use http::{HeaderMap, HeaderValue};

use super::*;

const SECRET_A: &str = "tok-A-7f3c9e1d";
const SECRET_B: &str = "tok-B-52ab80e4";

fn parse(yaml: &str) -> Result<AuthConfig, String> {
    serde_yaml_ng::from_str::<AuthConfig>(yaml).map_err(|e| e.to_string())
}

fn inline(tokens: &[&str]) -> AuthConfig {
    AuthConfig {
        bearer_tokens: tokens.iter().map(|t| Token::new(*t)).collect(),
        token_files: Vec::new(),
    }
}

fn with_authorization(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(value).expect("header value"),
    );
    h
}

/// A fresh directory for token files.
fn temp_dir(name: &str) -> crate::scratch::Scratch {
    crate::scratch::Scratch::new(&format!("cujo-auth-{name}"))
}

/// Replaces `path` the way a Secret volume or an editor does: written aside, renamed over.
fn replace(path: &std::path::Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

#[test]
fn the_config_parses_and_debug_hides_the_tokens() {
    let c = parse(&format!(
        "{{ bearer_tokens: [\"{SECRET_A}\", \"{SECRET_B}\"], token_files: [/etc/cujo/tokens] }}"
    ))
    .expect("parses");
    assert_eq!(c.bearer_tokens.len(), 2);
    assert_eq!(c.token_files, vec![PathBuf::from("/etc/cujo/tokens")]);
    let shown = format!("{c:?} {:?}", c.bearer_tokens[0]);
    assert!(
        !shown.contains(SECRET_A) && !shown.contains(SECRET_B),
        "{shown}"
    );
    assert!(shown.contains("<redacted>"), "{shown}");
    let auth = BearerAuth::load(&inline(&[SECRET_A]), "k").expect("loads");
    assert!(!format!("{auth:?}").contains(SECRET_A));
}

#[test]
fn a_misplaced_token_is_refused_without_being_shown() {
    for yaml in [
        format!("\"{SECRET_A}\""),
        format!("{{ bearer_tokens: \"{SECRET_A}\" }}"),
        "{ bearer_tokens: [123456789] }".to_string(),
        "{ bearer_tokens: 123456789 }".to_string(),
        format!("{{ bearer_tokens: [{{ token: \"{SECRET_A}\" }}] }}"),
        format!("[\"{SECRET_A}\"]"),
    ] {
        let e = parse(&yaml).expect_err(&yaml);
        assert!(
            !e.contains(SECRET_A) && !e.contains("123456789"),
            "{yaml}: {e}"
        );
        assert!(e.contains("expected"), "{yaml}: {e}");
    }
    let e = parse("{ bearer_token: [x] }").expect_err("typo");
    assert!(e.contains("unknown field `bearer_token`"), "{e}");
}

#[test]
fn validation_names_the_key_never_the_token() {
    let e = inline(&[])
        .validate("receivers.otlp.auth")
        .expect_err("none");
    assert_eq!(e.key, "receivers.otlp.auth");
    assert!(e.detail.contains("bearer_tokens or token_files"), "{e}");
    for (token, says) in [
        ("", "is empty"),
        ("tok A-7f3c9e1d", "contains whitespace"),
        ("tok-A-7f3c9e1d\n", "contains whitespace"),
        ("tok-Ä-7f3c9e1d", "not visible ASCII"),
    ] {
        let e = inline(&[SECRET_B, token])
            .validate("exporters.prometheus.auth")
            .expect_err(token);
        assert_eq!(e.key, "exporters.prometheus.auth.bearer_tokens[1]", "{e}");
        assert!(e.detail.contains(says), "{e}");
        let text = e.to_string();
        assert!(
            !text.contains("7f3c9e1d") && !text.contains(SECRET_B),
            "{text}"
        );
    }
    assert!(inline(&[SECRET_A, SECRET_B]).validate("k").is_ok());
}

#[test]
fn token_file_problems_name_the_file_and_line() {
    let dir = temp_dir("problems");
    let missing = dir.join("missing");
    let config = |path: &std::path::Path| AuthConfig {
        bearer_tokens: vec![Token::new(SECRET_A)],
        token_files: vec![dir.join("good"), path.to_path_buf()],
    };
    std::fs::write(dir.join("good"), format!("{SECRET_B}\n")).expect("write");
    let e = config(&missing).validate("auth").expect_err("missing");
    assert_eq!(e.key, "auth.token_files[1]");
    assert!(
        e.detail
            .starts_with(&format!("cannot read {}", missing.display())),
        "{e}"
    );
    let bad = dir.join("bad");
    std::fs::write(
        &bad,
        format!("# rotated 2024-05-01\n\n{SECRET_B}\ntok 7f3c9e1d\n"),
    )
    .expect("write");
    let e = config(&bad).validate("auth").expect_err("whitespace");
    assert_eq!(e.key, "auth.token_files[1]");
    assert!(
        e.detail.starts_with(&format!(
            "{} line 4: the token contains whitespace",
            bad.display()
        )),
        "{e}"
    );
    assert!(
        !e.to_string().contains("7f3c9e1d") && !e.to_string().contains(SECRET_B),
        "{e}"
    );
    let empty = dir.join("empty");
    std::fs::write(&empty, "# nothing yet\n\n").expect("write");
    let e = config(&empty).validate("auth").expect_err("empty");
    assert!(e.detail.contains("holds no token"), "{e}");
    let e = config(&dir).validate("auth").expect_err("directory");
    assert!(e.detail.contains("is not a regular file"), "{e}");
    let big = dir.join("big");
    std::fs::write(&big, "x".repeat(70 * 1024)).expect("write");
    let e = config(&big).validate("auth").expect_err("big");
    assert!(e.detail.contains("larger than 64 KiB"), "{e}");
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_the_token_must_match() {
    let auth = BearerAuth::load(&inline(&[SECRET_A, SECRET_B]), "k").expect("loads");
    for ok in [
        format!("Bearer {SECRET_A}"),
        format!("bearer {SECRET_B}"),
        format!("BEARER   {SECRET_A} "),
    ] {
        assert_eq!(auth.check(&with_authorization(&ok)), Ok(()), "{ok}");
    }
    assert_eq!(auth.check(&HeaderMap::new()), Err(Refusal::Missing));
    for missing in [
        "Bearer".to_string(),
        "Bearer ".to_string(),
        format!("Basic {SECRET_A}"),
        SECRET_A.to_string(),
    ] {
        assert_eq!(
            auth.check(&with_authorization(&missing)),
            Err(Refusal::Missing),
            "{missing}"
        );
    }
    // Wrong at the first byte, at the last, a prefix, a longer one: each is refused.
    for invalid in [
        "Bearer xok-A-7f3c9e1d",
        "Bearer tok-A-7f3c9e1x",
        "Bearer tok-A-7f3c9e1",
        "Bearer tok-A-7f3c9e1dd",
        "Bearer tok-A-7f3c9e1d,tok-B-52ab80e4",
    ] {
        assert_eq!(
            auth.check(&with_authorization(invalid)),
            Err(Refusal::Invalid),
            "{invalid}"
        );
    }
    assert_eq!(auth.refused(), 10);
    assert_eq!(Refusal::Missing.message(), "missing bearer token");
    assert_eq!(Refusal::Invalid.message(), "invalid bearer token");
}

#[test]
fn every_valid_digest_is_compared() {
    // The check folds every comparison into one `Choice`: the token that matches may be the
    // first, the last or several at once, and the answer is the same.
    let many: Vec<String> = (0..64).map(|i| format!("tok-{i:02}-5a5a5a5a")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let auth = BearerAuth::load(&inline(&refs), "k").expect("loads");
    for t in [&many[0], &many[31], &many[63]] {
        assert!(auth.is_valid(t.as_bytes()), "{t}");
    }
    assert!(!auth.is_valid(b"tok-64-5a5a5a5a"));
    assert!(!auth.is_valid(b""));
    let twice = BearerAuth::load(&inline(&[SECRET_A, SECRET_A]), "k").expect("loads");
    assert!(twice.is_valid(SECRET_A.as_bytes()));
    assert_eq!(
        digest_bytes(b"abc")[..4],
        [0xba, 0x78, 0x16, 0xbf],
        "SHA-256"
    );
}

#[test]
fn token_files_rotate_and_keep_the_last_good_set() {
    let dir = temp_dir("rotate");
    let path = dir.join("tokens");
    std::fs::write(&path, format!("# current\n{SECRET_A}\n")).expect("write");
    let config = AuthConfig {
        bearer_tokens: Vec::new(),
        token_files: vec![path.clone()],
    };
    let auth = BearerAuth::load(&config, "receivers.otlp.auth").expect("loads");
    let a = with_authorization(&format!("Bearer {SECRET_A}"));
    let b = with_authorization(&format!("Bearer {SECRET_B}"));
    assert_eq!(auth.check(&a), Ok(()));
    assert_eq!(auth.check(&b), Err(Refusal::Invalid));
    // During the rotation both are valid.
    replace(&path, &format!("{SECRET_A}\n{SECRET_B}\n"));
    auth.reload();
    assert_eq!((auth.check(&a), auth.check(&b)), (Ok(()), Ok(())));
    // Then the old one is removed.
    replace(&path, &format!("{SECRET_B}\n"));
    auth.reload();
    assert_eq!(
        (auth.check(&a), auth.check(&b)),
        (Err(Refusal::Invalid), Ok(()))
    );
    // Unreadable, empty or invalid: the last good set stays.
    std::fs::remove_file(&path).expect("remove");
    auth.reload();
    assert_eq!(auth.check(&b), Ok(()));
    std::fs::write(&path, "").expect("truncate");
    auth.reload();
    assert_eq!(auth.check(&b), Ok(()));
    std::fs::write(&path, "two words\n").expect("write");
    auth.reload();
    assert_eq!(auth.check(&b), Ok(()));
    // Written in place (same inode), it is read again.
    std::fs::write(&path, format!("{SECRET_A}\n")).expect("write");
    auth.reload();
    assert_eq!(
        (auth.check(&a), auth.check(&b)),
        (Ok(()), Err(Refusal::Invalid))
    );
}

#[test]
fn inline_tokens_stay_valid_beside_files() {
    let dir = temp_dir("both");
    let path = dir.join("tokens");
    std::fs::write(&path, format!("{SECRET_B}\n")).expect("write");
    let config = AuthConfig {
        bearer_tokens: vec![Token::new(SECRET_A)],
        token_files: vec![path.clone()],
    };
    let auth = BearerAuth::load(&config, "k").expect("loads");
    replace(&path, "tok-C-00000000\n");
    auth.reload();
    assert_eq!(
        auth.check(&with_authorization(&format!("Bearer {SECRET_A}"))),
        Ok(())
    );
    assert_eq!(
        auth.check(&with_authorization(&format!("Bearer {SECRET_B}"))),
        Err(Refusal::Invalid)
    );
    assert_eq!(
        auth.check(&with_authorization("Bearer tok-C-00000000")),
        Ok(())
    );
}

/// The receivers decide on the headers: a refused request's body is never polled (HTTP/2
/// and gRPC) and takes nothing from the memory budget (an HTTP/1 body is drained unkept).
mod receivers {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use bytes::Bytes;
    use http::{Request, StatusCode, Version, header};
    use tower::ServiceExt as _;

    use super::{SECRET_A, inline};
    use crate::auth::BearerAuth;
    use crate::prom::{Exposition, Format};
    use crate::receiver::tests::ingest_with_budget;
    use crate::receiver::{grpc, http as otlp_http};

    /// A body that records whether anything polled it.
    fn watched_body() -> (Body, Arc<AtomicBool>) {
        let polled = Arc::new(AtomicBool::new(false));
        let flag = polled.clone();
        let stream = futures_util::stream::once(async move {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from_static(b"\0\0\0\0\x05hello"))
        });
        (Body::from_stream(stream), polled)
    }

    fn metrics(ingest: &crate::receiver::Ingest) -> String {
        let mut out = Exposition::new(Format::Prometheus);
        ingest.telemetry.render(&mut out);
        out.finish()
    }

    #[tokio::test]
    async fn refused_requests_are_answered_on_their_headers() {
        let (mut ingest, _source) = ingest_with_budget(64 << 20);
        let auth = BearerAuth::load(&inline(&[SECRET_A]), "receivers.otlp.auth").expect("auth");
        ingest.tenants = Some(std::sync::Arc::new(
            crate::tenants::Tenants::new(&[], "tenants", Some(auth), &[], 1).expect("tenants"),
        ));
        let cases = [
            (
                "grpc",
                Version::HTTP_2,
                "application/grpc",
                None,
                "missing bearer token",
            ),
            (
                "grpc",
                Version::HTTP_2,
                "application/grpc",
                Some("Bearer nope"),
                "invalid bearer token",
            ),
            (
                "http",
                Version::HTTP_2,
                "application/x-protobuf",
                None,
                "missing bearer token",
            ),
            (
                "http",
                Version::HTTP_11,
                "application/json",
                Some("Bearer nope"),
                "invalid bearer token",
            ),
            (
                "http",
                Version::HTTP_11,
                "text/plain",
                Some("Basic x"),
                "missing bearer token",
            ),
        ];
        for (transport, version, content_type, authorization, message) in cases {
            let (body, polled) = watched_body();
            let mut request = Request::post(if transport == "grpc" {
                grpc::EXPORT_PATH
            } else {
                otlp_http::TRACES_PATH
            })
            .version(version)
            .header(header::CONTENT_TYPE, content_type);
            if let Some(a) = authorization {
                request = request.header(header::AUTHORIZATION, a);
            }
            let request = request.body(body).expect("request");
            let router = if transport == "grpc" {
                grpc::router(ingest.clone())
            } else {
                otlp_http::router(ingest.clone())
            };
            let response = router.oneshot(request).await.expect("answer");
            assert_eq!(
                ingest.memory.used(),
                0,
                "{transport} {message}: no budget taken"
            );
            let (status, headers) = (response.status(), response.headers().clone());
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            if transport == "grpc" {
                assert!(!polled.load(Ordering::SeqCst), "the gRPC body is not read");
                assert_eq!(status, StatusCode::OK, "gRPC answers in trailers-only form");
                assert_eq!(headers["grpc-status"], "16");
                assert_eq!(headers["grpc-message"], message);
            } else {
                if version == Version::HTTP_2 {
                    assert!(
                        !polled.load(Ordering::SeqCst),
                        "the HTTP/2 body is not read"
                    );
                }
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
                assert!(
                    String::from_utf8_lossy(&body).contains(message),
                    "{content_type}: {body:?}"
                );
            }
        }
        let m = metrics(&ingest);
        for (transport, n) in [("grpc", 2), ("http", 3)] {
            let sample = format!(
                "cujo_receiver_requests_total{{transport=\"{transport}\",outcome=\"unauthenticated\"}} {n}"
            );
            assert!(m.contains(&sample), "{sample}\n{m}");
        }
        assert!(
            !m.contains(
                "cujo_receiver_spans_total{transport=\"grpc\",outcome=\"unauthenticated\"}"
            )
        );
        assert_eq!(ingest.memory.used(), 0);
    }
}
