//! Replays every input stored under `fuzz/corpus/<target>/` (what the fuzzer found worth
//! keeping, minimised by `scripts/fuzz.sh`) and `fuzz/regressions/<target>/` (each input that
//! once failed, kept by hand since minimisation may drop it) through the same checks the
//! cargo-fuzz targets run (fuzz/checks.rs), on stable, so that CI keeps every finding fixed.

use std::path::Path;

#[path = "../fuzz/checks.rs"]
mod checks;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut inputs: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.expect("a stored input").path())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => panic!("{}: {err}", dir.display()),
    };
    inputs.sort();
    inputs
}

#[test]
fn every_stored_fuzz_input_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, check) in checks::TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}: no input stored");
        for input in corpus
            .iter()
            .chain(&inputs(&root.join("regressions").join(name)))
        {
            let data = match std::fs::read(input) {
                Ok(data) => data,
                // A fuzzer running on the same corpus replaces inputs as it minimises them.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => panic!("{}: {err}", input.display()),
            };
            let replay = std::panic::catch_unwind(|| check(&data));
            assert!(
                replay.is_ok(),
                "{name}: {} fails its check",
                input.display()
            );
        }
    }
}
