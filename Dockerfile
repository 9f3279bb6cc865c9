# The Sluice image: the CNI plugin, the helper and the installer, plus the
# userspace the helper calls. One image serves every container of the
# DaemonSet (install/daemonset.yaml).
#
#   docker build -t ghcr.io/sluicenet/sluice:dev .
#
# Without Docker, `make image` builds the same image from the same recipe
# (install/image: the package list and the binaries' build script) as an
# OCI archive.

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
# The build flags and the package list are install/image's, which
# `make image` (the recipe without Docker) reads too.
COPY install/image/ install/image/
RUN install/image/build-binaries.sh /out

FROM debian:12-slim
COPY install/image/packages /tmp/packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(sed 's/#.*//' /tmp/packages) \
 && rm -rf /var/lib/apt/lists/* /tmp/packages
COPY --from=build /out/ /usr/local/bin/
# No ENTRYPOINT: each container of the DaemonSet names its binary.
CMD ["sluice-helperd", "--help"]
