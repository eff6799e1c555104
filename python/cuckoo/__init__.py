"""Cuckoo Drive from Python.

A pool's live drive (read-write) and its snapshots (read-only, under
``/.snapshots/<id>/`` and ``/.snapshots/latest/``) as an fsspec filesystem::

    import fsspec
    fs = fsspec.filesystem("cuckoo", config="pool.toml", password="...")
    fs.pipe_file("/notes.txt", b"hello")
    fs.commit()
    print(fs.cat_file("cuckoo://latest/notes.txt"))

``Pool`` is the binding underneath: one open pool, its drive and snapshot views.
"""

from cuckoo._cuckoo import SNAPSHOTS, Pool, Writer
from cuckoo.spec import CuckooFileSystem

__all__ = ["CuckooFileSystem", "Pool", "SNAPSHOTS", "Writer"]
