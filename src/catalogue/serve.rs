//! How peers reach the catalogue's holder: a Unix socket in Linux's abstract namespace (no
//! file left behind by a `kill -9`, no limit on the catalogue path's length), named after
//! the catalogue's path. Both ends check that the other runs as the same user, so no other
//! user can read the catalogue or pose as its holder.
//!
//! Wire: each message is a length (u32 LE) and a postcard body. A request is answered with
//! `Result<T, Failure>` for the `T` its call returns. Peers and holder are the same build
//! (the protocol version is part of the socket's name), so there is nothing to negotiate.

use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::local::Local;
use super::{Damage, PieceAt, Record, Session};
use crate::codec::ObjectKind;
use crate::error::{Error, ErrorKind, Result};
use crate::id::ObjectId;
use crate::model::Snapshot;

/// Bumped whenever `Request` or an answer changes shape.
const PROTOCOL: u32 = 2;
/// No call's request or answer comes near this; a longer frame is not from a peer.
const MAX_FRAME: usize = 1 << 30;

/// One catalogue call, as `Catalogue` and `Reader` name them.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Request {
    PoolId,
    SetPoolId(Vec<u8>),
    MarkBuilt,
    Record(Session, Vec<Record>),
    ClearStaged(Session),
    CommitStaged(Session, ObjectId, Box<Snapshot>),
    RemoveSnapshot(ObjectId),
    Snapshots,
    DamagedSnapshots,
    Damaged,
    ReplaceDamaged(ObjectKind, ObjectId, Vec<u8>),
    DropDamaged(Vec<Damage>),
    Usage,
    SetPieces(ObjectId, ObjectKind, u64, Vec<PieceAt>),
    PruneApplied(ObjectId),
    ApplyPrune(ObjectId, Vec<ObjectId>),
    RefcountMismatches,
    HasObject(ObjectId),
    Location(ObjectId),
    Tree(ObjectId),
    HasTree(ObjectId),
    HasSnapshot(ObjectId),
    Refs(ObjectId),
    Recount,
}

/// An error as it crosses the socket.
#[derive(Serialize, Deserialize)]
struct Failure {
    kind: ErrorKind,
    message: String,
}

/// The holder is gone (ended, killed, or never answered): the call was not answered.
#[derive(Debug)]
pub(super) struct Lost;

/// The socket address for the catalogue file at `path` (whose directory exists).
fn address(path: &Path) -> io::Result<SocketAddr> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let full = std::fs::canonicalize(dir)?.join(path.file_name().unwrap_or_default());
    let hash = blake3::hash(full.as_os_str().as_bytes()).to_hex();
    let uid = nix::unistd::getuid();
    SocketAddr::from_abstract_name(format!("cuckoo/catalogue/v{PROTOCOL}/{uid}/{}", &hash[..32]))
}

/// Refuse a peer, or a holder, that runs as another user.
fn same_user(stream: &UnixStream) -> io::Result<()> {
    let theirs = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    if theirs.uid() != nix::unistd::getuid().as_raw() {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the other end runs as another user"));
    }
    Ok(())
}

fn write_frame(stream: &mut UnixStream, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("message too long"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame)
}

fn read_frame(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut len = [0; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// A peer's connections to the holder, kept open between calls; each call takes one, so
/// parallel callers do not queue behind each other.
pub(super) struct Client {
    address: SocketAddr,
    idle: Mutex<Vec<UnixStream>>,
}

impl Client {
    /// Reach the holder of the catalogue at `path`.
    pub(super) fn connect(path: &Path) -> io::Result<Client> {
        let address = address(path)?;
        let first = open_stream(&address)?;
        Ok(Client { address, idle: Mutex::new(vec![first]) })
    }

    /// Send `request` and wait for its answer.
    pub(super) fn ask<T: DeserializeOwned>(&self, request: &Request) -> std::result::Result<Result<T>, Lost> {
        let idle = self.idle.lock().expect("poisoned").pop();
        let mut stream = match idle {
            Some(stream) => stream,
            None => open_stream(&self.address).map_err(|_| Lost)?,
        };
        write_frame(&mut stream, &postcard::to_stdvec(request).expect("requests always serialise"))
            .map_err(|_| Lost)?;
        let answer = read_frame(&mut stream).map_err(|_| Lost)?;
        self.idle.lock().expect("poisoned").push(stream);
        Ok(match postcard::from_bytes::<std::result::Result<T, Failure>>(&answer) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => Err(Error::new(failure.kind, failure.message)),
            Err(e) => {
                Err(Error::new(ErrorKind::Catalogue, "the catalogue's holder sent an answer that does not decode")
                    .with_source(e))
            }
        })
    }
}

fn open_stream(address: &SocketAddr) -> io::Result<UnixStream> {
    let stream = UnixStream::connect_addr(address)?;
    same_user(&stream)?;
    Ok(stream)
}

/// The holder's side: one thread accepting, one per connected peer.
pub(super) struct Server {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    peers: Arc<Peers>,
}

/// Each connected peer: a handle on its socket (to wake it when stopping) and its thread.
type Peers = Mutex<Vec<(UnixStream, JoinHandle<()>)>>;

impl Server {
    /// Serve the catalogue `local` (open at `path`) to peers.
    pub(super) fn start(path: &Path, local: Arc<Local>) -> io::Result<Server> {
        let address = address(path)?;
        let listener = UnixListener::bind_addr(&address)?;
        let stop = Arc::new(AtomicBool::new(false));
        let peers: Arc<Peers> = Arc::default();
        let accept = {
            let (stop, peers) = (stop.clone(), peers.clone());
            std::thread::Builder::new()
                .name("catalogue-serve".into())
                .spawn(move || accept_peers(listener, local, &stop, &peers))?
        };
        Ok(Server { address, stop, accept: Some(accept), peers })
    }
}

fn accept_peers(listener: UnixListener, local: Arc<Local>, stop: &AtomicBool, peers: &Peers) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if same_user(&stream).is_err() {
            continue;
        }
        let Ok(kept) = stream.try_clone() else { continue };
        let local = local.clone();
        let Ok(thread) =
            std::thread::Builder::new().name("catalogue-peer".into()).spawn(move || serve_peer(stream, &local))
        else {
            continue;
        };
        let mut peers = peers.lock().expect("poisoned");
        peers.retain(|(_, thread)| !thread.is_finished());
        peers.push((kept, thread));
    }
}

impl Drop for Server {
    /// Stop accepting, wake every peer's thread and wait for the calls under way, so the
    /// file closes cleanly after them; the peers' next calls find the socket gone.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect_addr(&self.address);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for (stream, thread) in self.peers.lock().expect("poisoned").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            let _ = thread.join();
        }
    }
}

fn serve_peer(mut stream: UnixStream, local: &Local) {
    while let Ok(body) = read_frame(&mut stream) {
        // Anything else on this socket is not a peer of this build.
        let Ok(request) = postcard::from_bytes::<Request>(&body) else { return };
        // A call that meets damage in the file (a panic, or redb saying `Corrupted`)
        // answers with the damage error and marks the file, as the holder's own calls do.
        let answer = local.guard(|| answer(local, request)).unwrap_or_else(|e| encode::<()>(Err(e)));
        if write_frame(&mut stream, &answer).is_err() {
            return;
        }
    }
}

/// The answer to send for `result`; damage in the file is handed to the guard instead.
fn reply<T: Serialize>(result: Result<T>) -> Result<Vec<u8>> {
    match result {
        Err(e) if super::guard::corrupted(&e) => Err(e),
        result => Ok(encode(result)),
    }
}

fn encode<T: Serialize>(result: Result<T>) -> Vec<u8> {
    let result = result.map_err(|e| Failure { kind: e.kind(), message: e.to_string() });
    postcard::to_stdvec(&result).expect("answers always serialise")
}

fn answer(l: &Local, request: Request) -> Result<Vec<u8>> {
    match request {
        Request::PoolId => reply(l.pool_id()),
        Request::SetPoolId(id) => reply(l.set_pool_id(&id)),
        Request::MarkBuilt => reply(l.mark_built()),
        Request::Record(session, records) => reply(l.record(session, &records)),
        Request::ClearStaged(session) => reply(l.clear_staged(session)),
        Request::CommitStaged(session, id, snapshot) => reply(l.commit_staged(session, &id, &snapshot)),
        Request::RemoveSnapshot(id) => reply(l.remove_snapshot(&id)),
        Request::Snapshots => reply(l.snapshots()),
        Request::DamagedSnapshots => reply(l.damaged_snapshots()),
        Request::Damaged => reply(l.damaged()),
        Request::ReplaceDamaged(kind, id, body) => reply(l.replace_damaged(kind, &id, &body)),
        Request::DropDamaged(damaged) => reply(l.drop_damaged(&damaged)),
        Request::Usage => reply(l.usage()),
        Request::SetPieces(id, kind, plain_len, pieces) => reply(l.set_pieces(&id, kind, plain_len, &pieces)),
        Request::PruneApplied(id) => reply(l.prune_applied(&id)),
        Request::ApplyPrune(record, deleted) => reply(l.apply_prune(&record, &deleted)),
        Request::RefcountMismatches => reply(l.refcount_mismatches()),
        Request::HasObject(id) => reply(l.reader().and_then(|r| r.has_object(&id))),
        Request::Location(id) => reply(l.reader().and_then(|r| r.location(&id))),
        Request::Tree(id) => reply(l.reader().and_then(|r| r.tree(&id))),
        Request::HasTree(id) => reply(l.reader().and_then(|r| r.has_tree(&id))),
        Request::HasSnapshot(id) => reply(l.reader().and_then(|r| r.has_snapshot(&id))),
        Request::Refs(id) => reply(l.reader().and_then(|r| r.refs(&id))),
        Request::Recount => reply(l.recount()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// A peer's request that met redb's `Corrupted` was answered with the error but left the
    /// file unmarked (the guard saw an answer, not an error), so the next command did not
    /// set the damaged file aside; a panic was already marked.
    #[test]
    fn regression_a_peer_request_meeting_a_corrupted_page_hands_the_error_to_the_guard() {
        let corrupted = Error::new(ErrorKind::Catalogue, "usage")
            .with_source(redb::StorageError::Corrupted("page 5: bad checksum".into()));
        assert!(reply::<()>(Err(corrupted)).is_err(), "the guard marks the file");
        let other = Error::new(ErrorKind::NotFound, "no such snapshot");
        let answer = reply::<()>(Err(other)).expect("an ordinary failure is an answer");
        let decoded: std::result::Result<(), Failure> = postcard::from_bytes(&answer).unwrap();
        assert_eq!(decoded.unwrap_err().kind, ErrorKind::NotFound);
    }
}
