# scrapr-orchestrator image: binary from the shared build stage on the slim runtime base.
# Talks to the Docker socket: the stack runs it as root (user: "0") on a manager.
FROM scrapr/build AS build
FROM scrapr/runtime
COPY --from=build /build/bin/scrapr-orchestrator /usr/local/bin/
ENV PORT=3004
EXPOSE 3004
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/scrapr-orchestrator"]
