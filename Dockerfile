FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY models ./models
RUN pip install --no-cache-dir .
ENV ARBITER_HOST=0.0.0.0 ARBITER_MODELS_DIR=/app/models
EXPOSE 8080
# Set ARBITER_ADMIN_KEY and ARBITER_PUBLIC_KEY: the demo keys are refused off loopback.
CMD ["arbiter", "serve"]
