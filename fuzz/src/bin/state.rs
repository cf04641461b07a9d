//! AFL++ entry of the `state` target, in persistent mode (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| cujo_fuzz::state::run(data));
}
