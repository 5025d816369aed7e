#!/usr/bin/env python3
"""Checks the crate graph table in README.md (between its `crate graph` comments) against what
`cargo metadata` says the workspace's crates depend on (normal dependencies on workspace crates),
so the layout the README documents cannot drift from Cargo.toml. Exits 1 naming every row that
differs."""
import json
import re
import subprocess
import sys

meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"],
    check=True, capture_output=True, text=True).stdout)
members = {p["name"] for p in meta["packages"]}
actual = {
    p["name"]: sorted(d["name"] for d in p["dependencies"]
                      if d["name"] in members and d.get("kind") is None)
    for p in meta["packages"]
}
readme = open("README.md", encoding="utf-8").read()
table = readme.split("<!-- crate graph")[1].split("<!-- end crate graph -->")[0]
documented = {}
for line in table.splitlines():
    m = re.match(r"\| `([\w-]+)` \| ([^|]*) \|", line)
    if m:
        deps = m.group(2).strip()
        documented[m.group(1)] = sorted(d.strip() for d in deps.split(",")) if deps != "—" else []
bad = [f"{name}: README says {documented.get(name)}, Cargo.toml {actual.get(name)}"
       for name in sorted(set(actual) | set(documented))
       if sorted(documented.get(name) or []) != sorted(actual.get(name) or [])
       or name not in documented or name not in actual]
for b in bad:
    print(f"crate graph: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
