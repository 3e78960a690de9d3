# fedsim — common tasks. `make test` is the command CI runs (see .ci/run).
GO      ?= go
PYTHON  ?= /usr/bin/python3
PKGS    := ./...
# Packages with goroutines: run under the race detector in `make test`.
RACE_PKGS := ./internal/parallel/ ./tensor/... ./federation/... ./server/ ./client/ ./sim/

.PHONY: all build test race lint vet fmt-check bench bench-go bench-torch benchmarks fixtures fuzz clean results-train

all: build

build:
	$(GO) build -o bin/fedsim ./cmd/fedsim

test: vet fmt-check
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

race:
	$(GO) test -race $(RACE_PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

lint: vet fmt-check

# Engine benchmarks, Go side: fixed sizes, seeded inputs.
bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 10x ./tensor/... ./autograd/...

# fedsim bench and the PyTorch reference in one run (writes bench/*.jsonl).
benchmarks: build
	scripts/bench.sh

bench: benchmarks

# PyTorch golden fixtures (needs Debian's python3-torch).
fixtures:
	$(PYTHON) scripts/torch/make_fixtures.py

# Whole-data accuracy (RESULTS.md): 3 seeds on MNIST and Fashion-MNIST.
results-train:
	scripts/results/whole_data.sh "mnist fmnist" "1 2 3"

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzSgemm -fuzztime 30s ./tensor/gemm/
	$(GO) test -run '^$$' -fuzz FuzzRead -fuzztime 30s ./internal/npz/

clean:
	rm -rf bin
