#!/usr/bin/env bash
# Builds the testbed's programs from the Go tool modules under hack/ with the ordinary `go` command,
# into a cache directory outside the repository:
#
#   ${FERRY_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/testbin}/
#     tools/<tool>-<version>-<hash>/        one tool's binaries (hash of its go.mod + go.sum + recipe)
#     k8s-<version>-<hash>/bin/             symlinks to every tool's binaries: what FERRY_TESTBIN points at
#
# A tool whose directory is complete is not rebuilt, so a warm run takes well under a second.
#
# Usage:
#   hack/testbin.sh              build what is missing, then print the bin directory
#   hack/testbin.sh --print-dir  print the bin directory only (no build, no Go needed)
#   hack/testbin.sh TOOL...      build only these tools (k8s etcd versitygw helm rclone s5cmd)
#   hack/testbin.sh --bump-k8s vX.Y.Z   regenerate hack/k8s-tools/go.mod for another Kubernetes release
#
# Only Go modules are fetched, through the Go module proxy, as by any `go build`; nothing else is
# downloaded and no source is copied into the repository.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FERRY_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/testbin}
# Bump when the build recipe below changes in a way the keys do not capture (they include go.mod,
# go.sum, the ldflags and the package list of each tool).
RECIPE=1
ALL_TOOLS=(k8s etcd versitygw helm rclone s5cmd)

die() { echo "testbin: error: $*" >&2; exit 1; }
log() { echo "testbin: $*" >&2; }

sha() {
	if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -c1-12
	elif command -v shasum >/dev/null 2>&1; then shasum -a 256 | cut -c1-12
	else die "need sha256sum (coreutils) or shasum to compute the cache key"; fi
}

# tool -> module directory under hack/, main module whose version names the tool, binaries it produces.
moddir() {
	case $1 in
	k8s) echo k8s-tools ;; etcd) echo etcd-tool ;; versitygw) echo s3-tools ;;
	helm) echo helm-tool ;; rclone) echo rclone-tool ;; s5cmd) echo s5cmd-tool ;;
	*) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
	esac
}
mainmod() {
	case $1 in
	k8s) echo k8s.io/kubernetes ;; etcd) echo go.etcd.io/etcd/server/v3 ;;
	versitygw) echo github.com/versity/versitygw ;; helm) echo helm.sh/helm/v3 ;;
	rclone) echo github.com/rclone/rclone ;; s5cmd) echo github.com/peak/s5cmd/v2 ;;
	esac
}
binaries() {
	case $1 in
	k8s) echo kube-apiserver kube-controller-manager kubectl ;;
	*) echo "$1" ;;
	esac
}

# The version of the tool's main module, read from the committed go.mod (no Go needed).
version() {
	local gomod=$HERE/$(moddir "$1")/go.mod mod
	[[ -f $gomod ]] || die "$gomod is missing"
	mod=$(mainmod "$1")
	awk -v m="$mod" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$gomod"
}

toolkey() {
	local d=$HERE/$(moddir "$1")
	[[ -f $d/go.sum ]] || die "$d/go.sum is missing"
	# The build flags are part of the key: changing them for one tool rebuilds only that tool.
	echo "$1-$(version "$1")-$( (cat "$d/go.mod" "$d/go.sum"; echo "recipe=$RECIPE"
		ldflags "$(version "$1")" "$1"; packages "$1") | sha)"
}

bindir() {
	local keys="" t
	for t in "${ALL_TOOLS[@]}"; do keys+="$(toolkey "$t")"$'\n'; done
	echo "$CACHE/k8s-$(version k8s)-$(printf '%s' "$keys" | sha)/bin"
}

ldflags() {
	local v=$1 tool=$2 ld="-s -w" p major minor
	case $tool in
	k8s)
		major=${v#v}; major=${major%%.*}
		minor=${v#v*.}; minor=${minor%%.*}
		for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
			ld+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=2000-01-01T00:00:00Z"
		done ;;
	etcd) ld+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$v" ;;
	versitygw) ld+=" -X main.Version=$v -X main.Build=module -X main.BuildTime=2000-01-01T00:00:00Z" ;;
	helm) ld+=" -X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
	rclone) ld+=" -X github.com/rclone/rclone/fs.VersionSuffix=" ;;
	s5cmd) ld+=" -X github.com/peak/s5cmd/v2/version.Version=$v -X github.com/peak/s5cmd/v2/version.GitCommit=module" ;;
	esac
	echo "$ld"
}

packages() {
	case $1 in
	k8s) echo k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kubectl ;;
	etcd) echo go.etcd.io/etcd/server/v3 ;;
	versitygw) echo github.com/versity/versitygw/cmd/versitygw ;;
	helm) echo helm.sh/helm/v3/cmd/helm ;;
	rclone) echo github.com/rclone/rclone ;;
	s5cmd) echo github.com/peak/s5cmd/v2 ;;
	esac
}

build_tool() {
	local tool=$1 key dir tmp v pkgs b start
	key=$(toolkey "$tool"); dir=$CACHE/tools/$key
	if [[ -f $dir/.complete ]]; then return 0; fi
	v=$(version "$tool"); pkgs=$(packages "$tool")
	mkdir -p "$CACHE/tools" || die "cannot create $CACHE/tools"
	tmp=$(mktemp -d "$CACHE/tools/.build-$tool.XXXXXX")
	if [[ $tool == k8s ]]; then
		log "building $tool $v (log: $dir/build.log): about 6-7 minutes cold on 2 cores, 2 GB RSS"
	else
		log "building $tool $v (log: $dir/build.log)"
	fi
	start=$(date +%s)
	local timer=()
	[[ -x /usr/bin/time ]] && timer=(/usr/bin/time -v)
	# -o names the output: a directory when several commands are built at once, else the binary,
	# because `go install go.etcd.io/etcd/server/v3` would name etcd "v3".
	local out=$tmp/
	[[ $(wc -w <<<"$pkgs") == 1 ]] && out=$tmp/$(binaries "$tool")
	# shellcheck disable=SC2086
	if ! (cd "$HERE/$(moddir "$tool")" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
		"${timer[@]}" go build -trimpath -ldflags "$(ldflags "$v" "$tool")" -o "$out" $pkgs) \
		>"$tmp/build.log" 2>&1; then
		tail -n 30 "$tmp/build.log" >&2
		die "building $tool $v failed (full log: $tmp/build.log). If a module could not be downloaded, check" \
			"GOPROXY/network access; if Go is too old, the error above names the version go.mod needs"
	fi
	for b in $(binaries "$tool"); do [[ -x $tmp/$b ]] || die "build of $tool did not produce $b"; done
	echo "seconds=$(($(date +%s) - start))" >>"$tmp/build.log"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	touch "$dir/.complete"
	log "built $tool $v in $(($(date +%s) - start)) s"
}

link_tool() {
	local tool=$1 bin=$2 dir b
	dir=$CACHE/tools/$(toolkey "$tool")
	[[ -f $dir/.complete ]] || return 0
	for b in $(binaries "$tool"); do ln -sfn "$dir/$b" "$bin/$b"; done
}

# Point hack/k8s-tools at another Kubernetes release: every staging module that release's own go.mod
# replaces with ./staging/... is pinned to the matching v0.Y.Z (a dependency's replace directives
# are ignored, and the staging modules are required at the fake version v0.0.0 upstream).
bump_k8s() {
	local k8s=${1:?usage: hack/testbin.sh --bump-k8s vX.Y.Z} staging gomod m godebug
	staging=v0.${k8s#v1.}
	command -v go >/dev/null 2>&1 || die "the Go toolchain is not on PATH"
	cd "$HERE/k8s-tools"
	export GOTOOLCHAIN=local GOFLAGS=-mod=mod
	gomod=$(go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$k8s"
	go mod edit -droprequire=k8s.io/kubernetes
	for m in $(go mod edit -json | sed -n 's/^[[:space:]]*"Path": "\(k8s\.io\/[^"]*\)".*/\1/p' | sort -u); do
		go mod edit -dropreplace="$m"
	done
	for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod"); do
		go mod edit -replace="$m=$m@$staging"
	done
	if grep '=>' "$gomod" | grep -v '\./staging/' >&2; then
		log "warning: upstream has the non-staging replace lines above; copy them by hand"
	fi
	godebug=$(sed -n 's/^godebug \(.*\)/\1/p' "$gomod")
	[[ -z $godebug ]] || go mod edit -godebug="$godebug"
	go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$k8s" "k8s.io/kubernetes/cmd/kube-controller-manager@$k8s" \
		"k8s.io/kubernetes/cmd/kubectl@$k8s"
	go mod tidy
	log "hack/k8s-tools now builds $k8s (staging modules at $staging); update the godebug comment, then run make testbin"
}

main() {
	if [[ ${1:-} == --print-dir ]]; then bindir; return 0; fi
	if [[ ${1:-} == --bump-k8s ]]; then bump_k8s "${2:-}"; return 0; fi
	local tools=("$@") t bin
	[[ ${#tools[@]} -gt 0 ]] || tools=("${ALL_TOOLS[@]}")
	for t in "${tools[@]}"; do moddir "$t" >/dev/null; done
	command -v go >/dev/null 2>&1 || die "the Go toolchain is not on PATH; install Go >= 1.26 (https://go.dev/dl/)"
	local gov
	gov=$(GOTOOLCHAIN=local go env GOVERSION) || die "'go env GOVERSION' failed"
	gov=${gov#go}
	if [[ $(printf '%s\n' "1.26" "${gov%%[!0-9.]*}" | sort -V | head -1) != 1.26 ]]; then
		die "Go $gov is too old: the tool modules need Go >= 1.26"
	fi
	bin=$(bindir)
	mkdir -p "$bin" || die "cannot create $bin"
	# Sequential on purpose: each `go build` already uses every core.
	for t in "${tools[@]}"; do build_tool "$t"; done
	for t in "${ALL_TOOLS[@]}"; do link_tool "$t" "$bin"; done
	echo "$bin"
}

main "$@"
