# Portico. `make help` lists the targets.

IMG ?= portico.dev/portico:dev
VERSION ?= 0.1.0
# Versions of the tools installed into bin/ (never from a prebuilt download).
CONTROLLER_TOOLS_VERSION ?= v0.21.0
KUSTOMIZE_VERSION ?= v5.8.1
STATICCHECK_VERSION ?= v0.8.2

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
STATICCHECK ?= $(LOCALBIN)/staticcheck-$(STATICCHECK_VERSION)
K8S_BINARIES ?= $(CURDIR)/hack/k8s-binaries.sh
KUBECTL ?= $(shell $(K8S_BINARIES))/kubectl

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and the RBAC ClusterRole from the code markers.
	$(CONTROLLER_GEN) rbac:roleName=operator crd paths="./api/...;./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: controller-gen ## Generate the DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt on the tree.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...
	go vet -tags e2e ./test/e2e/

.PHONY: lint
lint: vet staticcheck ## go vet and staticcheck on every package (the e2e suite included).
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2e ./test/e2e/

.PHONY: verify
verify: manifests generate bundle fmt ## Regenerate everything and fail on any difference from what is committed.
	go mod tidy
	@if [ -n "$$(git status --porcelain -- api config controllers dataplane bundle go.mod go.sum)" ]; then \
		echo "make verify: generated files are out of date; run 'make manifests generate fmt' and commit:"; \
		git status --porcelain -- api config controllers dataplane bundle go.mod go.sum; git --no-pager diff --stat; exit 1; fi

.PHONY: k8s-binaries
k8s-binaries: ## Build (once) the real control plane from the Go module proxy into bin/k8s/.
	$(K8S_BINARIES) >/dev/null

.PHONY: oauth2-proxy
oauth2-proxy: ## Build (once) oauth2-proxy from the Go module proxy into bin/, for the external-auth tests.
	hack/oauth2-proxy.sh >/dev/null

.PHONY: test
test: test-integration test-e2e ## Run every test: unit, integration on a real kube-apiserver and etcd, end-to-end on the local cluster.

.PHONY: test-integration
test-integration: manifests generate vet k8s-binaries oauth2-proxy ## Unit tests, and integration tests on a real kube-apiserver and etcd.
	go test -count=1 -run '^$$' ./... >/dev/null # compile (and fetch modules) outside the network namespace
	PORTICO_REQUIRE_OAUTH2_PROXY=1 KUBEBUILDER_ASSETS="$$($(K8S_BINARIES))" hack/in-netns.sh go test -count=1 -timeout=45m ./...
	PORTICO_TEST_EVENT_LOOPS=-1 go test -count=1 ./dataplane/proxy/ ./dataplane/l4/ # the goroutine paths without event loops too (HTTP and TCP)

.PHONY: test-unit
test-unit: ## Run the tests that need no API server, root or network namespace (the others skip, saying why).
	env -u KUBEBUILDER_ASSETS -u PORTICO_NETNS go test -count=1 ./...
	PORTICO_TEST_EVENT_LOOPS=-1 go test -count=1 ./dataplane/proxy/ ./dataplane/l4/

##@ Benchmarks (figures in the README, with the machine they ran on)

.PHONY: bench
bench: bench-go bench-proxy bench-scale bench-status ## Run every benchmark.

.PHONY: bench-go
bench-go: ## Go benchmarks of the route matcher and compile step (-benchmem).
	go test -run '^$$' -bench . -benchmem ./dataplane/route/

.PHONY: bench-proxy
bench-proxy: ## wrk against portico, nginx and HAProxy (Debian packages), side by side.
	hack/bench-proxy.sh

.PHONY: bench-scale
bench-scale: k8s-binaries ## 10,000 Ingresses on a real API server: time to ready, proxy RSS, propagation p50/p99.
	go test -run '^$$' -c -o /dev/null ./dataplane/run/
	KUBEBUILDER_ASSETS="$$($(K8S_BINARIES))" hack/in-netns.sh go test -run '^$$' -bench Scale -benchtime=1x -timeout 30m ./dataplane/run/

##@ Local cluster

.PHONY: demo
demo: manifests kustomize ## Start the local cluster, deploy the operator and the cafe example, send traffic; Ctrl-C tears down.
	hack/demo.sh

.PHONY: test-e2e
test-e2e: kustomize ## End-to-end suite on a fresh local cluster (started and stopped here).
	hack/e2e.sh

.PHONY: cluster-up
cluster-up: kustomize ## Start the local cluster (leaves .local/kubeconfig; use hack/cluster.sh kubectl ...).
	hack/cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop every process of the local cluster.
	hack/cluster.sh down

##@ Bundle

.PHONY: bundle
bundle: manifests kustomize ## Generate the OLM bundle (bundle/) from config/ and check it.
	$(KUSTOMIZE) build config/default | go run ./hack/bundle/gen --version $(VERSION) --manifests config/manifests --out bundle

.PHONY: bench-status
bench-status: k8s-binaries ## 10,000 Ingresses: time until all carry the address, operator writes at rest over a minute.
	go test -run '^$$' -c -o /dev/null ./controllers/
	KUBEBUILDER_ASSETS="$$($(K8S_BINARIES))" hack/in-netns.sh go test -run '^$$' -bench StatusWriteback -benchtime=1x -timeout 30m ./controllers/

##@ Build

.PHONY: build
build: generate ## Build the portico binary into bin/.
	CGO_ENABLED=0 go build -trimpath -o $(LOCALBIN)/portico .

.PHONY: run
run: manifests generate ## Run the operator from your host against the current kubeconfig.
	go run . operator

.PHONY: docker-build
docker-build: ## Build the image (needs a container engine).
	docker build -t $(IMG) .

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRD into the cluster of the current kubeconfig.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRD (and with it every IngressDeployment).
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator (config/default) with image IMG.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator deployed with `make deploy`.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION),controller-gen)

.PHONY: staticcheck
staticcheck: $(STATICCHECK)
$(STATICCHECK):
	$(call go-install-tool,$(STATICCHECK),honnef.co/go/tools/cmd/staticcheck,$(STATICCHECK_VERSION),staticcheck)

.PHONY: kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE):
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION),kustomize)

# go-install-tool installs package $(2) at version $(3), whose binary is named $(4), as $(1).
define go-install-tool
@[ -f "$(1)" ] || { \
set -e; mkdir -p $(LOCALBIN); \
echo "Installing $(2)@$(3)"; \
GOBIN=$(LOCALBIN) go install $(2)@$(3); \
mv "$(LOCALBIN)/$(4)" $(1); }
endef
