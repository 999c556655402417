# The image of the in-cluster nightly drill (deploy/kubernetes/cronjob.yaml).
#   docker build -t firedrill:latest .
# Two stages: the build needs the Rust toolchain, the run needs only the binary
# (rustls: no OpenSSL in the image).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin firedrill

FROM debian:bookworm-slim
# ca-certificates: the API server's CA comes from the service account, but HTTP
# probes of a drill may reach TLS services.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/firedrill /usr/local/bin/firedrill
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/firedrill"]
CMD ["--help"]
