"""Print the side-by-side table of benches/compare.sh as Markdown, with ratios to restic."""
import sys

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
data = {(t, s): (float(sec), int(kib), int(size)) for t, s, sec, kib, size in rows}
tools = list(dict.fromkeys(t for t, *_ in rows))
steps = ["first", "unchanged", "next", "restore", "prune"]
names = {"first": "first backup", "unchanged": "unchanged re-backup", "next": "next-version backup",
         "restore": "full restore", "prune": "forget all but the latest, prune"}


def ratio(value, base):
    return f" ({value / base:.2f}×)" if base else ""


print("| step | " + " | ".join(tools) + " |")
print("|---|" + "---|" * len(tools))
for step in steps:
    base = data.get(("restic", step))
    cells = []
    for t in tools:
        if (t, step) not in data:
            cells.append("–")
            continue
        sec, kib, _ = data[(t, step)]
        cells.append(f"{sec:.1f} s{ratio(sec, base[0]) if base else ''}, {kib / 1024:.0f} MiB")
    print(f"| {names[step]} (time, peak memory) | " + " | ".join(cells) + " |")
for step, label in [("first", "repository after first backup"), ("next", "repository after next version"),
                    ("prune", "repository after the prune")]:
    base = data.get(("restic", step))
    cells = []
    for t in tools:
        size = data[(t, step)][2] if (t, step) in data else None
        cells.append(f"{size / 1e6:.0f} MB{ratio(size, base[2]) if base else ''}" if size else "–")
    print(f"| {label} | " + " | ".join(cells) + " |")
