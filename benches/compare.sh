#!/usr/bin/env bash
# cuckoo, restic, rustic and borg side by side, in one run, on the same data:
#   bash benches/compare.sh            (root on Debian; installs what it needs)
# Data: Debian's linux-source-6.1 tree, then a scripted "next version" of it
# (benches/next_version.py: ~2,500 files edited, ~200 deleted, 300 added, one directory
# renamed). Steps per tool: first backup, unchanged re-backup, next-version backup, full
# restore, then forget all but the latest snapshot and prune (the repository must shrink
# and the latest snapshot still restore identically); wall time and peak RSS from
# /usr/bin/time, repository size from du after each step. `cuckoo check --read-data`
# runs after each cuckoo step (not timed).
# Settings (compression on, each tool's fast defaults, encryption on for all):
#   cuckoo  default pool of 3 local dirs, encrypted, zstd 3
#   restic  repository v2, --compression auto (zstd), default 16 MiB packs
#   rustic  defaults (repository v2, zstd 3)
#   borg    repokey-blake2, --compression zstd,3
# Restores go to a fresh tmpfs each: ext4 slows file creation for minutes after a tree
# of 80,000 files is deleted, which would otherwise penalise whichever tool comes next.
# They run after every tool's backups, in three rounds with the tools taking turns, and
# each tool's median is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${CUCKOO_COMPARE_DIR:-/tmp/cuckoo-compare}
TOOLS=${CUCKOO_COMPARE_TOOLS:-"cuckoo restic rustic borg"}
mkdir -p "$WORK"
RESULTS=$WORK/results.tsv
: > "$RESULTS"

install() {
  local need=()
  command -v restic > /dev/null || need+=(restic)
  command -v borg > /dev/null || need+=(borgbackup)
  [ -x /usr/bin/time ] || need+=(time)
  command -v rsync > /dev/null || need+=(rsync)
  [ -f /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q > /dev/null && apt-get install -y -q "${need[@]}" > /dev/null
  fi
  if ! command -v rustic > /dev/null && [ ! -x "$WORK/tools/bin/rustic" ]; then
    echo "== building rustic (cargo install rustic-rs; about 10 minutes on 2 cores)"
    CARGO_TARGET_DIR=$WORK/tools/target cargo install rustic-rs --locked --quiet --root "$WORK/tools"
  fi
  PATH=$WORK/tools/bin:$PATH
  cargo build --release --quiet
}

prepare_data() {
  if [ ! -d "$WORK/v1/linux-source-6.1" ]; then
    mkdir -p "$WORK/v1"
    tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$WORK/v1"
  fi
}

# Put the source tree back to version 1 (only differing files are copied).
reset_source() {
  mkdir -p "$WORK/src"
  rsync -a --delete "$WORK/v1/linux-source-6.1/" "$WORK/src/linux/"
  find "$WORK/src/linux" -type f -print0 | xargs -0 cat > /dev/null
}

# measure TOOL STEP COMMAND...: one row: tool, step, seconds, peak KiB, repository bytes
# ($DATA: the repository's directories, without local caches or catalogues)
measure() {
  local tool=$1 step=$2
  shift 2
  local log=$WORK/time.log
  /usr/bin/time -f "%e %M" -o "$log" "$@" > "$WORK/$tool-$step.out" 2>&1 || {
    echo "$tool $step failed:"
    tail -5 "$WORK/$tool-$step.out"
    exit 1
  }
  read -r secs kib < "$log"
  local bytes
  # shellcheck disable=SC2086 # DATA is a list of directories
  bytes=$(du -scb $DATA | tail -1 | cut -f1)
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$step" "$secs" "$kib" "$bytes" | tee -a "$RESULTS"
}

fresh_restore_target() {
  mountpoint -q "$WORK/restore" && umount "$WORK/restore"
  mkdir -p "$WORK/restore"
  mount -t tmpfs -o size=8g tmpfs "$WORK/restore"
}

verify_restore() {
  diff -r --no-dereference "$WORK/src/linux" "$1" > /dev/null || {
    echo "restore of $2 differs from the source"
    exit 1
  }
}

# Set TOOL's environment and commands (its repository is $WORK/repo-TOOL).
tool_env() {
  local tool=$1 repo=$WORK/repo-$1 src=$WORK/src/linux
  case $tool in
    cuckoo)
      export CUCKOO_CONFIG=$repo/pool.toml CUCKOO_PASSWORD=benchmark
      local B=$PWD/target/release/cuckoo
      DATA="$repo/d1 $repo/d2 $repo/d3"
      # Like for like: the peers keep one copy (redundancy costs are in docs/redundancy.md).
      INIT="$B init --redundancy none"
      BACKUP="$B backup $src"
      CHECK="$B check --read-data"
      RESTORE="$B restore latest --target $WORK/restore"
      PRUNE="$B forget --keep-last 1 && $B prune"
      ;;
    restic)
      export RESTIC_REPOSITORY=$repo/r RESTIC_PASSWORD=benchmark RESTIC_CACHE_DIR=$repo/cache
      DATA=$repo/r
      INIT="restic init --repository-version 2"
      BACKUP="restic backup --compression auto $src"
      CHECK=true
      RESTORE="restic restore latest --target $WORK/restore"
      PRUNE="restic forget --keep-last 1 --prune"
      ;;
    rustic)
      export RUSTIC_REPOSITORY=$repo/r RUSTIC_PASSWORD=benchmark RUSTIC_CACHE_DIR=$repo/cache
      DATA=$repo/r
      INIT="rustic init"
      BACKUP="rustic backup $src"
      CHECK=true
      RESTORE="rustic restore latest $WORK/restore"
      PRUNE="rustic forget --keep-last 1 --prune"
      ;;
    borg)
      export BORG_REPO=$repo/r BORG_PASSPHRASE=benchmark BORG_BASE_DIR=$repo/base
      DATA=$repo/r
      INIT="borg init -e repokey-blake2"
      BACKUP="borg create --compression zstd,3 ::\$(date +%s%N) $src"
      CHECK=true
      RESTORE="cd $WORK/restore && borg extract ::\$(borg list --last 1 --short)"
      PRUNE="borg prune --keep-last 1 && borg compact"
      ;;
  esac
}

backups() {
  local tool=$1 repo=$WORK/repo-$1
  rm -rf "$repo"
  mkdir -p "$repo"
  if [ "$tool" = cuckoo ]; then
    printf 'catalogue = "%s/catalogue.redb"\n' "$repo" > "$repo/pool.toml"
    for i in 1 2 3; do
      printf '[[backend]]\nname = "d%s"\nscheme = "fs"\nroot = "%s/d%s"\n' $i "$repo" $i >> "$repo/pool.toml"
    done
  fi
  reset_source
  sync
  sleep 5
  tool_env "$tool"
  bash -c "$INIT" > /dev/null 2>&1
  measure "$tool" first bash -c "$BACKUP"
  bash -c "$CHECK" > /dev/null
  measure "$tool" unchanged bash -c "$BACKUP"
  # Scripted and deterministic: every tool backs up the same next version.
  python3 benches/next_version.py "$WORK/src/linux"
  find "$WORK/src/linux" -type f -print0 | xargs -0 cat > /dev/null
  measure "$tool" next bash -c "$BACKUP"
  bash -c "$CHECK" > /dev/null
}

prune_step() {
  tool_env "$1"
  measure "$1" prune bash -c "$PRUNE"
  bash -c "$CHECK" > /dev/null
  restore_and_verify "$1"
}

# Restore the latest snapshot into a fresh tmpfs and compare it with the source.
restore_and_verify() {
  fresh_restore_target
  bash -c "$RESTORE" > /dev/null 2>&1
  verify_restored "$1"
}

# Compare what was restored with the source, then drop the tmpfs. Tools differ in where
# they put a snapshot's root: find the restored tree.
verify_restored() {
  local restored
  for restored in "$WORK/restore/linux" "$WORK/restore$WORK/src/linux" "$WORK/restore"; do
    [ -f "$restored/Makefile" ] && break
  done
  verify_restore "$restored" "$1"
  umount "$WORK/restore"
}

install
prepare_data
for tool in $TOOLS; do
  echo "== $tool"
  backups "$tool"
done
# Restores in three rounds, the tools taking turns, each into a fresh tmpfs, and the
# median kept: the first tree of 80,000 files created after a while costs the kernel
# extra (slab growth), whoever runs it.
for round in 1 2 3; do
  for tool in $TOOLS; do
    tool_env "$tool"
    fresh_restore_target
    RESULTS=$WORK/restore-$tool.tsv measure "$tool" restore bash -c "$RESTORE" | sed "s/^/  run $round: /"
    verify_restored "$tool"
  done
done
for tool in $TOOLS; do
  sort -t$'\t' -k3,3n "$WORK/restore-$tool.tsv" | sed -n 2p >> "$RESULTS"
  rm -f "$WORK/restore-$tool.tsv"
done
for tool in $TOOLS; do
  prune_step "$tool"
done
python3 benches/compare_table.py "$RESULTS"

# One 2 GiB file (a slice of a tar of /usr: binaries, libraries, text): cuckoo's backup
# throughput next to the machine's single-pass limit (read + chunk + hash + compress).
if [ "$(stat -c %s "$WORK/big.bin" 2> /dev/null)" != 2147483648 ]; then
  (tar -cf - /usr 2> /dev/null || true) | head -c 2147483648 > "$WORK/big.bin" || true
fi
cat "$WORK/big.bin" > /dev/null
limit=$(CUCKOO_SINGLE_PASS_FILE=$WORK/big.bin cargo bench --quiet --bench single_pass | grep '^single_pass' | cut -f4)
repo=$WORK/repo-big
rm -rf "$repo"
mkdir -p "$repo"
export CUCKOO_CONFIG=$repo/pool.toml CUCKOO_PASSWORD=benchmark
printf 'catalogue = "%s/catalogue.redb"\n' "$repo" > "$CUCKOO_CONFIG"
for i in 1 2 3; do printf '[[backend]]\nname = "d%s"\nscheme = "fs"\nroot = "%s/d%s"\n' $i "$repo" $i >> "$CUCKOO_CONFIG"; done
target/release/cuckoo init --redundancy none > /dev/null
sync
/usr/bin/time -f "%e %M" -o "$WORK/time.log" target/release/cuckoo backup "$WORK/big.bin" > /dev/null
read -r secs kib < "$WORK/time.log"
python3 -c "
secs, kib, limit = $secs, $kib, $limit
speed = 2048 / secs
print(f'2 GiB file: cuckoo backup {secs:.1f} s = {speed:.0f} MiB/s, peak {kib / 1024:.0f} MiB; '
      f'single-pass limit {limit:.0f} MiB/s; cuckoo reaches {100 * speed / limit:.0f}% of it')
"
rm -rf "$repo"
