"""A fresh pool of three local directories for each test session, opened through fsspec."""

import os
import subprocess
import sys
import uuid

import fsspec
import pytest

PASSWORD = "python test passphrase"


def _cuckoo():
    """The CLI built beside the extension (CUCKOO_BIN), to make and restore pools."""
    return os.environ.get("CUCKOO_BIN", "cuckoo")


@pytest.fixture(scope="session")
def pool_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    config = root / "pool.toml"
    lines = [f'catalogue = "{root / "catalogue.redb"}"', f'cache_dir = "{root / "cache"}"']
    for i in range(3):
        lines += ["[[backend]]", f'name = "b{i}"', 'scheme = "fs"', f'root = "{root / f"backend-{i}"}"']
    config.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, CUCKOO_CONFIG=str(config), CUCKOO_PASSWORD=PASSWORD,
               XDG_CONFIG_HOME=str(root / "xdg"), XDG_DATA_HOME=str(root / "xdg"))
    subprocess.run([_cuckoo(), "init", "--kdf-memory", "8", "--kdf-iterations", "1"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return config, env


@pytest.fixture(scope="session")
def cuckoo_fs(pool_config):
    config, _ = pool_config
    fs = fsspec.filesystem("cuckoo", config=str(config), password=PASSWORD)
    yield fs
    fs.close()


@pytest.fixture
def cli(pool_config):
    """Run the CLI on the test pool; its standard output."""
    _, env = pool_config

    def run(*args):
        done = subprocess.run([_cuckoo(), *args], env=env, check=True, capture_output=True, text=True)
        return done.stdout

    return run


@pytest.fixture
def unique():
    return "/t-" + uuid.uuid4().hex[:8]


sys.dont_write_bytecode = True
