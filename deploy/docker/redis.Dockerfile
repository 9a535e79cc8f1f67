# Debian's redis-server for the Redis each spawned scraper/endpoint gets. Image: scrapr/redis.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
VOLUME /data
USER redis
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=6 CMD redis-cli ping | grep -q PONG || exit 1
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", \
            "--appendonly", "yes", "--dir", "/data"]
