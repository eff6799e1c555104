//! The write pipeline shared by backup, prune's repack and the live drive: small files
//! packed into shared chunks (`pack`), directory bodies grouped into tree packs (`trees`),
//! objects compressed, sealed, stored and recorded as they become durable (`upload`), and
//! the snapshot commit that publishes them.
//!
//! Owns: how new objects reach the backends and the catalogue, and in which order. Must not:
//! walk a source tree or the drive's namespace (its callers do), or choose what to store.

pub(crate) mod pack;
pub(crate) mod rebuild;
pub(crate) mod trees;
pub(crate) mod upload;

use std::sync::Arc;

use crate::catalogue::Catalogue;
use crate::codec::{self, ObjectKind};
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::{self, Snapshot};
use crate::store::{Store, object_path};

/// Store a snapshot whose trees are staged (or already recorded) and publish it in the
/// catalogue: the commit point of a backup and of a drive commit.
pub(crate) async fn commit_snapshot(
    store: &Store,
    catalogue: Arc<Catalogue>,
    compression: i32,
    snapshot: &Snapshot,
) -> Result<ObjectId> {
    let body = model::to_body(snapshot);
    let id = store.keys().id_of(&body);
    let envelope = codec::encode(ObjectKind::Snapshot, &id, &body, compression, store.keys());
    store.put_everywhere(&object_path(ObjectKind::Snapshot, &id), &envelope).await?;
    let snap = snapshot.clone();
    tokio::task::spawn_blocking(move || catalogue.commit_staged(&id, &snap))
        .await
        .map_err(|e| Error::new(ErrorKind::Catalogue, "catalogue commit crashed").with_source(e))??;
    Ok(id)
}
