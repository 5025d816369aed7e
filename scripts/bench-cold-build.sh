#!/usr/bin/env bash
# Cold build times of REV and of NEW (default HEAD) (issue 27: a restructuring must not make the first
# build slower): `scripts/main.sh`'s `cargo build --release --locked --bin distill`, and the
# Python module's crate (`cargo build --locked -p distill-python`, the debug build that
# `maturin develop` makes), each in an empty target directory. Both are built from worktrees of
# their commits, so the checkout may change while it runs. Downloads are not timed (the registry
# is fetched first). Usage: scripts/bench-cold-build.sh REV [NEW]
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/bench-cold-build.sh REV [NEW]}
new=${2:-$(git rev-parse --short HEAD)}
scripts/build-deps.sh
root=$PWD
tmp=$root/target/bench-cold
rm -rf "$tmp"
mkdir -p "$tmp"
git worktree prune
git worktree add --detach "$tmp/old" "$rev" >/dev/null
git worktree add --detach "$tmp/new" "$new" >/dev/null
(cd "$tmp/new" && cargo fetch --locked >/dev/null)
(cd "$tmp/old" && cargo fetch --locked >/dev/null)
timed() { # label, directory, cargo arguments...
    local label=$1 dir=$2 t0 t1
    shift 2
    rm -rf "$tmp/target"
    t0=$(date +%s)
    (cd "$dir" && CARGO_TARGET_DIR=$tmp/target cargo "$@" --quiet)
    t1=$(date +%s)
    echo "| $label | $* | $((t1 - t0)) s |"
}
echo "| build | command | wall |"
echo "|---|---|---:|"
timed "$rev" "$tmp/old" build --release --locked --bin distill
timed "$new" "$tmp/new" build --release --locked --bin distill
timed "$rev" "$tmp/old" build --locked -p distill-python
timed "$new" "$tmp/new" build --locked -p distill-python
rm -rf "$tmp/target"
git worktree remove --force "$tmp/old"
git worktree remove --force "$tmp/new"
