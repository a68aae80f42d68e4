//! Replays every input stored under `fuzz/corpus/<target>/` through the same checks the
//! cargo-fuzz targets run (fuzz/checks.rs), on stable, so that CI keeps every finding fixed and
//! every seed passing. New findings are added there by `scripts/fuzz.sh`.

#[path = "../fuzz/checks.rs"]
mod checks;

#[test]
fn every_stored_fuzz_input_passes_its_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, check) in checks::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{}: no input stored", dir.display());
        for input in inputs {
            let data = std::fs::read(&input).expect("a corpus file");
            let replay = std::panic::catch_unwind(|| check(&data));
            assert!(
                replay.is_ok(),
                "{name}: {} fails its check",
                input.display()
            );
        }
    }
}
