# mplane — build, test, benchmark.
GO       ?= go
BIN      ?= bin/mplane
PKGS     ?= ./...
TESTFLAGS ?= -race -count=1 -timeout 25m

.PHONY: all build test vet fmt-check lint bench bench-micro bench-bus bench-thread bench-ring bench-agents run clean tidy

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mplane

# The test command: vet, gofmt check, then every test with the race
# detector, RabbitMQ and MariaDB integration tests included (they read
# MPLANE_TEST_AMQP_URL and MPLANE_TEST_MYSQL_DSN, loopback defaults).
test: vet fmt-check
	$(GO) test $(TESTFLAGS) $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

lint: vet fmt-check

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

run: build
	./$(BIN) run

tidy:
	$(GO) mod tidy

clean:
	rm -rf bin
