# bench/agent-base:bookworm where a registry answers (docker-compose.yml builds it); the same image
# as scripts/build-images makes from a debootstrap root: Debian bookworm with python3, ca-certificates, curl.
FROM debian:bookworm-slim
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 ca-certificates curl \
  && rm -rf /var/lib/apt/lists/*
CMD ["/bin/sh"]
