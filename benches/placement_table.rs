//! The placement table of docs/benchmarks.md: how close each backend's stored bytes come to
//! its weight share under every redundancy scheme, and how much a rebalance moves when a
//! backend is added, removed or reweighted, against the ideal. Deterministic (objects are
//! hashes of counters), so a run on any machine prints the same table.
//!
//! Run: `cargo bench --bench placement_table`

use cuckoo::internals::ring::measure::{movement, place, sample};
use cuckoo::internals::ring::{Ring, inclusion};

const SCHEMES: [(&str, usize); 5] =
    [("none", 1), ("copies=2", 2), ("copies=3", 3), ("erasure=3+2", 5), ("erasure=4+2", 6)];

fn build(members: &[(String, f64)]) -> Ring {
    Ring::new(members.iter().map(|(n, w)| (n.as_str(), *w))).expect("valid weights")
}

fn pool(weights: &[f64]) -> Vec<(String, f64)> {
    weights.iter().enumerate().map(|(i, w)| (format!("backend-{i}"), *w)).collect()
}

/// Worst relative deviation from the weight share if the first `pieces` of a plain
/// weighted rendezvous order were taken (the placement before weight sets), exactly.
fn plain_deviation(weights: &[f64], ring: &Ring, pieces: usize) -> f64 {
    let pi = inclusion(weights, pieces);
    let want = ring.shares(pieces);
    pi.iter().zip(&want).map(|(p, w)| (p / pieces as f64 / w - 1.0).abs()).fold(0.0, f64::max)
}

/// Worst relative deviation of the weight set's exact odds from the shares.
fn exact_deviation(ring: &Ring, pieces: usize) -> f64 {
    let set = ring.set(pieces);
    let free: Vec<usize> = (0..ring.len()).filter(|i| !set.always[*i]).collect();
    let slots = pieces - (ring.len() - free.len());
    if slots == 0 {
        return 0.0;
    }
    let pi = inclusion(&free.iter().map(|i| set.draw[*i]).collect::<Vec<_>>(), slots);
    free.iter().zip(&pi).map(|(i, p)| (p / pieces as f64 / set.share[*i] - 1.0).abs()).fold(0.0, f64::max)
}

/// Bytes a rebalance writes from `before` to `after`, over the ideal (what shrinking
/// backends lose), and the worst deviation from the shares afterwards.
fn rebalanced(before: &[(String, f64)], after: &[(String, f64)], pieces: usize) -> String {
    let m = movement(before, after, pieces, &sample(20_000, 7));
    format!("{:.2} × ({:.1} %)", m.moved / m.ideal, 100.0 * m.deviation)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` (CI's smoke run) does not, and
    // gets one small pool, enough to show the table still builds and runs.
    let sizes: &[usize] = if std::env::args().any(|a| a == "--bench") { &[3, 5, 7, 20, 50] } else { &[5] };
    let pools: Vec<(String, Vec<f64>)> = sizes
        .iter()
        .map(|m| {
            let weights: Vec<f64> = (0..*m).map(|i| 1.0 + (i * 7 % 10) as f64).collect();
            (format!("{m} backends, 1:10"), weights)
        })
        .chain((sizes.len() > 1).then(|| ("issue's 1/2/3".to_string(), vec![1.0, 2.0, 3.0])))
        .collect();
    println!(
        "| pool | scheme | feasible | plain top-N (before) | weight sets, exact | stored, 1,300 objects | stored, 20,000 objects | add one | remove one | double one |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, weights) in &pools {
        let members = pool(weights);
        let ring = build(&members);
        for (scheme, pieces) in SCHEMES.iter().filter(|(_, p)| *p < weights.len()) {
            let want = ring.shares(*pieces);
            let stored = |n: usize| 100.0 * place(&ring, *pieces, &sample(n, 6), true).deviation(&want);
            let mut added = members.clone();
            added.push(("backend-new".into(), 5.0));
            let mut reweighted = members.clone();
            reweighted[0].1 *= 2.0;
            println!(
                "| {label} | {scheme} | {} | {:.1} % | {:.5} % | {:.1} % | {:.1} % | {} | {} | {} |",
                if ring.feasible(*pieces) { "yes" } else { "no: capped at 1/n" },
                100.0 * plain_deviation(weights, &ring, *pieces),
                100.0 * exact_deviation(&ring, *pieces),
                stored(1_300),
                stored(20_000),
                rebalanced(&members, &added, *pieces),
                rebalanced(&members, &members[1..], *pieces),
                rebalanced(&members, &reweighted, *pieces),
            );
        }
    }
}
