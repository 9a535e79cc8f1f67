# Build stage shared by every service image: compiles all binaries once
# (context: the repository root). Image: scrapr/build.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libcurl4-openssl-dev libmongoc-dev libbson-dev libhiredis-dev libmicrohttpd-dev \
      libjansson-dev libxml2-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY libshared libshared
COPY services services
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DSCRAPR_TESTS=OFF -DSCRAPR_WERROR=OFF \
 && cmake --build /build -j"$(nproc)" \
 && strip /build/bin/*
