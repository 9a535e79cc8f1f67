# scrapr-config-discovery image: binary from the shared build stage on the slim runtime base.
FROM scrapr/build AS build
FROM scrapr/runtime
COPY --from=build /build/bin/scrapr-config-discovery /build/bin/scraprctl /usr/local/bin/
ENV PORT=3003
EXPOSE 3003
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/scrapr-config-discovery"]
