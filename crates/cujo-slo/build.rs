//! Generates the `cujo.v1` status API (messages, tonic client and server) from
//! `proto/cujo/v1/slo.proto`. The .proto is parsed in Rust by `protox`, so building cujo needs
//! no `protoc`.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = "cujo/v1/slo.proto";
    println!("cargo:rerun-if-changed={}", root.join(file).display());
    let descriptors = match protox::compile([file], [&root]) {
        Ok(d) => d,
        Err(e) => fail(&format!("{}: {e}", root.join(file).display())),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)
    {
        fail(&format!("generating the cujo.v1 status API: {e}"));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
