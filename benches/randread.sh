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
bins=("$1"); [[ $# -ge 2 && -x "$2" ]] && bins+=("$2")
secs=${3:-15}
w=$(mktemp -d)
trap 'mountpoint -q "$w/mnt" && umount "$w/mnt"; rm -rf "$w"' EXIT
export CUCKOO_CONFIG=$w/pool.toml XDG_CONFIG_HOME=$w/x XDG_DATA_HOME=$w/y XDG_CACHE_HOME=$w/c CUCKOO_PASSWORD=bench
{
    echo "catalogue = \"$w/cat.redb\""
    for i in 0 1 2; do printf '[[backend]]\nname = "b%s"\nscheme = "fs"\nroot = "%s/b%s"\n' "$i" "$w" "$i"; done
} > "$w/pool.toml"

mount_with() { # BIN [FLAGS...]
    local bin=$1; shift
    mkdir -p "$w/mnt"
    "$bin" "$@" mount "$w/mnt" >/dev/null 2>&1 &
    for _ in $(seq 100); do mountpoint -q "$w/mnt" && return; sleep 0.1; done
    echo "mount did not appear" >&2; exit 1
}
unmount() { umount "$w/mnt"; sleep 1; }
measure() { # FILE LABEL
    fio --name=rr --filename="$1" --rw=randread --bs=4k --ioengine=psync --iodepth=1 --time_based \
        --runtime="$secs" --readonly --invalidate=1 --output-format=json > "$w/fio.json"
    python3 - "$w/fio.json" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["jobs"][0]["read"]
print(f"{sys.argv[2]:<40} random 4 KiB: {r['iops']:8.0f} IOPS, mean {r['clat_ns']['mean'] / 1e6:6.3f} ms")
PY
}
seq_read() { # FILE LABEL
    sync; echo 3 > /proc/sys/vm/drop_caches
    local s e; s=$(date +%s.%N); cat "$1" > /dev/null; e=$(date +%s.%N)
    printf '%-40s sequential cold: %6.0f MiB/s\n' "$2" "$(echo "1024 / ($e - $s)" | bc -l)"
}

"${bins[0]}" init --kdf-memory 8 --kdf-iterations 1 >/dev/null
head -c 1073741824 /dev/urandom > "$w/big"
measure "$w/big" "local disk"
seq_read "$w/big" "local disk"
mount_with "${bins[0]}" --no-cache; cp "$w/big" "$w/mnt/big"; sync; unmount
for bin in "${bins[@]}"; do
    if "$bin" --help | grep -q -- --no-cache; then
        mount_with "$bin" --no-cache; measure "$w/mnt/big" "$bin, cold"; unmount
        mount_with "$bin" --no-cache; seq_read "$w/mnt/big" "$bin, no local cache"; unmount
        rm -rf "$w/c"
        mount_with "$bin"; seq_read "$w/mnt/big" "$bin, filling the local cache"; unmount
        mount_with "$bin"; measure "$w/mnt/big" "$bin, warm local cache"; unmount
        mount_with "$bin"; seq_read "$w/mnt/big" "$bin, from the local cache"; unmount
        du -sh "$w/c" | awk '{print "local cache holds " $1}'
    else
        mount_with "$bin"; measure "$w/mnt/big" "$bin"; unmount
        mount_with "$bin"; seq_read "$w/mnt/big" "$bin"; unmount
    fi
done
