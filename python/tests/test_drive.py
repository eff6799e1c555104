"""The drive and its snapshots through fsspec: what a Python user relies on beyond fsspec's
own suites. Each test checks outcomes on the pool itself, through the CLI where it can."""

import concurrent.futures
import hashlib
import os
import pathlib

import fsspec
import pytest

from conftest import PASSWORD


def tree_digest(root):
    """Every file below `root` by relative path, with its content's hash."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = pathlib.Path(dirpath, name)
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_errors_are_the_python_exceptions_their_kind_means(cuckoo_fs, unique):
    fs = cuckoo_fs
    with pytest.raises(FileNotFoundError):
        fs.info(unique + "/missing")
    with pytest.raises(FileNotFoundError):
        fs.cat_file(unique + "/missing")
    fs.makedirs(unique + "/d")
    with pytest.raises(IsADirectoryError):
        fs.cat_file(unique + "/d")
    with pytest.raises(FileExistsError):
        fs.makedirs(unique + "/d")
    fs.pipe_file(unique + "/d/f", b"x")
    with pytest.raises(OSError):
        fs.rmdir(unique + "/d")  # not empty


def test_snapshots_are_read_only_and_reachable_by_url(cuckoo_fs, unique, tmp_path):
    fs = cuckoo_fs
    fs.pipe_file(unique + "/report.csv", b"a,b\n1,2\n")
    snap = fs.snapshot(["py"])
    listed = fs.ls("/.snapshots", detail=False)
    assert f"/.snapshots/{snap}" in listed and "/.snapshots/latest" in listed, listed
    assert fs.cat_file(f"/.snapshots/{snap}{unique}/report.csv") == b"a,b\n1,2\n"
    assert fsspec.open(f"cuckoo://latest{unique}/report.csv", config=fs._config_path, password=PASSWORD).open().read() == b"a,b\n1,2\n"
    with pytest.raises(PermissionError):
        fs.pipe_file(f"/.snapshots/{snap}{unique}/new", b"no")
    with pytest.raises(PermissionError):
        fs.rm(f"/.snapshots/{snap}{unique}/report.csv")
    # The drive changes on; the snapshot keeps what it had.
    fs.pipe_file(unique + "/report.csv", b"changed")
    assert fs.cat_file(f"/.snapshots/{snap}{unique}/report.csv") == b"a,b\n1,2\n"


def test_ranged_reads_and_streamed_writes_of_a_large_file(cuckoo_fs, unique):
    fs = cuckoo_fs
    data = os.urandom(3 << 20) + b"tail"
    with fs.open(unique + "/big.bin", "wb", block_size=1 << 20) as f:
        for i in range(0, len(data), 700_000):
            f.write(data[i : i + 700_000])
    assert fs.size(unique + "/big.bin") == len(data)
    assert fs.cat_file(unique + "/big.bin", start=-4) == b"tail"
    with fs.open(unique + "/big.bin", "rb") as f:
        f.seek(2_000_000)
        assert f.read(1000) == data[2_000_000:2_001_000]
    fs.cp_file(unique + "/big.bin", unique + "/copy.bin")
    assert fs.cat_file(unique + "/copy.bin") == data
    fs.mv(unique + "/copy.bin", unique + "/moved.bin")
    assert not fs.exists(unique + "/copy.bin") and fs.size(unique + "/moved.bin") == len(data)
    assert fs.modified(unique + "/moved.bin").year >= 2024
    before = fs.checksum(unique + "/moved.bin")
    assert fs.checksum(unique + "/moved.bin") == before
    fs.pipe_file(unique + "/moved.bin", b"other")
    assert fs.checksum(unique + "/moved.bin") != before


def test_eight_threads_copy_a_tree_in_and_the_cli_restores_it_exactly(cuckoo_fs, unique, tmp_path, cli):
    fs = cuckoo_fs
    src = tmp_path / "src"
    for t in range(8):
        for i in range(25):
            p = src / f"t{t}" / f"d{i % 4}" / f"f{i}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(os.urandom(1000 + 3000 * i) + f"{t}/{i}".encode())

    def copy(t):
        fs.put(str(src / f"t{t}"), f"{unique}/t{t}", recursive=True)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(copy, range(8)))
    snap = fs.snapshot(["threads"])
    out = tmp_path / "restored"
    cli("restore", snap, "--target", str(out), "--path", unique.lstrip("/"))
    assert tree_digest(out / unique.lstrip("/")) == tree_digest(src)


def test_pandas_reads_csv_from_a_snapshot_and_writes_parquet_the_cli_restores(cuckoo_fs, unique, tmp_path, cli):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    fs = cuckoo_fs
    options = {"config": fs._config_path, "password": PASSWORD}
    fs.pipe_file(unique + "/in.csv", b"city,people\nLyon,522000\nNantes,320000\n")
    fs.snapshot(["csv"])
    df = pd.read_csv(f"cuckoo://latest{unique}/in.csv", storage_options=options)
    assert list(df["city"]) == ["Lyon", "Nantes"]
    df["double"] = df["people"] * 2
    with fsspec.open(f"cuckoo://{unique}/out.parquet", "wb", **options) as f:
        df.to_parquet(f, engine="pyarrow")
    written = fs.cat_file(unique + "/out.parquet")
    snap = fs.snapshot(["parquet"])
    out = tmp_path / "restored"
    cli("restore", snap, "--target", str(out), "--path", unique.lstrip("/") + "/out.parquet")
    restored = out / unique.lstrip("/") / "out.parquet"
    assert restored.read_bytes() == written
    assert pd.read_parquet(restored).equals(df)


def test_a_wrong_passphrase_from_the_password_command_is_a_permission_error(pool_config, monkeypatch):
    from cuckoo import Pool

    config, _ = pool_config
    monkeypatch.delenv("CUCKOO_PASSWORD", raising=False)
    monkeypatch.setenv("CUCKOO_PASSWORD_COMMAND", "echo wrong")
    with pytest.raises(PermissionError, match="passphrase"):
        Pool(str(config))


def test_threads_writing_below_one_new_directory_all_make_it(cuckoo_fs, unique):
    fs = cuckoo_fs

    def write(i):
        fs.pipe_file(f"{unique}/shared/deeper/f{i}", str(i).encode())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(64)))
    assert sorted(fs.ls(unique + "/shared/deeper", detail=False)) == sorted(f"{unique}/shared/deeper/f{i}" for i in range(64))


def test_regression_latest_follows_new_snapshots(cuckoo_fs, unique):
    # `latest` was resolved once and kept: a snapshot made later was not seen through it.
    fs = cuckoo_fs
    fs.pipe_file(unique + "/v", b"one")
    fs.snapshot()
    assert fs.cat_file(f"cuckoo://latest{unique}/v") == b"one"
    fs.pipe_file(unique + "/v", b"two")
    fs.commit()
    assert fs.cat_file(f"cuckoo://latest{unique}/v") == b"two"
