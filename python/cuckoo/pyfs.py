"""The PyFilesystem2 filesystem of a Cuckoo Drive pool: ``CuckooFS``, and the opener behind
``fs.open_fs("cuckoo://…")``.

PyFilesystem2 (the ``fs`` package, 2.4) imports ``pkg_resources``, which setuptools 82
removed: install it with ``setuptools<82``.

Paths are the drive's, below ``root`` (default ``/``); with ``root="/.snapshots/latest"``
(or a snapshot id) the filesystem is that snapshot, read-only.
"""

from __future__ import annotations

import io
import threading

from fs import errors
from fs.base import FS
from fs.enums import ResourceType
from fs.error_tools import convert_os_errors
from fs.info import Info
from fs.iotools import line_iterator
from fs.mode import Mode
from fs.opener import Opener
from fs.path import basename, join, normpath
from fs.subfs import SubFS

from cuckoo._pools import pool

_TYPES = {"file": ResourceType.file, "directory": ResourceType.directory, "link": ResourceType.symlink}


class CuckooFS(FS):
    """A pool's live drive (or, below ``/.snapshots/``, a snapshot) as a PyFilesystem2 FS.

    Parameters
    ----------
    config, password, password_file:
        As for ``fsspec.filesystem("cuckoo", ...)``.
    root:
        The directory of the drive this filesystem shows (created if missing, unless it is
        in a snapshot).
    """

    _meta = {
        "case_insensitive": False,
        "invalid_path_chars": "\0",
        "max_path_length": None,
        "max_sys_path_length": None,
        "network": True,
        "read_only": False,
        "supports_rename": True,
        "thread_safe": True,
        "unicode_paths": True,
        "virtual": False,
    }

    def __init__(self, config=None, password=None, password_file=None, root="/"):
        super().__init__()
        self._pool = pool(config, password, password_file)
        self._root = "/" + normpath(root).strip("/")
        if self._root.startswith("/.snapshots"):
            self._meta = dict(self._meta, read_only=True)
        elif not self._exists(self._root):
            parts = [p for p in self._root.split("/") if p]
            for i in range(1, len(parts) + 1):
                at = "/" + "/".join(parts[:i])
                if not self._exists(at):
                    self._pool.mkdir(at)

    def __repr__(self):
        return f"CuckooFS(root={self._root!r})"

    def _full(self, path):
        """The pool path of `path` of this filesystem."""
        path = normpath(self.validatepath(path)).lstrip("/")
        return join(self._root, path) if path else self._root

    def _writable(self, path):
        """Refuse a change to a snapshot as PyFilesystem2 says it: ResourceReadOnly."""
        if self._meta["read_only"]:
            raise errors.ResourceReadOnly(path)

    def _exists(self, full):
        try:
            self._pool.info(full)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _info(self, full, name):
        raw = self._pool.info(full)
        return Info(
            {
                "basic": {"name": name, "is_dir": raw["type"] == "directory"},
                "details": {
                    "type": int(_TYPES.get(raw["type"], ResourceType.unknown)),
                    "size": raw["size"],
                    "modified": raw["mtime"],
                    "accessed": raw["mtime"],
                    "metadata_changed": raw["mtime"],
                    "created": None,
                },
                "access": {"permissions": None},
            }
        )

    # -- the essential methods -----------------------------------------------------------

    def getinfo(self, path, namespaces=None):
        full = self._full(path)
        with convert_os_errors("getinfo", path):
            return self._info(full, "" if full == self._root else basename(full))

    def listdir(self, path):
        full = self._full(path)
        with convert_os_errors("listdir", path, directory=True):
            if self._pool.info(full)["type"] != "directory":
                raise errors.DirectoryExpected(path)
            return [basename(e["name"]) for e in self._pool.listdir(full)]

    def makedir(self, path, permissions=None, recreate=False):
        self.check()
        self._writable(path)
        full = self._full(path)
        with self._lock:
            if full == self._root or self._exists(full):
                if recreate and self.getinfo(path).is_dir:
                    return SubFS(self, path)
                raise errors.DirectoryExists(path)
            with convert_os_errors("makedir", path, directory=True):
                self._pool.mkdir(full)
            return SubFS(self, path)

    def openbin(self, path, mode="r", buffering=-1, **options):
        self.check()
        _mode = Mode(mode)
        _mode.validate_bin()
        if _mode.writing:
            self._writable(path)
        full = self._full(path)
        with self._lock:
            try:
                info = self._pool.info(full)
            except (FileNotFoundError, NotADirectoryError):
                info = None
            if info is not None and info["type"] == "directory":
                raise errors.FileExpected(path)
            if info is None:
                if not _mode.create:
                    raise errors.ResourceNotFound(path)
                parent = full.rsplit("/", 1)[0] or "/"
                if not self._exists(parent) or self._pool.info(parent)["type"] != "directory":
                    raise errors.ResourceNotFound(path)
            elif _mode.exclusive:
                raise errors.FileExists(path)
            with convert_os_errors("openbin", path):
                handle = self._pool.open(
                    full,
                    write=_mode.writing,
                    append=_mode.appending,
                    truncate=_mode.truncate,
                    create=_mode.create,
                    create_new=False,
                )
            return _File(handle, path, _mode)

    def remove(self, path):
        self.check()
        self._writable(path)
        full = self._full(path)
        with convert_os_errors("remove", path):
            if self._pool.info(full)["type"] == "directory":
                raise errors.FileExpected(path)
            self._pool.remove(full)

    def removedir(self, path):
        self.check()
        self._writable(path)
        full = self._full(path)
        if full == self._root:
            raise errors.RemoveRootError(path)
        with convert_os_errors("removedir", path, directory=True):
            if self._pool.info(full)["type"] != "directory":
                raise errors.DirectoryExpected(path)
            self._pool.rmdir(full)

    def setinfo(self, path, info):
        self.check()
        self._writable(path)
        full = self._full(path)
        with convert_os_errors("setinfo", path):
            self._pool.info(full)
            modified = info.get("details", {}).get("modified")
            if modified is not None:
                self._pool.set_mtime(full, float(modified))

    # -- faster than the defaults --------------------------------------------------------

    def move(self, src_path, dst_path, overwrite=False, preserve_time=False):
        self.check()
        self._writable(dst_path)
        src, dst = self._full(src_path), self._full(dst_path)
        with self._lock:
            if not overwrite and self._exists(dst):
                raise errors.DestinationExists(dst_path)
            if self.getinfo(src_path).is_dir:
                raise errors.FileExpected(src_path)
            parent = dst.rsplit("/", 1)[0] or "/"
            if not self._exists(parent):
                raise errors.ResourceNotFound(dst_path)
            with convert_os_errors("move", dst_path):
                self._pool.rename(src, dst)

    def close(self):
        # The pool is the process's; its changes are committed, and it stays open for others.
        if not self.isclosed() and not self._pool.closed:
            self._pool.commit()
        super().close()


class _File(io.RawIOBase):
    """An open file of the drive: positioned reads and writes over the binding's handle."""

    def __init__(self, handle, path, mode):
        super().__init__()
        self._handle, self.name, self.mode = handle, path, mode.to_platform_bin()
        self._mode = mode
        self._pos = handle.len() if mode.appending else 0
        self._lock = threading.Lock()

    def readable(self):
        return self._mode.reading

    def writable(self):
        return self._mode.writing

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_SET:
            if offset < 0:
                raise ValueError("negative seek position")
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos = max(0, self._pos + offset)
        elif whence == io.SEEK_END:
            self._pos = max(0, self._handle.len() + offset)
        else:
            raise ValueError("invalid whence")
        return self._pos

    def readinto(self, buffer):
        if not self._mode.reading:
            raise io.UnsupportedOperation("not readable")
        data = self._handle.read_at(self._pos, len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size=-1):
        if not self._mode.reading:
            raise io.UnsupportedOperation("not readable")
        if size is None or size < 0:
            size = max(self._handle.len() - self._pos, 0)
        data = self._handle.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self):
        return self.read(-1)

    def readline(self, size=-1):
        return next(line_iterator(self, size), b"")

    def readlines(self, hint=-1):
        lines, total = [], 0
        for line in line_iterator(self):
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def write(self, data):
        if not self._mode.writing:
            raise io.UnsupportedOperation("not writable")
        data = bytes(data)
        if self._mode.appending:
            self._pos = self._handle.len()
        self._handle.write_at(self._pos, data)
        self._pos += len(data)
        return len(data)

    def truncate(self, size=None):
        if not self._mode.writing:
            raise io.UnsupportedOperation("not writable")
        size = self._pos if size is None else size
        self._handle.set_len(size)
        return size

    def close(self):
        if not self.closed:
            self._handle.close()
        super().close()


class CuckooOpener(Opener):
    """``fs.open_fs("cuckoo://<path in the drive>?config=pool.toml")``; the passphrase as
    the CLI reads it (``CUCKOO_PASSWORD``, ``CUCKOO_PASSWORD_FILE``) or ``password=``."""

    protocols = ["cuckoo"]

    def open_fs(self, fs_url, parse_result, writeable, create, cwd):
        params = parse_result.params
        return CuckooFS(
            config=params.get("config"),
            password=params.get("password"),
            password_file=params.get("password_file"),
            root="/" + parse_result.resource.strip("/"),
        )
