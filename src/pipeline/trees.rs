//! Building a directory's tree while its subtrees' bodies travel up to be stored together
//! in tree packs (docs/format.md, "Tree packs"): the one packer of backups, repacking and
//! the live drive's commits.
//!
//! Owns: the placement rule: subtrees join the group travelling up with their directory in
//! name order; when the next one would make the group larger than `TREE_PACK_TARGET`, the
//! group so far is stored as one pack and its entries point at it; a subtree too big on
//! its own is stored alone. Decided from content only, so an unchanged subtree packs, and
//! hashes, the same way every time. Must not: store anything (packs leave through `emit`).

use crate::crypto::Keys;
use crate::error::Result;
use crate::id::ObjectId;
use crate::model::{self, Meta, Node, NodeKind, Tree, TreePack};

/// Tree packs grow to about this many plain bytes (a few thousand directory entries).
pub(crate) const TREE_PACK_TARGET: usize = 256 * 1024;

/// Tree bodies waiting to be stored with an ancestor: (bodies, total size).
#[derive(Default, Clone)]
pub(crate) struct Group {
    pub trees: Vec<(ObjectId, Vec<u8>)>,
    pub size: usize,
}

impl Group {
    /// The encoded tree pack of these bodies.
    pub fn into_pack_body(self) -> Vec<u8> {
        model::to_body(&TreePack { trees: self.trees })
    }
}

/// One directory's tree being built, entries in name order.
#[derive(Default)]
pub(crate) struct DirTree {
    tree: Tree,
    group: Group,
    /// Entries whose subtree travels in `group` (their pack is set if the group is stored).
    in_group: Vec<usize>,
}

impl DirTree {
    /// Add a non-directory, or a directory whose subtree stays in the pack it names.
    pub fn push(&mut self, node: Node) {
        self.tree.entries.push(node);
    }

    /// Add directory `name` whose subtree `id` travels as `child`; `emit` stores a group as
    /// a pack and returns its id.
    pub fn push_subtree(
        &mut self,
        name: Vec<u8>,
        meta: Meta,
        id: ObjectId,
        child: Group,
        emit: &mut impl FnMut(Group) -> Result<ObjectId>,
    ) -> Result<()> {
        let pack = if child.size > TREE_PACK_TARGET {
            Some(emit(child)?)
        } else {
            if self.group.size + child.size > TREE_PACK_TARGET {
                let pack = emit(std::mem::take(&mut self.group))?;
                for i in self.in_group.drain(..) {
                    if let NodeKind::Dir { pack: p, .. } = &mut self.tree.entries[i].kind {
                        *p = Some(pack);
                    }
                }
            }
            self.group.size += child.size;
            self.group.trees.extend(child.trees);
            self.in_group.push(self.tree.entries.len());
            None
        };
        self.tree.entries.push(Node { name, kind: NodeKind::Dir { tree: id, pack }, meta });
        Ok(())
    }

    /// The directory's tree id and the group it travels up in (its own body included).
    pub fn finish(self, keys: &Keys) -> (ObjectId, Group) {
        let body = self.tree.to_body();
        let id = keys.id_of(&body);
        let mut group = self.group;
        group.size += body.len();
        group.trees.push((id, body));
        (id, group)
    }
}
