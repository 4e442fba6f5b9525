# The trygg image: one image for every role (run, bridge, worker, api, db migrate).
#
# - The base image is pinned to a full version (bump it on purpose, with the tests).
# - The code and the rule catalogue in /app stay owned by root and read-only for the
#   service; what trygg writes lives under /var/lib/trygg, owned by the runtime user
#   trygg (uid/gid 10001): the spool (TRYGG_SPOOL_DIR) and a worker's local data
#   (TRYGG_WORKER_DATA_DIR). A named volume mounted there starts with this ownership.
# - trygg-healthcheck: the healthcheck of services without HTTP (bridges, workers).
FROM python:3.11.11-slim-bookworm

RUN groupadd --system --gid 10001 trygg \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/trygg --no-create-home \
        --shell /usr/sbin/nologin trygg

WORKDIR /app
COPY pyproject.toml README.md ./
COPY constraints ./constraints
COPY src ./src
COPY rules ./rules
# the Faust stack at the versions its patches were checked against (docs/distributed.md)
RUN pip install --no-cache-dir -c constraints/distributed.txt '.[distributed]'
COPY deploy/trygg-healthcheck.py /usr/local/bin/trygg-healthcheck
RUN chmod 0755 /usr/local/bin/trygg-healthcheck \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/trygg /var/lib/trygg/spool /var/lib/trygg/worker

ENV TRYGG_LOG_FORMAT=json \
    TRYGG_RULES_DIR=/app/rules \
    TRYGG_SPOOL_DIR=/var/lib/trygg/spool \
    TRYGG_WORKER_DATA_DIR=/var/lib/trygg/worker
WORKDIR /var/lib/trygg
USER 10001:10001
ENTRYPOINT ["trygg"]
CMD ["run"]
