//! `restore --verify`: read every restored file back from the target and compare it, byte
//! for byte, with the snapshot's content as the pool serves it (verified against chunk ids
//! on the way). Catches what a target got wrong after the write returned: a full disk that
//! truncated, a network file system that dropped a write, something else writing there.
//!
//! Files reference slices of shared chunks, so there is no whole-file hash to compare with:
//! the content is streamed from the pool again, next to the file's bytes, through a bounded
//! pipe (memory stays bounded whatever the size).

use std::path::PathBuf;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::content::stream_content;
use crate::model::ChunkRef;
use crate::repository::Repository;

/// Files compared at once.
const CONCURRENCY: usize = 4;
/// Bytes compared per step.
const STEP: usize = 256 * 1024;

/// A restored file to read back.
pub(super) struct Written {
    pub path: PathBuf,
    pub content: Vec<ChunkRef>,
}

/// Compare every file of `written` with its content; returns the number that matched and a
/// line for each that did not.
pub(super) async fn verify_all(repo: &Repository, written: Vec<Written>) -> (u64, Vec<String>) {
    let results: Vec<Option<String>> =
        futures::stream::iter(written).map(|w| verify_one(repo, w)).buffer_unordered(CONCURRENCY).collect().await;
    let failed: Vec<String> = results.iter().flatten().cloned().collect();
    (results.len() as u64 - failed.len() as u64, failed)
}

/// `None` if the file at `w.path` holds exactly its content, else why not.
async fn verify_one(repo: &Repository, w: Written) -> Option<String> {
    let shown = w.path.display().to_string();
    let (mut writer, reader) = tokio::io::duplex(STEP * 2);
    let produce = async move {
        let result = stream_content(repo, &w.content, &mut writer, false).await;
        drop(writer);
        result
    };
    // Moves the pipe's reader in: dropped at a difference, it stops the producer.
    let (produced, compared) = futures::join!(produce, compare(reader, w.path.clone()));
    match (compared, produced) {
        (Some(why), _) => Some(format!("{shown}: verify: {why}")),
        (None, Err(e)) => Some(format!("{shown}: verify: the pool could not supply the content: {e}")),
        (None, Ok(_)) => None,
    }
}

/// `None` if the file at `path` holds exactly what `want` yields, else where it differs.
async fn compare(mut want: impl AsyncRead + Unpin, path: PathBuf) -> Option<String> {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot read it back: {e}")),
    };
    let (mut expected, mut got) = (vec![0u8; STEP], vec![0u8; STEP]);
    let mut at = 0u64;
    loop {
        let n = match want.read(&mut expected).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Some(format!("the pool's content broke off: {e}")),
        };
        if file.read_exact(&mut got[..n]).await.is_err() {
            return Some(format!("shorter than recorded, at byte {at}"));
        }
        if let Some(i) = expected[..n].iter().zip(&got[..n]).position(|(a, b)| a != b) {
            return Some(format!("differs from the snapshot at byte {}", at + i as u64));
        }
        at += n as u64;
    }
    match file.read(&mut got[..1]).await {
        Ok(0) => None,
        _ => Some(format!("longer than the {at} bytes recorded")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(on_disk: &[u8], recorded: &[u8]) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, on_disk).unwrap();
        compare(recorded, path).await
    }

    #[tokio::test]
    async fn equal_files_pass_and_every_kind_of_difference_is_named() {
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(check(&data, &data).await, None);
        let mut flipped = data.clone();
        flipped[600_001] ^= 1;
        assert_eq!(check(&flipped, &data).await.unwrap(), "differs from the snapshot at byte 600001");
        assert!(check(&data[..1000], &data).await.unwrap().starts_with("shorter than recorded"));
        assert_eq!(check(&[&data[..], b"x"].concat(), &data).await.unwrap(), "longer than the 700000 bytes recorded");
        assert_eq!(check(b"", b"").await, None);
    }
}
