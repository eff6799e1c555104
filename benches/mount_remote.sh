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
source benches/mount_common.sh
pool_env
export RCLONE_CONFIG=$w/rclone.conf
# A CA bundle set for the machine makes rclone's S3 client refuse its own HTTP transport;
# the server is plain HTTP on loopback anyway.
unset AWS_CA_BUNDLE
mkdir -p "$w/rmnt"

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

mount_rclone() {
    rclone mount crypt: "$w/rmnt" --vfs-cache-mode full --cache-dir "$w/rc" >"$w/rclone.log" 2>&1 &
    for _ in $(seq 300); do mountpoint -q "$w/rmnt" && return; sleep 0.1; done
    echo "rclone mount did not appear" >&2; cat "$w/rclone.log" >&2; exit 1
}
unmount_rclone() {
    umount "$w/rmnt"; for _ in $(seq 300); do mountpoint -q "$w/rmnt" || break; sleep 0.1; done; sleep 1
}

head -c $((mib << 20)) /dev/urandom > "$w/big"
proxy_with 0
"$bin" init --kdf-memory 8 --kdf-iterations 1 >/dev/null
mount_cuckoo "$bin" --no-cache; cp "$w/big" "$w/mnt/big"; unmount_cuckoo
rclone copyto "$w/big" crypt:big

echo "| delay per request | tool | cold sequential | cold random 4 KiB | warm random 4 KiB | warm sequential |"
echo "|---|---|---|---|---|---|"
for delay in 0 20 50; do
    proxy_with "$delay"
    mount_cuckoo "$bin" --no-cache; cs=$(cold_read "$w/mnt/big" "$mib"); unmount_cuckoo
    mount_cuckoo "$bin" --no-cache; cr=$(random_reads "$w/mnt/big" "$secs"); unmount_cuckoo
    rm -rf "$w/c"; mount_cuckoo "$bin"; cat "$w/mnt/big" > /dev/null; unmount_cuckoo
    mount_cuckoo "$bin"; wr=$(random_reads "$w/mnt/big" "$secs"); unmount_cuckoo
    mount_cuckoo "$bin"; ws=$(cold_read "$w/mnt/big" "$mib"); unmount_cuckoo
    echo "| $delay ms | cuckoo | $cs | $cr | $wr | $ws |"
    rm -rf "$w/rc"; mount_rclone; cs=$(cold_read "$w/rmnt/big" "$mib"); unmount_rclone
    rm -rf "$w/rc"; mount_rclone; cr=$(random_reads "$w/rmnt/big" "$secs"); unmount_rclone
    rm -rf "$w/rc"; mount_rclone; cat "$w/rmnt/big" > /dev/null; unmount_rclone
    mount_rclone; wr=$(random_reads "$w/rmnt/big" "$secs"); unmount_rclone
    mount_rclone; ws=$(cold_read "$w/rmnt/big" "$mib"); unmount_rclone
    echo "| $delay ms | rclone | $cs | $cr | $wr | $ws |"
done
