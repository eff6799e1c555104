"""Cuckoo Drive from Python.

A pool's live drive (read-write) and its snapshots (read-only, under
``/.snapshots/<id>/`` and ``/.snapshots/latest/``) as an fsspec filesystem::

    import fsspec
    fs = fsspec.filesystem("cuckoo", config="pool.toml", password="...")
    fs.pipe_file("/notes.txt", b"hello")
    fs.commit()
    print(fs.cat_file("cuckoo://latest/notes.txt"))

``CuckooFS`` is the same as a PyFilesystem2 filesystem (``fs.open_fs("cuckoo://…")``),
imported on first use since PyFilesystem2 is optional. ``Pool`` is the binding
underneath: one open pool, its drive and snapshot views.
"""

from cuckoo._cuckoo import SNAPSHOTS, Handle, Pool, Writer
from cuckoo.spec import CuckooFileSystem

__all__ = ["CuckooFS", "CuckooFileSystem", "Handle", "Pool", "SNAPSHOTS", "Writer"]


def __getattr__(name):
    if name == "CuckooFS":
        from cuckoo.pyfs import CuckooFS

        return CuckooFS
    raise AttributeError(name)
