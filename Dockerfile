FROM python:3.11-slim
WORKDIR /srv/concord
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CONCORD_DATA_DIR=/data
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
COPY templates ./templates
RUN pip install --no-cache-dir -e '.[worker,train]'
VOLUME /data
EXPOSE 8000
CMD ["concord", "serve", "--host", "0.0.0.0", "--port", "8000"]
