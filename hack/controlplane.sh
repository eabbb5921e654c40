#!/usr/bin/env bash
# Build a local Kubernetes control plane from Go module sources.
#
#   hack/controlplane.sh [components...]
#
# Components: etcd kube-apiserver (the default), kube-controller-manager,
# kube-scheduler, kwok. Only the components asked for are built.
#
# The binaries land in bin/k8s/<K8S_VERSION>/ under the repository root, the
# directory envtest's KUBEBUILDER_ASSETS points at; that path is the only
# thing printed on stdout (progress goes to stderr), so
#
#   export KUBEBUILDER_ASSETS="$(hack/controlplane.sh)"
#
# works. A second run returns at once. Builds go into a per-user cache,
#   ${XDG_CACHE_HOME:-$HOME/.cache}/site-operator/k8s/<K8S_VERSION>/   kube-*
#   ${XDG_CACHE_HOME:-$HOME/.cache}/site-operator/etcd/<ETCD_VERSION>/ etcd
#   ${XDG_CACHE_HOME:-$HOME/.cache}/site-operator/kwok/<KWOK_VERSION>/ kwok
# and are hard-linked (or copied) from there, so another clone on the same
# machine does not rebuild. Nothing is downloaded except Go modules:
#   etcd            go build of go.etcd.io/etcd/server/v3 in a throwaway module
#   kube-*          go build of k8s.io/kubernetes/cmd/<name> in a throwaway
#                   module whose replace block is kubernetes' own, with
#                   ./staging/src/k8s.io/X rewritten to k8s.io/X v0.<minor>.<patch>
#   kwok            go install sigs.k8s.io/kwok/cmd/kwok, plus kwok-stages.yaml
#                   (the default node and pod stages from the kwok module)
# First build of kube-apiserver takes about 5 minutes on 2 cores (etcd about
# 25 s, kube-controller-manager + kube-scheduler about 2.5 minutes more, kwok
# about 70 s); with a warm Go build cache a rebuild is mostly linking.
#
# Versions can be overridden from the environment.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
KWOK_VERSION="${KWOK_VERSION:-0.8.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${ROOT}/bin/k8s/${K8S_VERSION}"
CACHE_BASE="${XDG_CACHE_HOME:-${HOME}/.cache}/site-operator"

ALL_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

usage() {
  cat >&2 <<EOF
usage: $0 [component...]
components: ${ALL_COMPONENTS[*]} (default: etcd kube-apiserver)
prints the directory holding the binaries: ${DEST}
versions (env): K8S_VERSION=${K8S_VERSION} ETCD_VERSION=${ETCD_VERSION} KWOK_VERSION=${KWOK_VERSION}
EOF
}

log() { echo "controlplane: $*" >&2; }
die() { log "error: $*"; exit 1; }

# component -> the version it is built from
version_of() {
  case "$1" in
    etcd) echo "${ETCD_VERSION}" ;;
    kwok) echo "${KWOK_VERSION}" ;;
    *) echo "${K8S_VERSION}" ;;
  esac
}

# component -> its cache directory
cache_dir_of() {
  case "$1" in
    etcd) echo "${CACHE_BASE}/etcd/${ETCD_VERSION}" ;;
    kwok) echo "${CACHE_BASE}/kwok/${KWOK_VERSION}" ;;
    *) echo "${CACHE_BASE}/k8s/${K8S_VERSION}" ;;
  esac
}

# component -> the files that make it up (binary first)
files_of() {
  case "$1" in
    kwok) echo "kwok kwok-stages.yaml" ;;
    *) echo "$1" ;;
  esac
}

# Is the component installed in DEST at the right version? bin/k8s/ is keyed
# by the Kubernetes version only, so a stamp records etcd's and kwok's.
installed() {
  local c="$1" f v=""
  for f in $(files_of "$c"); do
    [[ -s "${DEST}/${f}" ]] || return 1
  done
  [[ -x "${DEST}/${c}" && -r "${DEST}/.${c}.version" ]] || return 1
  read -r v <"${DEST}/.${c}.version" || true
  [[ "${v}" == "$(version_of "$c")" ]]
}

cached() {
  local c="$1" dir f
  dir="$(cache_dir_of "$c")"
  for f in $(files_of "$c"); do
    [[ -s "${dir}/${f}" ]] || return 1
  done
  [[ -x "${dir}/${c}" ]]
}

# Put a file in place atomically: hard link (or copy) to a temp name, rename.
place() {
  local src="$1" dst="$2" tmp
  tmp="${dst}.tmp.$$"
  rm -f "${tmp}"
  ln "${src}" "${tmp}" 2>/dev/null || cp -p "${src}" "${tmp}"
  mv -f "${tmp}" "${dst}"
}

install_from_cache() {
  local c="$1" dir f
  dir="$(cache_dir_of "$c")"
  mkdir -p "${DEST}"
  for f in $(files_of "$c"); do
    place "${dir}/${f}" "${DEST}/${f}"
  done
  echo "$(version_of "$c")" >"${DEST}/.${c}.version.tmp.$$"
  mv -f "${DEST}/.${c}.version.tmp.$$" "${DEST}/.${c}.version"
}

# ---- arguments --------------------------------------------------------------

if [[ $# -eq 0 ]]; then
  set -- etcd kube-apiserver
fi
WANT=()
for arg in "$@"; do
  case "${arg}" in
    -h|--help) usage; exit 0 ;;
    etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok)
      [[ " ${WANT[*]-} " == *" ${arg} "* ]] || WANT+=("${arg}") ;;
    *) usage; die "unknown component: ${arg}" ;;
  esac
done

# ---- fast path: everything already installed ---------------------------------

MISSING=()
for c in "${WANT[@]}"; do
  installed "$c" || MISSING+=("$c")
done
if [[ ${#MISSING[@]} -eq 0 ]]; then
  echo "${DEST}"
  exit 0
fi

# ---- slow path ---------------------------------------------------------------

[[ "${K8S_VERSION}" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] \
  || die "K8S_VERSION must look like 1.37.2, got '${K8S_VERSION}'"
K8S_MAJOR="${BASH_REMATCH[1]}"
K8S_MINOR="${BASH_REMATCH[2]}"
K8S_PATCH="${BASH_REMATCH[3]}"
STAGING_VERSION="v0.${K8S_MINOR}.${K8S_PATCH}"

command -v go >/dev/null || die "go is not on PATH"

# Throwaway modules must not see a go.work or vendor mode from the caller.
export GOWORK=off CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=mod"

mkdir -p "${CACHE_BASE}"
# One build at a time per user (parallel make targets, two clones).
LOCKED=false
if command -v flock >/dev/null; then
  exec 9>"${CACHE_BASE}/.lock"
  if ! flock -n 9; then
    log "waiting for another controlplane.sh build (lock ${CACHE_BASE}/.lock)"
    flock 9
  fi
  LOCKED=true
fi

WORKDIRS=()
cleanup() {
  local d
  for d in "${WORKDIRS[@]-}"; do
    if [[ -n "${d}" ]]; then rm -rf "${d}"; fi
  done
}
trap 'rc=$?; cleanup; exit "${rc}"' EXIT

# new_workdir DIR: make a scratch directory inside DIR (the cache dir, so a
# rename into the cache is atomic and nothing is written into the repository)
# and store its path in WORK. Scratch directories left by an interrupted run
# are removed first; the lock above makes sure no other build is using them.
new_workdir() {
  local dir="$1"
  mkdir -p "${dir}"
  if [[ "${LOCKED}" == true ]]; then rm -rf "${dir}"/.build.*; fi
  WORK="$(mktemp -d "${dir}/.build.XXXXXX")"
  WORKDIRS+=("${WORK}")
}

# Value of a string field in `go mod download -json` output.
json_field() {
  sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" | head -n1
}

# Seconds since the start of a step, for the log.
now() { date +%s; }

build_etcd() {
  local dir w t0
  dir="$(cache_dir_of etcd)"
  new_workdir "${dir}"
  w="${WORK}"
  t0="$(now)"
  log "building etcd v${ETCD_VERSION} (about 25 s the first time) ..."
  (
    cd "${w}"
    go mod init site-operator-controlplane/etcd >&2
    go mod edit -require="go.etcd.io/etcd/server/v3@v${ETCD_VERSION}" \
      -tool=go.etcd.io/etcd/server/v3
    go mod tidy >&2
    go build -o "${w}/etcd" go.etcd.io/etcd/server/v3 >&2
  )
  mv -f "${w}/etcd" "${dir}/etcd"
  log "etcd built in $(( $(now) - t0 )) s"
}

# Build the kube-* binaries asked for, in one go build invocation.
build_kube() {
  local dir w t0 gomod cmds=() pkgs=() c
  for c in "$@"; do
    cmds+=("${c}")
    pkgs+=("k8s.io/kubernetes/cmd/${c}")
  done
  dir="$(cache_dir_of kube-apiserver)"
  new_workdir "${dir}"
  w="${WORK}"
  t0="$(now)"
  log "building ${cmds[*]} v${K8S_VERSION} (kube-apiserver alone takes about 5 minutes the first time) ..."

  gomod="$(cd "${w}" && go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | json_field GoMod)"
  [[ -n "${gomod}" && -r "${gomod}" ]] || die "cannot find go.mod of k8s.io/kubernetes@v${K8S_VERSION}"

  # go.mod: kubernetes' go and godebug lines, and its replace block with the
  # staging directories turned into the published staging module versions.
  {
    echo "module site-operator-controlplane/kubernetes"
    echo
    grep -E '^(go|godebug)[[:space:]]' "${gomod}" || true
    echo
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    echo
    awk -v ver="${STAGING_VERSION}" '
      function emit(line,   parts, n) {
        n = split(line, parts, /[[:space:]]*=>[[:space:]]*/)
        if (n != 2) return
        if (parts[2] ~ /^\.\/staging\/src\//) {
          sub(/^\.\/staging\/src\//, "", parts[2])
          print "\t" parts[1] " => " parts[2] " " ver
        } else if (parts[2] ~ /^\.\.?\//) {
          print "unresolvable local replace: " line > "/dev/stderr"
          exit 2
        } else {
          print "\t" parts[1] " => " parts[2]
        }
      }
      BEGIN { print "replace (" }
      /^replace[[:space:]]*\($/ { inblock = 1; next }
      inblock && /^\)/ { inblock = 0; next }
      inblock { l = $0; sub(/\/\/.*/, "", l); gsub(/^[[:space:]]+|[[:space:]]+$/, "", l); if (l != "") emit(l); next }
      /^replace[[:space:]]/ { l = $0; sub(/^replace[[:space:]]+/, "", l); sub(/\/\/.*/, "", l); gsub(/[[:space:]]+$/, "", l); emit(l) }
      END { print ")" }
    ' "${gomod}"
  } >"${w}/go.mod"

  local ldflags
  ldflags="-X k8s.io/component-base/version.gitVersion=v${K8S_VERSION}"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=${K8S_MAJOR}"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=${K8S_MINOR}"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v${K8S_VERSION}"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=${K8S_MAJOR}"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=${K8S_MINOR}"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitTreeState=clean"

  (
    cd "${w}"
    for c in "${pkgs[@]}"; do
      go mod edit -tool="${c}"
    done
    go mod tidy >&2
    mkdir -p out
    if [[ ${#pkgs[@]} -eq 1 ]]; then
      go build -ldflags "${ldflags}" -o "out/${cmds[0]}" "${pkgs[0]}" >&2
    else
      go build -ldflags "${ldflags}" -o out/ "${pkgs[@]}" >&2
    fi
  )
  for c in "${cmds[@]}"; do
    [[ -s "${w}/out/${c}" ]] || die "go build did not produce ${c}"
    mv -f "${w}/out/${c}" "${dir}/${c}"
  done
  log "${cmds[*]} built in $(( $(now) - t0 )) s"
}

build_kwok() {
  local dir w t0 src f
  dir="$(cache_dir_of kwok)"
  new_workdir "${dir}"
  w="${WORK}"
  t0="$(now)"
  log "building kwok v${KWOK_VERSION} (about 70 s the first time) ..."
  (
    cd "${w}"
    GOBIN="${w}/bin" go install "sigs.k8s.io/kwok/cmd/kwok@v${KWOK_VERSION}" >&2
  )
  src="$(cd "${w}" && go mod download -json "sigs.k8s.io/kwok@v${KWOK_VERSION}" | json_field Dir)"
  [[ -n "${src}" && -d "${src}" ]] || die "cannot find the source of sigs.k8s.io/kwok@v${KWOK_VERSION}"
  {
    echo "# Default kwok stages, from sigs.k8s.io/kwok@v${KWOK_VERSION}/kustomize/stage."
    echo "# Written by hack/controlplane.sh; pass with: kwok --config <this file>"
    for f in \
      node/fast/node-initialize.yaml \
      node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml \
      pod/fast/pod-complete.yaml \
      pod/fast/pod-delete.yaml; do
      [[ -r "${src}/kustomize/stage/${f}" ]] || die "missing kwok stage ${f}"
      echo "---"
      echo "# ${f}"
      # our own separator replaces a leading one; make sure of a final newline
      sed -e '1{/^---[[:space:]]*$/d;}' -e '$a\' "${src}/kustomize/stage/${f}"
    done
  } >"${w}/kwok-stages.yaml"
  # stages first: "cached" keys on the binary being there too
  mv -f "${w}/kwok-stages.yaml" "${dir}/kwok-stages.yaml"
  mv -f "${w}/bin/kwok" "${dir}/kwok"
  log "kwok built in $(( $(now) - t0 )) s"
}

KUBE_TO_BUILD=()
for c in "${MISSING[@]}"; do
  if cached "$c"; then
    continue
  fi
  case "$c" in
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    *) KUBE_TO_BUILD+=("$c") ;;
  esac
done
if [[ ${#KUBE_TO_BUILD[@]} -gt 0 ]]; then
  build_kube "${KUBE_TO_BUILD[@]}"
fi

for c in "${MISSING[@]}"; do
  cached "$c" || die "${c} is not in the cache after building"
  install_from_cache "$c"
  log "installed ${c} $(version_of "$c") in ${DEST}"
done

echo "${DEST}"
