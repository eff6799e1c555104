//! Weight sets: the weights backends draw with when an object's pieces go to the first `n`
//! backends of its rendezvous order, chosen so that each backend holds its weight share of
//! the pieces.
//!
//! Why they are needed: taking the first `n` of a weighted race is sampling without
//! replacement, and its inclusion probabilities are flatter than the weights (a backend of
//! weight 1 beside ones of 2 and 3 is the second choice more often than its weight says).
//! Ceph's straw2 has the same skew and corrects it with weight sets computed offline; here
//! they are computed exactly from the weights, so every machine derives the same ones.
//!
//! How: a draw `ln(u) / w` ranks like an exponential arrival time of rate `w`, so backend
//! `i` is among the first `n` when fewer than `n` others arrive before it:
//! `π_i = ∫ w_i e^(-w_i t) P(fewer than n of the others by t) dt`, where the count of others
//! is a Poisson-binomial. The integral is taken numerically over `ln t`; the weights are
//! then solved by Newton's method (`solve`) until every `π_i` is within a ten-millionth of
//! its target. A backend whose weight share is 1/n or more cannot hold
//! more than one piece of every object: it is marked `always` (first in every order), and
//! the others share the remaining pieces by weight.

/// Draw weights for objects of `n` pieces, and what each backend gets with them.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightSet {
    /// Backends that hold a piece of every object (their weight share is 1/n or more).
    pub always: Vec<bool>,
    /// The weight each backend draws with (for `always` backends, their own).
    pub draw: Vec<f64>,
    /// Each backend's expected share of all pieces.
    pub share: Vec<f64>,
}

/// Relative error at which the fixed point stops: far below the sampling noise of any pool.
const TOLERANCE: f64 = 1e-7;
/// Far more than needed: Newton takes 3 to 8 rounds on the cases tested (3 to 50 backends,
/// 1:10, up to six pieces, one near certain inclusion).
const MAX_ROUNDS: usize = 50;
/// Step of the integration over `ln t`: the integrand varies on a scale of about one.
const STEP: f64 = 0.04;

/// The weight set for objects of `n` pieces over backends of `weights` (all positive).
pub fn weight_set(weights: &[f64], n: usize) -> WeightSet {
    let m = weights.len();
    let always = saturated(weights, n);
    let rest: Vec<usize> = (0..m).filter(|i| !always[*i]).collect();
    let slots = n.min(m) - (m - rest.len());
    let mut draw = weights.to_vec();
    let mut share = vec![0.0; m];
    for i in (0..m).filter(|i| always[*i]) {
        // With fewer backends than pieces, each holds an equal part of every object.
        share[i] = 1.0 / n.min(m) as f64;
    }
    if slots > 0 {
        let sub: Vec<f64> = rest.iter().map(|i| weights[*i]).collect();
        let total: f64 = sub.iter().sum();
        let target: Vec<f64> = sub.iter().map(|w| slots as f64 * w / total).collect();
        let adjusted = if slots == 1 { sub.clone() } else { solve(&target, slots) };
        for (k, i) in rest.iter().enumerate() {
            draw[*i] = adjusted[k];
            share[*i] = target[k] / n as f64;
        }
    }
    WeightSet { always, draw, share }
}

/// Which backends hold a piece of every object: water-filling, since capping one at 1/n
/// raises the others' shares of what is left.
fn saturated(weights: &[f64], n: usize) -> Vec<bool> {
    let m = weights.len();
    let mut always = vec![false; m];
    loop {
        let rest: Vec<usize> = (0..m).filter(|i| !always[*i]).collect();
        let slots = n.saturating_sub(m - rest.len());
        if rest.len() <= slots {
            rest.iter().for_each(|i| always[*i] = true);
            return always;
        }
        let total: f64 = rest.iter().map(|i| weights[*i]).sum();
        let over: Vec<usize> =
            rest.iter().copied().filter(|i| slots as f64 * weights[*i] / total >= 1.0 - 1e-12).collect();
        if over.is_empty() {
            return always;
        }
        over.iter().for_each(|i| always[*i] = true);
    }
}

/// Draw weights whose first-`n` inclusion probabilities are `target` (each below 1).
///
/// Newton's method on the log-weights, the Jacobian taken by finite differences: the odds
/// are strongly coupled (they always sum to `n`), so correcting each weight alone stalls
/// when one backend is near certain inclusion. The last weight stays fixed (only ratios
/// matter) and its equation is left out (it follows from the others). Steps are halved
/// until the worst error shrinks.
fn solve(target: &[f64], n: usize) -> Vec<f64> {
    let m = target.len();
    let error = |pi: &[f64]| target.iter().zip(pi).map(|(t, p)| (t / p).ln().abs()).fold(0.0, f64::max);
    let mut w = target.to_vec();
    let mut pi = inclusion(&w, n);
    for _ in 0..MAX_ROUNDS {
        let now = error(&pi);
        if now < TOLERANCE {
            break;
        }
        let k = m - 1;
        let mut jacobian = vec![vec![0.0; k]; k];
        for j in 0..k {
            let mut nudged = w.clone();
            nudged[j] *= DELTA.exp();
            let moved = inclusion(&nudged, n);
            for i in 0..k {
                jacobian[i][j] = (moved[i] - pi[i]) / DELTA;
            }
        }
        let rhs: Vec<f64> = (0..k).map(|i| target[i] - pi[i]).collect();
        let Some(step) = linear_solve(jacobian, rhs) else { break };
        let mut scale = 1.0;
        loop {
            let mut next = w.clone();
            for j in 0..k {
                next[j] *= (step[j] * scale).exp();
            }
            let next_pi = inclusion(&next, n);
            if error(&next_pi) < now || scale < 1e-4 {
                (w, pi) = (next, next_pi);
                break;
            }
            scale /= 2.0;
        }
    }
    let top = w.iter().copied().fold(0.0, f64::max);
    w.iter().map(|x| x / top).collect()
}

/// Log-weight nudge for the finite differences.
const DELTA: f64 = 1e-5;

/// `x` with `a x = b`, by Gaussian elimination with partial pivoting; `None` if singular.
fn linear_solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let k = b.len();
    for col in 0..k {
        let pivot = (col..k).max_by(|x, y| a[*x][col].abs().total_cmp(&a[*y][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..k {
            let (upper, lower) = a.split_at_mut(row);
            let (pivot_row, this) = (&upper[col], &mut lower[0]);
            let f = this[col] / pivot_row[col];
            for (x, p) in this[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; k];
    for row in (0..k).rev() {
        let s: f64 = (row + 1..k).map(|c| a[row][c] * x[c]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// The probability that each backend is among the first `n` of a race of rates `w`.
pub fn inclusion(w: &[f64], n: usize) -> Vec<f64> {
    let m = w.len();
    if n >= m {
        return vec![1.0; m];
    }
    let (lo, hi) = w.iter().fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    // From where the fastest has arrived with odds 1e-10 to where the slowest has with odds
    // 1 - e^-40.
    let (start, end) = ((1e-10 / hi).ln(), (40.0 / lo).ln());
    let steps = (((end - start) / STEP).ceil() as usize).next_multiple_of(2);
    let h = (end - start) / steps as f64;
    let mut pi = vec![0.0; m];
    let mut before = vec![0.0; (m + 1) * n];
    let mut after = vec![0.0; (m + 1) * n];
    let mut arrived = vec![0.0; m];
    for s in 0..=steps {
        let t = (start + s as f64 * h).exp();
        let simpson = if s == 0 || s == steps {
            1.0
        } else if s % 2 == 1 {
            4.0
        } else {
            2.0
        };
        for (a, wj) in arrived.iter_mut().zip(w) {
            *a = -(-wj * t).exp_m1();
        }
        counts(&arrived, n, &mut before, &mut after);
        for i in 0..m {
            let fewer = fewer_than_n_others(&before[i * n..(i + 1) * n], &after[(i + 1) * n..(i + 2) * n]);
            // The arrival density of i at t, times dt/d(ln t) = t.
            let density = w[i] * (-w[i] * t).exp() * t * fewer;
            pi[i] += simpson * density;
        }
    }
    pi.iter().map(|a| a * h / 3.0).collect()
}

/// `before[j]`: odds that exactly c of backends 0..j have arrived (c < n); `after[j]`: the
/// same for backends j..m. Counts of n or more are dropped: they are never wanted.
fn counts(arrived: &[f64], n: usize, before: &mut [f64], after: &mut [f64]) {
    let m = arrived.len();
    before[..n].fill(0.0);
    before[0] = 1.0;
    for (j, p) in arrived.iter().enumerate() {
        for c in 0..n {
            let carried = if c > 0 { before[j * n + c - 1] * p } else { 0.0 };
            before[(j + 1) * n + c] = before[j * n + c] * (1.0 - p) + carried;
        }
    }
    after[m * n..].fill(0.0);
    after[m * n] = 1.0;
    for j in (0..m).rev() {
        let p = arrived[j];
        for c in 0..n {
            let carried = if c > 0 { after[(j + 1) * n + c - 1] * p } else { 0.0 };
            after[j * n + c] = after[(j + 1) * n + c] * (1.0 - p) + carried;
        }
    }
}

/// Odds that fewer than `n` backends other than i have arrived, from the counts on either
/// side of it.
fn fewer_than_n_others(before: &[f64], after: &[f64]) -> f64 {
    let n = before.len();
    let mut cumulative = vec![0.0; n];
    let mut sum = 0.0;
    for (c, a) in after.iter().enumerate() {
        sum += a;
        cumulative[c] = sum;
    }
    before.iter().enumerate().map(|(a, b)| b * cumulative[n - 1 - a]).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inclusion by brute force over every ordering's probability, for small cases.
    fn exact(w: &[f64], n: usize) -> Vec<f64> {
        fn walk(w: &[f64], n: usize, taken: &mut Vec<usize>, p: f64, out: &mut [f64]) {
            if taken.len() == n {
                taken.iter().for_each(|i| out[*i] += p);
                return;
            }
            let left: f64 = (0..w.len()).filter(|i| !taken.contains(i)).map(|i| w[i]).sum();
            for i in 0..w.len() {
                if !taken.contains(&i) {
                    taken.push(i);
                    walk(w, n, taken, p * w[i] / left, out);
                    taken.pop();
                }
            }
        }
        let mut out = vec![0.0; w.len()];
        walk(w, n, &mut vec![], 1.0, &mut out);
        out
    }

    #[test]
    fn inclusion_matches_sampling_without_replacement() {
        for (w, n) in [(vec![1.0, 2.0, 3.0], 2), (vec![1.0, 10.0, 3.0, 7.0, 2.0], 3), (vec![5.0, 1.0, 1.0, 1.0], 2)] {
            let (got, want) = (inclusion(&w, n), exact(&w, n));
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 1e-7, "{w:?} n={n}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn solved_weights_give_weight_shares() {
        for (w, n) in [(vec![2.0, 3.0, 4.0], 2), (vec![1.0, 10.0, 3.0, 7.0, 2.0, 4.0, 9.0], 3), (vec![1.0; 7], 6)] {
            let set = weight_set(&w, n);
            let pi = exact(&set.draw, n);
            let total: f64 = w.iter().sum();
            for (i, p) in pi.iter().enumerate() {
                assert!((p / n as f64 - w[i] / total).abs() < 1e-6, "{w:?} n={n}: {pi:?}");
                assert!((set.share[i] - w[i] / total).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn a_backend_over_one_nth_holds_a_piece_of_everything() {
        // 8 of 10 is over one half: b3 holds every object once, b1 and b2 split the rest.
        let set = weight_set(&[1.0, 1.0, 8.0], 2);
        assert_eq!(set.always, vec![false, false, true]);
        assert_eq!(set.share, vec![0.25, 0.25, 0.5]);
        // Capping one raises the next over the line: with three pieces, 20 of 26 is capped,
        // then 4 of the remaining 6 takes more than one of the two pieces left.
        let set = weight_set(&[1.0, 1.0, 4.0, 20.0], 3);
        assert_eq!(set.always, vec![false, false, true, true]);
        assert_eq!(set.share[0], 1.0 / 6.0);
        // More pieces than backends: everything everywhere.
        assert_eq!(weight_set(&[1.0, 2.0], 3).always, vec![true, true]);
    }

    /// Found by the property test: with five pieces on six backends, one backend's target
    /// odds were 0.997, and correcting each weight alone stalled 5e-4 short of them.
    #[test]
    fn regression_a_backend_just_below_certain_inclusion_gets_its_share() {
        let w = [
            4.449222455591404,
            9.799631211740893,
            6.87821811666672,
            2.249624106683451,
            6.659252908216138,
            8.067094956759858,
        ];
        let set = weight_set(&w, 5);
        let free: Vec<usize> = (0..w.len()).filter(|i| !set.always[*i]).collect();
        let pi = inclusion(&free.iter().map(|i| set.draw[*i]).collect::<Vec<_>>(), 2);
        for (k, i) in free.iter().enumerate() {
            assert!((pi[k] / 5.0 / set.share[*i] - 1.0).abs() < 1e-6, "{pi:?} vs {:?}", set.share);
        }
    }
}
