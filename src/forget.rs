//! Retention policies: which snapshots `forget --keep-…` keeps, and why.
//!
//! Owns: the policy and its evaluation, a pure function of the snapshot list. Must not:
//! delete anything (the repository removes snapshot records; data goes only by prune).
//!
//! As in restic: snapshots are grouped by host and paths; in each group, newest first,
//! `last` keeps the N newest, and each of `hourly`…`yearly` keeps the newest snapshot of
//! each of the N most recent hours (days, ISO weeks, months, years) that have one. A
//! snapshot carrying a tag in `tags` is always kept. Times are UTC.

use std::collections::{BTreeMap, HashSet};

use crate::id::ObjectId;
use crate::model::Snapshot;

/// What to keep. An empty policy keeps nothing (the caller refuses that).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N.
    pub last: Option<u32>,
    /// The newest of each of the last N hours with snapshots.
    pub hourly: Option<u32>,
    /// … days.
    pub daily: Option<u32>,
    /// … ISO weeks (Monday first).
    pub weekly: Option<u32>,
    /// … calendar months.
    pub monthly: Option<u32>,
    /// … calendar years.
    pub yearly: Option<u32>,
    /// Snapshots with any of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// True when no rule is set. As in restic, a count of 0 is no rule: `--keep-last 0`
    /// alone is not a policy that forgets everything.
    pub fn is_empty(&self) -> bool {
        let counts = [self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly];
        counts.iter().all(|n| n.unwrap_or(0) == 0) && self.tags.is_empty()
    }
}

/// A snapshot and the reasons it is kept (empty: it goes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: ObjectId,
    /// Why it stays: "last", "daily", "tag:x", …
    pub reasons: Vec<String>,
}

/// Snapshots are grouped by host and paths.
type Group = (String, Vec<String>);
/// Maps seconds since the epoch to an hour, day, week, month or year number.
type Bucket = fn(i64) -> i64;

/// Apply `policy` to `snapshots`; one decision per snapshot, newest first within groups.
pub fn apply(snapshots: &[(ObjectId, Snapshot)], policy: &Policy) -> Vec<Decision> {
    let mut groups: BTreeMap<Group, Vec<&(ObjectId, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry((s.1.hostname.clone(), s.1.paths.clone())).or_default().push(s);
    }
    let tags: HashSet<&String> = policy.tags.iter().collect();
    let mut out = Vec::new();
    for (_, mut group) in groups {
        group.sort_by_key(|s| std::cmp::Reverse((s.1.time_ns, s.0)));
        let mut decisions: Vec<Decision> = group.iter().map(|(id, _)| Decision { id: *id, reasons: vec![] }).collect();
        if let Some(n) = policy.last {
            for d in decisions.iter_mut().take(n as usize) {
                d.reasons.push("last".into());
            }
        }
        let rules: [(Option<u32>, &str, Bucket); 5] = [
            (policy.hourly, "hourly", |t| t.div_euclid(3_600)),
            (policy.daily, "daily", |t| t.div_euclid(86_400)),
            (policy.weekly, "weekly", |t| (t.div_euclid(86_400) + 3).div_euclid(7)),
            (policy.monthly, "monthly", |t| month_index(t.div_euclid(86_400))),
            (policy.yearly, "yearly", |t| month_index(t.div_euclid(86_400)).div_euclid(12)),
        ];
        for (n, name, bucket) in rules {
            let Some(n) = n else { continue };
            let mut seen = HashSet::new();
            for (i, (_, s)) in group.iter().enumerate() {
                if seen.len() >= n as usize {
                    break;
                }
                if seen.insert(bucket(s.time_ns.div_euclid(1_000_000_000))) {
                    decisions[i].reasons.push(name.into());
                }
            }
        }
        for (i, (_, s)) in group.iter().enumerate() {
            for t in s.tags.iter().filter(|t| tags.contains(t)) {
                decisions[i].reasons.push(format!("tag:{t}"));
            }
            // The drive's current state is not a backup to retire: only its own commits
            // replace it.
            if s.tags.iter().any(|t| t == crate::model::DRIVE_HEAD_TAG) {
                decisions[i].reasons.push("drive head".into());
            }
        }
        out.extend(decisions);
    }
    out
}

/// Months since January 1970 for a day number (days since 1970-01-01), by the civil-from-days
/// algorithm (proleptic Gregorian calendar).
fn month_index(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year - 1970) * 12 + (month - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Summary;

    const DAY: i64 = 86_400;

    fn snap(day: i64, hour: i64, tags: &[&str]) -> (ObjectId, Snapshot) {
        let time_ns = (day * DAY + hour * 3_600) * 1_000_000_000;
        let s = Snapshot {
            time_ns,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec!["/p".into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            tree: ObjectId([0; 32]),
            tree_pack: ObjectId([0; 32]),
            parent: None,
            summary: Summary::default(),
            program_version: String::new(),
        };
        (ObjectId::of(&time_ns.to_le_bytes()), s)
    }

    fn kept(snaps: &[(ObjectId, Snapshot)], policy: &Policy) -> Vec<i64> {
        let decisions = apply(snaps, policy);
        let mut days: Vec<i64> = decisions
            .iter()
            .filter(|d| !d.reasons.is_empty())
            .map(|d| snaps.iter().find(|s| s.0 == d.id).unwrap().1.time_ns / 1_000_000_000 / 3_600)
            .collect();
        days.sort();
        days
    }

    #[test]
    fn calendar_months_are_right() {
        assert_eq!(month_index(0), 0); // 1970-01-01
        assert_eq!(month_index(31), 1); // 1970-02-01
        assert_eq!(month_index(30), 0); // 1970-01-31
        assert_eq!(month_index(19_782), 54 * 12 + 1); // 2024-02-29
        assert_eq!(month_index(19_783), 54 * 12 + 2); // 2024-03-01
        assert_eq!(month_index(-1), -1); // 1969-12-31
    }

    #[test]
    fn daily_keeps_the_newest_of_each_recent_day() {
        // Two snapshots a day for ten days.
        let snaps: Vec<_> = (0..10).flat_map(|d| [snap(d, 1, &[]), snap(d, 13, &[])]).collect();
        let policy = Policy { daily: Some(3), ..Policy::default() };
        assert_eq!(kept(&snaps, &policy), vec![7 * 24 + 13, 8 * 24 + 13, 9 * 24 + 13]);
        let policy = Policy { last: Some(2), daily: Some(2), tags: vec!["keep".into()], ..Policy::default() };
        let mut snaps = snaps;
        snaps.push(snap(0, 5, &["keep"]));
        assert_eq!(kept(&snaps, &policy), vec![5, 8 * 24 + 13, 9 * 24 + 1, 9 * 24 + 13]);
    }

    #[test]
    fn groups_are_separate_and_empty_policy_keeps_nothing() {
        let mut other = snap(1, 1, &[]);
        other.1.hostname = "other".into();
        let snaps = vec![snap(1, 1, &[]), snap(2, 1, &[]), other];
        let decisions = apply(&snaps, &Policy { last: Some(1), ..Policy::default() });
        assert_eq!(decisions.iter().filter(|d| !d.reasons.is_empty()).count(), 2);
        assert!(apply(&snaps, &Policy::default()).iter().all(|d| d.reasons.is_empty()));
        assert!(Policy::default().is_empty());
    }

    #[test]
    fn the_drive_head_is_always_kept() {
        let snaps = vec![snap(1, 1, &[crate::model::DRIVE_HEAD_TAG]), snap(2, 1, &[]), snap(3, 1, &["drive"])];
        let decisions = apply(&snaps, &Policy { last: Some(1), ..Policy::default() });
        let kept: Vec<&Decision> = decisions.iter().filter(|d| !d.reasons.is_empty()).collect();
        assert_eq!(kept.len(), 2, "{decisions:?}");
        assert!(decisions.iter().any(|d| d.id == snaps[0].0 && d.reasons == ["drive head"]));
    }
}
