//! Measuring placement as the store does it: shares of stored bytes per backend, and bytes a
//! rebalance moves after a change of backends. Used by the unit tests and by the placement
//! benchmark (`benches/placement.rs`) that writes the table in docs/benchmarks.md.

use super::{BALANCE_PASSES, Ring};
use crate::id::ObjectId;

/// Objects as a pool holds them: ids, and stored sizes spread like compressed chunks
/// (64 KiB to 4 MiB).
pub fn sample(count: usize, salt: u64) -> Vec<(ObjectId, u64)> {
    (0..count as u64)
        .map(|i| {
            let id = ObjectId::of(&[salt.to_le_bytes(), i.to_le_bytes()].concat());
            (id, 65_536 + u64::from(id.0[9]) * 16_000)
        })
        .collect()
}

/// Where every object's pieces are, and the bytes each backend holds.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Per object, the backends holding its pieces.
    pub holders: Vec<Vec<usize>>,
    /// Stored bytes per backend.
    pub bytes: Vec<u64>,
}

impl Placement {
    /// Each backend's share of all stored bytes.
    pub fn shares(&self) -> Vec<f64> {
        let total: u64 = self.bytes.iter().sum();
        self.bytes.iter().map(|b| *b as f64 / total.max(1) as f64).collect()
    }

    /// The worst relative deviation of the stored shares from `want`.
    pub fn deviation(&self, want: &[f64]) -> f64 {
        self.shares().iter().zip(want).map(|(got, want)| (got / want - 1.0).abs()).fold(0.0, f64::max)
    }
}

/// How full backend `i` is for its weight: the store's measure.
fn fill(ring: &Ring, bytes: &[u64]) -> impl Fn(usize) -> f64 {
    move |i| bytes[i] as f64 / ring.weight(i)
}

/// Write `objects` of `pieces` pieces each into an empty pool: with `balanced`, as the store
/// does (the less full of the first `pieces + 1`), otherwise on the first `pieces` of the
/// order alone (the pure function's shares).
pub fn place(ring: &Ring, pieces: usize, objects: &[(ObjectId, u64)], balanced: bool) -> Placement {
    let mut p = Placement { holders: Vec::with_capacity(objects.len()), bytes: vec![0; ring.len()] };
    for (id, size) in objects {
        let order = ring.order(id, pieces);
        let window = &order[..(pieces + usize::from(balanced)).min(order.len())];
        let chosen = ring.pick(pieces, window, pieces.min(order.len()), fill(ring, &p.bytes));
        chosen.iter().for_each(|i| p.bytes[*i] += size);
        p.holders.push(chosen);
    }
    p
}

/// Bring `before` (placed by another ring; `renumber` maps its backend indices to `ring`'s,
/// `None` for a backend removed) to `ring`'s placement as `cuckoo rebalance` does. First
/// pass: pieces outside an object's first `pieces + 1` backends move to those lacking one,
/// picked by fill. Second pass: pieces move within windows from backends over their share to
/// backends under it (`balancing_move`); only after the first, or it would fill backends
/// the first pass still has to move pieces to. Returns the new placement and bytes written.
pub fn rebalance(
    before: &Placement,
    renumber: impl Fn(usize) -> Option<usize>,
    ring: &Ring,
    pieces: usize,
    objects: &[(ObjectId, u64)],
) -> (Placement, u64) {
    let mut bytes = vec![0u64; ring.len()];
    for (old, b) in before.bytes.iter().enumerate() {
        if let Some(new) = renumber(old) {
            bytes[new] += b;
        }
    }
    let mut after = Placement { holders: Vec::with_capacity(objects.len()), bytes };
    let mut written = 0;
    for ((id, size), held) in objects.iter().zip(&before.holders) {
        let window = window(ring, id, pieces);
        let mut kept: Vec<usize> = held.iter().filter_map(|i| renumber(*i)).collect();
        for surplus in kept.iter().filter(|i| !window.contains(i)) {
            after.bytes[*surplus] -= size;
        }
        kept.retain(|i| window.contains(i));
        let lacking = pieces.min(window.len()).saturating_sub(kept.len());
        let free: Vec<usize> = window.iter().copied().filter(|i| !kept.contains(i)).collect();
        for i in ring.pick(pieces, &free, lacking, fill(ring, &after.bytes)) {
            after.bytes[i] += size;
            written += size;
            kept.push(i);
        }
        after.holders.push(kept);
    }
    let shares = ring.shares(pieces);
    for _ in 0..BALANCE_PASSES {
        let mut moved = false;
        for ((id, size), kept) in objects.iter().zip(after.holders.iter_mut()) {
            let free: Vec<usize> = window(ring, id, pieces).into_iter().filter(|i| !kept.contains(i)).collect();
            if let Some((from, to)) = super::balancing_move(&shares, &after.bytes, kept, &free, *size) {
                kept.retain(|i| *i != from);
                kept.push(to);
                after.bytes[from] -= size;
                after.bytes[to] += size;
                written += size;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    (after, written)
}

fn window(ring: &Ring, id: &ObjectId, pieces: usize) -> Vec<usize> {
    let mut order = ring.order(id, pieces);
    order.truncate(pieces + 1);
    order
}

/// What a rebalance does after a change of backends.
#[derive(Debug, Clone, Copy)]
pub struct Movement {
    /// Bytes written, as a share of all stored bytes.
    pub moved: f64,
    /// The share the change requires to move: what the shrinking backends lose.
    pub ideal: f64,
    /// The worst relative deviation from the new shares afterwards.
    pub deviation: f64,
}

/// Write `objects` into a pool of `before` backends (names and weights), change it to
/// `after` (a backend added, removed or reweighted, matched by name) and rebalance.
pub fn movement(
    before: &[(String, f64)],
    after: &[(String, f64)],
    pieces: usize,
    objects: &[(ObjectId, u64)],
) -> Movement {
    let build = |m: &[(String, f64)]| Ring::new(m.iter().map(|(n, w)| (n.as_str(), *w))).expect("valid weights");
    let (from, to) = (build(before), build(after));
    let renumber = |i: usize| after.iter().position(|(n, _)| *n == before[i].0);
    let placed = place(&from, pieces, objects, true);
    let (result, written) = rebalance(&placed, renumber, &to, pieces, objects);
    let total: u64 = placed.bytes.iter().sum();
    let (old, new) = (from.shares(pieces), to.shares(pieces));
    let ideal = (0..before.len()).map(|i| (old[i] - renumber(i).map_or(0.0, |j| new[j])).max(0.0)).sum();
    Movement { moved: written as f64 / total.max(1) as f64, ideal, deviation: result.deviation(&new) }
}
