# The demo site `make up` scrapes (machines here have no internet): static
# pages served by Debian's nginx-light. Image: scrapr/demo-site.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light curl \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
COPY nginx.conf /etc/nginx/nginx.conf
COPY site /srv/site
EXPOSE 80
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=6 CMD curl -fsS http://127.0.0.1/ >/dev/null || exit 1
ENTRYPOINT ["nginx", "-g", "daemon off;"]
