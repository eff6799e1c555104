#!/usr/bin/env bash
# Cost of encryption: back up the same tree into an encrypted and an unencrypted pool of three
# local directories, alternating, and print wall time, CPU and peak memory of each run.
#   bash benches/encryption.sh [TREE] [RUNS]     (default: /usr/src/linux-source-6.1 tree, 3)
# A fresh directory per run and a pause before it: ext4 slows file creation for a while
# after many deletions, which would otherwise land on whichever run comes next.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-}
RUNS=${2:-3}
if [ -z "$SRC" ]; then
  SRC=/tmp/cuckoo-bench/linux-source-6.1
  if [ ! -d "$SRC" ]; then
    [ -f /usr/src/linux-source-6.1.tar.xz ] || apt-get install -y -q linux-source-6.1 >/dev/null
    mkdir -p /tmp/cuckoo-bench && tar -xJf /usr/src/linux-source-6.1.tar.xz -C /tmp/cuckoo-bench
  fi
fi
cargo build --release --quiet
B=$PWD/target/release/cuckoo
export CUCKOO_PASSWORD=benchmark
WORK=$(mktemp -d /tmp/cuckoo-enc.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
find "$SRC" -type f -print0 | xargs -0 cat > /dev/null # warm the page cache
for run in $(seq "$RUNS"); do
  for mode in plain encrypted; do
    W=$WORK/$mode-$run
    mkdir -p "$W"
    export CUCKOO_CONFIG=$W/pool.toml
    printf 'catalogue = "%s/cat.redb"\n' "$W" > "$CUCKOO_CONFIG"
    for i in 1 2 3; do
      printf '[[backend]]\nname = "d%s"\nscheme = "fs"\nweight = %s\nroot = "%s/d%s"\n' $i $i "$W" $i >> "$CUCKOO_CONFIG"
    done
    if [ $mode = plain ]; then "$B" init --no-encrypt --redundancy none > /dev/null; else "$B" init --redundancy none > /dev/null; fi
    sync
    sleep 5
    /usr/bin/time -f "$mode run $run: backup %e s wall, %U s user, %S s sys, peak %M KiB" "$B" backup "$SRC" --json > /dev/null
    echo "$mode run $run: stored $(du -sb "$W"/d1 "$W"/d2 "$W"/d3 | awk '{s += $1} END {print s}') bytes"
  done
done
