# Sluice. `make test` and `make demo` are the two commands README.md promises.
SHELL := /bin/bash
GO ?= go
BIN := bin
GOTEST_FLAGS ?= -race -count=1 -timeout 40m

.PHONY: all build generate verify tools test unit bench demo clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./plugin/... ./helperd/... ./conflist/cmd/...

generate:
	hack/update-codegen.sh

verify:
	hack/verify.sh

# The real kube-apiserver, etcd and kubectl, and the CNI reference plugins,
# built from the Go module proxy into .cache/ (see integration/tools).
tools:
	$(GO) run ./integration/cmd/sluice-tools

# Everything: unit tests, kernel tests in throwaway network namespaces (root),
# and the integration tests against a real kube-apiserver and etcd.
test: verify build tools
	$(GO) test $(GOTEST_FLAGS) ./...

unit:
	$(GO) test -race -count=1 -short ./...

clean:
	rm -rf $(BIN)
