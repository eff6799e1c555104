"""fsspec's own abstract test suites, unmodified, run against the drive: only the `fs` and
`fs_path` fixtures are ours."""

import uuid

import fsspec.tests.abstract as abstract
import pytest


class CuckooFixtures(abstract.AbstractFixtures):
    @pytest.fixture
    def fs(self, cuckoo_fs):
        return cuckoo_fs

    @pytest.fixture
    def fs_path(self, cuckoo_fs):
        path = "/abstract-" + uuid.uuid4().hex[:8]
        yield path
        if cuckoo_fs.exists(path):
            cuckoo_fs.rm(path, recursive=True)


class TestCuckooCopy(abstract.AbstractCopyTests, CuckooFixtures):
    pass


class TestCuckooGet(abstract.AbstractGetTests, CuckooFixtures):
    pass


class TestCuckooPut(abstract.AbstractPutTests, CuckooFixtures):
    pass


class TestCuckooOpen(abstract.AbstractOpenTests, CuckooFixtures):
    pass


class TestCuckooPipe(abstract.AbstractPipeTests, CuckooFixtures):
    pass
