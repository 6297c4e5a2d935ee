#!/usr/bin/env bash
# Builds the deployment checkers the test suite runs, from the Go module proxy, into
# tools/bin/ (git-ignored), and kubeconform's schemas into ~/.cache/aiq/kube-schemas; each
# once per pinned version, later runs skip it.
#   tools/deploy-tools.sh            build what is missing
#   tools/deploy-tools.sh --force    rebuild everything
# Called by tools/bootstrap.sh. Needs Go (the machine's own; no toolchain download).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/tools/bin"
FORCE=0
case "${1:-}" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "deploy-tools: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac
AIQ_SCRIPT=deploy-tools
. "$ROOT/tools/lib.sh"
command -v go >/dev/null 2>&1 || die "go not found (the Go toolchain builds the compose, helm and kubeconform checkers)"
mkdir -p "$BIN"

# build NAME STAMP CMD...: run CMD (which must produce $BIN/NAME) unless $BIN/NAME.stamp
# already says STAMP. The stamp ties the binary to the pinned version.
build() {
    local name="$1" stamp="$2"; shift 2
    if [ "$FORCE" = 0 ] && [ -x "$BIN/$name" ] && [ "$(cat "$BIN/$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        say "$name: $stamp present"
        return
    fi
    say "$name: building $stamp (a few minutes on 2 cores, once per machine)"
    local t0=$SECONDS
    "$@" || die "$name: build failed"
    [ -x "$BIN/$name" ] || die "$name: build produced no $BIN/$name"
    echo "$stamp" >"$BIN/$name.stamp"
    say "$name: built in $((SECONDS - t0)) s"
}

# --- Docker Compose CLI: `docker-compose config` validates docker-compose.yml (no engine).
compose_version() { sed -n 's:^require github.com/docker/compose/v5 \(v[^ ]*\)$:\1:p' "$ROOT/tools/deploy/compose/go.mod"; }
COMPOSE_VERSION="$(compose_version)"
[ -n "$COMPOSE_VERSION" ] || die "docker-compose: no github.com/docker/compose/v5 pin in tools/deploy/compose/go.mod"
build_compose() {
    (cd "$ROOT/tools/deploy/compose" && GOFLAGS=-mod=readonly go build -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" \
        -o "$BIN/docker-compose" github.com/docker/compose/v5/cmd)
}
build docker-compose "compose $COMPOSE_VERSION stripped" build_compose

# --- helm and kubeconform: tests/integration/test_helm.py lints helm/aiq-worker and
# validates what it renders. `go install mod@version` builds from the module's own go.mod and
# go.sum, checked against sum.golang.org.
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
# helm's Makefile stamps the Kubernetes version it was built against; without it a plain
# `helm template` assumes 1.20 (refusing kubeVersion constraints, linting old deprecations).
HELM_K8S_MINOR=37
build_helm() {
    local v=helm.sh/helm/v3
    GOBIN="$BIN" GOFLAGS= go install -trimpath \
        -ldflags "-s -w -X $v/internal/version.version=$HELM_VERSION \
            -X $v/pkg/chartutil.k8sVersionMajor=1 -X $v/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR \
            -X $v/pkg/lint/rules.k8sVersionMajor=1 -X $v/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR" \
        "$v/cmd/helm@$HELM_VERSION"
}
build helm "helm $HELM_VERSION k8s 1.$HELM_K8S_MINOR" build_helm
build_kubeconform() {
    GOBIN="$BIN" GOFLAGS= go install -trimpath -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
        "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
}
build kubeconform "kubeconform $KUBECONFORM_VERSION" build_kubeconform

# --- JSON schemas for kubeconform, made offline (it would download them from GitHub):
# Kubernetes' OpenAPI document from the k8s.io/kubernetes module and the CRDs of
# prometheus-operator (ServiceMonitor, PrometheusRule) and KEDA (ScaledObject,
# TriggerAuthentication) from theirs, converted by tools/deploy/kube-schemas.py into
# $AIQ_KUBE_SCHEMAS (default ~/.cache/aiq/kube-schemas; outside git, regenerated when a pin
# or the converter changes).
KUBE_VERSION=1.37.2      # the Kubernetes release whose client libraries helm $HELM_VERSION uses
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
SCHEMAS="${AIQ_KUBE_SCHEMAS:-${XDG_CACHE_HOME:-$HOME/.cache}/aiq/kube-schemas}"
CONVERTER="$ROOT/tools/deploy/kube-schemas.py"
schema_stamp="k8s $KUBE_VERSION keda $KEDA_VERSION prometheus-operator $PROMETHEUS_OPERATOR_VERSION $(sha256sum "$CONVERTER" | cut -c1-12)"
# module_dir MODULE@VERSION: download (verified) into the module cache, print its directory.
module_dir() {
    (cd / && GOFLAGS= go mod download -json "$1") |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error", "no Dir")))'
}
if [ "$FORCE" = 0 ] && [ -d "$SCHEMAS/v$KUBE_VERSION-standalone-strict" ] &&
    [ "$(cat "$SCHEMAS/stamp" 2>/dev/null)" = "$schema_stamp" ]; then
    say "kube schemas: $schema_stamp present in $SCHEMAS"
else
    say "kube schemas: generating ($schema_stamp) into $SCHEMAS"
    t0=$SECONDS
    k8s="$(module_dir "k8s.io/kubernetes@v$KUBE_VERSION")" || die "kube schemas: k8s.io/kubernetes@v$KUBE_VERSION download failed"
    keda="$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")" || die "kube schemas: keda download failed"
    promop="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")" ||
        die "kube schemas: prometheus-operator download failed"
    say "kube schemas: modules downloaded in $((SECONDS - t0)) s"
    python3 "$CONVERTER" --k8s-version "$KUBE_VERSION" --out "$SCHEMAS" \
        --swagger "$k8s/api/openapi-spec/swagger.json" \
        --crd "$promop/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
        --crd "$promop/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" \
        --crd "$keda/config/crd/bases/keda.sh_scaledobjects.yaml" \
        --crd "$keda/config/crd/bases/keda.sh_triggerauthentications.yaml" ||
        die "kube schemas: conversion failed"
    echo "$schema_stamp" >"$SCHEMAS/stamp"
    say "kube schemas: generated in $((SECONDS - t0)) s"
fi
