# Consul from Debian's bullseye package (the binary scripts/deps.sh unpacked),
# copied in by deploy/images.sh. Image: scrapr/consul.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --create-home consul && mkdir -p /consul && chown consul /consul
COPY consul /usr/local/bin/consul
USER consul
EXPOSE 8500
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=6 CMD curl -fsS http://127.0.0.1:8500/v1/status/leader | grep -q ':' || exit 1
ENTRYPOINT ["/usr/local/bin/consul"]
