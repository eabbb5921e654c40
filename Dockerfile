# One image with every binary of the project (manager, task-service,
# package-service, agent): each main package under cmd/ lands in
# /usr/local/bin/. The manager is the entrypoint; the other components'
# pods set `command:` to their binary.
#
#   docker build -t <your-registry>/site-operator:<version> .
#
# Build on the build host's platform and cross-compile for the target one
# (docker buildx build --platform linux/amd64,linux/arm64 ...).
FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src

# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download

# The Go packages the binaries are built from. A new top-level package
# directory must be added here (and is let in by .dockerignore if it holds
# only .go files).
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/

# Static binaries (no cgo), without paths of the build machine or debug
# information. -o with a directory writes one binary per main package.
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags='-s -w' -o /out/ ./cmd/...

# No shell, no package manager: only the binaries and the CA bundle (for
# HTTPS to package origins and directory servers).
FROM scratch
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/ /usr/local/bin/
# A numeric non-root user, so that Kubernetes can check runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/manager"]
