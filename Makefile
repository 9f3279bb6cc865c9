# Sluice. README.md promises two commands: `make test` and `make demo`.
SHELL := /bin/bash
GO ?= go
BIN := bin
# The plugin's C front (plugin/shim): static, warnings are errors, built
# with musl when it is installed (it starts in a sixth of static glibc's
# page faults), code and read-only data in one segment (two pages fewer to
# fault in). The flags live in plugin/shim/cflags, which the Dockerfile and
# integration/binaries read too; the compiler choice matches
# integration/binaries.PluginCC.
PLUGIN_CC ?= $(shell command -v musl-gcc || echo cc)
PLUGIN_CFLAGS := $(shell cat plugin/shim/cflags)
# The race detector is on for every test; integration tests start real
# binaries and namespaces, so the timeout is generous.
GOTEST_FLAGS ?= -race -count=1 -timeout 40m
# Each fuzz target runs briefly in `make test`; `make fuzz FUZZTIME=5000000x`
# digs deeper. Budgets are counts, not durations: with a duration, Go 1.26's
# fuzz coordinator can report a spurious "context deadline exceeded" as the
# time runs out (go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME ?= 60000x
FUZZMINIMIZE ?= 5000x
FUZZ_TARGETS := ./conflist:FuzzAppend ./pkg/cniproto:FuzzDecodeRequest ./pkg/cniproto:FuzzDecodeExec ./pkg/ipam:FuzzParseRanges ./pkg/policy:FuzzSelects ./plugin/shim/fuzz:FuzzFrontSocket ./plugin/shim/fuzz:FuzzFrontReply

.PHONY: all build generate verify tools image test unit fuzz bench demo clean

all: build

build:
	@mkdir -p $(BIN)
	$(PLUGIN_CC) $(PLUGIN_CFLAGS) -o $(BIN)/sluice plugin/shim/sluice.c
	$(GO) build -o $(BIN)/sluice-full ./plugin
	$(GO) build -o $(BIN)/sluice-helperd ./helperd
	$(GO) build -o $(BIN)/sluice-cni-install ./conflist/cmd/sluice-cni-install

generate:
	hack/update-codegen.sh

verify:
	hack/verify.sh

# The real kube-apiserver, etcd and kubectl, and the CNI reference plugins,
# built from the Go module proxy into .cache/ (see integration/binaries).
tools:
	$(GO) run ./integration/cmd/sluice-tools

# The Sluice image as an OCI archive, without Docker or a registry: the
# recipe in install/image (which the Dockerfile reads too), Debian's
# packages by apt-get download. Load it with `ctr -n k8s.io images import`.
IMAGE ?= ghcr.io/sluicenet/sluice:dev
image:
	@mkdir -p $(BIN)
	$(GO) run ./integration/cmd/sluice-image -o $(BIN)/sluice-image.tar -ref $(IMAGE)

# Everything: unit tests, kernel tests in throwaway network namespaces (root),
# integration tests against a real kube-apiserver and etcd, brief fuzzing,
# and the demo itself so that it cannot rot.
test: verify build tools
	$(GO) test $(GOTEST_FLAGS) ./...
	$(MAKE) fuzz
	$(MAKE) demo

unit:
	$(GO) test -race -count=1 -short ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		log=$$(mktemp); \
		if ! $(GO) test $$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) -parallel 1 >$$log 2>&1; then \
			cat $$log; rm -f $$log; exit 1; fi; rm -f $$log; \
	done; echo "fuzz: ok"

# Every benchmark, one after another so they don't disturb each other; each
# merges its figures into bench/results.json and re-renders BENCHMARKS.md.
# About 45 minutes on 2 cores. BENCH_ONLY=failover (say) runs one of them.
BENCH_ENV := SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1
BENCHES := cni convergence throughput scale tunnel isolation failover restart planned wire soak
BENCH_ONLY ?= $(BENCHES)
bench: build tools
	@set -e; for b in $(BENCH_ONLY); do echo "== bench $$b"; case $$b in \
	cni) $(BENCH_ENV) $(GO) test -count=1 ./bench/cni -run '^$$' -bench CNIAddDel -benchtime 1x -timeout 30m ;; \
	convergence) $(BENCH_ENV) $(GO) test -count=1 ./bench/egress -run TestConvergence -timeout 30m -v ;; \
	throughput) $(BENCH_ENV) $(GO) test -count=1 ./bench/egress -run TestThroughput -timeout 30m -v ;; \
	scale) $(BENCH_ENV) $(GO) test -count=1 ./bench/egress -run TestScale -timeout 30m -v ;; \
	tunnel) $(BENCH_ENV) $(GO) test -count=1 ./bench/egress -run TestTunnelInjection -timeout 30m -v ;; \
	isolation) $(BENCH_ENV) $(GO) test -count=1 ./bench/egress -run TestIsolatedHelperClaims -timeout 30m -v ;; \
	failover) $(BENCH_ENV) $(GO) test -count=1 ./bench/ha -run TestFailover -timeout 60m -v ;; \
	restart) $(BENCH_ENV) $(GO) test -count=1 ./bench/ha -run TestRestart -timeout 30m -v ;; \
	planned) $(BENCH_ENV) $(GO) test -count=1 ./bench/ha -run TestPlannedMove -timeout 30m -v ;; \
	wire) $(BENCH_ENV) $(GO) test -count=1 ./bench/ha -run TestWireTransitions -timeout 60m -v ;; \
	soak) $(BENCH_ENV) $(GO) test -count=1 ./bench/ha -run TestSoak -timeout 30m -v ;; \
	*) echo "unknown benchmark $$b"; exit 2 ;; esac; done

demo: build tools
	$(GO) run ./integration/cmd/sluice-demo

clean:
	rm -rf $(BIN)
