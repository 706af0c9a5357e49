#!/usr/bin/env bash
# Set up the benchmark's environment, then run it: `bash bench/run.sh [bench.py options]`.
# `bash bench/run.sh --ltr [ltr.py options]` runs the larger-than-RAM benchmark (bench/ltr.py,
# needs root) after the same set-up (`make bench-ltr`); `bash bench/run.sh --dask [dask_bench.py
# options]` the sharded one on a Dask LocalCluster (bench/dask_bench.py).
#
#  1. bench/.venv (created with $PYTHON, default python3) gets bench/requirements.txt — only the
#     lines tagged "quick" with --quick. Each line is installed once (remembered in the venv); a
#     package that fails to install is reported and its library skipped.
#  2. This repository's hannoy: `pip install <repo root>` into the venv, again whenever its
#     sources change (needs Go; see the top-level README).
#  3. Upstream hannoy 0.1.3 into its own directory, bench/.cache/upstream (both import as hannoy).
#  4. python bench/bench.py "$@": the numpy mode and the upstream-style mode (--modes picks one)
#     (with --ltr: python bench/ltr.py and the other arguments; with --dask: bench/dask_bench.py,
#     and --quick then also installs the lines tagged "dask").
set -uo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
VENV="${BENCH_VENV:-$BENCH/.venv}"
PYTHON="${PYTHON:-python3}"
CACHE="$BENCH/.cache"
UPSTREAM="$CACHE/upstream"
UPSTREAM_VERSION="0.1.3"

quick=0
ltr=0
dask=0
args=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1; args+=("$arg") ;;
        --ltr) ltr=1 ;;
        --dask) dask=1 ;;
        *) args+=("$arg") ;;
    esac
done
say() { printf 'bench/run.sh: %s\n' "$*" >&2; }
mkdir -p "$CACHE"

# 1. virtual environment and pinned requirements
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV" || { say "cannot create a virtual environment with $PYTHON"; exit 1; }
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

done_file="$VENV/.bench-requirements"  # requirement lines already installed
touch "$done_file"
missing=()
while IFS= read -r line; do
    req="${line%%#*}"
    req="${req//[[:space:]]/}"
    [ -z "$req" ] && continue
    if [ "$quick" = 1 ] && [[ "$line" != *"# quick"* ]]; then
        [ "$dask" = 1 ] && [[ "$line" == *"# dask"* ]] || continue
    fi
    grep -qxF "$req" "$done_file" || missing+=("$req")
done < "$BENCH/requirements.txt"
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    if pip_install "${missing[@]}"; then
        printf '%s\n' "${missing[@]}" >> "$done_file"
    else  # one at a time, so one failure does not keep out the others
        for req in "${missing[@]}"; do
            if pip_install "$req"; then
                echo "$req" >> "$done_file"
            else
                say "WARNING: could not install $req; what needs it is skipped (bench.py says which)"
            fi
        done
    fi
fi

# 2. this repository's package, rebuilt when its sources change
src_hash() {
    (cd "$ROOT" && find core capi python/hannoy go.mod go.sum setup.py pyproject.toml -type f \
        ! -name 'libhannoy.*' ! -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort | xargs sha256sum 2>/dev/null \
        | sha256sum | cut -c1-32)
}
ours_stamp="$VENV/.bench-ours"
hash="$(src_hash)"
if [ "$(cat "$ours_stamp" 2>/dev/null)" != "$hash" ]; then
    say "installing this repository's hannoy (pip install $ROOT)"
    rm -f "$ours_stamp"
    if pip_install --no-build-isolation --no-deps --force-reinstall "$ROOT" > "$CACHE/pip-ours.log" 2>&1; then
        echo "$hash" > "$ours_stamp"
    else
        tail -n 15 "$CACHE/pip-ours.log" >&2
        say "WARNING: could not install this repository's hannoy (log: $CACHE/pip-ours.log); 'ours' is skipped"
    fi
fi

# 3. upstream hannoy in its own directory
if [ ! -d "$UPSTREAM/hannoy-$UPSTREAM_VERSION.dist-info" ]; then
    say "installing upstream hannoy==$UPSTREAM_VERSION into $UPSTREAM"
    rm -rf "$UPSTREAM.tmp"
    if pip_install --no-deps --target "$UPSTREAM.tmp" "hannoy==$UPSTREAM_VERSION"; then
        rm -rf "$UPSTREAM" && mv "$UPSTREAM.tmp" "$UPSTREAM"
    else
        rm -rf "$UPSTREAM.tmp"
        say "WARNING: could not install upstream hannoy $UPSTREAM_VERSION; 'upstream' is skipped"
    fi
fi

# 4. the benchmark
if [ "$ltr" = 1 ]; then
    exec "$PY" "$BENCH/ltr.py" ${args[@]+"${args[@]}"}
fi
if [ "$dask" = 1 ]; then
    exec "$PY" "$BENCH/dask_bench.py" ${args[@]+"${args[@]}"}
fi
exec "$PY" "$BENCH/bench.py" ${args[@]+"${args[@]}"}
