# scrapr-endpoint image: binary from the shared build stage on the slim runtime base.
FROM scrapr/build AS build
FROM scrapr/runtime
COPY --from=build /build/bin/scrapr-endpoint /usr/local/bin/
ENV PORT=3000
EXPOSE 3000
# Liveness only: any HTTP answer (a 503 "MongoDB is down" too) means the process
# is alive; restarting it would not bring a dependency back. Consul's check on
# /health is the readiness signal peers use. Swarm reports a task running only
# once it is healthy, so the interval is short; retries make a kill take 30 s+.
HEALTHCHECK --interval=3s --timeout=5s --start-period=30s --retries=10 \
  CMD curl -sS -o /dev/null "http://127.0.0.1:${PORT}/health" || exit 1
ENTRYPOINT ["/usr/local/bin/scrapr-endpoint"]
