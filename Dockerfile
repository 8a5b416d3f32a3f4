# The costplane worker image used by docker-compose.yml (SDK + worker extra).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY costplane ./costplane
COPY pricing ./pricing
COPY publisher ./publisher
COPY enforcers ./enforcers
COPY streams ./streams
COPY budgets ./budgets
COPY reports ./reports
COPY integrations ./integrations
COPY schemas ./schemas
COPY sql ./sql
RUN pip install --no-cache-dir ".[worker]"
ENV COSTPLANE_LOG_FORMAT=json
EXPOSE 6066
CMD ["costplane", "worker", "--role", "all"]
