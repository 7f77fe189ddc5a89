# Production image for the API, the worker and the migration job (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/var/lib/skillfoundry/hf \
    SKILLFOUNDRY_HOME=/var/lib/skillfoundry

# CPU-only torch first, from the PyTorch index, so the project install below finds
# torch==2.13.0 already satisfied instead of pulling the multi-gigabyte CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /srv/skillfoundry

# The source tree stays here: `skillfoundry migrate` finds migrations/ next to app/.
COPY . .
RUN pip install -e .

RUN useradd --system --uid 10001 --home-dir /var/lib/skillfoundry --create-home skillfoundry
USER skillfoundry

EXPOSE 8000
CMD ["skillfoundry", "api", "--host", "0.0.0.0", "--port", "8000"]
