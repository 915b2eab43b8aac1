# vpcd — see README.md. Targets work under sudo, whose PATH may lack Go.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export GOFLAGS ?= -buildvcs=false
export PATH := $(dir $(GO)):$(PATH)

.PHONY: all build generate check-generated lint test fuzz unit netns demo bench bench-controlplane bench-cni bench-taps deps clean

all: build

build:
	$(GO) build -o bin/vpcd ./cmd/vpcd
	$(GO) build -o bin/vpcd-cni ./cmd/vpcd-cni

# Rebuild the eBPF objects and their Go bindings (needs clang, libbpf-dev).
generate:
	$(GO) generate ./bpf/...

# The committed objects must be exactly what the sources produce.
check-generated:
	@tmp=$$(mktemp -d); gen="bpf/*_bpfel.go bpf/*_bpfel.o bpf/limits/limits.go"; \
	for f in $$gen; do mkdir -p "$$tmp/$$(dirname $$f)"; cp "$$f" "$$tmp/$$f"; done; \
	$(GO) generate ./bpf/... >/dev/null; stale=0; \
	for f in $$gen; do cmp -s "$$tmp/$$f" "$$f" || { echo "stale: $$f"; stale=1; }; done; \
	rm -rf "$$tmp"; [ $$stale = 0 ] || { echo "generated eBPF code is stale: run make generate and commit"; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel\.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

deps:
	@./scripts/deps.sh

# Everything: lint, generated-code check, unit tests, eBPF programs on
# crafted packets, fuzz seeds, and the namespace integration tests.
test: deps lint check-generated fuzz
	$(GO) test -count=1 -timeout 30m ./...

# Every fuzz target for a short, fixed time; seeds and findings live in
# each package's testdata/fuzz. A target is run a second time when the
# first run fails: Go's fuzzer sometimes ends a timed run with "context
# deadline exceeded" and no finding, while a real finding is saved to
# testdata/fuzz and fails the second run again, as a seed.
FUZZTIME ?= 8s
fuzz1 = $(GO) test -run XXX -fuzz '^$(1)$$' -fuzztime $(FUZZTIME) $(2) || $(GO) test -run XXX -fuzz '^$(1)$$' -fuzztime $(FUZZTIME) $(2)
fuzz:
	$(call fuzz1,FuzzParse,./topology)
	$(call fuzz1,FuzzParseHeader,./encap)
	$(call fuzz1,FuzzSplitVXLAN,./tunnel)
	$(call fuzz1,FuzzParseGRO,./tunnel)
	$(call fuzz1,FuzzParsePeers,./tunnel)
	$(call fuzz1,FuzzDecodeIPv4,./dataplane)

unit:
	$(GO) test -count=1 ./topology/... ./tunnel/... ./cmd/...

netns: deps
	$(GO) test -count=1 -v -timeout 30m ./test/netns/...

demo: build
	./bin/vpcd demo

bench: deps build
	GO=$(GO) ./scripts/bench.sh

# vpcd fleet-sim at 10, 100 and 1,000 simulated hosts against a real etcd
# on loopback: the "Control plane" section of BENCHMARKS.md.
bench-controlplane: deps build
	GO=$(GO) ./scripts/bench-controlplane.sh

bench-cni: deps build
	GO=$(GO) ./scripts/bench-cni.sh

# Tap ENIs at XDP and at tcx (frame generator, iperf3 through frame pumps):
# the "Tap ENIs" section of BENCHMARKS.md; make bench runs it too.
bench-taps: deps build
	GO=$(GO) ./scripts/bench-taps.sh

clean:
	rm -rf bin
