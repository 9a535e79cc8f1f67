# MongoDB-protocol server: FerretDB v1 with its embedded SQLite backend (built by
# scripts/deps.sh), copied in by deploy/images.sh. Image: scrapr/mongo.
# MONGO_IMAGE=mongo:7 replaces it where a registry is reachable.
FROM debian:bookworm-slim
RUN useradd --system --uid 10003 --create-home ferretdb && mkdir -p /data && chown ferretdb /data
COPY ferretdb /usr/local/bin/ferretdb
USER ferretdb
VOLUME /data
EXPOSE 27017
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=6 CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/27017' || exit 1
ENTRYPOINT ["/usr/local/bin/ferretdb", "-listen", "0.0.0.0:27017", "-dir", "/data"]
