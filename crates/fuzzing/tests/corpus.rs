//! Replays every committed corpus file (`fuzz/corpus/<target>/`) and every
//! crash regression (`fuzz/regressions/<target>/`) through its target's
//! body, so that `cargo test --workspace` runs them without libFuzzer; and
//! checks that the committed seeds are the ones `seeds.rs` makes.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use ferrite_fuzzing::{seeds, Bounded, TARGETS};

/// An allocation over a body's bound aborts the replay, as it crashes a
/// fuzz target.
#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files directly in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Panics seen anywhere in the process, including in tasks a target spawns
/// (tokio catches those, so they would not fail the input by themselves).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

#[test]
fn every_corpus_file_and_regression_replays_cleanly() {
    count_panics();
    let mut failures = Vec::new();
    for &(target, body) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            !corpus.is_empty(),
            "no seeds for {target} in fuzz/corpus: see seeds.rs"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in corpus.iter().chain(&regressions) {
            let data = fs::read(path).expect("read a corpus file");
            ferrite_fuzzing::name_input(Box::leak(path.display().to_string().into_boxed_str()));
            let before = PANICS.load(Ordering::SeqCst);
            let result = panic::catch_unwind(AssertUnwindSafe(|| body(&data)));
            if result.is_err() || PANICS.load(Ordering::SeqCst) != before {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

#[test]
fn the_committed_seeds_are_the_generated_ones() {
    let mut stale = Vec::new();
    for seed in seeds::all() {
        let path = fuzz_dir().join("corpus").join(seed.target).join(&seed.name);
        if fs::read(&path).ok().as_ref() != Some(&seed.bytes) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "seeds missing or out of date (rewrite them with \
         `cargo test -p ferrite-fuzzing --test corpus -- --ignored write_seeds`): {stale:#?}"
    );
}

#[test]
fn seeds_are_small() {
    let mut per_target: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in seeds::all() {
        assert!(
            seed.bytes.len() <= 8 << 10,
            "{}/{}: {} bytes",
            seed.target,
            seed.name,
            seed.bytes.len()
        );
        *per_target.entry(seed.target).or_default() += 1;
    }
    for (target, count) in per_target {
        assert!(count <= 50, "{target}: {count} seeds");
    }
}

/// Rewrites `fuzz/corpus/<target>/` with the generated seeds (and nothing
/// else).
#[test]
#[ignore = "writes fuzz/corpus; run by hand after a format change"]
fn write_seeds() {
    let seeds = seeds::all();
    for &(target, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        for old in files(&dir) {
            fs::remove_file(old).expect("remove an old seed");
        }
        fs::create_dir_all(&dir).expect("create the corpus directory");
    }
    for seed in seeds {
        let path = fuzz_dir().join("corpus").join(seed.target).join(&seed.name);
        fs::write(path, &seed.bytes).expect("write a seed");
    }
}
