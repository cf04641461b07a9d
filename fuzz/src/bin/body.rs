//! AFL++ entry of the `body` target, in persistent mode (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| cujo_fuzz::body::run(data));
}
