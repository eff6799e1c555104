#!/usr/bin/env bash
# Reads through a mount over remote backends, next to rclone in the same run: a pool of three
# prefixes of one S3 server on loopback (moto) behind benches/latency_proxy.py, which adds D ms
# to every request (D/2 each way), for D = 0, 20 and 50. For each D: a cold sequential read of
# a random file and 4 KiB random reads (fio, psync, iodepth 1) with nothing cached, then the
# same with the file in the local cache and memory cold (unmounted and mounted again).
#   cuckoo: `cuckoo mount` (--no-cache for cold), the pool's default redundancy (copies=2);
#   rclone: `rclone mount --vfs-cache-mode full` of crypt over a union of the same three
#   prefixes (its cache directory emptied for cold).
#
#   bash benches/mount_remote.sh [CUCKOO_BIN] [FILE_MIB] [SECONDS]
#
# Needs root, /dev/fuse, fio, rclone, fuse3 (rclone runs fusermount) and moto
# (pip install 'moto[server]').
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/cuckoo}")
mib=${2:-512}
secs=${3:-10}
w=$(mktemp -d)
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
cleanup() {
    for m in "$w/mnt" "$w/rmnt"; do mountpoint -q "$m" && umount "$m"; done
    [ -n "${proxy:-}" ] && kill "$proxy" 2>/dev/null
    [ -n "${moto:-}" ] && kill "$moto" 2>/dev/null
    rm -rf "$w"
}
trap cleanup EXIT
export CUCKOO_CONFIG=$w/pool.toml XDG_CONFIG_HOME=$w/x XDG_DATA_HOME=$w/y XDG_CACHE_HOME=$w/c CUCKOO_PASSWORD=bench
export RCLONE_CONFIG=$w/rclone.conf
# A CA bundle set for the machine makes rclone's S3 client refuse its own HTTP transport;
# the server is plain HTTP on loopback anyway.
unset AWS_CA_BUNDLE
mkdir -p "$w/mnt" "$w/rmnt"

wait_port() { python3 -c "
import socket, time
for _ in range(100):
    try: socket.create_connection(('127.0.0.1', $1), 1).close(); break
    except OSError: time.sleep(0.1)"; }
moto_server -H 127.0.0.1 -p 9100 >"$w/moto.log" 2>&1 & moto=$!
wait_port 9100
python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:9100/bench', method='PUT'))"
proxy_with() { # DELAY_MS per request
    [ -n "${proxy:-}" ] && kill "$proxy" 2>/dev/null && sleep 0.5
    python3 benches/latency_proxy.py 9101 9100 "$(echo "$1 / 2" | bc -l)" & proxy=$!
    wait_port 9101
}

printf 'catalogue = "%s/cat.redb"\n' "$w" > "$CUCKOO_CONFIG"
for i in 0 1 2; do
    printf '[[backend]]\nname = "s%s"\nscheme = "s3"\nendpoint = "http://127.0.0.1:9101"\nbucket = "bench"\nregion = "us-east-1"\naccess_key_id = "k"\nsecret_access_key = "s"\ndisable_config_load = "true"\nroot = "/cuckoo-%s/"\n' "$i" "$i" >> "$CUCKOO_CONFIG"
done
cat > "$RCLONE_CONFIG" <<EOF
[s3]
type = s3
provider = Other
endpoint = http://127.0.0.1:9101
access_key_id = k
secret_access_key = s
region = us-east-1
[union]
type = union
upstreams = s3:bench/rclone-0 s3:bench/rclone-1 s3:bench/rclone-2
[crypt]
type = crypt
remote = union:
password = $(rclone obscure bench)
EOF

mount_cuckoo() { # [FLAGS...]
    "$bin" "$@" mount "$w/mnt" >"$w/mount.log" 2>&1 &
    for _ in $(seq 300); do mountpoint -q "$w/mnt" && return; sleep 0.1; done
    echo "cuckoo mount did not appear" >&2; cat "$w/mount.log" >&2; exit 1
}
mount_rclone() {
    rclone mount crypt: "$w/rmnt" --vfs-cache-mode full --cache-dir "$w/rc" >"$w/rclone.log" 2>&1 &
    for _ in $(seq 300); do mountpoint -q "$w/rmnt" && return; sleep 0.1; done
    echo "rclone mount did not appear" >&2; cat "$w/rclone.log" >&2; exit 1
}
unmount() { # MOUNTPOINT
    umount "$1"; for _ in $(seq 300); do mountpoint -q "$1" || break; sleep 0.1; done; sleep 1
}
random() { # FILE -> "IOPS mean_ms"
    fio --name=rr --filename="$1" --rw=randread --bs=4k --ioengine=psync --iodepth=1 --time_based \
        --runtime="$secs" --readonly --invalidate=1 --output-format=json > "$w/fio.json"
    python3 -c "
import json; r = json.load(open('$w/fio.json'))['jobs'][0]['read']
print(f\"{r['iops']:.0f} IOPS, {r['clat_ns']['mean'] / 1e6:.2f} ms\")"
}
sequential() { # FILE -> "MiB/s"
    sync; echo 3 > /proc/sys/vm/drop_caches
    local s e; s=$(date +%s.%N); cat "$1" > /dev/null; e=$(date +%s.%N)
    printf '%.0f MiB/s' "$(echo "$mib / ($e - $s)" | bc -l)"
}

head -c $((mib << 20)) /dev/urandom > "$w/big"
proxy_with 0
"$bin" init --kdf-memory 8 --kdf-iterations 1 >/dev/null
mount_cuckoo --no-cache; cp "$w/big" "$w/mnt/big"; unmount "$w/mnt"
rclone copyto "$w/big" crypt:big

echo "| delay per request | tool | cold sequential | cold random 4 KiB | warm random 4 KiB | warm sequential |"
echo "|---|---|---|---|---|---|"
for delay in 0 20 50; do
    proxy_with "$delay"
    mount_cuckoo --no-cache; cs=$(sequential "$w/mnt/big"); unmount "$w/mnt"
    mount_cuckoo --no-cache; cr=$(random "$w/mnt/big"); unmount "$w/mnt"
    rm -rf "$w/c"; mount_cuckoo; cat "$w/mnt/big" > /dev/null; unmount "$w/mnt"
    mount_cuckoo; wr=$(random "$w/mnt/big"); unmount "$w/mnt"
    mount_cuckoo; ws=$(sequential "$w/mnt/big"); unmount "$w/mnt"
    echo "| $delay ms | cuckoo | $cs | $cr | $wr | $ws |"
    rm -rf "$w/rc"; mount_rclone; cs=$(sequential "$w/rmnt/big"); unmount "$w/rmnt"
    rm -rf "$w/rc"; mount_rclone; cr=$(random "$w/rmnt/big"); unmount "$w/rmnt"
    rm -rf "$w/rc"; mount_rclone; cat "$w/rmnt/big" > /dev/null; unmount "$w/rmnt"
    mount_rclone; wr=$(random "$w/rmnt/big"); unmount "$w/rmnt"
    mount_rclone; ws=$(sequential "$w/rmnt/big"); unmount "$w/rmnt"
    echo "| $delay ms | rclone | $cs | $cr | $wr | $ws |"
done
