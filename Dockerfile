# The queue consumer. The base is a build argument so the image also builds where
# no registry can be reached (see README, "The container image").
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain/ domain/
COPY application/ application/
COPY adapters/ adapters/
COPY entrypoints/ entrypoints/
# pip and setuptools are only needed to install; they are dropped from the venv afterwards.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/venv/bin/pip uninstall --yes --quiet --disable-pip-version-check setuptools pip \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    CONFIG_PATH=/app/config.yml \
    DESTINATION_CONFIG=/app/destination_config.yml \
    LEDGER_PATH=/data/ledger.sqlite3
# A fixed non-root uid (10001) in group 0. OpenShift runs the container as an arbitrary
# uid, always in group 0, so what the service writes (only the ledger under /data)
# belongs to group 0 and is group-writable: any uid of group 0 can write it.
# useradd comes with Debian's passwd package, which both python:3.12-slim and a
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
