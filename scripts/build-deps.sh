#!/usr/bin/env bash
# Installs what building distill needs besides Rust and a C compiler: CMake and NASM, with which
# turbojpeg-sys builds the libjpeg-turbo it bundles (the JPEG decoder Pillow uses; NASM for its
# SIMD code). Idempotent: does nothing when both are on PATH. Uses Debian's packages (apt-get, as
# root or through sudo); elsewhere it says what to install.
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v nasm >/dev/null || missing+=(nasm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "build-deps: install ${missing[*]} (libjpeg-turbo is built from source with them)" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  sudo=(sudo)
fi
echo "build-deps: installing ${missing[*]} from Debian's packages"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
