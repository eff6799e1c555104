#!/usr/bin/env bash
# Backup and restore throughput against a real S3 server (moto) on loopback with 50 ms added
# to every request (25 ms each way, by benches/latency_proxy.py), for several per-backend
# concurrencies. Builds a release binary; prints a Markdown table for docs/benchmarks.md.
#   bash benches/latency.sh [DATA_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-64}
work=$(mktemp -d)
cleanup() {
    [ -n "${proxy:-}" ] && kill "$proxy" 2>/dev/null || true
    [ -n "${moto:-}" ] && kill "$moto" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --quiet
bin=target/release/cuckoo
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v moto_server >/dev/null || python3 -m pip install -q 'moto[server]'

# Data: one large file and 2,000 small ones in 40 directories, incompressible.
python3 - "$work/src" "$mib" <<'PY'
import os, sys
root, mib = sys.argv[1], int(sys.argv[2])
os.makedirs(root)
with open(os.path.join(root, "large.bin"), "wb") as f:
    f.write(os.urandom((mib // 2) << 20))
for i in range(2000):
    d = os.path.join(root, f"d{i % 40}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(os.urandom(((mib // 2) << 20) // 2000))
PY

moto_server -H 127.0.0.1 -p 9100 >"$work/moto.log" 2>&1 & moto=$!
python3 -c "
import socket, time
for _ in range(100):
    try: socket.create_connection(('127.0.0.1', 9100), 1).close(); break
    except OSError: time.sleep(0.1)"
python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:9100/bench', method='PUT'))"
python3 benches/latency_proxy.py 9101 9100 25 & proxy=$!
sleep 1

echo "| concurrency per backend | backup s | backup MiB/s | restore s | restore MiB/s | objects |"
echo "|---|---|---|---|---|---|"
for c in 1 4 16 64; do
    cfg="$work/c$c.toml"
    printf 'catalogue = "%s/cat%s.redb"\n' "$work" "$c" > "$cfg"
    for b in a b; do
        printf '[[backend]]\nname = "s3-%s"\nscheme = "s3"\nconcurrency = %s\nendpoint = "http://127.0.0.1:9101"\nbucket = "bench"\nregion = "us-east-1"\naccess_key_id = "k"\nsecret_access_key = "s"\ndisable_config_load = "true"\nroot = "/c%s-%s/"\n' "$b" "$c" "$c" "$b" >> "$cfg"
    done
    export CUCKOO_CONFIG=$cfg
    $bin init --redundancy none >/dev/null
    t0=$(date +%s.%N); $bin backup "$work/src" --json > "$work/b$c.json"; t1=$(date +%s.%N)
    $bin restore latest --target "$work/out$c" >/dev/null; t2=$(date +%s.%N)
    diff -r "$work/src" "$work/out$c/src" >/dev/null || { echo "restore differs at concurrency $c" >&2; exit 1; }
    objects=$(python3 -c "import json; print(json.load(open('$work/b$c.json'))['summary']['objects_added'])")
    python3 -c "
b, r, mib = $t1 - $t0, $t2 - $t1, $mib
print(f'| $c | {b:.1f} | {mib / b:.1f} | {r:.1f} | {mib / r:.1f} | $objects |')"
done
