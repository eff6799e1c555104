//! Redundancy: how one stored object becomes pieces on distinct backends, either whole
//! copies or Reed-Solomon shards, and how pieces become the object again.
//!
//! Owns: `Scheme` (what a pool asks for), the shard byte format (docs/format.md, "Shards"),
//! splitting an object into shards and joining any K of them. Must not: do I/O, choose
//! backends (that is `store`'s placement), or look inside the object (an opaque envelope).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ObjectId;

/// Serialise a scheme as it is written in configs and shown (`copies=2`, `erasure=4+2`).
pub(crate) fn serialize_display<S: serde::Serializer>(scheme: &Scheme, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(scheme)
}

/// How many pieces each object is stored as, and how many of them it can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    /// The object whole, on this many distinct backends (1 = no redundancy).
    Copies(u8),
    /// `data` shards of the object plus `parity` Reed-Solomon shards, each on its own
    /// backend; any `data` of them rebuild it.
    Erasure {
        /// Shards holding the object's bytes (K).
        data: u8,
        /// Parity shards (M): how many pieces may be lost.
        parity: u8,
    },
}

/// Erasure schemes are kept to sizes that fit one shard per backend of a real pool.
const MAX_PIECES: u8 = 32;

impl Scheme {
    /// No redundancy: one copy.
    pub const NONE: Scheme = Scheme::Copies(1);

    /// The default for a pool of `backends` backends; docs/redundancy.md argues for it.
    /// Two copies below five backends (one loss survived, 2x storage); from five, 3+2
    /// shards (two losses survived, 1.67x); from six, 4+2 (two losses, 1.5x).
    pub fn default_for(backends: usize) -> Scheme {
        match backends {
            0 | 1 => Scheme::NONE,
            2..=4 => Scheme::Copies(2),
            5 => Scheme::Erasure { data: 3, parity: 2 },
            _ => Scheme::Erasure { data: 4, parity: 2 },
        }
    }

    /// Pieces stored per object, each on a distinct backend.
    pub fn pieces(&self) -> usize {
        match *self {
            Scheme::Copies(n) => n as usize,
            Scheme::Erasure { data, parity } => (data + parity) as usize,
        }
    }

    /// Pieces needed to read the object back.
    pub fn needed(&self) -> usize {
        match *self {
            Scheme::Copies(_) => 1,
            Scheme::Erasure { data, .. } => data as usize,
        }
    }

    /// Backends that may be lost without losing an object.
    pub fn tolerates(&self) -> usize {
        self.pieces() - self.needed()
    }

    /// Stored bytes per object byte (before compression).
    pub fn overhead(&self) -> f64 {
        self.pieces() as f64 / self.needed() as f64
    }

    /// Parse `none`, `copies=N` or `erasure=K+M`.
    pub fn parse(text: &str) -> Result<Scheme> {
        let bad = || {
            Error::config(format!(
                "redundancy '{text}': expected `none`, `copies=N` (N >= 1) or `erasure=K+M` (K, M >= 1)"
            ))
        };
        let text = text.trim();
        let scheme = if text == "none" {
            Scheme::NONE
        } else if let Some(n) = text.strip_prefix("copies=") {
            Scheme::Copies(n.trim().parse().map_err(|_| bad())?)
        } else if let Some(km) = text.strip_prefix("erasure=") {
            let (k, m) = km.split_once('+').ok_or_else(bad)?;
            Scheme::Erasure { data: k.trim().parse().map_err(|_| bad())?, parity: m.trim().parse().map_err(|_| bad())? }
        } else {
            return Err(bad());
        };
        scheme.validate()?;
        Ok(scheme)
    }

    /// Reject schemes that store nothing or more pieces than any pool could place.
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            Scheme::Copies(n) => (1..=MAX_PIECES).contains(&n),
            Scheme::Erasure { data, parity } => {
                data >= 1 && parity >= 1 && data.checked_add(parity).is_some_and(|t| t <= MAX_PIECES)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::config(format!("redundancy {self}: out of range (at most {MAX_PIECES} pieces)")))
        }
    }

    /// Refuse a scheme that needs more distinct backends than the pool has.
    pub fn check_fits(&self, backends: usize) -> Result<()> {
        if self.pieces() > backends {
            return Err(Error::config(format!(
                "redundancy {self} needs {} distinct backends; the pool has {backends}",
                self.pieces()
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Scheme::Copies(1) => write!(f, "none"),
            Scheme::Copies(n) => write!(f, "copies={n}"),
            Scheme::Erasure { data, parity } => write!(f, "erasure={data}+{parity}"),
        }
    }
}

/// Shard objects start with these four bytes.
pub const SHARD_MAGIC: [u8; 4] = *b"CKSH";
/// The shard format version this build writes and reads.
pub const SHARD_VERSION: u8 = 1;
/// Bytes before a shard's payload.
pub const SHARD_HEADER_LEN: usize = 48;

/// One verified shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard<'a> {
    /// K of the object's scheme.
    pub data: u8,
    /// M of the object's scheme.
    pub parity: u8,
    /// This shard's place: `0..data` hold the object's bytes, the rest are parity.
    pub index: u8,
    /// Length of the whole object.
    pub object_len: u64,
    /// The shard's bytes.
    pub payload: &'a [u8],
}

/// Bytes a whole shard object takes for an object of `len` bytes cut in `data` parts.
pub fn shard_object_len(len: usize, data: u8) -> usize {
    SHARD_HEADER_LEN + shard_len(len, data)
}

/// Bytes per shard for an object of `len` bytes cut in `data` parts (the Reed-Solomon
/// library wants a non-zero even size).
fn shard_len(len: usize, data: u8) -> usize {
    let per = len.div_ceil(data as usize).max(1);
    per + per % 2
}

fn checksum(id: &ObjectId, header: &[u8], payload: &[u8]) -> [u8; 32] {
    // The object id is hashed in so a shard copied under another object's name is caught
    // here, before any decoding.
    let mut h = blake3::Hasher::new();
    h.update(&id.0).update(header).update(payload);
    *h.finalize().as_bytes()
}

fn shard_object(id: &ObjectId, data: u8, parity: u8, index: u8, object_len: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARD_HEADER_LEN + payload.len());
    out.extend_from_slice(&SHARD_MAGIC);
    out.extend_from_slice(&[SHARD_VERSION, data, parity, index]);
    out.extend_from_slice(&object_len.to_le_bytes());
    let sum = checksum(id, &out, payload);
    out.extend_from_slice(&sum);
    out.extend_from_slice(payload);
    out
}

/// Cut `object` (stored as `id`) into `data + parity` shard objects, index order.
pub fn split(id: &ObjectId, object: &[u8], data: u8, parity: u8) -> Result<Vec<Vec<u8>>> {
    Scheme::Erasure { data, parity }.validate()?;
    let len = shard_len(object.len(), data);
    let originals: Vec<Vec<u8>> = (0..data as usize)
        .map(|i| {
            let start = (i * len).min(object.len());
            let end = ((i + 1) * len).min(object.len());
            let mut part = object[start..end].to_vec();
            part.resize(len, 0);
            part
        })
        .collect();
    let recovery = reed_solomon_simd::encode(data as usize, parity as usize, &originals)
        .map_err(|e| Error::config(format!("erasure {data}+{parity}: {e}")))?;
    let object_len = object.len() as u64;
    Ok(originals
        .iter()
        .chain(&recovery)
        .enumerate()
        .map(|(i, payload)| shard_object(id, data, parity, i as u8, object_len, payload))
        .collect())
}

/// The index of a shard and, for the first shard, the start of the object, from the first
/// bytes of a shard object (not verified: for cataloguing, never for data).
pub fn peek_shard(head: &[u8]) -> Option<(u8, &[u8])> {
    if head.len() < 16 || head[..4] != SHARD_MAGIC || head[4] != SHARD_VERSION {
        return None;
    }
    Some((head[7], head.get(SHARD_HEADER_LEN..).unwrap_or_default()))
}

/// Parse and verify a shard object fetched as part of object `id`.
pub fn open_shard<'a>(id: &ObjectId, bytes: &'a [u8]) -> Result<Shard<'a>> {
    let short = || Error::corrupt(format!("shard of {} is truncated", id.short()));
    let header = bytes.get(..16).ok_or_else(short)?;
    if header[..4] != SHARD_MAGIC {
        return Err(Error::corrupt(format!("shard of {} has no shard magic", id.short())));
    }
    if header[4] != SHARD_VERSION {
        return Err(Error::new(
            crate::ErrorKind::UnsupportedVersion,
            format!("shard of {} has format version {}; this build reads {SHARD_VERSION}", id.short(), header[4]),
        ));
    }
    let (data, parity, index) = (header[5], header[6], header[7]);
    let object_len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let sum = bytes.get(16..SHARD_HEADER_LEN).ok_or_else(short)?;
    let payload = &bytes[SHARD_HEADER_LEN..];
    let consistent = Scheme::Erasure { data, parity }.validate().is_ok()
        && index < data + parity
        && object_len <= (u32::MAX as u64)
        && payload.len() == shard_len(object_len as usize, data);
    if !consistent {
        return Err(Error::corrupt(format!("shard of {} has an inconsistent header", id.short())));
    }
    if checksum(id, header, payload) != sum {
        return Err(Error::corrupt(format!("shard {index} of {} fails its checksum", id.short())));
    }
    Ok(Shard { data, parity, index, object_len, payload })
}

/// Rebuild the object from verified shards; needs `data` distinct ones of one scheme.
pub fn join(id: &ObjectId, shards: &[Shard<'_>]) -> Result<Vec<u8>> {
    let first = shards.first().ok_or_else(|| Error::corrupt(format!("no shard of {} to rebuild from", id.short())))?;
    let (data, parity, object_len) = (first.data, first.parity, first.object_len);
    if shards.iter().any(|s| (s.data, s.parity, s.object_len) != (data, parity, object_len)) {
        return Err(Error::corrupt(format!("shards of {} disagree on their scheme", id.short())));
    }
    let mut parts: Vec<Option<&[u8]>> = vec![None; data as usize];
    let mut recovery = Vec::new();
    for s in shards {
        match parts.get_mut(s.index as usize) {
            Some(slot) => *slot = Some(s.payload),
            None => recovery.push(((s.index - data) as usize, s.payload)),
        }
    }
    recovery.sort_by_key(|(i, _)| *i);
    recovery.dedup_by_key(|(i, _)| *i);
    let have = parts.iter().flatten().count() + recovery.len();
    if have < data as usize {
        return Err(Error::corrupt(format!(
            "{} of {}'s {} shards are readable; {data} are needed",
            have,
            id.short(),
            data + parity
        )));
    }
    let restored = if parts.iter().all(Option::is_some) {
        Default::default()
    } else {
        let originals = parts.iter().enumerate().filter_map(|(i, p)| p.map(|p| (i, p)));
        reed_solomon_simd::decode(data as usize, parity as usize, originals, recovery)
            .map_err(|e| Error::corrupt(format!("shards of {} do not decode: {e}", id.short())))?
    };
    let mut object = Vec::with_capacity(object_len as usize);
    for (i, part) in parts.iter().enumerate() {
        let bytes = match part {
            Some(p) => *p,
            None => restored
                .get(&i)
                .map(Vec::as_slice)
                .ok_or_else(|| Error::corrupt(format!("shard {i} of {} could not be rebuilt", id.short())))?,
        };
        object.extend_from_slice(bytes);
    }
    object.truncate(object_len as usize);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> ObjectId {
        ObjectId::of(b"object")
    }

    #[test]
    fn schemes_parse_print_and_default() {
        for text in ["none", "copies=2", "erasure=3+2", "erasure=10+4"] {
            assert_eq!(Scheme::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Scheme::parse("copies=1").unwrap(), Scheme::NONE);
        for bad in ["", "copies=0", "erasure=3", "erasure=0+2", "erasure=3+0", "erasure=30+3", "raid5"] {
            assert!(Scheme::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Scheme::default_for(1), Scheme::NONE);
        assert_eq!(Scheme::default_for(3), Scheme::Copies(2));
        assert_eq!(Scheme::default_for(5), Scheme::Erasure { data: 3, parity: 2 });
        assert_eq!(Scheme::parse("erasure=3+2").unwrap().tolerates(), 2);
        assert!(Scheme::Copies(3).check_fits(2).is_err());
    }

    #[test]
    fn any_k_shards_rebuild_the_object_and_fewer_do_not() {
        let object: Vec<u8> = (0..10_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let shards = split(&id(), &object, 3, 2).unwrap();
        let opened: Vec<Shard> = shards.iter().map(|s| open_shard(&id(), s).unwrap()).collect();
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let pick = [opened[a], opened[b], opened[c]];
                    assert_eq!(join(&id(), &pick).unwrap(), object, "{a}{b}{c}");
                }
                assert!(join(&id(), &[opened[a], opened[b]]).is_err());
            }
        }
    }

    #[test]
    fn a_flipped_or_foreign_shard_is_caught() {
        let mut shards = split(&id(), b"hello world", 2, 1).unwrap();
        assert!(open_shard(&ObjectId::of(b"other"), &shards[0]).is_err());
        let last = shards[1].len() - 1;
        shards[1][last] ^= 1;
        assert!(open_shard(&id(), &shards[1]).unwrap_err().to_string().contains("checksum"));
        shards[2][5] = 200;
        assert!(open_shard(&id(), &shards[2]).is_err());
        assert!(open_shard(&id(), &shards[0][..20]).is_err());
    }

    proptest! {
        #[test]
        fn split_join_round_trips(object in proptest::collection::vec(any::<u8>(), 0..5000),
                                  data in 1u8..6, parity in 1u8..4, drop in any::<u64>()) {
            let shards = split(&id(), &object, data, parity).unwrap();
            let mut opened: Vec<Shard> = shards.iter().map(|s| open_shard(&id(), s).unwrap()).collect();
            // Lose up to `parity` shards, chosen by `drop`.
            for i in 0..parity as u64 {
                let n = opened.len() as u64;
                opened.remove(((drop >> (i * 8)) % n) as usize);
            }
            prop_assert_eq!(join(&id(), &opened).unwrap(), object);
        }

        #[test]
        fn open_shard_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open_shard(&id(), &bytes);
        }
    }
}
