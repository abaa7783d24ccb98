# bench/runtime-web:latest where a registry answers (docker-compose.yml builds it, context
# scripts/runtimes): playwright-core comes from npm in a first stage instead of `npm pack` on the
# host (scripts/build-images). The last stage is scripts/runtimes/web.Dockerfile's but for where
# playwright-core is copied from (test/integration/deploy-manifests.test.ts keeps them in step).
FROM node:22.23.5-bookworm-slim AS vendor
# PLAYWRIGHT_CORE_VERSION of scripts/build-images.
RUN mkdir -p /vendor/playwright-core && cd /tmp && npm pack --silent playwright-core@1.61.1 \
 && tar -xzf playwright-core-1.61.1.tgz -C /vendor/playwright-core --strip-components=1

FROM bench/agent-base:bookworm
RUN echo 'deb http://deb.debian.org/debian-security bookworm-security main' >/etc/apt/sources.list.d/security.list \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      chromium-headless-shell nodejs fonts-dejavu-core \
 && dpkg --purge --force-depends libgl1-mesa-dri libllvm15 libz3-4 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
      /usr/share/doc /usr/share/man /usr/share/locale /usr/lib/chromium/libVkLayer_khronos_validation.so
COPY --from=vendor /vendor/playwright-core/ /opt/node_modules/playwright-core/
COPY node/ /runtime/
ENV NODE_PATH=/opt/node_modules CHROMIUM_PATH=/usr/bin/chromium-headless-shell
CMD ["sleep", "infinity"]
