"""PyFilesystem2's own test cases, unmodified, against the drive: only `make_fs` is ours.
Skipped (and so reported) where PyFilesystem2 is not installed."""

import unittest
import uuid

import pytest

fs_test = pytest.importorskip("fs.test")

from conftest import PASSWORD  # noqa: E402


class TestCuckooFS(fs_test.FSTestCases, unittest.TestCase):
    config = None  # set by the fixture below

    @pytest.fixture(autouse=True)
    def _pool(self, pool_config):
        type(self).config = str(pool_config[0])

    def make_fs(self):
        from cuckoo.pyfs import CuckooFS

        return CuckooFS(config=self.config, password=PASSWORD, root="/pyfs-" + uuid.uuid4().hex[:8])


def test_open_fs_finds_the_opener_and_snapshots_are_read_only(pool_config, cuckoo_fs):
    import fs
    import fs.errors

    config = str(pool_config[0])
    name = "/opener-" + uuid.uuid4().hex[:8]
    with fs.open_fs(f"cuckoo://{name}?config={config}&password={PASSWORD}") as drive:
        drive.makedirs("a/b")
        drive.writetext("a/b/hello.txt", "hello")
        assert drive.readtext("a/b/hello.txt") == "hello"
    snap = cuckoo_fs.snapshot(["pyfs"])
    from cuckoo import CuckooFS

    view = CuckooFS(config=config, password=PASSWORD, root=f"/.snapshots/{snap}{name}")
    assert view.readtext("a/b/hello.txt") == "hello"
    assert view.getmeta()["read_only"]
    with pytest.raises(fs.errors.ResourceReadOnly):
        view.writetext("a/new.txt", "no")
    with pytest.raises(fs.errors.ResourceNotFound):
        view.readtext("a/missing.txt")
