#!/usr/bin/env bash
# Installs the Debian packages vpcd's tests, lab and code generation use,
# when any is missing, and mounts bpffs when it is absent. Idempotent.
set -euo pipefail

packages=(iproute2 iputils-ping iperf3 tcpdump tshark wireguard-tools nfdump clang llvm libbpf-dev bpftool etcd-server etcd-client)
tools=(ip ping iperf3 tcpdump tshark wg nfcapd nfdump clang llvm-strip bpftool etcd etcdctl)

missing=0
for t in "${tools[@]}"; do
	command -v "$t" >/dev/null 2>&1 || missing=1
done
[ -f /usr/include/bpf/bpf_helpers.h ] || missing=1

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
