# The code runtime: Python on a static busybox root (scripts/runtimes/collect-python.sh picks the
# interpreter, the standard library and the libraries they load out of agent-base).
FROM bench/agent-base:bookworm AS python
COPY collect-python.sh /collect-python.sh
RUN sh /collect-python.sh /python-root
FROM bench/busybox:latest
COPY --from=python /python-root/ /
COPY python/ /runtime/
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/runtime SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["sleep", "infinity"]
