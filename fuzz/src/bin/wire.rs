//! AFL++ entry of the `wire` target, in persistent mode (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| cujo_fuzz::wire::run(data));
}
