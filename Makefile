# The few commands a person needs. `make demo` and `make test` set everything up on a fresh
# clone (a Python virtual environment in .venv, Go modules) and run.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
FUZZTIME ?= 100000x
# FuzzVerify writes a database file and may open it with LMDB per input: fewer, slower runs
FUZZVERIFYTIME ?= 10000x
FUZZ_TARGETS := FuzzDecodeKey FuzzDecodeItemValue FuzzDecodeLinksValue FuzzDecodeRoaring \
                FuzzDecodeMetadata FuzzDecodeVersion FuzzDecodeUpdateStatus

.PHONY: demo test test-go test-python test-sdist test-arm64 fuzz lint lib install venv wheel bench bench-quick bench-ltr clean

## demo: build, install, and run the demo on real data (recall@10 and queries per second)
demo: install
	$(PY) examples/demo.py

## test: build, install, and run every test (Go and Python; the Python suite against the
## x86_64 wheel, installed without Go; the Go tests for arm64 under qemu; the sdist installed)
test: lint test-go fuzz wheel test-arm64 test-python test-sdist

lint:
	@unformatted=$$(gofmt -l core capi); if [ -n "$$unformatted" ]; then echo "gofmt: $$unformatted"; exit 1; fi
	go vet ./...

test-go:
	go test -race -count=1 ./...
	go test -count=1 -run 'Recall' -v ./core
# The kernel levels below the best one (avx512 on an AVX-512 CPU): AVX2 (AVX-512 off), then
# portable Go; HANNOY_EXPECT_KERNELS makes vecmath's TestExpectedKernels check the choice.
	GODEBUG=cpu.avx512f=off HANNOY_EXPECT_KERNELS=avx2+fma/popcnt go test -count=1 -run 'Metric|Golden|Decode|Example|ExpectedKernels' ./core ./core/internal/vecmath
	GODEBUG=cpu.avx2=off,cpu.fma=off,cpu.popcnt=off HANNOY_EXPECT_KERNELS=generic/generic go test -count=1 -run 'Metric|Golden|Decode|Example|ExpectedKernels' ./core ./core/internal/vecmath

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		go test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./core || exit 1; \
	done
	go test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZVERIFYTIME) -fuzzminimizetime 50x ./core

# The whole Python suite against the x86_64 wheel in a fresh .venv-wheel, Go off PATH.
test-python: wheel
	PYTHON=$(PYTHON) bash .ci/dist.sh test-wheel

# The sdist into a fresh .venv-sdist (builds with Go), then an import and a build and search.
test-sdist: wheel
	PYTHON=$(PYTHON) bash .ci/dist.sh test-sdist

# Go tests for arm64 under qemu user emulation, and the aarch64 wheel's library (apt-get
# installs qemu-user-static and libc6-arm64-cross when they are missing: root).
test-arm64: wheel
	PYTHON=$(PYTHON) bash .ci/dist.sh test-arm64

## wheel: dist/: the sdist and the manylinux wheels for x86_64 and aarch64 (see .ci/dist.sh)
wheel:
	PYTHON=$(PYTHON) bash .ci/dist.sh wheel

venv: $(VENV)/.ready
$(VENV)/.ready: python/requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r python/requirements-test.txt
	touch $@

## install: build libhannoy with Go and install the package into .venv
install: venv
	$(PY) -m pip install -q --no-build-isolation --no-deps --force-reinstall .

lib:
	go build -buildmode=c-shared -trimpath -o build/libhannoy.so ./capi

## bench: benchmarks against upstream hannoy, hnswlib, usearch and faiss (see bench/README.md)
bench:
	bash bench/run.sh

bench-quick:
	bash bench/run.sh --quick

## bench-ltr: larger-than-RAM benchmark, ours vs upstream under a memory cgroup (root; hours;
## see bench/README.md). Options go in LTR_ARGS, e.g. make bench-ltr LTR_ARGS=--quick
LTR_ARGS ?=
bench-ltr:
	bash bench/run.sh --ltr $(LTR_ARGS)

clean:
	rm -rf build dist *.egg-info $(VENV) .venv-tools .venv-wheel .venv-sdist
