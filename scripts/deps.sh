#!/usr/bin/env bash
# Installs the Debian packages vpcd's tests, lab and code generation use,
# when any is missing, and mounts bpffs when it is absent. Idempotent.
set -euo pipefail

packages=(iproute2 iputils-ping iperf3 tcpdump tshark wireguard-tools nfdump clang llvm libbpf-dev bpftool etcd-server etcd-client
	containernetworking-plugins containerd busybox-static qemu-system-x86)
tools=(ip ping iperf3 tcpdump tshark wg nfcapd nfdump clang llvm-strip bpftool etcd etcdctl containerd ctr qemu-system-x86_64)

missing=0
for t in "${tools[@]}"; do
	command -v "$t" >/dev/null 2>&1 || missing=1
done
[ -f /usr/include/bpf/bpf_helpers.h ] || missing=1
[ -x /usr/lib/cni/bandwidth ] || missing=1
command -v busybox >/dev/null 2>&1 || missing=1

if [ "$missing" = 1 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing tools; run as root (sudo make test) to install: ${packages[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${packages[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if [ "$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi

# cnitool, the CNI project's reference runner, for the CNI tests: into the
# repository's bin/ (where test/netns/cni_test.go looks first).
cnitool_version=v1.3.1
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/bin/cnitool" ]; then
	GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
	echo "deps: installing cnitool $cnitool_version into $root/bin"
	GOBIN="$root/bin" GOFLAGS=-buildvcs=false "$GO" install "github.com/containernetworking/cni/cnitool@$cnitool_version"
fi
