# Debian's redis-server for the Redis each spawned scraper/endpoint gets. Image: scrapr/redis.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
VOLUME /data
USER redis
EXPOSE 6379
# No HEALTHCHECK: every probe is a process exec in the container, and with a
# Redis per scraper and endpoint they added up on small machines; a Redis that
# dies exits and is restarted, and its app's /health reports it unreachable.
ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", \
            "--appendonly", "yes", "--dir", "/data"]
