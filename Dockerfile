# Evidence Archiver: one image for the CLI and the daemon (`... evidence-archiver daemon`).
#   docker build -t evidence-archiver .
#   docker run --rm -v archive:/data \
#     -v /etc/evidence-archiver/passphrase:/run/secrets/passphrase:ro \
#     -e ARCHIVER_SIGNING__PASSPHRASE_FILE=/run/secrets/passphrase evidence-archiver init
# The passphrase file must be readable by uid 10001 (README: "One machine or many").
# Chromium runs with --disable-dev-shm-usage, so the default 64 MiB /dev/shm is enough.
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

USER archiver
ENV ARCHIVER_HOME=/data PYTHONUNBUFFERED=1
VOLUME ["/data"]
ENTRYPOINT ["archiver"]
CMD ["--help"]
