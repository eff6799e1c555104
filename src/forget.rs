//! Retention policies: which snapshots `forget --keep-…` keeps, and why.
//!
//! Owns: the policy and its evaluation, a pure function of the snapshot list. Must not:
//! delete anything (the repository removes snapshot records; data goes only by prune).
//!
//! As in restic: snapshots are grouped (by host and paths unless `group_by` says otherwise);
//! in each group, newest first, `last` keeps the N newest, and each of `hourly`…`yearly`
//! keeps the newest snapshot of each of the N most recent hours (days, ISO weeks, months,
//! years) that have one. `within` keeps every snapshot made within a duration of the
//! group's newest, and `within_hourly`…`within_yearly` keep the newest of each hour (…) in
//! such a window. A snapshot carrying a tag in `tags` is always kept. Times are UTC.

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
    /// Every snapshot within this span of the group's newest.
    pub within: Option<Span>,
    /// The newest of each hour, day, ISO week, month and year within these spans of the
    /// group's newest.
    pub within_hourly: Option<Span>,
    /// … days.
    pub within_daily: Option<Span>,
    /// … ISO weeks.
    pub within_weekly: Option<Span>,
    /// … months.
    pub within_monthly: Option<Span>,
    /// … years.
    pub within_yearly: Option<Span>,
    /// What snapshots are grouped by before the rules apply.
    pub group_by: GroupBy,
}

/// What `forget` groups snapshots by: restic's `--group-by host,paths,tags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// Snapshots of different hosts are kept apart.
    pub host: bool,
    /// … of different path lists.
    pub paths: bool,
    /// … of different tag sets.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy { host: true, paths: true, tags: false }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    /// A comma-separated list of `host`, `paths` and `tags`; empty groups everything together.
    fn from_str(s: &str) -> std::result::Result<GroupBy, String> {
        let mut g = GroupBy { host: false, paths: false, tags: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => return Err(format!("cannot group by '{other}': use host, paths and/or tags")),
            }
        }
        Ok(g)
    }
}

/// A calendar span as restic writes it: `1y5m7d2h` (years, months, days, hours; any part
/// may be left out, months are calendar months).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    /// Years.
    pub years: i32,
    /// Calendar months.
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Hours.
    pub hours: i32,
}

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Span, String> {
        let bad = || format!("'{s}' is not a duration: use y, m, d and h, as in 7d, 1y6m or 12h");
        let mut span = Span::default();
        let mut digits = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: i32 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            match c {
                'y' => span.years += n,
                'm' => span.months += n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => return Err(bad()),
            }
        }
        if !digits.is_empty() || s.trim().is_empty() {
            return Err(bad());
        }
        Ok(span)
    }
}

impl Span {
    /// The instant this span before `time_ns` (calendar arithmetic in UTC; a day of month
    /// that does not exist in the target month is clamped to its last day).
    fn before(&self, time_ns: i64) -> i64 {
        use chrono::{Months, TimeZone, Utc};
        let t = Utc.timestamp_nanos(time_ns);
        let months = self.years.saturating_mul(12).saturating_add(self.months).max(0) as u32;
        let t = t.checked_sub_months(Months::new(months)).unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let t = t - chrono::Duration::days(self.days.into()) - chrono::Duration::hours(self.hours.into());
        t.timestamp_nanos_opt().unwrap_or(i64::MIN)
    }
}

impl Policy {
    /// True when no rule is set. As in restic, a count of 0 is no rule: `--keep-last 0`
    /// alone is not a policy that forgets everything.
    pub fn is_empty(&self) -> bool {
        let counts = [self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly];
        let spans = [
            self.within,
            self.within_hourly,
            self.within_daily,
            self.within_weekly,
            self.within_monthly,
            self.within_yearly,
        ];
        counts.iter().all(|n| n.unwrap_or(0) == 0) && self.tags.is_empty() && spans.iter().all(Option::is_none)
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

/// The key snapshots are grouped by: host, paths and tags, each left empty when not grouped by.
type Group = (String, Vec<String>, Vec<String>);
/// Maps seconds since the epoch to an hour, day, week, month or year number.
type Bucket = fn(i64) -> i64;

/// The calendar buckets of `--keep-hourly`… and `--keep-within-hourly`…, in that order.
const BUCKETS: [(&str, Bucket); 5] = [
    ("hourly", |t| t.div_euclid(3_600)),
    ("daily", |t| t.div_euclid(86_400)),
    // ISO weeks start on Monday; 1970-01-01 was a Thursday.
    ("weekly", |t| (t.div_euclid(86_400) + 3).div_euclid(7)),
    ("monthly", |t| month_index(t.div_euclid(86_400))),
    ("yearly", |t| month_index(t.div_euclid(86_400)).div_euclid(12)),
];

/// Apply `policy` to `snapshots`; one decision per snapshot, newest first within groups.
pub fn apply(snapshots: &[(ObjectId, Snapshot)], policy: &Policy) -> Vec<Decision> {
    let mut groups: BTreeMap<Group, Vec<&(ObjectId, Snapshot)>> = BTreeMap::new();
    let g = policy.group_by;
    for s in snapshots {
        let mut tags = if g.tags { s.1.tags.clone() } else { vec![] };
        tags.sort();
        let key = (
            if g.host { s.1.hostname.clone() } else { String::new() },
            if g.paths { s.1.paths.clone() } else { vec![] },
            tags,
        );
        groups.entry(key).or_default().push(s);
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
        let counts = [policy.hourly, policy.daily, policy.weekly, policy.monthly, policy.yearly];
        let rules = counts.into_iter().zip(BUCKETS).map(|(n, (name, bucket))| (n, name, bucket));
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
        let newest = group.first().map_or(0, |s| s.1.time_ns);
        if let Some(span) = policy.within {
            let since = span.before(newest);
            for (i, (_, s)) in group.iter().enumerate() {
                if s.time_ns > since {
                    decisions[i].reasons.push("within".into());
                }
            }
        }
        let spans = [
            policy.within_hourly,
            policy.within_daily,
            policy.within_weekly,
            policy.within_monthly,
            policy.within_yearly,
        ];
        let windows = spans.into_iter().zip(BUCKETS).map(|(span, (name, bucket))| (span, name, bucket));
        for (span, name, bucket) in windows {
            let Some(span) = span else { continue };
            let since = span.before(newest);
            let mut seen = HashSet::new();
            for (i, (_, s)) in group.iter().enumerate().take_while(|(_, s)| s.1.time_ns > since) {
                if seen.insert(bucket(s.time_ns.div_euclid(1_000_000_000))) {
                    decisions[i].reasons.push(format!("within {name}"));
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

    #[test]
    fn keep_within_keeps_what_is_recent_relative_to_the_newest() {
        // Two a day for twenty days: within 7d of the newest (day 19, 13:00) is everything
        // after day 12, 13:00.
        let snaps: Vec<_> = (0..20).flat_map(|d| [snap(d, 1, &[]), snap(d, 13, &[])]).collect();
        let policy = Policy { within: Some("7d".parse().unwrap()), ..Policy::default() };
        let expected: Vec<i64> = (13..20).flat_map(|d| [d * 24 + 1, d * 24 + 13]).collect();
        assert_eq!(kept(&snaps, &policy), expected);
        // The newest of each day within 3 days.
        let policy = Policy { within_daily: Some("3d".parse().unwrap()), ..Policy::default() };
        assert_eq!(kept(&snaps, &policy), vec![17 * 24 + 13, 18 * 24 + 13, 19 * 24 + 13]);
        // A group whose newest is old keeps its own recent ones: the window is per group.
        let mut old = snap(2, 5, &[]);
        old.1.hostname = "old".into();
        let mut with_old = snaps.clone();
        with_old.push(old);
        let policy = Policy { within: Some("1d".parse().unwrap()), ..Policy::default() };
        assert!(kept(&with_old, &policy).contains(&(2 * 24 + 5)));
    }

    #[test]
    fn spans_parse_as_restic_writes_them_and_count_calendar_months() {
        let s: Span = "1y5m7d2h".parse().unwrap();
        assert_eq!(s, Span { years: 1, months: 5, days: 7, hours: 2 });
        for bad in ["", "7", "7w", "d", "1.5d", "-1d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?}");
        }
        // One month before 2024-03-31 is 2024-02-29 (clamped), not March 2.
        let march_31 = 1_711_843_200 * 1_000_000_000i64;
        let feb_29 = 1_709_164_800 * 1_000_000_000i64;
        assert_eq!("1m".parse::<Span>().unwrap().before(march_31), feb_29);
    }

    #[test]
    fn group_by_chooses_what_makes_a_group() {
        let mut a = snap(1, 1, &["x"]);
        a.1.paths = vec!["/a".into()];
        let b = snap(2, 1, &["y"]);
        let snaps = vec![a, b];
        let by_host: GroupBy = "host".parse().unwrap();
        let policy = Policy { last: Some(1), group_by: by_host, ..Policy::default() };
        assert_eq!(kept(&snaps, &policy), vec![2 * 24 + 1], "one group: only the newest");
        let policy = Policy { last: Some(1), ..Policy::default() };
        assert_eq!(kept(&snaps, &policy).len(), 2, "host and paths: two groups");
        let by_tags: GroupBy = "tags".parse().unwrap();
        assert_eq!(kept(&snaps, &Policy { last: Some(1), group_by: by_tags, ..Policy::default() }).len(), 2);
        assert_eq!("".parse::<GroupBy>().unwrap(), GroupBy { host: false, paths: false, tags: false });
        assert!("hosts".parse::<GroupBy>().is_err());
    }
}
