//! The fuzz targets on stable Rust, without AFL++: every saved corpus input replayed (the
//! inputs AFL++ kept, and each crash found, fixed and kept as a regression input), then a
//! short deterministic mutation smoke from that corpus.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cujo_fuzz::TARGETS;
use cujo_fuzz::mutate::Mutator;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p, bytes)
        })
        .collect()
}

#[test]
fn every_saved_input_replays_without_a_finding() {
    for (target, run) in TARGETS {
        let inputs = corpus(target);
        assert!(
            inputs.len() >= 2,
            "{target}: a corpus of a few inputs at least"
        );
        for (path, bytes) in inputs {
            eprintln!("{target}: {}", path.display());
            run(&bytes);
        }
    }
}

/// Mutated inputs per target: seconds in a debug build.
const SMOKE_INPUTS: usize = 50_000;

#[test]
fn a_bounded_mutation_smoke_finds_nothing() {
    for (i, (target, run)) in TARGETS.into_iter().enumerate() {
        let inputs = corpus(target);
        let started = Instant::now();
        let mut m = Mutator::new(0x5eed + i as u64);
        // The state target's inputs are large; fewer of them take as long.
        let n = if target == "state" {
            SMOKE_INPUTS / 10
        } else {
            SMOKE_INPUTS
        };
        for k in 0..n {
            let (path, base) = &inputs[k % inputs.len()];
            let other = &inputs[(k * 7 + 3) % inputs.len()].1;
            let input = m.mutate(base, other, 1 << 20);
            if std::panic::catch_unwind(|| run(&input)).is_err() {
                let saved = std::env::temp_dir().join(format!("cujo-fuzz-{target}-{k}"));
                let _ = std::fs::write(&saved, &input);
                panic!(
                    "{target}: mutation {k} of {} failed; input saved to {}",
                    path.display(),
                    saved.display()
                );
            }
        }
        eprintln!("{target}: {n} mutated inputs in {:?}", started.elapsed());
    }
}
