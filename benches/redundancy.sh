#!/usr/bin/env bash
# What redundancy costs and buys, on the kernel tree over five local directories: first
# backup, restore with every backend, restore with as many backends deleted as the scheme
# survives, and the stored size. Usage: bash benches/redundancy.sh [SOURCE_TREE]
# (default: the tree benches/compare.sh extracts). Results go to docs/redundancy.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${CUCKOO_BENCH_DIR:-/tmp/cuckoo-compare}
SRC=${1:-$WORK/v1}
[ -d "$SRC" ] || { echo "no source tree at $SRC: run benches/compare.sh first or pass one" >&2; exit 1; }
cargo build --release --quiet
B=$PWD/target/release/cuckoo
tar cf - "$SRC" | cat > /dev/null  # warm the page cache: every scheme reads it from memory
OUT=$(mktemp -d /dev/shm/cuckoo-red.XXXXXX)
trap 'rm -rf "$OUT" "$WORK"/repo-red-*' EXIT
export CUCKOO_PASSWORD=benchmark
echo "| redundancy | survives | first backup s | stored MB | restore s | restore with lost backends s |"
echo "|---|---|---|---|---|---|"
for scheme in none copies=2 erasure=3+2; do
    repo=$WORK/repo-red-${scheme//[=+]/-}
    rm -rf "$repo"; mkdir -p "$repo"
    export CUCKOO_CONFIG=$repo/pool.toml
    printf 'catalogue = "%s/catalogue.redb"\n' "$repo" > "$CUCKOO_CONFIG"
    for i in 0 1 2 3 4; do printf '[[backend]]\nname = "d%s"\nscheme = "fs"\nroot = "%s/d%s"\n' $i "$repo" $i >> "$CUCKOO_CONFIG"; done
    $B init --redundancy "$scheme" > /dev/null
    sync
    t0=$(date +%s.%N); $B backup "$SRC" > /dev/null; t1=$(date +%s.%N)
    sync
    stored=$(du -sb "$repo"/d? | awk '{s += $1} END {printf "%.0f", s / 1e6}')
    rm -rf "$OUT/r"; t2=$(date +%s.%N); $B restore latest --target "$OUT/r" > /dev/null; t3=$(date +%s.%N)
    case $scheme in none) lose="";; copies=2) lose="d1";; *) lose="d1 d3";; esac
    degraded="-"
    if [ -n "$lose" ]; then
        for d in $lose; do rm -rf "${repo:?}/$d"; done
        rm -f "$repo/catalogue.redb"
        rm -rf "$OUT/r"; t4=$(date +%s.%N); $B restore latest --target "$OUT/r" > /dev/null 2>&1; t5=$(date +%s.%N)
        diff -r --no-dereference "$SRC" "$OUT/r/$(basename "$SRC")" > /dev/null || { echo "degraded restore differs ($scheme)" >&2; exit 1; }
        degraded=$(python3 -c "print(f'{$t5 - $t4:.1f} ({len(\"$lose\".split())} of 5 lost, catalogue rebuilt)')")
    fi
    survives=$(case $scheme in none) echo 0;; copies=2) echo 1;; *) echo 2;; esac)
    python3 -c "print(f'| $scheme | $survives | {$t1 - $t0:.1f} | $stored | {$t3 - $t2:.1f} | $degraded |')"
done
