# segstream consumer image (CPU torch). Build: docker build -t segstream .
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY state ./state
COPY encoders ./encoders
COPY eventlogs ./eventlogs
COPY evaluation ./evaluation
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install .
# the image owns the volume mount points, so named volumes start out owned by the segstream user
RUN useradd --system --uid 10001 segstream \
 && mkdir -p /data /var/lib/segstream/models /var/lib/segstream/checkpoints \
 && chown -R segstream /data /var/lib/segstream
USER segstream
ENV SEGSTREAM_METRICS_HOST=0.0.0.0 SEGSTREAM_METRICS_PORT=9400 SEGSTREAM_LOG_FORMAT=json
EXPOSE 9400
# liveness: /healthz fails once the run loop has not turned for SEGSTREAM_LIVENESS_TIMEOUT_S
HEALTHCHECK --interval=15s --timeout=3s --retries=5 --start-period=60s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=2)" || exit 1
ENTRYPOINT ["segstream"]
CMD ["run"]
