# The web runtime: Debian's headless Chromium (bookworm-security keeps it current) driven over CDP
# by playwright-core (no browser download: it launches the system binary) on Debian's Node.js.
# Mesa's GPU drivers (libLLVM, ~160 MB) are purged: headless Chromium here renders without a GPU
# (software compositing, SwiftShader for WebGL); so is the Vulkan validation layer (a debugging aid).
FROM bench/agent-base:bookworm
RUN echo 'deb http://deb.debian.org/debian-security bookworm-security main' >/etc/apt/sources.list.d/security.list \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      chromium-headless-shell nodejs fonts-dejavu-core \
 && dpkg --purge --force-depends libgl1-mesa-dri libllvm15 libz3-4 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
      /usr/share/doc /usr/share/man /usr/share/locale /usr/lib/chromium/libVkLayer_khronos_validation.so
COPY vendor/playwright-core/ /opt/node_modules/playwright-core/
COPY node/ /runtime/
ENV NODE_PATH=/opt/node_modules CHROMIUM_PATH=/usr/bin/chromium-headless-shell
CMD ["sleep", "infinity"]
