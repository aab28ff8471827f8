# Shoelace. The README's two commands: `make run` and `make test`.
GO        ?= go
export GOTOOLCHAIN := local
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# urfave_cli_no_docs leaves out urfave/cli's man page and Markdown generators, which no command
# uses and which text/template's reflection would otherwise keep (with blackfriday and
# go-md2man): 0.25 MB of the agent's binary. release.sh, package.sh and tests/bench build the same way.
GOFLAGS_BUILD := -trimpath -tags urfave_cli_no_docs -ldflags "$(LDFLAGS)"
# The agent's cold packages (its command line, service setup, config parsers and template function
# libraries) are compiled without inlining, which keeps it within issue 20's 12 MiB: 12,578,978
# bytes became 12,349,602. cmd/shoelace-agent/noinline.txt lists them and says why; every build
# of the agent reads that file (release.sh, package.sh, the size test, tests/bench).
AGENT_GCFLAGS = $(patsubst %,-gcflags=%=-l,$(shell grep '^[[:alnum:]]' cmd/shoelace-agent/noinline.txt))
# How long each fuzz target runs under `make fuzz`.
FUZZTIME  ?= 30s
# The timeout of one test package under `make test`.
TESTTIMEOUT ?= 15m

.PHONY: all build build-all vet-all install run test test-race test-short lint peers bench bench-quick bench-micro fuzz package release clean

# Targets of build-all: the agent runs on every one, the server on Linux.
AGENT_TARGETS  := linux/amd64 linux/arm64 windows/amd64 darwin/arm64
SERVER_TARGETS := linux/amd64 linux/arm64

all: build

## build: bin/shoelace (server + CLI) and bin/shoelace-agent
build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o bin/shoelace ./cmd/shoelace
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) $(AGENT_GCFLAGS) -o bin/shoelace-agent ./cmd/shoelace-agent

## build-all: cross-build the agent for $(AGENT_TARGETS) and the server for $(SERVER_TARGETS) into dist/bin/OS_ARCH/
build-all:
	@set -e; for t in $(AGENT_TARGETS); do os=$${t%/*}; arch=$${t#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "shoelace-agent $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build $(GOFLAGS_BUILD) $(AGENT_GCFLAGS) -o dist/bin/$${os}_$$arch/shoelace-agent$$ext ./cmd/shoelace-agent; \
	done; \
	for t in $(SERVER_TARGETS); do os=$${t%/*}; arch=$${t#*/}; \
		echo "shoelace $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build $(GOFLAGS_BUILD) -o dist/bin/$${os}_$$arch/shoelace ./cmd/shoelace; \
	done

## vet-all: go vet of the agent's packages (tests included) for every agent target, so that a
## Unix-only call cannot land in code Windows or macOS builds
vet-all:
	@set -e; for t in $(AGENT_TARGETS); do os=$${t%/*}; arch=$${t#*/}; \
		echo "go vet $$os/$$arch"; \
		GOOS=$$os GOARCH=$$arch $(GO) vet $$($(GO) list -deps ./cmd/shoelace-agent | grep '^github.com/shoelace-dev/shoelace/') ./cmd/shoelace-agent; \
	done

## install: copy both binaries into $(PREFIX)/bin (default /usr/local/bin; PREFIX=$$HOME/.local for yours),
## built first when go is on the PATH; `sudo make install` has no go on sudo's PATH, and copies
## what `make build` left in bin/
PREFIX ?= /usr/local
install:
	@if command -v $(GO) >/dev/null 2>&1; then $(MAKE) --no-print-directory build; \
	elif [ ! -x bin/shoelace ] || [ ! -x bin/shoelace-agent ]; then \
		echo "make install: $(GO) is not on the PATH (sudo resets it) and bin/ does not hold both binaries: run make build first, as yourself, then sudo make install" >&2; exit 1; \
	fi
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 bin/shoelace bin/shoelace-agent $(DESTDIR)$(PREFIX)/bin/

## run: a server on an embedded etcd under ./run/ and an agent rendering examples/ into ./run/out/
run: build
	bash scripts/run.sh

# Tests run through scripts/testreport: it prints what go test prints (failures in full, one line
# per package) and then one line per skipped test with its reason. With SHOELACE_STRICT_SKIPS=1
# (.ci/run sets it) a skip not named in .ci/skips-allowed fails the run.
TESTREPORT := $(GO) run ./scripts/testreport --

## test: vet (for every target too), format check and every cross-build, while every test runs
## with the race detector; skipped tests listed at the end; fails when either fails
# The checks (minutes of compiling on a fresh clone) run beside the tests at a lower priority:
# the tests mostly wait, and what they wait for is timed.
test:
	@nice -n 10 $(MAKE) --no-print-directory lint vet-all build-all & checks=$$!; \
	status=0; $(MAKE) --no-print-directory test-race || status=$$?; \
	wait $$checks || { echo "make test: the checks (lint vet-all build-all) failed"; status=1; }; \
	exit $$status

## test-race: every test with the race detector, without the checks; skipped tests listed at the end
# ./server comes first: go test starts packages in the order given, and the server's tests take
# longer than any three others together; started after the others (in ./...'s order), they ran
# alone for minutes at the end. Three packages at a time: the tests wait on timeouts, restarts
# and child processes more than they compute (two kept the two cores half busy).
TESTP ?= 3
test-race:
	$(TESTREPORT) $(GO) test -json -race -count=1 -p $(TESTP) -timeout $(TESTTIMEOUT) ./server ./...

## test-short: the quick local loop (skips the slowest end-to-end cases)
test-short:
	$(TESTREPORT) $(GO) test -json -short -count=1 ./...

## lint: gofmt and go vet must be clean
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^vendor/')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Where `make peers` builds confd and consul-template, and where the benchmarks' rows go.
PEERS_DIR  ?= $(CURDIR)/bin/peers
BENCH_ROWS := $(CURDIR)/bin/bench-rows.jsonl
BENCH_RUN  = @mkdir -p bin; rm -f $(BENCH_ROWS); \
	SHOELACE_PEERS_DIR=$(PEERS_DIR) SHOELACE_BENCH_ROWS=$(BENCH_ROWS) \
	$(GO) test -run '^$$' -bench . -benchtime 1x -count=1 -timeout 60m ./tests/bench; \
	status=$$?; $(GO) run ./scripts/benchtable $(BENCH_ROWS) || exit 1; exit $$status

## peers: build the real confd v0.16.0 and consul-template v0.41.1 the benchmarks compare against, and
## etcd and etcdctl v3.7.3 that rewriting the templates' peer goldens runs confd against (once)
peers:
	bash scripts/peers/build.sh $(PEERS_DIR)

## bench: every target of BENCHMARKS.md against its baseline measured in the same run, as one table
bench: peers
	$(BENCH_RUN)

## bench-quick: a small version of each benchmark of the table (under 2 minutes)
bench-quick: export SHOELACE_BENCH_QUICK = 1
bench-quick: peers
	$(BENCH_RUN)

## bench-micro: every package's Go micro-benchmarks (templates, store, …)
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...

## fuzz: run every fuzz target for FUZZTIME each (seeds and finds are kept in testdata/)
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

## release: every target's binaries, the .deb/.rpm, an SBOM and SHA256SUMS into dist/release/VERSION/,
## byte for byte the same from two runs of one commit (make release VERSION=v1.2.3)
release:
	VERSION=$(VERSION) bash scripts/release.sh

## package: .deb and .rpm for the agent and the server into dist/
package:
	VERSION=$(VERSION) bash packaging/package.sh

clean:
	rm -rf bin dist
