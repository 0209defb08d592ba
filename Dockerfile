# The queue consumer, on the Python and Debian release CI builds and tests it on: CPython
# 3.11 on Debian 12 (bookworm), as the lock files are compiled for. The base is a build
# argument so the image also builds where no registry can be reached (docs/operations.md,
# "The container image"): CI builds on Debian bookworm's own python3, 3.11 as well.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
RUN python3 -m venv /opt/venv
WORKDIR /src
# Every dependency at the version the lock pins, checked against its hashes, from wheels
# only (nothing compiled with tools the lock does not pin); the locked setuptools builds
# the project below. A rebuild from the same commit installs the same set.
COPY requirements.lock requirements-build.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
      --require-hashes --only-binary :all: -r requirements.lock -r requirements-build.lock
# `--build-arg EXTRAS=reconcile`: an image that also runs `reconcile` (deploy/reconcile/), with
# boto3 as requirements-reconcile.lock pins it. The consumer's image, the default, goes without.
ARG EXTRAS=""
COPY requirements-reconcile.lock ./
RUN if [ "$EXTRAS" = reconcile ]; then \
      /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
        --require-hashes --only-binary :all: -r requirements-reconcile.lock; \
    elif [ -n "$EXTRAS" ]; then echo "unknown EXTRAS=$EXTRAS (reconcile or nothing)" >&2; exit 1; \
    fi
COPY pyproject.toml README.md ./
COPY domain/ domain/
COPY application/ application/
COPY adapters/ adapters/
COPY entrypoints/ entrypoints/
# The project alone (the lock brought its dependencies), built with the locked setuptools
# rather than in an isolated environment with whatever setuptools is newest. pip and
# setuptools are only needed to install: they go. Then everything is compiled to bytecode
# once, here, instead of at every start (about 0.6 s of CPU a start otherwise, as nothing in
# the image is writable to keep it): unchecked-hash .pyc files are the same bytes in every
# build and are used without looking at the source's time stamp.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-compile \
      --no-deps --no-build-isolation . \
 && /opt/venv/bin/pip uninstall --yes --quiet --disable-pip-version-check setuptools pip \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv

FROM ${BASE_IMAGE}
# PYTHONDONTWRITEBYTECODE only stops Python writing .pyc files (it could not: the image is
# read-only to the service); it still reads the ones compiled above.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    CONFIG_PATH=/app/config.yml \
    DESTINATION_CONFIG=/app/destination_config.yml \
    LEDGER_PATH=/data/ledger.sqlite3
# The standard library's bytecode too, where the base leaves it out (the python images
# remove theirs; Debian's python3 has it already, and this leaves it as it is).
RUN python3 -m compileall -q -j 0 -x '/(test|tests|idle_test)/' \
      "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"
# A fixed non-root uid (10001) in group 0. OpenShift runs the container as an arbitrary
# uid, always in group 0, so what the service writes (only the ledger under /data)
# belongs to group 0 and is group-writable: any uid of group 0 can write it.
# useradd comes with Debian's passwd package, which both python:3.11-slim-bookworm and a
# debootstrap minbase have.
RUN useradd --uid 10001 --gid 0 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin s3events \
 && mkdir /data && chown 10001 /data && chgrp -R 0 /data && chmod -R g=u /data
# The ledger of events taken in: mount a volume here so it outlives the container.
VOLUME /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY config.yml destination_config.yml ./
USER 10001:0
ENTRYPOINT ["s3-events-handler"]
CMD ["consume"]
