# One image for every process of the Procfile (web, worker, beat, release); Kubernetes picks the
# command (deploy/kubernetes/). Debian's Python 3.11, the version the locks are compiled for.
# Installs exactly what requirements/run.txt pins, hashes checked, as scripts/install does.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A virtualenv owned by root, read-only to the app user: the running process cannot change code.
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv $VIRTUAL_ENV

WORKDIR /app
# The locks first, so a code change does not reinstall every dependency.
COPY requirements/run.txt requirements/run.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/run.txt

COPY pyproject.toml README.md Procfile ./
COPY schemas schemas
COPY receiver receiver
COPY workers workers
COPY console console
COPY cli cli
COPY deploy deploy
# Not editable: the image carries the code it was built with. deploy/ stays in /app, which is
# where gunicorn's -c deploy/gunicorn.conf.py and deploy.wsgi:app are found (the workdir).
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && rm -rf build *.egg-info

# Non-root, with a fixed uid the manifests' runAsUser names; the spool is its only writable place
# in the image (a volume on Kubernetes).
RUN groupadd --system --gid 10001 tavus \
    && useradd --system --uid 10001 --gid tavus --no-create-home --home-dir /app tavus \
    && install -d -o tavus -g tavus /var/spool/tavus-callbacks
USER 10001:10001
ENV PORT=5000 SPOOL_DIR=/var/spool/tavus-callbacks
EXPOSE 5000
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "deploy.wsgi:app"]
