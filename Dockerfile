# The Sluice image: the CNI plugin, the helper and the installer, plus the
# userspace the helper calls. One image serves every container of the
# DaemonSet (install/daemonset.yaml).
#
#   docker build -t ghcr.io/sluicenet/sluice:dev .

FROM golang:1.26 AS build
# musl-gcc for the plugin's static C front.
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
# Only the packages the three binaries build from: .cache/ holds the test
# cluster's binaries and would bloat the build context's copy.
COPY plugin/ plugin/
COPY helperd/ helperd/
COPY conflist/ conflist/
COPY pkg/ pkg/
# Static binaries: the plugin is copied to the Node and run there by the
# container runtime, outside this image, so it must not need a libc. The
# runtime execs the C front (plugin/shim) as `sluice`; it runs each call in
# the helper and falls back to the Go plugin, sluice-full, next to it.
ENV CGO_ENABLED=0
RUN mkdir -p /out \
 && musl-gcc $(cat plugin/shim/cflags) -s -o /out/sluice plugin/shim/sluice.c \
 && go build -trimpath -ldflags='-s -w' -o /out/sluice-full ./plugin \
 && go build -trimpath -ldflags='-s -w' -o /out/sluice-helperd ./helperd \
 && go build -trimpath -ldflags='-s -w' -o /out/sluice-cni-install ./conflist/cmd/sluice-cni-install

FROM debian:12-slim
# iptables carries both backends (iptables-nft and iptables-legacy and their
# -save/-restore); the helper runs the one the Node already uses
# (pkg/iptbackend). ipset for the per-Egress Pod sets, iproute2 for `ip`
# when debugging, conntrack to inspect and flush SNAT entries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset iproute2 conntrack \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/sluice /out/sluice-full /out/sluice-helperd /out/sluice-cni-install /usr/local/bin/
# No ENTRYPOINT: each container of the DaemonSet names its binary.
CMD ["sluice-helperd", "--help"]
