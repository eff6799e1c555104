//! Object ids: the BLAKE3 hash of an object's plain body, written as 64 hex digits.
//!
//! Owns: `ObjectId` and its parsing/printing. Must not: know where objects are stored.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};

/// A 32-byte BLAKE3 hash naming a content-addressed object (chunk, tree or snapshot).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of `body`.
    pub fn of(body: &[u8]) -> Self {
        ObjectId(*blake3::hash(body).as_bytes())
    }

    /// The id of a large `body`, hashed on the rayon pool when that pays off.
    pub fn of_large(body: &[u8]) -> Self {
        if body.len() < 256 * 1024 {
            return Self::of(body);
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_rayon(body);
        ObjectId(*hasher.finalize().as_bytes())
    }

    /// Lower-case hex, 64 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| Error::config(format!("'{s}' is not a 64-digit hex object id")))?;
        Ok(ObjectId(out))
    }

    /// The first 8 bytes as a number: uniformly distributed, used for placement.
    pub fn prefix_u64(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }

    /// The short form shown to people (like git's abbreviated hashes).
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ObjectId::of(b"hello");
        assert_eq!(ObjectId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(ObjectId::from_hex("zz").is_err());
    }

    #[test]
    fn large_hash_equals_plain_hash() {
        let data = vec![7u8; 1 << 20];
        assert_eq!(ObjectId::of_large(&data), ObjectId::of(&data));
    }
}
