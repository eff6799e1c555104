"""Turn a linux-source tree into a deterministic "next version" in place, for benchmarks.

Edits modelled on a kernel point release (6.1.187 -> 6.1.192 touched ~3,300 files): every
31st C source or header gets a few lines changed in its middle (~1,300 files), every 23rd
Documentation file one line (~400), every 400th file is deleted (~200), 300 new files are
added (variants of existing drivers), and one directory is renamed. Same input, same
output, so every tool backs up the same next version.
"""
import os
import sys

root = sys.argv[1]
files = sorted(
    os.path.relpath(os.path.join(d, f), root)
    for d, _, fs in os.walk(root)
    for f in fs
    if not os.path.islink(os.path.join(d, f))
)
code = [f for f in files if f.endswith((".c", ".h"))]
docs = [f for f in files if f.startswith("Documentation/")]
edited = deleted = added = 0
for i, rel in enumerate(code):
    if i % 31 == 0:
        path = os.path.join(root, rel)
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
        mid = len(lines) // 2
        lines[mid:mid] = [b"/* next version: bounds check added */", b"if (!ptr) return -EINVAL;"]
        with open(path, "wb") as fh:
            fh.write(b"\n".join(lines))
        edited += 1
for i, rel in enumerate(docs):
    if i % 23 == 0:
        with open(os.path.join(root, rel), "ab") as fh:
            fh.write(b"\nUpdated for the next version.\n")
        edited += 1
for i, rel in enumerate(files):
    if i % 400 == 7 and os.path.exists(os.path.join(root, rel)):
        os.remove(os.path.join(root, rel))
        deleted += 1
new_dir = os.path.join(root, "drivers", "next-version")
os.makedirs(new_dir, exist_ok=True)
sources = [f for f in code if f.startswith("drivers/") and f.endswith(".c")][:300]
for i, rel in enumerate(sources):
    path = os.path.join(root, rel)
    if not os.path.exists(path):
        continue
    with open(path, "rb") as fh:
        body = fh.read()
    with open(os.path.join(new_dir, f"variant_{i}.c"), "wb") as fh:
        fh.write(body.replace(b"static", b"static /* variant */", 3))
    added += 1
old = os.path.join(root, "Documentation", "sound")
if os.path.isdir(old):
    os.rename(old, os.path.join(root, "Documentation", "audio"))
print(f"next version: {edited} files edited, {deleted} deleted, {added} added, 1 directory renamed")
