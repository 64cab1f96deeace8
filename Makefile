# mplane — build, test, benchmark.
GO       ?= go
BIN      ?= bin/mplane
PKGS     ?= ./...
TESTFLAGS ?= -race -count=1 -timeout 25m

# staticcheck, pinned: v0.8.2 (release 2026.2.2) is built for Go 1.26,
# go.mod's Go. Bump it with the Go version.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK_BIN     ?= $(or $(shell $(GO) env GOBIN),$(firstword $(subst :, ,$(shell $(GO) env GOPATH)))/bin)/staticcheck

.PHONY: all build test chaos vet fmt-check staticcheck lint bench bench-micro bench-bus bench-thread bench-ring bench-agents fuzz fuzz-short run clean tidy

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mplane

# The test command: lint (vet, gofmt check, staticcheck), then every test
# with the race detector, RabbitMQ and MariaDB integration tests included
# (they read MPLANE_TEST_AMQP_URL and MPLANE_TEST_MYSQL_DSN, loopback
# defaults), then each fuzz target for 3 s (fuzz-short).
test: lint
	$(GO) test $(TESTFLAGS) $(PKGS)
	$(MAKE) fuzz-short

# The chaos suite in full (docs/reliability.md): every fault scenario five
# times on three nodes, three agents and the suite's own RabbitMQ and
# MariaDB; the report goes to CHAOS_REPORT. `make test` runs its short
# variant (kill-node and database-outage-10s, once each).
CHAOS_REPORT ?= $(CURDIR)/chaos-report.json
chaos:
	MPLANE_CHAOS=full MPLANE_CHAOS_REPORT='$(CHAOS_REPORT)' $(GO) test -count=1 -timeout 150m -run '^TestChaos$$' -v ./test/e2e

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# staticcheck $(STATICCHECK_VERSION): STATICCHECK_BIN (GOBIN, else GOPATH/bin),
# else the one on PATH, if it is that version; otherwise go install puts
# it at STATICCHECK_BIN first.
staticcheck:
	@want='($(STATICCHECK_VERSION:v%=%))'; sc='$(STATICCHECK_BIN)'; ok=; \
	for c in "$$sc" "$$(command -v staticcheck)"; do \
		if [ -n "$$c" ] && "$$c" -version 2>/dev/null | grep -qF "$$want"; then sc=$$c; ok=1; break; fi; \
	done; \
	if [ -z "$$ok" ]; then \
		echo "$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)"; \
		GOBIN="$$(dirname "$$sc")" $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) || exit 1; \
	fi; \
	"$$sc" $(PKGS)

lint: vet fmt-check staticcheck

# Every benchmark on this machine: the micro benchmarks, then the
# end-to-end scenarios through the REST API (scripts/bench.sh starts and
# stops every process; results and summary.md in bench-results/latest).
# BENCH_SCENARIOS="micro a b c d e" picks a subset.
bench:
	GO='$(GO)' MAKE='$(MAKE)' BIN='$(BIN)' bash scripts/bench.sh

# Micro benchmarks, each against its baseline in the same run.
bench-micro: bench-bus bench-thread bench-ring bench-agents

bench-agents:
	$(GO) test -run '^$$' -bench . -benchmem ./agents/agentclient/

bench-ring:
	$(GO) test -run '^$$' -bench . -benchmem ./managementnode/

bench-bus:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./cloudbus/

bench-thread:
	$(GO) test -run '^$$' -bench . -benchmem ./thread/

# Go native fuzzing of the decoders of untrusted input (REST bodies and
# queries, agent answers, callbacks and events, bus envelopes): every
# target in turn, FUZZTIME each (go test -fuzz takes one target at a
# time). A crasher is saved under the package's testdata/fuzz/<target>/;
# commit it as a regression seed. The seeds run with every `go test`;
# fuzz-short, a quick pass of 3s each, ends `make test`.
FUZZTIME ?= 30s
FUZZCMD = $(GO) test -run '^$$' -fuzztime $(FUZZTIME)
fuzz:
	$(FUZZCMD) -fuzz '^FuzzDecodeParams$$' ./api/rest
	$(FUZZCMD) -fuzz '^FuzzDecodeAction$$' ./api/rest
	$(FUZZCMD) -fuzz '^FuzzParse$$' ./api/query
	$(FUZZCMD) -fuzz '^FuzzResultError$$' ./agents/agentclient
	$(FUZZCMD) -fuzz '^FuzzCallback$$' ./agents/agentclient
	$(FUZZCMD) -fuzz '^FuzzEventHandler$$' ./agents/agentclient
	$(FUZZCMD) -fuzz '^FuzzProtocolObject$$' ./agents/agentclient
	$(FUZZCMD) -fuzz '^FuzzDecodeEnvelope$$' ./cloudbus
	$(FUZZCMD) -fuzz '^FuzzBusDelivery$$' ./cloudbus

fuzz-short:
	$(MAKE) fuzz FUZZTIME=3s

run: build
	./$(BIN) run

tidy:
	$(GO) mod tidy

clean:
	rm -rf bin
