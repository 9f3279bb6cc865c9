#!/bin/sh
# Builds the four binaries of the Sluice image into $1, with the flags both
# image recipes use: the Dockerfile and `make image` (integration/images).
# All static: the plugin is copied to the Node and run there by the
# container runtime, outside the image, so it must not need a libc. The
# runtime execs the C front (plugin/shim) as `sluice`; it runs each call in
# the helper and falls back to the Go plugin, sluice-full, next to it.
set -eu
out=$1
cd "$(dirname "$0")/../.."
mkdir -p "$out"
cc=$(command -v musl-gcc || echo cc)
# shellcheck disable=SC2046 # the flags file is a list of words
"$cc" $(cat plugin/shim/cflags) -s -o "$out/sluice" plugin/shim/sluice.c
export CGO_ENABLED=0
for p in sluice-full:./plugin sluice-helperd:./helperd sluice-cni-install:./conflist/cmd/sluice-cni-install; do
	go build -trimpath -ldflags='-s -w' -o "$out/${p%%:*}" "${p#*:}"
done
