# One image for the operator (`ferry operator`) and the worker pods it starts (`ferry worker`).
#   docker build -t ferry:dev .
# Non-root (uid 10001), no build tools or dev extras in the final stage, read-only-root friendly
# (Python writes no .pyc at run time; the chart mounts an emptyDir at /tmp).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package needs: see .dockerignore.
COPY pyproject.toml README.md ./
COPY ferry/ ferry/
COPY operator/ operator/
COPY worker/ worker/
COPY testbed/ testbed/
RUN python -m venv /opt/ferry \
 && /opt/ferry/bin/pip install --upgrade 'pip' 'setuptools>=77' wheel \
 && /opt/ferry/bin/pip install . \
 && /opt/ferry/bin/python -m compileall -q /opt/ferry/lib

FROM python:3.11-slim
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="Bulk S3-to-S3 copy jobs: a Kubernetes operator and its workers" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/ferry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/ferry /opt/ferry
RUN groupadd --system --gid 10001 ferry \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin ferry
USER 10001:10001
WORKDIR /tmp
# kopf liveness (operator) / worker status and metrics; operator metrics.
EXPOSE 8080 9090
ENTRYPOINT ["ferry"]
CMD ["--help"]
