use std::path::Path;

use tokio::io::AsyncWriteExt as _;

use super::material::not_after;
use super::*;

/// A directory of its own for one test.
fn scratch(name: &str) -> crate::scratch::Scratch {
    crate::scratch::Scratch::new(&format!("cujo-tls-unit-{name}"))
}

/// A self-signed certificate for localhost: (certificate PEM, key PEM, DER).
fn self_signed(cn: &str) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// `cert.pem` and `key.pem` written in `dir`, and a config naming them.
fn config_in(dir: &Path, cert: &str, key: &str) -> TlsConfig {
    std::fs::write(dir.join("cert.pem"), cert).expect("write cert");
    std::fs::write(dir.join("key.pem"), key).expect("write key");
    TlsConfig {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
        client_ca_file: None,
        min_version: MinVersion::Tls12,
        reload_interval: cujo_config::HumanDuration(Duration::from_secs(5)),
    }
}

fn parse(yaml: &str) -> Result<TlsConfig, String> {
    serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
}

#[test]
fn not_after_is_read_from_utc_and_generalized_times() {
    for (year, month, day, expected) in [
        (2031, 4, 5, 1_933_113_600),
        (2049, 12, 31, 2_524_521_600),
        (2051, 1, 1, 2_556_144_000),
        (1975, 6, 30, 173_318_400),
    ] {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(1970, 1, 2);
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            not_after(cert.der()),
            Some(expected),
            "{year}-{month}-{day}"
        );
    }
    assert_eq!(not_after(b"\x30\x03\x02\x01\x00"), None);
    assert_eq!(not_after(b""), None);
}

#[test]
fn min_version_takes_1_2_or_1_3_quoted_or_not_and_nothing_else() {
    let base = "{ cert_file: c, key_file: k, min_version: ";
    assert_eq!(
        parse(&format!("{base}\"1.3\" }}"))
            .expect("1.3")
            .min_version,
        MinVersion::Tls13
    );
    assert_eq!(
        parse(&format!("{base}1.2 }}")).expect("1.2").min_version,
        MinVersion::Tls12
    );
    assert_eq!(
        parse("{ cert_file: c, key_file: k }")
            .expect("default")
            .min_version,
        MinVersion::Tls12
    );
    for bad in ["\"1.1\"", "1.0", "TLS1.3", "1"] {
        let e = parse(&format!("{base}{bad} }}")).expect_err(bad);
        assert!(e.contains("expected \"1.2\" or \"1.3\""), "{bad}: {e}");
    }
    assert!(
        parse("{ cert_file: c, key_file: k, ca_file: x }")
            .expect_err("unknown key")
            .contains("ca_file")
    );
}

#[test]
fn unusable_files_are_errors_naming_the_field_and_the_file_never_their_content() {
    let dir = scratch("errors");
    let (cert, key, _) = self_signed("one");
    let (_, other_key, _) = self_signed("two");
    let good = config_in(&dir, &cert, &key);
    good.validate("receivers.otlp.grpc.tls").expect("usable");

    let at = "receivers.otlp.grpc.tls";
    let err = |config: &TlsConfig| config.validate(at).expect_err("unusable").to_string();

    let mut missing = good.clone();
    missing.cert_file = dir.join("nope.pem");
    let e = err(&missing);
    assert!(
        e.starts_with(&format!(
            "{at}.cert_file: {}: cannot read:",
            dir.join("nope.pem").display()
        )),
        "{e}"
    );

    std::fs::write(dir.join("empty.pem"), "just text\n").expect("write");
    let mut no_cert = good.clone();
    no_cert.cert_file = dir.join("empty.pem");
    let e = err(&no_cert);
    assert!(
        e.starts_with(&format!(
            "{at}.cert_file: {}: no certificate found",
            dir.join("empty.pem").display()
        )),
        "{e}"
    );

    std::fs::write(dir.join("other.key"), &other_key).expect("write");
    let mut mismatched = good.clone();
    mismatched.key_file = dir.join("other.key");
    let e = err(&mismatched);
    assert!(
        e.starts_with(&format!(
            "{at}.key_file: {}: ",
            dir.join("other.key").display()
        )) && e.contains("does not match the certificate"),
        "{e}"
    );

    // A half-written key: its first lines, then nothing.
    let half: String = key.lines().take(2).collect::<Vec<_>>().join("\n");
    std::fs::write(dir.join("half.key"), &half).expect("write");
    let mut truncated = good.clone();
    truncated.key_file = dir.join("half.key");
    let e = err(&truncated);
    assert!(e.starts_with(&format!("{at}.key_file: ")), "{e}");
    let body_line = key.lines().nth(1).expect("a base64 line");
    assert!(!e.contains(body_line) && !e.contains("BEGIN"), "{e}");

    let mut bad_ca = good.clone();
    bad_ca.client_ca_file = Some(dir.join("empty.pem"));
    let e = err(&bad_ca);
    assert!(
        e.starts_with(&format!(
            "{at}.client_ca_file: {}: no certificate found",
            dir.join("empty.pem").display()
        )),
        "{e}"
    );

    let mut never = good.clone();
    never.reload_interval = cujo_config::HumanDuration(Duration::ZERO);
    assert_eq!(
        err(&never),
        format!("{at}.reload_interval: must be greater than zero")
    );
}

#[tokio::test]
async fn a_reload_takes_a_new_version_and_refuses_an_unusable_one_keeping_the_last() {
    let dir = scratch("reload");
    let (cert, key, der) = self_signed("first");
    let config = config_in(&dir, &cert, &key);
    let tls = ServerTls::load(&config, "receivers.otlp.http.tls", "otlp-http").expect("load");
    let serving = |tls: &ServerTls| tls.0.current.read().expect("lock").clone();
    let first = serving(&tls);
    assert_eq!(tls.refresh().await, Reload::Unchanged);
    assert!(Arc::ptr_eq(&first, &serving(&tls)));
    assert_eq!(
        tls.0.not_after.load(Relaxed),
        not_after(&der).expect("expiry")
    );

    let (cert2, key2, _) = self_signed("second");
    config_in(&dir, &cert2, &key2);
    assert_eq!(tls.refresh().await, Reload::Applied);
    let second = serving(&tls);
    assert!(!Arc::ptr_eq(&first, &second));
    assert_eq!(tls.reloads(), (1, 0));

    std::fs::write(&config.key_file, "garbage, not a key\n").expect("write");
    let Reload::Refused(problem) = tls.refresh().await else {
        panic!("garbage is refused");
    };
    assert_eq!(problem.field, "key_file");
    assert_eq!(problem.path, config.key_file);
    assert!(
        Arc::ptr_eq(&second, &serving(&tls)),
        "the last good one stays"
    );
    assert_eq!(tls.reloads(), (1, 1));
    assert_eq!(
        tls.refresh().await,
        Reload::Unchanged,
        "not tried again until it changes"
    );
    assert_eq!(tls.reloads(), (1, 1));

    let mut out = prom::Exposition::new(prom::Format::Prometheus);
    render(std::slice::from_ref(&tls), &mut out);
    let text = out.finish();
    for line in [
        "cujo_tls_reloads_total{listener=\"otlp-http\",outcome=\"ok\"} 1",
        "cujo_tls_reloads_total{listener=\"otlp-http\",outcome=\"failed\"} 1",
        "cujo_tls_handshake_failures_total{listener=\"otlp-http\",reason=\"not_tls\"} 0",
        "cujo_tls_certificate_expiry_timestamp_seconds{listener=\"otlp-http\"} ",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn failed_handshakes_are_counted_by_reason() {
    let dir = scratch("handshake");
    let (cert, key, _) = self_signed("hs");
    let tls = ServerTls::load(&config_in(&dir, &cert, &key), "k", "admin").expect("load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");

    // A plaintext HTTP client.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (stream, peer) = listener.accept().await.expect("accept");
    assert!(
        tls.accept(stream, peer, Duration::from_secs(5))
            .await
            .is_none()
    );
    assert_eq!(tls.handshake_failures(HandshakeFailure::NotTls), 1);

    // A peer that connects and says nothing.
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let (stream, peer) = listener.accept().await.expect("accept");
    assert!(
        tls.accept(stream, peer, Duration::from_millis(50))
            .await
            .is_none()
    );
    assert_eq!(tls.handshake_failures(HandshakeFailure::Timeout), 1);

    // A peer that connects and leaves.
    drop(TcpStream::connect(addr).await.expect("connect"));
    let (stream, peer) = listener.accept().await.expect("accept");
    assert!(
        tls.accept(stream, peer, Duration::from_secs(5))
            .await
            .is_none()
    );
    assert_eq!(tls.handshake_failures(HandshakeFailure::Closed), 1);
}
