"""The fsspec filesystem of a Cuckoo Drive pool (protocol ``cuckoo``).

Paths are the drive's, from its root (``/data/a.csv``); snapshots are read-only below
``/.snapshots/<id>/`` and ``/.snapshots/latest/``, as in the FUSE mount. In URLs,
``cuckoo:///data/a.csv`` is the drive and ``cuckoo://latest/data/a.csv`` (or
``cuckoo://<snapshot id>/...``) a snapshot.

Writes go into the drive at once (readers in this process see them); they are stored on
the backends when the drive commits: ``commit()``, ``snapshot()``, ``close()``, or when the
interpreter exits. A process opens each pool once, whichever classes use it.
"""

from __future__ import annotations

import datetime

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import stringify_path

from cuckoo._cuckoo import SNAPSHOTS
from cuckoo._pools import pool

# Copies stream in pieces of this size: memory stays bounded whatever the file size.
_PIECE = 4 << 20


class CuckooFileSystem(AbstractFileSystem):
    """A pool's live drive and its snapshots.

    Parameters
    ----------
    config:
        The pool's config file (default: ``CUCKOO_CONFIG``, else the CLI's default).
    password, password_file:
        The passphrase of an encrypted pool (default: ``CUCKOO_PASSWORD_FILE``, then
        ``CUCKOO_PASSWORD``).
    """

    protocol = "cuckoo"
    root_marker = "/"

    def __init__(self, config=None, password=None, password_file=None, **kwargs):
        super().__init__(**kwargs)
        self._config_path = None if config is None else str(stringify_path(config))
        self._pool = pool(
            self._config_path, password, None if password_file is None else str(stringify_path(password_file))
        )

    # -- paths ---------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path):
        path = stringify_path(path)
        if isinstance(path, (list, tuple)):
            return [cls._strip_protocol(p) for p in path]
        if path.startswith("cuckoo://"):
            rest = path[len("cuckoo://") :]
            if not rest.startswith("/"):
                # cuckoo://latest/x, cuckoo://<id>/x: a snapshot.
                spec, _, inner = rest.partition("/")
                rest = f"{SNAPSHOTS}/{spec}/{inner}"
            path = rest
        elif path.startswith("cuckoo:"):
            path = path[len("cuckoo:") :]
        parts = [p for p in path.split("/") if p not in ("", ".")]
        return "/" + "/".join(parts)

    @staticmethod
    def _get_kwargs_from_urls(path):
        return {}

    def unstrip_protocol(self, name):
        return "cuckoo://" + self._strip_protocol(name)

    # -- reading the tree ----------------------------------------------------------------

    def info(self, path, **kwargs):
        return self._pool.info(self._strip_protocol(path))

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        entry = self._pool.info(path)
        entries = [entry] if entry["type"] != "directory" else self._pool.listdir(path)
        return entries if detail else [e["name"] for e in entries]

    def modified(self, path):
        mtime = self.info(path)["mtime"]
        return datetime.datetime.fromtimestamp(mtime, tz=datetime.timezone.utc)

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.info(path)["size"]
            start = size + start if start is not None and start < 0 else start
            end = size + end if end is not None and end < 0 else end
        return self._pool.read(path, max(start or 0, 0), None if end is None else max(end, 0))

    # -- changing the drive --------------------------------------------------------------

    def _writer(self, path, append=False):
        """A writer for `path`; missing parent directories are made, as object stores'
        implementations of fsspec behave and its tests expect."""
        parent = self._parent(path)
        if parent != path and not self.exists(parent):
            self.makedirs(parent, exist_ok=True)
        return self._pool.open_write(path, append=append)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        path = self._strip_protocol(path)
        if mode == "create" and self.exists(path):
            raise FileExistsError(path)
        writer = self._writer(path)
        try:
            writer.write(bytes(value))
        finally:
            writer.close()

    def mkdir(self, path, create_parents=True, **kwargs):
        path = self._strip_protocol(path)
        if create_parents:
            if self.exists(path):
                raise FileExistsError(path)
            self.makedirs(path, exist_ok=True)
        else:
            self._pool.mkdir(path)

    def makedirs(self, path, exist_ok=False):
        path = self._strip_protocol(path)
        if self.exists(path):
            if exist_ok and self.isdir(path):
                return
            raise FileExistsError(path)
        parent = self._parent(path)
        if parent != path and not self.exists(parent):
            self.makedirs(parent, exist_ok=True)
        try:
            self._pool.mkdir(path)
        except FileExistsError:
            # Another thread made it meanwhile.
            if not (exist_ok and self.isdir(path)):
                raise

    def rmdir(self, path):
        self._pool.rmdir(self._strip_protocol(path))

    def rm_file(self, path):
        self._pool.remove(self._strip_protocol(path))

    def _rm(self, path):
        path = self._strip_protocol(path)
        if self.isdir(path):
            self._pool.rmdir(path)
        else:
            self._pool.remove(path)

    def rm(self, path, recursive=False, maxdepth=None):
        paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        # Deepest first, so directories are empty when their turn comes.
        for p in sorted(paths, key=lambda p: p.count("/"), reverse=True):
            self._rm(p)

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        if isinstance(path1, str) and isinstance(path2, str) and maxdepth is None:
            src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
            if self.isdir(dst) and not self.isdir(src):
                dst = dst.rstrip("/") + "/" + src.rsplit("/", 1)[-1]
            self._pool.rename(src, dst)
            return
        super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)

    def cp_file(self, path1, path2, **kwargs):
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        if self.isdir(src):
            self.makedirs(dst, exist_ok=True)
            return
        size = self.info(src)["size"]
        writer = self._writer(dst)
        try:
            for start in range(0, size, _PIECE):
                writer.write(self._pool.read(src, start, min(start + _PIECE, size)))
        finally:
            writer.close()

    def touch(self, path, truncate=True, **kwargs):
        path = self._strip_protocol(path)
        if truncate or not self.exists(path):
            self.pipe_file(path, b"")
        else:
            self._pool.set_mtime(path, datetime.datetime.now().timestamp())

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        path = self._strip_protocol(path)
        if mode == "xb" and self.exists(path):
            raise FileExistsError(path)
        return CuckooFile(
            self,
            path,
            mode=mode,
            block_size=block_size or _PIECE,
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )

    # -- the pool ------------------------------------------------------------------------

    def commit(self):
        """Store the drive's changes on the backends; the drive state's id, or None."""
        return self._pool.commit()

    def snapshot(self, tags=()):
        """Keep the drive's current state as a snapshot with ``tags``; its id."""
        return self._pool.snapshot(list(tags))

    def snapshots(self):
        """The pool's snapshots: dicts of id, time, hostname, paths and tags."""
        return self._pool.snapshots()

    def close(self):
        """Commit. The pool stays open for the process's other users (it is released, and
        committed again, at exit)."""
        self._pool.commit()


class CuckooFile(AbstractBufferedFile):
    """A file of the drive or a snapshot: ranged reads, writes streamed into the drive."""

    def _fetch_range(self, start, end):
        return self.fs._pool.read(self.path, start, end)

    def _initiate_upload(self):
        self._out = self.fs._writer(self.path, append=self.mode == "ab")

    def _upload_chunk(self, final=False):
        self._out.write(self.buffer.getvalue())
        if final:
            self._out.close()
        return True
