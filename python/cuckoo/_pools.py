"""One open `Pool` per config file in a process, shared by the fsspec and PyFilesystem2
classes: a drive opened twice would keep two states of the same tree, and the second
commit would lose the first's writes."""

from __future__ import annotations

import atexit
import os
import threading

from cuckoo._cuckoo import Pool

_lock = threading.Lock()
_pools: dict[str, Pool] = {}


def pool(config=None, password=None, password_file=None) -> Pool:
    """The open pool of `config` (default: ``CUCKOO_CONFIG``), opened on first use."""
    named = config or os.environ.get("CUCKOO_CONFIG")
    key = os.path.realpath(named) if named else ""
    with _lock:
        found = _pools.get(key)
        if found is None or found.closed:
            found = Pool(config, password, password_file)
            _pools[key] = found
        return found


@atexit.register
def _close_all():
    # What was written is stored when the interpreter exits, if not before.
    with _lock:
        for p in _pools.values():
            if not p.closed:
                try:
                    p.close()
                except Exception:  # noqa: BLE001 - at exit there is no one left to tell
                    pass
        _pools.clear()
