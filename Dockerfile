# herd's container image: the herd binary with the CUDA backend, on a CUDA runtime base.
#   docker build -t herd .                                   (CUDA 12.4; any 11.8 to 12.x works)
#   docker build --build-arg CUDA_VERSION=11.8.0 -t herd .
# The build stage compiles with the CUDA headers of the devel image (cgo, -tags cuda); the
# runtime stage has the CUDA libraries herd loads at run time (cuBLASLt, NVRTC, NCCL) and
# nothing to build with. The NVIDIA container toolkit supplies the driver (libcuda).
ARG CUDA_VERSION=12.4.1
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS go

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04 AS build
COPY --from=go /usr/local/go /usr/local/go
# libcuda exists here only as the link stub; the driver's comes with the container toolkit.
ENV PATH=/usr/local/go/bin:$PATH CGO_ENABLED=1 GOFLAGS=-trimpath LIBRARY_PATH=/usr/local/cuda/lib64/stubs
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -tags cuda -ldflags='-s -w' -o /out/herd ./cmd/herd

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu22.04
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/herd /usr/local/bin/herd
USER 65532:65532
ENTRYPOINT ["herd"]
