# The cloud bridge image (what charts/edgefleet runs):
#   docker build -t ghcr.io/edgefleet/cloud-bridge:0.1.0 .
# The bridge is pure Python; the slim image needs no compiler for its wheels.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY seqstream/ seqstream/
COPY fleetproto/ fleetproto/
COPY cloud_bridge/ cloud_bridge/
COPY edge_agent/ edge_agent/
RUN pip install . && rm -rf /src

WORKDIR /
# Any non-root uid works (the chart runs it as 65532 with a read-only root filesystem).
USER 65532:65532
EXPOSE 10250
ENTRYPOINT ["cloud-bridge"]
