# bench/otel-sdk-agent:latest where a registry answers (docker-compose.yml builds it, context
# scripts/images/otel-sdk-agent): the SDK wheels come from pip in a first stage instead of the host's
# pip (scripts/build-images). Keep the last stage in step with scripts/images/otel-sdk-agent/Dockerfile.
FROM python:3.11-slim-bookworm AS wheels
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir --target /site-packages -r /requirements.txt

FROM bench/agent-base:bookworm
COPY --from=wheels /site-packages/ /opt/otel-sdk/site-packages/
COPY run_case.py serve_case.py /agent/
ENV PYTHONPATH=/opt/otel-sdk/site-packages PYTHONDONTWRITEBYTECODE=1
CMD ["sleep", "infinity"]
