#!/usr/bin/env bash
# Random 4 KiB reads (fio, psync, iodepth 1) and a cold sequential read of a 1 GiB random
# file: on the local disk, then through `cuckoo mount` of a pool of three local
# directories, for each cuckoo binary given (say an older build and this one), in one run.
#
#   bash benches/randread.sh target/release/cuckoo [/path/to/older/cuckoo] [SECONDS]
#
# For a build with the local chunk cache, random reads are measured three times: cold (no
# local cache, nothing in memory: every read that misses fetches and checks what it needs,
# a 64 KiB segment for a segmented chunk, the whole chunk before), with an empty local cache
# (which fills behind the reader), and warm (the file read once through the mount, then
# unmounted, so memory is cold and the local disk cache holds the chunks). Each binary gets
# a pool of its own and writes the file into it, so each reads its own object format. Needs
# root, /dev/fuse and fio.
set -euo pipefail
bins=("$(realpath "$1")"); [[ $# -ge 2 && -x "$2" ]] && bins+=("$(realpath "$2")")
secs=${3:-15}
top=$(mktemp -d)
w=$top
trap 'mountpoint -q "$w/mnt" && umount "$w/mnt"; rm -rf "$top"' EXIT
source "$(dirname "$0")/mount_common.sh"
row() { printf '%-44s %s\n' "$1" "$2"; }

head -c 1073741824 /dev/urandom > "$top/big"
row "local disk, random 4 KiB" "$(random_reads "$top/big" "$secs")"
row "local disk, sequential cold" "$(cold_read "$top/big" 1024)"
for k in "${!bins[@]}"; do
    bin=${bins[$k]}
    # A pool of its own for each binary: each stores the file in its own object format.
    w=$top/pool$k; mkdir -p "$w"; pool_env; local_pool
    "$bin" init --kdf-memory 8 --kdf-iterations 1 >/dev/null
    mount_cuckoo "$bin" --no-cache; cp "$top/big" "$w/mnt/big"; sync; unmount_cuckoo
    if "$bin" --help | grep -q -- --no-cache; then
        mount_cuckoo "$bin" --no-cache; row "$bin, cold, random 4 KiB" "$(random_reads "$w/mnt/big" "$secs")"; unmount_cuckoo
        mount_cuckoo "$bin" --no-cache; row "$bin, no local cache, sequential cold" "$(cold_read "$w/mnt/big" 1024)"; unmount_cuckoo
        rm -rf "$w/c"
        mount_cuckoo "$bin"; row "$bin, empty local cache, random 4 KiB" "$(random_reads "$w/mnt/big" "$secs")"; unmount_cuckoo
        rm -rf "$w/c"
        mount_cuckoo "$bin"; row "$bin, filling the local cache, sequential" "$(cold_read "$w/mnt/big" 1024)"; unmount_cuckoo
        mount_cuckoo "$bin"; row "$bin, warm local cache, random 4 KiB" "$(random_reads "$w/mnt/big" "$secs")"; unmount_cuckoo
        mount_cuckoo "$bin"; row "$bin, from the local cache, sequential" "$(cold_read "$w/mnt/big" 1024)"; unmount_cuckoo
        du -sh "$w/c" | awk '{print "local cache holds " $1}'
    else
        mount_cuckoo "$bin"; row "$bin, random 4 KiB" "$(random_reads "$w/mnt/big" "$secs")"; unmount_cuckoo
        mount_cuckoo "$bin"; row "$bin, sequential cold" "$(cold_read "$w/mnt/big" 1024)"; unmount_cuckoo
    fi
    rm -rf "$w"
done
