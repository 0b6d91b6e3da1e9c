#!/usr/bin/env bash
# Installs the Debian 12 packages mirrorfs needs to build, test and demo, then
# configures and builds into ./build. Idempotent; run as root.
#   scripts/setup.sh [--sanitize address,undefined|thread] [--build-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=build
sanitize=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize="$2"; shift 2 ;;
    --build-dir) build_dir="$2"; shift 2 ;;
    *) echo "setup.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake pkg-config git ca-certificates
  libfuse3-dev fuse3 librsync-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
  libexpected-dev libcli11-dev libxxhash-dev clang libclang-rt-14-dev
  rsync openssh-server openssh-client attr acl procps psmisc iproute2 python3
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing; mirrorfs needs FUSE" >&2; exit 1; }

cmake_args=(-S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMIRRORFS_WERROR=${MIRRORFS_WERROR:-OFF})
[ -n "$sanitize" ] && cmake_args+=(-DMIRRORFS_SANITIZE="$sanitize")
cmake "${cmake_args[@]}" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
