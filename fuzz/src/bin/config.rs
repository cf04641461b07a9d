//! AFL++ entry of the `config` target, in persistent mode (see docs/fuzzing.md).

fn main() {
    afl::fuzz!(|data: &[u8]| cujo_fuzz::config::run(data));
}
