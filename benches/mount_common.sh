# Shared by the mount benchmarks (randread.sh, mount_apps.sh, mount_remote.sh): sourced, not
# run. Each script makes its work directory `w`, then calls `pool_env` and writes its pool.

# A pool of its own under "$w": config, catalogue, data and cache homes, a passphrase.
pool_env() {
    export CUCKOO_CONFIG=$w/pool.toml XDG_CONFIG_HOME=$w/x XDG_DATA_HOME=$w/y XDG_CACHE_HOME=$w/c \
        CUCKOO_PASSWORD=bench
    mkdir -p "$w/mnt"
}

# A pool of three local directories.
local_pool() {
    {
        echo "catalogue = \"$w/cat.redb\""
        for i in 0 1 2; do printf '[[backend]]\nname = "b%s"\nscheme = "fs"\nroot = "%s/b%s"\n' "$i" "$w" "$i"; done
    } > "$CUCKOO_CONFIG"
}

# `cuckoo mount` of the pool at "$w/mnt" with BIN and FLAGS, once it is there.
mount_cuckoo() { # BIN [FLAGS...]
    local bin=$1; shift
    "$bin" "$@" mount "$w/mnt" >"$w/mount.log" 2>&1 &
    cuckoo_pid=$!
    for _ in $(seq 300); do mountpoint -q "$w/mnt" && return; sleep 0.1; done
    echo "cuckoo mount did not appear" >&2; cat "$w/mount.log" >&2; exit 1
}

# Unmount and wait for the process to end: the drive commits what was written as it
# unmounts, and the next mount must find it.
unmount_cuckoo() {
    umount "$w/mnt"
    tail --pid="$cuckoo_pid" -f /dev/null
}

# fio's 4 KiB random reads (psync, iodepth 1) of FILE for SECONDS: "N IOPS, M ms" (mean).
random_reads() { # FILE SECONDS
    fio --name=rr --filename="$1" --rw=randread --bs=4k --ioengine=psync --iodepth=1 --time_based \
        --runtime="$2" --readonly --invalidate=1 --output-format=json > "$w/fio.json"
    python3 -c "
import json; r = json.load(open('$w/fio.json'))['jobs'][0]['read']
print(f\"{r['iops']:.0f} IOPS, {r['clat_ns']['mean'] / 1e6:.2f} ms\")"
}

# Read FILE of MIB mebibytes once, page cache dropped first: "N MiB/s".
cold_read() { # FILE MIB
    sync; echo 3 > /proc/sys/vm/drop_caches
    local s e; s=$(date +%s.%N); cat "$1" > /dev/null; e=$(date +%s.%N)
    printf '%.0f MiB/s' "$(echo "$2 / ($e - $s)" | bc -l)"
}
