# edgechat container image.
#
# NOTE: Docker cannot be run on the dev machines here (no Docker daemon), so this file is not
# built by CI; build and try it elsewhere:
#   docker build -t edgechat .
#   docker run -d --name edgechat -p 7443:7443/tcp -p 7443:7443/udp -v edgechat-data:/data edgechat
# The first start initialises /data (keys, dev CA and certificates, database, config). The
# generated server certificate covers localhost, 127.0.0.1 and ::1; for another name append
# `--hostname chat.example.org` to the command on the first start, or bring your own
# certificates (certs/README.md). The first admin, with the server container stopped:
#   echo 'a-long-password' | docker run --rm -i -v edgechat-data:/data edgechat \
#     user add admin --role admin --password-stdin --data-dir /data

FROM rust:1-bookworm AS builder
WORKDIR /src
# Only what the release build needs (build.rs compiles proto/ with protox: no protoc needed;
# init.rs embeds config/edgechat.example.toml).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY config ./config
COPY src ./src
# The patched h3-quinn ([patch.crates-io]) and the declared bench target must be present for
# cargo to read the manifest.
COPY vendor ./vendor
COPY benches ./benches
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 edgechat \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin edgechat \
    && mkdir -p /data \
    && chown edgechat:edgechat /data \
    && chmod 0700 /data
COPY --from=builder /src/target/release/edgechat /usr/local/bin/edgechat
USER edgechat
VOLUME /data
# gRPC over HTTP/2 + TLS (and gRPC-Web) on TCP; HTTP/3 on UDP.
EXPOSE 7443/tcp 7443/udp
# The standard gRPC health service, over TLS with the data directory's CA: NOT_SERVING while
# draining or after a storage failure.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/edgechat", "health", "--data-dir", "/data"]
ENTRYPOINT ["/usr/local/bin/edgechat"]
CMD ["serve", "--data-dir", "/data", "--listen", "0.0.0.0:7443"]
