#!/usr/bin/env bash
# The FUSE mount against rclone's crypt over chunker over union of three local directories
# (the closest rclone equivalent of a pool), on the same machine and data, in one run:
#   bash benches/mount.sh            (root on Debian; installs rclone from Debian)
# Steps per tool: sequential write of one large file (cp, then unmount: the time until
# everything is stored), cold sequential read after a remount with the page cache
# dropped, and small-file creation (4 KiB each, open/write/close, then unmount).
# Settings: both encrypted, no redundancy (rclone union has none), data on tmpfs so the
# source never limits; cuckoo with its defaults (zstd 3, FastCDC ~1 MiB), rclone with
# --vfs-cache-mode writes (needed for random writes; its fastest safe mode) and 4 MiB
# chunker parts.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${CUCKOO_MOUNT_BENCH_DIR:-/tmp/cuckoo-mount-bench}
SIZE_MIB=${SIZE_MIB:-1024}
SMALL=${SMALL:-2000}
export CUCKOO_PASSWORD=bench RCLONE_CONFIG=$WORK/rclone.conf

# rclone mounts with the fusermount of Debian's fuse3 package.
need=""
command -v rclone > /dev/null || need="$need rclone"
command -v fusermount > /dev/null || need="$need fuse3"
[ -z "$need" ] || { apt-get update -q > /dev/null && apt-get install -y -q $need > /dev/null; }
cargo build --release --quiet
CUCKOO=$PWD/target/release/cuckoo

umount -l "$WORK"/mnt-* 2> /dev/null || true
rm -rf "$WORK" && mkdir -p "$WORK"
EXPECT=0
DATA=/dev/shm/cuckoo-mount-bench
mkdir -p "$DATA"
[ -f "$DATA/big" ] && [ "$(stat -c %s "$DATA/big")" = $((SIZE_MIB << 20)) ] \
  || head -c $((SIZE_MIB << 20)) /dev/urandom > "$DATA/big"

seconds() { python3 -c 'import time; print(f"{time.time():.3f}")'; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
wait_mounted() { for _ in $(seq 100); do mountpoint -q "$1" && return; sleep 0.1; done; echo "$1 not mounted" >&2; exit 1; }

# ---- the two mounts ----
setup_cuckoo() {
  mkdir -p "$WORK/cuckoo"
  {
    echo "catalogue = \"$WORK/cuckoo/catalogue.redb\""
    for i in 0 1 2; do printf '[[backend]]\nname = "b%s"\nscheme = "fs"\nroot = "%s"\n' "$i" "$WORK/cuckoo/b$i"; done
  } > "$WORK/cuckoo/pool.toml"
  CUCKOO_CONFIG=$WORK/cuckoo/pool.toml "$CUCKOO" init --redundancy none > /dev/null
}
mount_cuckoo() {
  CUCKOO_CONFIG=$WORK/cuckoo/pool.toml "$CUCKOO" mount "$1" 2> "$WORK/cuckoo/mount.log" &
  echo $! > "$WORK/cuckoo/pid"
  wait_mounted "$1"
}
unmount_cuckoo() { umount "$1"; tail --pid="$(cat "$WORK/cuckoo/pid")" -f /dev/null; }

setup_rclone() {
  mkdir -p "$WORK"/rclone/u{0,1,2}
  cat > "$RCLONE_CONFIG" << EOF
[union]
type = union
upstreams = $WORK/rclone/u0 $WORK/rclone/u1 $WORK/rclone/u2

[chunker]
type = chunker
remote = union:
chunk_size = 4Mi

[crypt]
type = crypt
remote = chunker:
password = $(rclone obscure bench)
EOF
}
mount_rclone() {
  # A cold start: nothing left in the VFS cache from before.
  rm -rf "$WORK/rclone/cache"
  rclone mount crypt: "$1" --vfs-cache-mode writes --vfs-write-back 0s --cache-dir "$WORK/rclone/cache" \
    2> "$WORK/rclone/mount.log" &
  echo $! > "$WORK/rclone/pid"
  wait_mounted "$1"
}
unmount_rclone() {
  # rclone exits on unmount without uploading what is still in its write cache (that waits
  # for the next mount), so first wait until its directories hold every byte written
  # ($EXPECT, plus crypt's headers): the time until everything is stored, as cuckoo's
  # commit on unmount gives.
  for _ in $(seq 12000); do
    [ "$(du -sb "$WORK"/rclone/u* 2> /dev/null | awk '{s += $1} END {print s}')" -ge "$EXPECT" ] && break
    sleep 0.05
  done
  fusermount -u "$1" 2> /dev/null || umount "$1"
  tail --pid="$(cat "$WORK/rclone/pid")" -f /dev/null
}

small_files() {
  python3 - "$1" "$SMALL" << 'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
block = os.urandom(4096)
for i in range(n):
    d = os.path.join(root, f"d{i % 20}")
    if i < 20:
        os.mkdir(d)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(block[:4096 - i % 97])
PY
}

SMALL_BYTES=$(python3 -c "print(sum(4096 - i % 97 for i in range($SMALL)))")
RUNS=${RUNS:-3}
printf 'tool\trun\twrite_s\tread_s\tsmall_s\n' > "$WORK/runs.tsv"
# The tools alternate, run after run, so that a slow spell of the machine hits both.
for run in $(seq "$RUNS"); do
  for tool in cuckoo rclone; do
    mnt=$WORK/mnt-$tool
    rm -rf "${WORK:?}/$tool" "$mnt"
    mkdir -p "$mnt"
    "setup_$tool"
    "mount_$tool" "$mnt"
    EXPECT=$((SIZE_MIB << 20))
    t0=$(seconds); cp "$DATA/big" "$mnt/big"; "unmount_$tool" "$mnt"; t1=$(seconds)
    write=$(elapsed "$t0" "$t1")
    "mount_$tool" "$mnt"
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(seconds); cat "$mnt/big" > /dev/null; t1=$(seconds)
    read=$(elapsed "$t0" "$t1")
    cmp "$DATA/big" "$mnt/big"
    EXPECT=$((EXPECT + SMALL_BYTES))
    t0=$(seconds); small_files "$mnt/small"; "unmount_$tool" "$mnt"; t1=$(seconds)
    small=$(elapsed "$t0" "$t1")
    printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$run" "$write" "$read" "$small" | tee -a "$WORK/runs.tsv"
  done
done
python3 - "$WORK/runs.tsv" "$SIZE_MIB" "$SMALL" << 'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
mib, small = int(sys.argv[2]), int(sys.argv[3])
med = {}
for tool in ("cuckoo", "rclone"):
    r = [x for x in rows if x["tool"] == tool]
    med[tool] = {k: statistics.median(float(x[k]) for x in r) for k in ("write_s", "read_s", "small_s")}
print(f"medians of {len(rows) // 2} runs")
print("tool    write            cold read        small files")
for tool, m in med.items():
    print(f"{tool:7} {m['write_s']:5.2f} s {mib / m['write_s']:4.0f} MiB/s  {m['read_s']:5.2f} s {mib / m['read_s']:4.0f} MiB/s  "
          f"{m['small_s']:5.2f} s {small / m['small_s']:5.0f}/s")
c, r = med["cuckoo"], med["rclone"]
print(f"cuckoo faster by {r['write_s'] / c['write_s']:.2f}x write, {r['read_s'] / c['read_s']:.2f}x read, "
      f"{r['small_s'] / c['small_s']:.2f}x small files")
PY
