//! AFL++ entry of the `otlp_json` target, in persistent mode (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| cujo_fuzz::otlp_json::run(data));
}
