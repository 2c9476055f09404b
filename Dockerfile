FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent_ledger agent_ledger
COPY domain domain
COPY application application
COPY infrastructure infrastructure
COPY projections projections
RUN pip install --no-cache-dir .
ENV AGENT_LEDGER_DATA_DIR=/data
EXPOSE 8000
CMD ["agent-ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
