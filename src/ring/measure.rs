//! Measuring placement as the store does it: shares of stored bytes per backend, and bytes a
//! rebalance moves after a change of backends. Used by the unit tests and by the placement
//! benchmark (`benches/placement_table.rs`) that writes the table in docs/benchmarks.md.

use super::{BALANCE_PASSES, Ring, keep_window, write_window};
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
/// does (all but the fullest of the write window), otherwise on the first `pieces` of the
/// order alone (the pure function's shares).
pub fn place(ring: &Ring, pieces: usize, objects: &[(ObjectId, u64)], balanced: bool) -> Placement {
    let mut p = Placement { holders: Vec::with_capacity(objects.len()), bytes: vec![0; ring.len()] };
    for (id, size) in objects {
        let order = ring.order(id, pieces);
        let window = &order[..(if balanced { write_window(pieces) } else { pieces }).min(order.len())];
        let chosen = ring.pick(pieces, window, pieces.min(order.len()), fill(ring, &p.bytes));
        chosen.iter().for_each(|i| p.bytes[*i] += size);
        p.holders.push(chosen);
    }
    p
}

/// Bring `before` (placed by another ring; `renumber` maps its backend indices to `ring`'s,
/// `None` for a backend removed) to `ring`'s placement as `cuckoo rebalance` does. First
/// pass: pieces outside an object's keep window move to the backends of that window lacking
/// one, picked by fill. Second pass: pieces move from backends over their share to backends
/// of the write window under theirs (`balancing_move`); only after the first, or it would
/// fill backends the first pass still has to move pieces to. Returns the new placement and
/// bytes written.
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
        let order = ring.order(id, pieces);
        let keep = &order[..keep_window(pieces).min(order.len())];
        let mut kept: Vec<usize> = held.iter().filter_map(|i| renumber(*i)).collect();
        for surplus in kept.iter().filter(|i| !keep.contains(i)) {
            after.bytes[*surplus] -= size;
        }
        kept.retain(|i| keep.contains(i));
        let lacking = pieces.min(order.len()).saturating_sub(kept.len());
        let free: Vec<usize> = keep.iter().copied().filter(|i| !kept.contains(i)).collect();
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
            let mut window = ring.order(id, pieces);
            window.truncate(write_window(pieces));
            let free: Vec<usize> = window.iter().copied().filter(|i| !kept.contains(i)).collect();
            if let Some((from, to)) = super::balancing_move(&shares, &after.bytes, kept, &window, &free, *size) {
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

/// What a rebalance does after a change of backends.
#[derive(Debug, Clone)]
pub struct Movement {
    /// Bytes written, as a share of all stored bytes.
    pub moved: f64,
    /// The share the change requires to move: what the shrinking backends lose.
    pub ideal: f64,
    /// The share of stored bytes the backends removed held (at least what their removal
    /// must move, whatever their shares said).
    pub held: f64,
    /// The worst relative deviation from the new shares afterwards.
    pub deviation: f64,
    /// Each backend's share of stored bytes afterwards, and its target share.
    pub shares: Vec<(f64, f64)>,
}

/// Write `objects` into a pool of `before` backends (names and weights), change it to
/// `after` (a backend added, removed or reweighted, matched by name) and rebalance.
pub fn movement(
    before: &[(String, f64)],
    after: &[(String, f64)],
    pieces: usize,
    objects: &[(ObjectId, u64)],
) -> Movement {
    movements(&[before.to_vec(), after.to_vec()], pieces, objects).remove(0)
}

/// Write `objects` into a pool of the first backends of `pools`, then change it to each of
/// the others in turn, rebalancing after each change: what every step moves.
pub fn movements(pools: &[Vec<(String, f64)>], pieces: usize, objects: &[(ObjectId, u64)]) -> Vec<Movement> {
    let build = |m: &[(String, f64)]| Ring::new(m.iter().map(|(n, w)| (n.as_str(), *w))).expect("valid weights");
    let Some(first) = pools.first() else { return vec![] };
    let mut placed = place(&build(first), pieces, objects, true);
    let mut steps = Vec::new();
    for pair in pools.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let (from, to) = (build(before), build(after));
        let renumber = |i: usize| after.iter().position(|(n, _)| *n == before[i].0);
        let total: u64 = placed.bytes.iter().sum();
        let (result, written) = rebalance(&placed, renumber, &to, pieces, objects);
        let (old, new) = (from.shares(pieces), to.shares(pieces));
        let ideal = (0..before.len()).map(|i| (old[i] - renumber(i).map_or(0.0, |j| new[j])).max(0.0)).sum();
        let held = (0..before.len()).filter(|i| renumber(*i).is_none()).map(|i| placed.bytes[i]).sum::<u64>();
        let share = |bytes: u64| bytes as f64 / total.max(1) as f64;
        let (deviation, shares) = (result.deviation(&new), result.shares().into_iter().zip(new).collect());
        steps.push(Movement { moved: share(written), ideal, held: share(held), deviation, shares });
        placed = result;
    }
    steps
}
