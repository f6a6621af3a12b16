# One image for the operator (`ferry operator`) and the worker pods it starts (`ferry worker`).
#   docker build -t ferry:dev .                         (python:3.11-slim from a registry)
#   make image                                          (a base made from Debian's packages, no registry)
# Non-root (uid 10001), no build tools, dev extras or test tools in the final stage, read-only-root
# friendly (Python writes no .pyc at run time; the chart mounts an emptyDir at /tmp).
ARG BASE=python:3.11-slim

FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The sources sit in /build, and every Python command runs from / in isolated mode (-I): the project's
# operator/ folder must never be on sys.path, where it would shadow the standard library's `operator`.
WORKDIR /
COPY pyproject.toml /build/
# Dependencies first, in their own stage: a change to Ferry's code rebuilds only the last steps.
RUN python -I -m venv /opt/ferry \
 && /opt/ferry/bin/python -I -m pip install -q 'setuptools>=77' wheel \
 && /opt/ferry/bin/python -I -c "import tomllib; print('\n'.join(tomllib.load(open('/build/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/ferry/bin/python -I -m pip install -q -r /tmp/requirements.txt \
 && /opt/ferry/bin/python -I -m compileall -q /opt/ferry/lib

FROM deps AS build
COPY README.md /build/
COPY ferry/ /build/ferry/
COPY operator/ /build/operator/
COPY worker/ /build/worker/
# Ferry's own files (package, metadata, the `ferry` script) are staged under /stage with their paths, so
# the final image adds them as one small layer on top of the cached dependencies.
RUN /opt/ferry/bin/python -I -m pip install -q --no-deps --no-build-isolation /build \
 && /opt/ferry/bin/python -I -c "import ferry.cli, ferry.operator.handlers, ferry.worker.pod" \
 && /opt/ferry/bin/python -I -c "import ferry, pathlib, shutil; site = pathlib.Path(ferry.__file__).parent.parent; [shutil.copytree(p, '/stage' + str(p)) for p in (site / 'ferry', *site.glob('ferry-*.dist-info'))]; pathlib.Path('/stage/opt/ferry/bin').mkdir(parents=True); shutil.copy2('/opt/ferry/bin/ferry', '/stage/opt/ferry/bin/ferry')" \
 && /opt/ferry/bin/python -I -m compileall -q -s /stage /stage/opt/ferry/lib

FROM ${BASE}
LABEL org.opencontainers.image.title="ferry" \
      org.opencontainers.image.description="Bulk S3-to-S3 copy jobs: a Kubernetes operator and its workers" \
      org.opencontainers.image.licenses="Apache-2.0"
# MALLOC_ARENA_MAX: glibc gives each busy thread its own arena, and freed part buffers stay in them;
# two arenas keep a worker's resident memory close to what it has reserved (see worker/budget.py).
ENV PATH=/opt/ferry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2
RUN groupadd --system --gid 10001 ferry \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin ferry
COPY --from=deps /opt/ferry /opt/ferry
COPY --from=build /stage/ /
USER 10001:10001
WORKDIR /tmp
# kopf liveness (operator) / worker status and metrics; operator metrics.
EXPOSE 8080 9090
ENTRYPOINT ["ferry"]
CMD ["--help"]
