# Evidence Archiver: one image for the CLI, the daemon (`... evidence-archiver daemon`) and
# the web application (`... evidence-archiver serve --host 0.0.0.0 --behind-proxy ...`,
# ports 8000 (app) and 8001 (replay origin); README: "People and access").
#   docker build -t evidence-archiver .
#   docker run --rm -v archive:/data \
#     -v /etc/evidence-archiver/passphrase:/run/secrets/passphrase:ro \
#     -e ARCHIVER_SIGNING__PASSPHRASE_FILE=/run/secrets/passphrase evidence-archiver init
# The passphrase file must be readable by uid 10001 (README: "One machine or many").
# Chromium runs with --disable-dev-shm-usage, so the default 64 MiB /dev/shm is enough.
# The browser code the web application serves itself (ReplayWeb.page, htmx), from the
# npm registry at the versions package-lock.json pins, checked against its integrity
# hashes by npm ci; never from a CDN at run time.
FROM python:3.11-slim-bookworm AS web-assets
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM python:3.11-slim-bookworm

# ffmpeg (media merging, frame sampling) and Chromium (the browser view) come from
# Debian, not from downloads at run time; fonts so screenshots and PDFs show text.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ffmpeg chromium fonts-liberation fonts-noto-core ca-certificates openssl \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin archiver \
 && mkdir -p /data && chown archiver:archiver /data

WORKDIR /opt/evidence-archiver
COPY pyproject.toml README.md ./
COPY archiver ./archiver
COPY storage ./storage
COPY chain_of_custody ./chain_of_custody
COPY config ./config
# pdqhash is built from source: a compiler for the install, removed afterwards.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ \
 && pip install --no-cache-dir . \
 && apt-get purge -y g++ && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
 && python -c "import archiver.cli, pdqhash"

COPY --from=web-assets /assets/node_modules/replaywebpage /opt/evidence-archiver/web-assets/replaywebpage
COPY --from=web-assets /assets/node_modules/htmx.org /opt/evidence-archiver/web-assets/htmx.org

USER archiver
ENV ARCHIVER_HOME=/data PYTHONUNBUFFERED=1 \
    ARCHIVER_WEB__ASSETS_DIR=/opt/evidence-archiver/web-assets
EXPOSE 8000 8001
VOLUME ["/data"]
ENTRYPOINT ["archiver"]
CMD ["--help"]
