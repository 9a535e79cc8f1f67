# scrapr-endpoint image: binary from the shared build stage on the slim runtime base.
FROM scrapr/build AS build
FROM scrapr/runtime
COPY --from=build /build/bin/scrapr-endpoint /usr/local/bin/
ENV PORT=3000
EXPOSE 3000
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/scrapr-endpoint"]
