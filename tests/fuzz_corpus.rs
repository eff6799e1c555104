//! Every input the fuzz runs kept (`fuzz/corpus/<target>/`, the regression inputs among
//! them) goes through its target's checks on every test run, without libFuzzer or nightly
//! features: a decoder change that breaks on a known input fails here, in CI.

mod common;

#[path = "../fuzz/checks.rs"]
mod checks;

#[test]
fn every_kept_fuzz_input_passes_its_targets_checks() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, check) in checks::TARGETS {
        let inputs = common::walk_files(&corpus.join(target));
        assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty");
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target}: {} fails its checks", input.display());
        }
    }
}

#[test]
fn every_fuzz_target_has_its_checks_and_a_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut targets: Vec<String> = common::walk_files(&root.join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    let mut checked: Vec<String> = checks::TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    checked.sort();
    assert_eq!(targets, checked, "fuzz_targets/ and checks::TARGETS list the same targets");
}
