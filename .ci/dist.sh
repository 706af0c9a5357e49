#!/usr/bin/env bash
# Distributions and the tests that use them (the Makefile's wheel, test-python, test-sdist and
# test-arm64 targets call this). Run from anywhere; everything it makes is in the repository:
#
#   wheel        dist/hannoy-<version>.tar.gz (the sdist) and, built from it, the wheels
#                dist/hannoy-<version>-py3-none-manylinux_2_17_{x86_64,aarch64}...whl: the Go
#                library cross-compiled with cgo and zig cc against glibc 2.17's symbols (the
#                oldest glibc manylinux still names), the x86_64 one with the _fastconv
#                extension (full API for this CPython + abi3), the aarch64 one without it;
#                repaired (retagged) by auditwheel, and `auditwheel show` must name the tag the
#                file carries. The tools (zig, auditwheel, build) go into .venv-tools from
#                python/requirements-dist.txt.
#   test-wheel   a fresh .venv-wheel with python/requirements-test.txt and the x86_64 wheel,
#                PATH without Go, and the whole Python test suite against that install; then
#                the same wheel with CPython 3.9 and 3.13 when the machine has them (pyenv's),
#                where the abi3 build of _fastconv is the one imported: its tests and the
#                API's, fast-path and version tests.
#   test-sdist   a fresh .venv-sdist, `pip install` of the sdist (builds with Go, as a user's
#                pip would), then an import, library_info() and a small build and search.
#   test-arm64   the Go tests of core, core/internal/vecmath and capi built for arm64 (cgo with
#                the same zig cc) and run under qemu user emulation with Debian's arm64 C
#                library, minus the slow or emulator-bound ones named in ARM64_SKIP; then a C
#                program (capi/testdata/smoke.c) loads the aarch64 wheel's libhannoy.so under
#                qemu, checks its version and builds and searches a small index through the ABI.
#   deps-arm64   installs qemu-user-static and libc6-arm64-cross with apt-get (as root) when
#                they are missing (test-arm64 runs it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
TOOLS="$ROOT/.venv-tools"
DIST="$ROOT/dist"
VERSION="$(tr -d '[:space:]' < capi/VERSION)"
SDIST="$DIST/hannoy-$VERSION.tar.gz"
OTHER_PYTHONS="${OTHER_PYTHONS-3.9 3.13}"  # test-wheel also tries the wheel with these CPythons
GLIBC=2.17   # the glibc whose symbol versions the library is linked against (zig's -target)
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

say() { echo "dist: $*"; }
die() { echo "dist: ERROR: $*" >&2; exit 1; }
seconds() { date +%s; }

zigcc() { # the C compiler for cgo, for one target: zig cc from the ziglang wheel
    echo "$TOOLS/bin/python -m ziglang cc -target $1-linux-gnu.$GLIBC"
}

tools() {
    local stamp="$TOOLS/.requirements-dist"
    if [ -f "$stamp" ] && cmp -s "$stamp" python/requirements-dist.txt; then
        return
    fi
    say "installing the build tools into $TOOLS (python/requirements-dist.txt)"
    rm -rf "$TOOLS"
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-dist.txt
    cp python/requirements-dist.txt "$stamp"
}

wheel_for() { # wheel_for <GOARCH> <machine>: build the wheel from the sdist, repair, check
    local goarch="$1" machine="$2" raw="$ROOT/build/wheels/$2"
    rm -rf "$raw"
    say "wheel for $machine (GOARCH=$goarch, cgo with $(zigcc "$machine"))"
    # LDSHARED: the extension without this Python's -rpath (a build machine's directory)
    GOARCH="$goarch" HANNOY_CGO_CC="$(zigcc "$machine")" LDSHARED="${CC:-gcc} -shared" \
        "$TOOLS/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
        --no-build-isolation -w "$raw" "$SDIST"
    local built=("$raw"/hannoy-"$VERSION"-py3-none-linux_"$machine".whl)
    [ -f "${built[0]}" ] || die "no wheel for $machine in $raw"
    PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair -w "$DIST" "${built[0]}" 2>&1 | tail -1
    local fixed=("$DIST"/hannoy-"$VERSION"-py3-none-*"$machine"*.whl)
    [ "${#fixed[@]}" = 1 ] && [ -f "${fixed[0]}" ] || die "auditwheel repair wrote no wheel for $machine"
    # `auditwheel show` must accept the repaired wheel with the tag its name carries
    local shown tag
    shown="$("$TOOLS/bin/auditwheel" show "${fixed[0]}" 2>/dev/null)"
    tag="$(echo "$shown" | tr -s ' \n' ' ' | sed -n 's/.*following platform tag: "\([^"]*\)".*/\1/p')"
    [ -n "$tag" ] || die "auditwheel show did not name a tag for ${fixed[0]}: $shown"
    case "$(basename "${fixed[0]}")" in
        *-py3-none-*"$tag"*.whl) say "$(basename "${fixed[0]}"): auditwheel show: $tag";;
        *) die "$(basename "${fixed[0]}") does not carry the tag auditwheel show names ($tag)";;
    esac
}

cmd_wheel() {
    local t0; t0=$(seconds)
    tools
    rm -f "$DIST"/hannoy-*.whl "$DIST"/hannoy-*.tar.gz
    mkdir -p "$DIST"
    say "sdist"
    "$TOOLS/bin/python" -m build -q --sdist --no-isolation --outdir "$DIST" . >/dev/null
    [ -f "$SDIST" ] || die "no $SDIST"
    wheel_for amd64 x86_64
    wheel_for arm64 aarch64
    # The listing is read whole before it is searched: `grep -q` stops reading at the first
    # match, and under pipefail the lister's broken pipe then failed this check.
    local listing
    listing=$("$TOOLS/bin/python" -m zipfile -l "$DIST"/hannoy-"$VERSION"-*x86_64*.whl)
    grep -q '_fastconv\.abi3\.so' <<<"$listing" || die "the x86_64 wheel has no _fastconv.abi3.so"
    ls -l "$DIST"
    say "wheel: $(( $(seconds) - t0 )) s"
}

no_go_path() { # PATH without any directory that holds a go executable
    local out="" d
    IFS=: read -ra dirs <<< "$PATH"
    for d in "${dirs[@]}"; do
        [ -n "$d" ] && [ -x "$d/go" ] && continue
        out="${out:+$out:}$d"
    done
    echo "$out"
}

cmd_test_wheel() {
    local t0 venv="$ROOT/.venv-wheel" whl
    t0=$(seconds)
    whl=("$DIST"/hannoy-"$VERSION"-py3-none-*x86_64*.whl)
    [ -f "${whl[0]}" ] || die "no x86_64 wheel in $DIST (make wheel)"
    say "fresh $venv with $(basename "${whl[0]}")"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-test.txt "${whl[0]}"
    local nogo; nogo="$(no_go_path)"
    if PATH="$nogo" command -v go >/dev/null; then die "go is still on PATH: $(PATH="$nogo" command -v go)"; fi
    say "pytest against the installed wheel, without Go on PATH"
    (
        unset HANNOY_LIBRARY GOROOT
        export PATH="$nogo" HANNOY_TEST_INSTALLED=1 HANNOY_REQUIRE_LIBRARY=1
        "$venv/bin/python" -c 'import hannoy, sys; print("dist: testing", hannoy.__file__, hannoy.library_info())'
        "$venv/bin/python" -m pytest python/tests -q -ra
    )
    say "test-wheel: $(( $(seconds) - t0 )) s"
    cmd_test_pythons
}

cmd_test_pythons() {
    # The same wheel on the oldest and newest CPython here: their _fastconv is the abi3 build.
    local t0 venv="$ROOT/.venv-wheel" whl nogo v py
    t0=$(seconds)
    whl=("$DIST"/hannoy-"$VERSION"-py3-none-*x86_64*.whl)
    [ -f "${whl[0]}" ] || die "no x86_64 wheel in $DIST (make wheel)"
    nogo="$(no_go_path)"
    for v in $OTHER_PYTHONS; do
        py="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V | tail -n 1)"
        [ -n "$py" ] || py="$(command -v "python$v" || true)"
        if [ -z "$py" ]; then
            say "no CPython $v on this machine: the wheel is not tried with it"
            continue
        fi
        say "fresh $venv-$v ($py) with the same wheel: the conversion, fast-path, API and version tests"
        rm -rf "$venv-$v"
        "$py" -m venv "$venv-$v"
        "$venv-$v/bin/python" -m pip install -q --disable-pip-version-check numpy cffi pytest "${whl[0]}"
        (
            unset HANNOY_LIBRARY GOROOT
            export PATH="$nogo" HANNOY_TEST_INSTALLED=1 HANNOY_REQUIRE_LIBRARY=1
            "$venv-$v/bin/python" -c 'import hannoy; from hannoy import _convert; assert _convert._fastconv.__file__.endswith(".abi3.so"), _convert._fastconv; print("dist: testing", hannoy.__file__, _convert._fastconv.__file__)'
            "$venv-$v/bin/python" -m pytest -q -ra python/tests/test_version.py python/tests/test_fastconv.py \
                python/tests/test_fastpath.py python/tests/test_api.py
        )
        rm -rf "$venv-$v"
    done
    say "test-wheel on ${OTHER_PYTHONS// /, }: $(( $(seconds) - t0 )) s"
}

cmd_test_sdist() {
    local t0 venv="$ROOT/.venv-sdist"
    t0=$(seconds)
    [ -f "$SDIST" ] || die "no $SDIST (make wheel)"
    command -v go >/dev/null || die "installing the sdist needs Go on PATH"
    say "fresh $venv: pip install $(basename "$SDIST") (builds with $(go version | cut -d' ' -f3))"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    # as a user's pip does it: build requirements in an isolated environment
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$SDIST"
    (cd /tmp && "$venv/bin/python" - "$VERSION" <<'EOF'
import os, sys, tempfile
import numpy as np
import hannoy
from hannoy import _convert

version = sys.argv[1]
info = hannoy.library_info()
print("dist: sdist install:", hannoy.__file__, hannoy.__version__, info)
assert hannoy.__version__ == info["version"] == version, (hannoy.__version__, info, version)
assert "site-packages" in hannoy.__file__, hannoy.__file__
assert _convert._fastconv is not None, "the sdist install has no _fastconv"
here = os.path.dirname(hannoy.__file__)
assert any(f.startswith("_fastconv") and ".abi3." in f for f in os.listdir(here)), os.listdir(here)
rows = np.random.default_rng(1).standard_normal((300, 12)).astype(np.float32)
with tempfile.TemporaryDirectory() as tmp:
    with hannoy.Database(os.path.join(tmp, "db"), hannoy.Metric.EUCLIDEAN) as db:
        with db.writer(12, seed=1, threads=1) as w:
            for i, row in enumerate(rows):
                w.add_item(i, row.tolist())
        with db.reader() as r:
            hits = [r.by_vec(rows[i].tolist(), n=1)[0][0] for i in range(0, 300, 30)]
assert hits == list(range(0, 300, 30)), hits
print("dist: sdist install: build and search ok")
EOF
    )
    say "test-sdist: $(( $(seconds) - t0 )) s"
}

APT_ARM64=(qemu-user-static libc6-arm64-cross)
cmd_deps_arm64() {
    local missing=() p
    for p in "${APT_ARM64[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ "${#missing[@]}" = 0 ] && return
    [ "$(id -u)" = 0 ] || die "needs Debian's ${missing[*]}: apt-get install ${missing[*]} (as root)"
    say "apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# The Go tests left out under emulation (everything else of the three packages runs):
#   TestRecall*              real-data recall builds: 7+ minutes emulated (the amd64 run has them)
#   TestWriteMap*, TestWriterCallsFromManyThreads
#                            open the default 1 TiB map, which qemu's user mode cannot map
#                            (it refuses maps from 64 GiB on); a real arm64 kernel maps it
#   TestVerifyWhileWriting, TestBuildWithCodes, TestReadersAgree,
#   TestSearchAllocationsDoNotGrowWithEf
#                            30-100 s each emulated; the same code paths as the builds, searches
#                            and codes tests that do run
#   TestWillNeedPaced        checks that MADV_WILLNEED reads a file in; under qemu's user mode
#                            the advised pages were never read (0 of 6,144 after 10 s)
ARM64_SKIP='^(TestRecall|TestWriteMap|TestWriterCallsFromManyThreads|TestVerifyWhileWriting|TestBuildWithCodes|TestReadersAgree|TestSearchAllocationsDoNotGrowWithEf|TestWillNeedPaced)'
QEMU="qemu-aarch64-static -L /usr/aarch64-linux-gnu"

cmd_test_arm64() {
    local t0; t0=$(seconds)
    cmd_deps_arm64
    tools
    say "go test for arm64 under qemu ($QEMU), cgo with $(zigcc aarch64)"
    CGO_ENABLED=1 GOARCH=arm64 CC="$(zigcc aarch64)" HANNOY_EXPECT_KERNELS=generic/generic \
        go test -exec "$QEMU" -count=1 -skip "$ARM64_SKIP" ./core/internal/vecmath ./core ./capi
    local whl tmp="$ROOT/build/arm64-smoke"
    whl=("$DIST"/hannoy-"$VERSION"-py3-none-*aarch64*.whl)
    [ -f "${whl[0]}" ] || die "no aarch64 wheel in $DIST (make wheel)"
    rm -rf "$tmp" && mkdir -p "$tmp"
    "$TOOLS/bin/python" -m zipfile -e "${whl[0]}" "$tmp/wheel"
    $(zigcc aarch64) -O2 -Wall -Werror -I "$tmp/wheel/hannoy" -o "$tmp/smoke" capi/testdata/smoke.c -ldl -lm
    say "$(basename "${whl[0]}"): its libhannoy.so under qemu"
    $QEMU "$tmp/smoke" "$tmp/wheel/hannoy/libhannoy.so" "$VERSION" "$tmp/db"
    rm -rf "$tmp"
    say "test-arm64: $(( $(seconds) - t0 )) s"
}

case "${1:-}" in
    wheel) cmd_wheel ;;
    test-wheel) cmd_test_wheel ;;
    test-pythons) cmd_test_pythons ;;
    test-sdist) cmd_test_sdist ;;
    test-arm64) cmd_test_arm64 ;;
    deps-arm64) cmd_deps_arm64 ;;
    *) echo "usage: $0 wheel|test-wheel|test-pythons|test-sdist|test-arm64|deps-arm64" >&2; exit 2 ;;
esac
