#!/usr/bin/env bash
# Random 4 KiB reads (fio, psync, iodepth 1) and a cold sequential read of a 1 GiB random
# file: on the local disk, then through `cuckoo mount` of a pool of three local
# directories, for each cuckoo binary given (say an older build and this one), in one run.
#
#   bash benches/randread.sh target/release/cuckoo [/path/to/older/cuckoo] [SECONDS]
#
# For a build with the local chunk cache, random reads are measured twice: cold (no local
# cache, nothing in memory: every read that misses fetches and decodes its chunk) and warm
# (the file read once through the mount, then unmounted, so memory is cold and the local
# disk cache holds the chunks). Needs root, /dev/fuse and fio. The file is written once,
# through the first binary.
set -euo pipefail
bins=("$(realpath "$1")"); [[ $# -ge 2 && -x "$2" ]] && bins+=("$(realpath "$2")")
secs=${3:-15}
w=$(mktemp -d)
trap 'mountpoint -q "$w/mnt" && umount "$w/mnt"; rm -rf "$w"' EXIT
source "$(dirname "$0")/mount_common.sh"
pool_env
local_pool
row() { printf '%-44s %s\n' "$1" "$2"; }

"${bins[0]}" init --kdf-memory 8 --kdf-iterations 1 >/dev/null
head -c 1073741824 /dev/urandom > "$w/big"
row "local disk, random 4 KiB" "$(random_reads "$w/big" "$secs")"
row "local disk, sequential cold" "$(cold_read "$w/big" 1024)"
mount_cuckoo "${bins[0]}" --no-cache; cp "$w/big" "$w/mnt/big"; sync; unmount_cuckoo
for bin in "${bins[@]}"; do
    if "$bin" --help | grep -q -- --no-cache; then
        mount_cuckoo "$bin" --no-cache; row "$bin, cold, random 4 KiB" "$(random_reads "$w/mnt/big" "$secs")"; unmount_cuckoo
        mount_cuckoo "$bin" --no-cache; row "$bin, no local cache, sequential cold" "$(cold_read "$w/mnt/big" 1024)"; unmount_cuckoo
        rm -rf "$w/c"
        mount_cuckoo "$bin"; row "$bin, filling the local cache, sequential" "$(cold_read "$w/mnt/big" 1024)"; unmount_cuckoo
        mount_cuckoo "$bin"; row "$bin, warm local cache, random 4 KiB" "$(random_reads "$w/mnt/big" "$secs")"; unmount_cuckoo
        mount_cuckoo "$bin"; row "$bin, from the local cache, sequential" "$(cold_read "$w/mnt/big" 1024)"; unmount_cuckoo
        du -sh "$w/c" | awk '{print "local cache holds " $1}'
    else
        mount_cuckoo "$bin"; row "$bin, random 4 KiB" "$(random_reads "$w/mnt/big" "$secs")"; unmount_cuckoo
        mount_cuckoo "$bin"; row "$bin, sequential cold" "$(cold_read "$w/mnt/big" 1024)"; unmount_cuckoo
    fi
done
