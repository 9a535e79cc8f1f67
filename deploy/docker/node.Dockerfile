# A Swarm node for deploy/local-cluster.sh: Debian's docker.io running its own
# dockerd inside a container (started with --cap-add=ALL --cap-drop=SYS_RESOURCE,
# since --privileged is refused on some hosts). Image: scrapr/node.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker.io iptables iproute2 ca-certificates curl procps \
 && rm -rf /var/lib/apt/lists/* \
 && update-alternatives --set iptables /usr/sbin/iptables-legacy \
 && update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy
VOLUME /var/lib/docker
ENTRYPOINT ["dockerd", "--host=unix:///var/run/docker.sock", "--host=tcp://0.0.0.0:2375", "--tls=false"]
