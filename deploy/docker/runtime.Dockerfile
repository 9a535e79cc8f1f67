# Runtime base of every service image: only the shared libraries the binaries
# link, curl for the HEALTHCHECK, and an unprivileged user. Image: scrapr/runtime.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcurl4 libmongoc-1.0-0 libbson-1.0-0 \
      libhiredis0.14 libmicrohttpd12 libjansson4 libxml2 zlib1g ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin scrapr
USER scrapr
