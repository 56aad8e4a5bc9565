#!/usr/bin/env bash
# Installs what the test suite needs (on Debian/Ubuntu, as root or with sudo) and runs it.
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in git python3 bash; do
  command -v "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
# pasta (package passt): the sandbox's `network = "user"` tests
command -v pasta >/dev/null 2>&1 || need_pkgs+=(passt)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

# QEMU 10 (the qemu backend's tests boot real microVMs under TCG) comes from bookworm-backports:
# the image's qemu-utils is from backports and conflicts with bookworm's own qemu-system 7.2.
# The suite is added in a sources file derived from the mirror the machine already uses.
# The guest image build (ignis image build) needs busybox-static, cpio and e2fsprogs.
if [ -f /etc/os-release ] && grep -q '^VERSION_CODENAME=bookworm' /etc/os-release; then
  vm_pkgs=()
  command -v qemu-system-x86_64 >/dev/null 2>&1 || vm_pkgs+=(qemu-system-x86)
  # qemu-img makes the per-VM qcow2 overlays; only a Recommends of qemu-system-x86
  command -v qemu-img >/dev/null 2>&1 || vm_pkgs+=(qemu-utils)
  [ -x /bin/busybox ] || vm_pkgs+=(busybox-static)
  command -v cpio >/dev/null 2>&1 || vm_pkgs+=(cpio)
  command -v mkfs.ext4 >/dev/null 2>&1 || vm_pkgs+=(e2fsprogs)
  if [ "${#vm_pkgs[@]}" -gt 0 ]; then
    bp=/etc/apt/sources.list.d/ignis-bookworm-backports.sources
    if [ ! -f "$bp" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
      # the first stanza of debian.sources (the main mirror), with its suites replaced
      awk 'BEGIN{RS=""; ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
        | sed -e 's/^Suites:.*/Suites: bookworm-backports/' -e '/^#/d' | $SUDO tee "$bp" >/dev/null
    elif [ ! -f "$bp" ]; then
      echo "deb http://deb.debian.org/debian bookworm-backports main" \
        | $SUDO tee /etc/apt/sources.list.d/ignis-bookworm-backports.list >/dev/null
    fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq -t bookworm-backports "${vm_pkgs[@]}"
  fi
  # the guest kernel is fetched with `apt-get download linux-image-cloud-amd64`'s dependency
  if ! apt-cache policy linux-image-cloud-amd64 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    $SUDO apt-get update -qq
  fi
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
