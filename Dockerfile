# The trygg image: one image for every role (run, bridge, worker, api).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY rules ./rules
RUN pip install --no-cache-dir '.[distributed]'
ENV TRYGG_LOG_FORMAT=json TRYGG_RULES_DIR=/app/rules
USER nobody
ENTRYPOINT ["trygg"]
CMD ["run"]
