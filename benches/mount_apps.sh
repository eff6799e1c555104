#!/usr/bin/env bash
# Programs that read files at random, on the mount and on ext4 in the same run: a 200 MB
# SQLite database answering 5,000 point queries by key, and a 200 MB zip archive listed and
# one member extracted. The mount is a pool of three local directories; each measurement
# starts with the page cache dropped and a fresh mount (memory cold), once with no local
# cache (`--no-cache`) and once with the local chunk cache filled by an earlier read.
#
#   bash benches/mount_apps.sh target/release/cuckoo
#
# Needs root and /dev/fuse.
set -euo pipefail
bin=$(realpath "${1:-target/release/cuckoo}")
w=$(mktemp -d)
trap 'mountpoint -q "$w/mnt" && umount "$w/mnt"; rm -rf "$w"' EXIT
source "$(dirname "$0")/mount_common.sh"
pool_env
local_pool
mkdir -p "$w/ext4"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

python3 - "$w/ext4" <<'PY'
import os, sqlite3, sys, zipfile
d = sys.argv[1]
db = sqlite3.connect(os.path.join(d, "db.sqlite"))
db.execute("create table t (k integer primary key, v blob)")
db.executemany("insert into t values (?, ?)", ((i, os.urandom(1000)) for i in range(190_000)))
db.commit(); db.close()
with zipfile.ZipFile(os.path.join(d, "a.zip"), "w", zipfile.ZIP_STORED) as z:
    for i in range(2000):
        z.writestr(f"dir{i % 20}/member{i}.bin", os.urandom(100_000))
PY
"$bin" init --kdf-memory 8 --kdf-iterations 1 >/dev/null
mount_cuckoo "$bin" --no-cache; cp "$w/ext4/db.sqlite" "$w/ext4/a.zip" "$w/mnt/"; unmount_cuckoo

apps() { # DIR LABEL
    drop
    python3 - "$1" "$2" <<'PY'
import os, random, sqlite3, sys, time, zipfile
d, label = sys.argv[1], sys.argv[2]
random.seed(1)
t = time.perf_counter()
db = sqlite3.connect(f"file:{os.path.join(d, 'db.sqlite')}?mode=ro", uri=True)
for _ in range(5000):
    assert db.execute("select length(v) from t where k = ?", (random.randrange(190_000),)).fetchone()[0] == 1000
db.close()
q = time.perf_counter() - t
t = time.perf_counter()
with zipfile.ZipFile(os.path.join(d, "a.zip")) as z:
    names = z.namelist()
    assert len(z.read("dir7/member1007.bin")) == 100_000
zt = time.perf_counter() - t
print(f"| {label} | {q:.2f} s ({5000 / q:,.0f} queries/s) | {zt * 1000:.0f} ms ({len(names)} members) |")
PY
}
echo "| where | 5,000 SQLite point queries | zip: list + extract one |"
echo "|---|---|---|"
apps "$w/ext4" "ext4"
mount_cuckoo "$bin" --no-cache; apps "$w/mnt" "cuckoo, no local cache"; unmount_cuckoo
mount_cuckoo "$bin"; cat "$w/mnt/db.sqlite" "$w/mnt/a.zip" > /dev/null; unmount_cuckoo
mount_cuckoo "$bin"; apps "$w/mnt" "cuckoo, local cache filled"; unmount_cuckoo
