# syntax=docker/dockerfile:1
# The Shoelace server in a minimal image:
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t shoelace .
#   docker run -d -p 7400:7400 -v shoelace-data:/var/lib/shoelace shoelace
#   docker cp <container>:/var/lib/shoelace/admin.token ./admin.token   # no shell in the image
# Without SHOELACE_ETCD_ENDPOINTS the server keeps an embedded single-node
# etcd in the volume: run one container per volume, never several replicas.

FROM golang:1.26 AS build
ENV GOTOOLCHAIN=local CGO_ENABLED=0
WORKDIR /src
# Dependencies first, so that code changes reuse this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.0.0-dev
RUN make build VERSION="${VERSION}" \
 && ./bin/shoelace version \
 && install -d -m 0700 /out/data

# distroless/static: no shell, no package manager, CA certificates and
# tzdata only; "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/shoelace /usr/bin/shoelace
# The volume's mount point, owned by the runtime user so that a fresh
# named volume starts out writable.
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/shoelace
USER nonroot:nonroot
ENV SHOELACE_LISTEN=0.0.0.0:7400 \
    SHOELACE_DATA_DIR=/var/lib/shoelace
VOLUME /var/lib/shoelace
EXPOSE 7400
# No curl in this image: the binary checks its own /health, at SHOELACE_ADDR
# (default http://127.0.0.1:7400): a server given another port in
# SHOELACE_LISTEN (docker run -e SHOELACE_LISTEN=0.0.0.0:8080) needs
# SHOELACE_ADDR=http://127.0.0.1:8080 as well, or every check fails. With TLS on,
# also set SHOELACE_ADDR=https://127.0.0.1:7400 and SHOELACE_CA_FILE (the CA
# of the server's certificate, which must name IP 127.0.0.1) for the check:
# a certificate that does not verify for that address fails every check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/bin/shoelace", "health"]
ENTRYPOINT ["/usr/bin/shoelace", "server"]
