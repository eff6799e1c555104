#!/usr/bin/env bash
# Stored share per backend against the weight share, for real pools of local directories,
# under each redundancy scheme; then a backend added and removed, with the bytes moved.
#   bash benches/placement_pools.sh TREE [WEIGHTS...]    (default weights: 1 2 3 4 5)
# Prints one markdown row per scheme; uses target/release/cuckoo.
set -euo pipefail
tree=${1:?a tree to back up}; shift
weights=("${@:-1 2 3 4 5}")
read -r -a weights <<<"${weights[*]}"
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release/cuckoo
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export XDG_CONFIG_HOME=$work/x XDG_DATA_HOME=$work/x CUCKOO_CONFIG=$work/pool.toml

config() { # names and weights of the pool, one "name weight" per line on stdin
  echo "catalogue = \"$work/cat.redb\""
  while read -r n w; do printf '[[backend]]\nname = "%s"\nscheme = "fs"\nweight = %s\nroot = "%s"\n' "$n" "$w" "$work/$n"; done
}
bytes() { du -sb "$work/$1" 2>/dev/null | cut -f1; }
shares() { # stored share per backend
  local total=0 out="" n
  for n in "$@"; do total=$((total + $(bytes "$n"))); done
  for n in "$@"; do out+=$(printf '%.1f/' "$(echo "100 * $(bytes "$n") / $total" | bc -l)"); done
  echo "${out%/}"
}
target() { # the target share of backend $1 (stats' target_shares)
  "$bin" --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_shares"][sys.argv[1]])' "$1"
}
moved_since() { # bytes written to backend dirs since the marker file
  find "$work"/b* -type f -newer "$work/mark" -printf '%s\n' | awk '{s+=$1} END{print s+0}'
}

printf '| scheme | weights | stored %% | target %% | add one (w=3): moved / ideal | remove b0: moved / ideal |\n|---|---|---|---|---|---|\n'
for scheme in copies=1 copies=2 copies=3 erasure=3+2 erasure=4+2; do
  rm -rf "$work"/b* "$work"/x "$work/cat.redb"
  declare -A weight=(); names=()
  for i in "${!weights[@]}"; do names+=("b$i"); weight[b$i]=${weights[$i]}; done
  for n in "${names[@]}"; do echo "$n ${weight[$n]}"; done | config >"$work/pool.toml"
  "$bin" init --no-encrypt --redundancy "$scheme" >/dev/null 2>&1 || { echo "| $scheme | ${weights[*]} | (does not fit) |"; continue; }
  "$bin" backup "$tree" >/dev/null 2>&1
  # The target shares: the weight shares, or what is feasible (stats says which).
  want=$("$bin" --json stats | python3 -c 'import json,sys; t=json.load(sys.stdin)["target_shares"]; print("/".join("%.1f" % (100*t[n]) for n in sys.argv[1:]))' "${names[@]}")
  stored=$(shares "${names[@]}")
  all=0; for n in "${names[@]}"; do all=$((all + $(bytes "$n"))); done
  # Add one of weight 3, rebalance, count bytes written.
  touch "$work/mark"; sleep 1
  "$bin" backend add bnew fs "root=$work/bnew" --weight 3 >/dev/null 2>&1
  "$bin" rebalance >/dev/null 2>&1
  weight[bnew]=3
  added=$(moved_since)
  ideal_add=$(echo "$all * $(target bnew)" | bc -l)
  # Remove b0 (drain, rebalance, forget).
  held=$(bytes b0)
  touch "$work/mark"; sleep 1
  "$bin" backend remove b0 >/dev/null 2>&1
  removed=$(moved_since)
  "$bin" check >/dev/null 2>&1 || echo "check failed after $scheme" >&2
  printf '| %s | %s | %s | %s | %.2f × | %.2f × |\n' "$scheme" "${weights[*]}" "$stored" "$want" \
    "$(echo "$added / $ideal_add" | bc -l)" "$(echo "$removed / $held" | bc -l)"
done
