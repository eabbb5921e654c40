# site-operator — the targets follow kubebuilder's names.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# Tools are pinned in hack/tools/go.mod and run with `go tool`, so a fresh
# machine needs nothing but Go.
GO_TOOL        ?= go tool -modfile=hack/tools/go.mod
CONTROLLER_GEN ?= $(GO_TOOL) controller-gen
KUSTOMIZE      ?= $(GO_TOOL) kustomize
HELM           ?= $(GO_TOOL) helm

# The local control plane (etcd, kube-apiserver) built from Go module
# sources by hack/controlplane.sh into bin/k8s/<version>.
CONTROLPLANE   ?= hack/controlplane.sh
FUZZTIME       ?= 20s
IMG            ?= site-operator:dev

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-16s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate the CRDs, the manager's RBAC and the site services' RBAC from the Go markers.
	$(CONTROLLER_GEN) rbac:roleName=site-operator-manager crd paths="./api/...;./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=site-operator-site-service paths="./internal/siteservice/..." \
		output:rbac:artifacts:config=config/rbac/site-service
	@hack/chart-crds.sh
	@cp config/rbac/role.yaml charts/site-operator/files/manager-role.yaml
	@cp config/rbac/site-service/role.yaml charts/site-operator/files/site-service-role.yaml
	@$(MAKE) --no-print-directory chart-docs

.PHONY: chart-docs
chart-docs: ## Generate the chart's README (charts/site-operator/README.md) from the comments of its values.yaml.
	cd hack/chartdoc && go run . -values ../../charts/site-operator/values.yaml \
		-schema ../../charts/site-operator/values.schema.json \
		-header ../../charts/site-operator/README.header.md -o ../../charts/site-operator/README.md

.PHONY: generate
generate: ## Generate the DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths="./api/..."

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -s -w $$(git ls-files -co --exclude-standard '*.go')

.PHONY: vet
vet: ## go vet, including the end-to-end suite (build tag e2e).
	go vet ./...
	go vet -tags e2e ./test/e2e/... ./internal/simcluster/...

.PHONY: tidy
tidy: ## go mod tidy for the project, its tools modules, hack/promql and hack/chartdoc.
	go mod tidy
	cd hack/tools && go mod tidy
	cd hack/lint && go mod tidy
	cd hack/promql && go mod tidy
	cd hack/chartdoc && go mod tidy

.PHONY: verify
verify: generate manifests fmt tidy vet ## Regenerate, format, tidy and vet, then fail if the tree changed.
	hack/check-chart-rbac.sh
	@if [[ -n "$$(git status --porcelain)" ]]; then \
		echo "The tree is not clean after regeneration; commit these:"; git status --porcelain; git --no-pager diff --stat; exit 1; fi

.PHONY: lint
lint: ## golangci-lint (pinned in hack/lint/go.mod) with .golangci.yml.
	go tool -modfile=hack/lint/go.mod golangci-lint run ./...

.PHONY: controlplane
controlplane: ## Build etcd and kube-apiserver from module sources (once; cached).
	$(CONTROLPLANE)

.PHONY: test
test: generate manifests ## Unit tests, envtest suites on the local control plane, a short fuzz run, and the chart's PromQL (hack/promql).
	KUBEBUILDER_ASSETS="$$($(CONTROLPLANE))" go test ./... -count=1
	go test ./internal/topology -run='^$$' -fuzz=FuzzResolver -fuzztime=$(FUZZTIME)
	cd hack/promql && go test ./... -count=1

.PHONY: test-e2e
test-e2e: ## End-to-end suite on a simulated cluster (kube-controller-manager, kube-scheduler, kwok nodes).
	$(CONTROLPLANE) etcd kube-apiserver kube-controller-manager kube-scheduler kwok >/dev/null
	go test -tags e2e ./test/e2e/... ./internal/simcluster/... -count=1 -timeout 20m

.PHONY: run-smoke
run-smoke: ## Smoke test of make run: the operator running, no stack trace, the printed curl example answers, Ctrl-C stops it.
	hack/run-smoke.sh

.PHONY: bench-siteservers
bench-siteservers: ## SiteServers on a simulated cluster of 50 kwok nodes (SITES=200); see docs/benchmarks.md.
	$(CONTROLPLANE) etcd kube-apiserver kube-controller-manager kube-scheduler kwok >/dev/null
	go run ./test/bench/siteservers -sites $(SITES) -nodes 50

SITES ?= 200

.PHONY: bench-agents
bench-agents: ## One task service with AGENTS registered agents checking in (about 30 minutes for all three levels); see docs/benchmarks.md.
	KUBEBUILDER_ASSETS="$$($(CONTROLPLANE))" go run ./test/bench/agents -agents $(AGENTS)

AGENTS ?= 1000,10000,50000

.PHONY: bench-tasks
bench-tasks: ## One DeploymentTask for every one of AGENTS simulated agents of one task service (AGENTS=1000,10000,50000; 50,000 takes about 30 minutes); see docs/benchmarks.md.
	KUBEBUILDER_ASSETS="$$($(CONTROLPLANE))" go run ./test/bench/agents -task -agents $(AGENTS)

.PHONY: bench-replication
bench-replication: ## A 2 GiB package replicated between two package-service processes beside a plain copy, a resume after a cut, 1,000 ranged downloads; see docs/benchmarks.md.
	KUBEBUILDER_ASSETS="$$($(CONTROLPLANE))" go run ./test/bench/replication -size 2Gi -rounds 3 -downloads 1000

.PHONY: bench-directory
bench-directory: ## DirectoryImport of 500 sites and 5,000 subnets from a real Samba DC, against creating them directly (needs samba); see docs/benchmarks.md.
	KUBEBUILDER_ASSETS="$$($(CONTROLPLANE))" go run ./test/bench/directory -sites 500 -subnets 5000

.PHONY: bench
bench: ## Resolver benchmarks, the locator load harness, the controller load harness and DispatchShard writes (not bench-agents); see docs/benchmarks.md.
	go test ./internal/topology -run='^$$' -bench=. -benchmem -count=5
	go run ./test/bench/locator
	KUBEBUILDER_ASSETS="$$($(CONTROLPLANE))" go run ./test/bench/topology
	KUBEBUILDER_ASSETS="$$($(CONTROLPLANE))" go run ./test/bench/shardwrites

##@ Build

.PHONY: build
build: generate ## Build the manager binary into bin/.
	go build -o bin/manager ./cmd/manager
	go build -o bin/kubectl-siteops ./cmd/kubectl-siteops

.PHONY: run
run: build manifests ## Start a simulated cluster (kwok nodes) with the CRDs and samples, and run the manager against it.
	go build -o bin/ ./cmd/... ./hack/localcluster
	bin/localcluster --manager bin/manager

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build -t $(IMG) .

##@ Deployment

.PHONY: build-installer
build-installer: manifests ## Render config/default into dist/install.yaml.
	@mkdir -p dist
	$(KUSTOMIZE) build config/default > dist/install.yaml

.PHONY: helm-lint
helm-lint: ## Lint and render the Helm chart (defaults, then every optional part on).
	$(HELM) lint --strict charts/site-operator
	$(HELM) template site-operator charts/site-operator >/dev/null
	$(HELM) template site-operator charts/site-operator --set certManager.enabled=true \
		--set certManager.issuerRef.kind=ClusterIssuer --set certManager.issuerRef.name=ca \
		--set networkPolicy.enabled=true --set monitoring.serviceMonitor.enabled=true >/dev/null
