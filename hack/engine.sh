#!/usr/bin/env bash
# The project's own container engine and the images built with it, for `make image` and the testbed's
# container mode. Nothing here touches the machine's network: dockerd runs with no bridge, no
# iptables/NAT rules and no userland proxy, on a private socket with its state under the cache folder:
#
#   ${FERRY_ENGINE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/engine}/
#     docker.sock dockerd.pid dockerd.log   the daemon
#     data/ exec/                           its --data-root and --exec-root
#
# Containers use host networking only. No image is pulled from a registry: the base image is made from
# Debian's packages with mmdebstrap and imported, and `ferry:dev` is built on it.
#
# Usage:
#   hack/engine.sh start    start the engine (or reuse the running one); installs docker.io if missing
#   hack/engine.sh env      print DOCKER_HOST=… of the running engine (exit 3 if none runs)
#   hack/engine.sh stop     stop the engine and clean up its mounts
#   hack/engine.sh base     make (or reuse) the Debian base image; prints its name
#   hack/engine.sh image    build (or reuse) ferry:dev from the Dockerfile on that base; prints its name
#   hack/engine.sh check    exit 0 if an engine can run here, else print the one-line reason, exit 3
#
# Exit codes: 0 ok, 1 a step failed (the message says which), 3 no engine can run on this machine.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DIR=${FERRY_ENGINE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/engine}
SOCK=$DIR/docker.sock
IMAGE=${FERRY_IMAGE:-ferry:dev}
SUITE=bookworm
# The base's packages: the interpreter the image runs and the CA bundle TLS clients need.
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,passwd
# Bump when the recipe of the base changes in a way the key does not capture.
BASE_RECIPE=1

log() { echo "engine: $*" >&2; }
die() { echo "engine: error: $*" >&2; exit 1; }
unavailable() { echo "engine: unavailable: $*" >&2; exit 3; }

docker_cli() {
	# Debian's client matches Debian's daemon; another client on PATH may be newer than the daemon's API.
	if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; else command -v docker || true; fi
}

dk() { DOCKER_HOST=unix://$SOCK "$(docker_cli)" "$@"; }

running() { [[ -S $SOCK ]] && dk version --format '{{.Server.Version}}' >/dev/null 2>&1; }

apt_install() {
	local missing=()
	for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
	((${#missing[@]})) || return 0
	[[ $(id -u) == 0 ]] || unavailable "needs Debian packages ${missing[*]} and root to install them (apt-get install ${missing[*]})"
	command -v apt-get >/dev/null || unavailable "needs Debian packages ${missing[*]} and this machine has no apt-get"
	log "installing ${missing[*]} from Debian's packages"
	# Only refresh the lists when a package cannot be found in them (a fresh machine has none).
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1; then
		apt-get update -q >>"$DIR/apt.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1 ||
			unavailable "apt-get install ${missing[*]} failed (see $DIR/apt.log)"
	fi
}

check() {
	[[ $(uname -s) == Linux ]] || unavailable "the container engine needs Linux (this is $(uname -s))"
	[[ -d /sys/fs/cgroup ]] || unavailable "no cgroup file system at /sys/fs/cgroup"
	if [[ $(id -u) != 0 ]] && ! command -v dockerd >/dev/null; then
		unavailable "dockerd is not installed and installing it needs root"
	fi
}

start() {
	check
	mkdir -p "$DIR"
	if running; then return 0; fi
	apt_install docker.io
	if [[ -f $DIR/dockerd.pid ]] && kill -0 "$(cat "$DIR/dockerd.pid")" 2>/dev/null; then
		kill "$(cat "$DIR/dockerd.pid")" 2>/dev/null || true
		sleep 1
	fi
	rm -f "$SOCK"
	unmount_leftovers  # a daemon that was killed (not stopped) leaves its mounts behind
	log "starting dockerd on $SOCK (no bridge, no iptables; log: $DIR/dockerd.log)"
	# setsid: the daemon outlives the make target that started it, and is stopped by `engine.sh stop`.
	setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
		--userland-proxy=false --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$DIR/dockerd.pid" \
		-H "unix://$SOCK" >"$DIR/dockerd.log" 2>&1 </dev/null &
	for _ in $(seq 1 100); do
		running && return 0
		sleep 0.2
	done
	unavailable "dockerd did not answer within 20 s: $(tail -n 1 "$DIR/dockerd.log" 2>/dev/null)"
}

# dockerd leaves an nsfs mount (and, after a crash, overlay mounts) under its roots.
unmount_leftovers() {
	{ grep -o " $DIR/[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

stop() {
	if [[ -f $DIR/dockerd.pid ]]; then
		local pid
		pid=$(cat "$DIR/dockerd.pid")
		if kill -0 "$pid" 2>/dev/null; then
			running && dk ps -q | xargs -r "$(docker_cli)" -H "unix://$SOCK" rm -f >/dev/null 2>&1 || true
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -9 "$pid" 2>/dev/null || true
		fi
		rm -f "$DIR/dockerd.pid"
	fi
	unmount_leftovers
	rm -f "$SOCK"
	log "stopped"
}

base_key() {
	(echo "suite=$SUITE packages=$BASE_PACKAGES recipe=$BASE_RECIPE"
		cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true) | sha256sum | cut -c1-12
}

base() {
	start
	local name
	name="ferry-base:$SUITE-$(base_key)"
	if dk image inspect "$name" >/dev/null 2>&1; then echo "$name"; return 0; fi
	apt_install mmdebstrap
	local sources=/etc/apt/sources.list.d/debian.sources
	[[ -f $sources ]] || sources=/etc/apt/sources.list
	[[ -f $sources ]] || die "no apt sources on this machine to build the base image from"
	log "making $name from Debian's packages with mmdebstrap (about a minute)"
	# The machine's extra CA certificates go in, so pip inside builds trusts the same registries.
	mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
		--customize-hook='if [ -d /usr/local/share/ca-certificates ]; then cp -r /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"; fi' \
		--customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
		--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
		"$SUITE" - "$sources" 2>"$DIR/mmdebstrap.log" |
		dk import --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
			--change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$name" >/dev/null ||
		die "mmdebstrap or docker import failed (see $DIR/mmdebstrap.log)"
	echo "$name"
}

# What decides the image's content: the Dockerfile, the package metadata and sources, and the base.
content_key() {
	(cd "$ROOT" && { echo "base=$1"; cat Dockerfile .dockerignore pyproject.toml README.md
		git ls-files -co --exclude-standard -- ferry operator worker 2>/dev/null | grep '\.py$\|py.typed$' | sort |
			while read -r f; do echo "$f"; cat "$f"; done; }) | sha256sum | cut -c1-16
}

image() {
	local base_name key current previous
	base_name=$(base)
	key=$(content_key "$base_name")
	current=$(dk image inspect "$IMAGE" --format '{{index .Config.Labels "dev.ferry.content"}}' 2>/dev/null || true)
	if [[ $current == "$key" ]]; then echo "$IMAGE"; return 0; fi
	log "building $IMAGE on $base_name (log: $DIR/build.log)"
	previous=$(dk image inspect "$IMAGE" --format '{{.Id}}' 2>/dev/null || true)
	if ! dk build --network host --build-arg "BASE=$base_name" --label "dev.ferry.content=$key" \
		-t "$IMAGE" "$ROOT" >"$DIR/build.log" 2>&1; then
		tail -n 20 "$DIR/build.log" >&2
		die "docker build failed (see $DIR/build.log)"
	fi
	# The replaced image goes; the build stages' images stay a day, as the cache of the next build.
	if [[ -n $previous && $previous != "$(dk image inspect "$IMAGE" --format '{{.Id}}')" ]]; then
		dk rmi "$previous" >/dev/null 2>&1 || true
	fi
	dk image prune -f --filter until=24h >/dev/null 2>&1 || true
	echo "$IMAGE"
}

case ${1:-} in
start) start ;;
stop) stop ;;
env) running || unavailable "no engine runs on $SOCK (make engine starts it)"; echo "DOCKER_HOST=unix://$SOCK" ;;
base) base ;;
image) image ;;
check) check ;;
*) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
