# One image for the operator, the proxy and the default backend: a static binary on distroless.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY controllers/ controllers/
COPY dataplane/ dataplane/
COPY main.go ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/portico . \
 && apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
 # HostNetwork proxies bind 80/443 as a non-root user: the file capability grants just that.
 && setcap cap_net_bind_service=+ep /out/portico

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/portico /portico
USER 65532:65532
ENTRYPOINT ["/portico"]
