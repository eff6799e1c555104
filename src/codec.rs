//! The object envelope: how any object's body becomes the bytes stored on a backend, and back.
//!
//! Owns: the 12-byte header (magic, format version, kind, codec, plain length) and zstd.
//! Must not: do I/O, or decide object names or placement. docs/format.md is the spec.

use std::cell::RefCell;

use crate::error::{Error, ErrorKind, Result};

/// First four bytes of every stored object.
pub const MAGIC: [u8; 4] = *b"CKOO";
/// The envelope version this build writes and the only one it reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 12;

/// What an object is; stored in the header so a misplaced object is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    /// A piece of file content.
    Chunk = 1,
    /// A directory listing.
    Tree = 2,
    /// A snapshot record.
    Snapshot = 3,
    /// The pool record kept on every backend.
    Pool = 4,
}

impl ObjectKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => ObjectKind::Chunk,
            2 => ObjectKind::Tree,
            3 => ObjectKind::Snapshot,
            4 => ObjectKind::Pool,
            _ => return None,
        })
    }

    /// The largest plain body a decoder accepts: a bound on what a hostile object can make
    /// us allocate.
    pub fn max_plain_len(self) -> usize {
        match self {
            ObjectKind::Chunk => 64 << 20,
            ObjectKind::Pool => 1 << 20,
            ObjectKind::Tree | ObjectKind::Snapshot => u32::MAX as usize,
        }
    }
}

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

/// Compress `body` at zstd `level` into an envelope of `kind`; stores it raw when zstd does
/// not save at least 1/32 of it (incompressible data costs nothing to read back).
pub fn encode(kind: ObjectKind, body: &[u8], level: i32) -> Vec<u8> {
    assert!(body.len() <= kind.max_plain_len(), "object body too large");
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() / 2);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[FORMAT_VERSION, kind as u8, CODEC_ZSTD, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let budget = body.len() - body.len() / 32;
    let compressed = level > 0 && compress_into(body, level, budget, &mut out);
    if !compressed {
        out.truncate(HEADER_LEN);
        out[6] = CODEC_RAW;
        out.extend_from_slice(body);
    }
    out
}

fn compress_into(body: &[u8], level: i32, budget: usize, out: &mut Vec<u8>) -> bool {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            let c = zstd::bulk::Compressor::new(level).expect("zstd level is valid");
            *slot = Some((level, c));
        }
        let (_, compressor) = slot.as_mut().expect("just set");
        let start = out.len();
        out.resize(start + zstd::zstd_safe::compress_bound(body.len()), 0);
        match compressor.compress_to_buffer(body, &mut out[start..]) {
            Ok(n) if n <= budget => {
                out.truncate(start + n);
                true
            }
            _ => false,
        }
    })
}

/// The parsed header of a stored object.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// What the object is.
    pub kind: ObjectKind,
    /// Length of the decoded body.
    pub plain_len: usize,
    codec: u8,
}

/// Parse and check the header.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
        return Err(Error::corrupt("not a cuckoo object (bad magic)"));
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::UnsupportedVersion,
            format!("object format version {} is not supported by this build (reads {FORMAT_VERSION})", bytes[4]),
        ));
    }
    let kind =
        ObjectKind::from_u8(bytes[5]).ok_or_else(|| Error::corrupt(format!("unknown object kind {}", bytes[5])))?;
    if bytes[7] != 0 {
        return Err(Error::new(ErrorKind::UnsupportedVersion, "object uses flags this build does not know"));
    }
    let plain_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if plain_len > kind.max_plain_len() {
        return Err(Error::corrupt(format!("object claims {plain_len} bytes, over the limit")));
    }
    Ok(Header { kind, plain_len, codec: bytes[6] })
}

/// Decode an envelope that must be of `kind`; returns the plain body.
pub fn decode(kind: ObjectKind, bytes: &[u8]) -> Result<Vec<u8>> {
    let header = parse_header(bytes)?;
    if header.kind != kind {
        return Err(Error::corrupt(format!("expected a {kind:?} object, found a {:?}", header.kind)));
    }
    let payload = &bytes[HEADER_LEN..];
    let body = match header.codec {
        CODEC_RAW => payload.to_vec(),
        CODEC_ZSTD => zstd::bulk::decompress(payload, header.plain_len)
            .map_err(|e| Error::corrupt("zstd payload does not decompress").with_source(e))?,
        other => return Err(Error::corrupt(format!("unknown codec {other}"))),
    };
    if body.len() != header.plain_len {
        return Err(Error::corrupt(format!("body is {} bytes, header says {}", body.len(), header.plain_len)));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compressible_data_is_compressed() {
        let body = b"abcabcabc".repeat(1000);
        let enc = encode(ObjectKind::Chunk, &body, 3);
        assert!(enc.len() < body.len() / 10);
        assert_eq!(enc[6], CODEC_ZSTD);
        assert_eq!(decode(ObjectKind::Chunk, &enc).unwrap(), body);
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let body = *blake3::hash(&body).as_bytes();
        let enc = encode(ObjectKind::Chunk, &body, 3);
        assert_eq!(enc[6], CODEC_RAW);
        assert_eq!(enc.len(), HEADER_LEN + body.len());
    }

    #[test]
    fn wrong_kind_version_and_truncation_are_errors() {
        let enc = encode(ObjectKind::Tree, b"hello hello hello hello", 3);
        assert_eq!(decode(ObjectKind::Chunk, &enc).unwrap_err().kind(), ErrorKind::Corrupt);
        let mut newer = enc.clone();
        newer[4] = 2;
        assert_eq!(decode(ObjectKind::Tree, &newer).unwrap_err().kind(), ErrorKind::UnsupportedVersion);
        assert!(decode(ObjectKind::Tree, &enc[..enc.len() - 1]).is_err());
        assert!(decode(ObjectKind::Tree, &enc[..5]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(body in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..5) {
            let enc = encode(ObjectKind::Chunk, &body, level);
            prop_assert_eq!(decode(ObjectKind::Chunk, &enc).unwrap(), body);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(ObjectKind::Chunk, &bytes);
        }
    }
}
