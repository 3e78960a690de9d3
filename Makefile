# fedsim — common tasks. `make test` is the command CI runs (see .ci/run).
GO      ?= go
PYTHON  ?= /usr/bin/python3
PKGS    := ./...
# Packages with goroutines: run under the race detector in `make test`.
RACE_PKGS := ./internal/parallel/ ./tensor/... ./federation/... ./server/ ./client/ ./sim/ ./cluster/

.PHONY: all build test race lint vet fmt-check bench bench-go bench-torch benchmarks fixtures fuzz clean results-train results-kip proto proto-check proto-tools

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

# PyTorch golden fixtures (needs Debian's python3-torch; dcaug also python3-scipy).
fixtures:
	$(PYTHON) scripts/torch/make_fixtures.py
	$(PYTHON) scripts/torch/make_dcaug_fixtures.py

# Whole-data accuracy (RESULTS.md): 3 seeds on MNIST and Fashion-MNIST.
results-train:
	scripts/results/whole_data.sh "mnist fmnist" "1 2 3"

# KIP's targets of issue 8 (RESULTS.md): 3 seeds each; about 2 h on 2 cores.
results-kip:
	scripts/results/kip.sh "mnist1 fmnist10 mnist10" "1 2 3"

# Every Fuzz function in the tree, found afresh each time so none is left
# out; go test needs one package and one anchored name per run (-fuzz FuzzRead
# alone would also match FuzzReadNPY and refuse to start).
FUZZTIME ?= 30s
fuzz:
	@set -e; grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sort | \
	while IFS=: read -r file fn; do \
		fn=$${fn#func }; pkg=./$$(dirname "$${file#./}"); \
		echo "== $$fn ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	done

clean:
	rm -rf bin

# gRPC data plane (proto/fedsim.proto -> federation/rpc/rpcpb). Needs protoc
# (apt-get install -y protobuf-compiler) and the two plugins at the pinned
# versions (make proto-tools); CI does not: the generated code is committed.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTO_OUT := federation/rpc/rpcpb
PROTOC_RUN = PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I proto \
	--go_out=$(1) --go_opt=paths=source_relative \
	--go-grpc_out=$(1) --go-grpc_opt=paths=source_relative proto/fedsim.proto

proto-tools:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto:
	$(call PROTOC_RUN,$(PROTO_OUT))

# Regenerates into a temporary folder and fails if the committed code differs.
proto-check:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(call PROTOC_RUN,$$tmp) && diff -ru $(PROTO_OUT) "$$tmp" && echo "proto: generated code is current"
