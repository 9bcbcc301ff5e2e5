"""Capture rate against bellingcat's auto-archiver 1.2.9: the same social-media-like
posts captured by `archiver capture` (everything on) and by auto-archiver, in one run.

    .venv/bin/python bench/capture_rate.py            # 50 posts
    .venv/bin/python bench/capture_rate.py --quick    # 6 posts, to check it runs
    scripts/bench capture

The site: each post is a page with a title, an author line, its text, two photos (JPEG,
made with Pillow), an avatar and a stylesheet. Every second post also has a `<video>`
(one 3-second H.264/AAC clip made once by ffmpeg, served at its own URL per post) and an
og:image; one post in five has its text put in by a script 100 ms after load, from a
JSON blob in the page (written so that the raw HTML does not hold the sentence). It is
served on 127.0.0.1 under the name posts.evidence-bench.test: auto-archiver refuses
`localhost` and non-global IP literals but follows a name, so the name is added to
/etc/hosts if it does not resolve (as root; otherwise the benchmark says what to do).

Each tool is one command on all the URLs, in a fresh directory, from a fresh phase
interpreter; its wall time includes its start-up, per URL = wall / N. Peak RSS is the
largest single process of the tool's tree (ru_maxrss of the phase's children).

- ours: a fresh ARCHIVER_HOME, `archiver init` (timed apart), then one
  `archiver capture --json URL...` with the defaults: page fetch, browser view, media,
  WARC, seal, store, ledger.
- auto-archiver: installed once from PyPI into its own venv under
  ~/.cache/evidence-archiver-bench/, run with AA_CONFIG below: command-line feeder,
  generic extractor (yt-dlp), hash enricher, local storage, CSV database, HTML
  formatter.

Neither result is taken on trust. Ours: the JSON lines (status, browser and media
outcomes, artifacts) and each capture's rendered DOM (`archiver get ID dom.html`: does
it hold the post's text, script-inserted or not?). auto-archiver's: its CSV (status,
hashes) and the files it stored, each re-hashed against the SHA-256 it recorded, and its
HTML page (does it hold the post's text?). "completed" is our status `completed`, and
auto-archiver's status `...: success`. Then where our time goes, from every capture's
provenance.json: medians over all posts and over those with and without a video (a
field renamed or missing shows as n/a).

The `archiver` command is this checkout's .venv/bin/archiver; PYTHONPATH is passed on to
it (not to auto-archiver), so another commit can be measured with
`git archive COMMIT | tar -x -C DIR` and `PYTHONPATH=DIR`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

from benchlib import ROOT, ensure_loopback_name, run_phase, serve

HOST = "posts.evidence-bench.test"
AA_VERSION = "1.2.9"
AA_VENV = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
           / "evidence-archiver-bench" / f"auto-archiver-{AA_VERSION}")
ARCHIVER = ROOT / ".venv" / "bin" / "archiver"

# auto-archiver's orchestration file, written into its fresh run directory (its cwd).
AA_CONFIG = """\
steps:
  feeders: [cli_feeder]
  extractors: [generic_extractor]
  enrichers: [hash_enricher]
  databases: [csv_db]
  storages: [local_storage]
  formatters: [html_formatter]
authentication: {}
logging:
  level: INFO
generic_extractor:
  ytdlp_update_interval: -1          # never `pip install --upgrade yt-dlp` during a run
  bguils_po_token_method: disabled   # YouTube proof-of-origin tokens: not needed here
hash_enricher:
  algorithm: SHA-256
local_storage:
  save_to: ./archive
  path_generator: url                # one folder per URL (slug of the URL)
  filename_generator: static         # files named by their SHA-256
  save_absolute: false
csv_db:
  csv_file: db.csv
"""

NAMES = [("Amal Haddad", "amal_h"), ("Bogdan Kravets", "bkravets"), ("Chen Wei", "chenwei_news"),
         ("Dana Okafor", "dokafor"), ("Elif Yilmaz", "elif.y"), ("Farid Rahimi", "frahimi")]
SENTENCES = [
    "Smoke rising over the market district just after the second explosion.",
    "Convoy of six trucks heading north on the ring road, no markings visible.",
    "Queue outside the bakery since 5am, people say flour ran out yesterday.",
    "Power is back in our street after three days, water still cut.",
    "This is the checkpoint they closed this morning, families turned back.",
    "Footage sent by a neighbour: the bridge is down, cars stuck on both sides.",
    "Volunteers clearing rubble at the school, no one hurt according to staff.",
    "Prices at the fuel station doubled overnight, handwritten sign on the pump.",
]
CSS = b"""
body { margin: 0; font: 15px/1.4 system-ui, sans-serif; background: #f3f4f6; color: #111; }
header.site { background: #1d4ed8; color: #fff; padding: 10px 16px; font-weight: 700; }
article.post { max-width: 600px; margin: 16px auto; background: #fff; border-radius: 12px;
  padding: 16px; box-shadow: 0 1px 3px rgba(0,0,0,.15); }
.author { display: flex; gap: 8px; align-items: center; color: #555; }
.author img { border-radius: 50%; }
.author a { color: #111; font-weight: 600; text-decoration: none; }
.text { font-size: 17px; margin: 12px 0; min-height: 1.4em; }
.photos { display: grid; grid-template-columns: 1fr 1fr; gap: 4px; }
.photos img, video { width: 100%; height: auto; border-radius: 8px; }
footer.stats { color: #666; margin-top: 10px; font-size: 13px; }
"""


@dataclass(frozen=True)
class Post:
    index: int
    video: bool
    scripted: bool
    text: str

    @property
    def path(self) -> str:
        return f"/post/{self.index}"


def _posts(count: int) -> list[Post]:
    posts = []
    for i in range(count):
        text = (f"{SENTENCES[i % len(SENTENCES)]} {SENTENCES[(i * 3 + 1) % len(SENTENCES)]} "
                f"Report {i:03d} from the field team.")
        posts.append(Post(i, video=i % 2 == 0, scripted=i % 5 == 1, text=text))
    return posts


def _post_html(post: Post) -> str:
    """The page; @@ORIGIN@@ becomes http://<Host header> when served."""
    name, handle = NAMES[post.index % len(NAMES)]
    i = post.index
    meta = [f'<meta property="og:title" content="{name} (@{handle})">',
            f'<meta property="og:url" content="@@ORIGIN@@{post.path}">']
    if not post.scripted:  # a client-rendered app has no text for crawlers either
        meta.append(f'<meta property="og:description" content="{post.text}">')
    if post.video:
        meta += ['<meta property="og:type" content="video.other">',
                 f'<meta property="og:image" content="@@ORIGIN@@/img/{i}-a.jpg">',
                 f'<meta property="og:video" content="@@ORIGIN@@/video/{i}.mp4">']
    video = (f'<video controls preload="metadata" poster="/img/{i}-a.jpg" width="320" '
             f'height="240"><source src="/video/{i}.mp4" type="video/mp4"></video>'
             if post.video else "")
    if post.scripted:
        # \u0020 for spaces: the sentence is only in the page once the script has run
        escaped = json.dumps(post.text).replace(" ", "\\u0020")
        blob = f'{{"id": {i}, "text": {escaped}}}'
        text = ""
        script = (f'<script type="application/json" id="post-data">{blob}</script>\n'
                  "<script>setTimeout(function () {\n"
                  "  var post = JSON.parse(document.getElementById('post-data').textContent);\n"
                  "  document.getElementById('text').innerText = post.text;\n"
                  "}, 100);</script>")
    else:
        text, script = post.text, ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{name} on Evidence Bench: post {i}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
{chr(10).join(meta)}
<link rel="stylesheet" href="/static/site.css">
</head><body>
<header class="site">Evidence Bench</header>
<article class="post" id="post-{i}">
  <div class="author"><img src="/img/avatar-{i % len(NAMES)}.png" width="40" height="40" alt="">
    <a href="/u/{handle}">{name}</a> <span>@{handle}</span> &middot;
    <time datetime="2026-03-{1 + i % 28:02d}T{8 + i % 12:02d}:15:00Z">Mar {1 + i % 28}</time></div>
  <p class="text" id="text">{text}</p>
  {video}
  <div class="photos"><img src="/img/{i}-a.jpg" width="480" height="360" alt="photo 1">
    <img src="/img/{i}-b.jpg" width="480" height="360" alt="photo 2"></div>
  <footer class="stats">{3 + i * 7 % 40} replies &middot; {10 + i * 13 % 90} reposts &middot;
    {50 + i * 37 % 400} likes</footer>
</article>
{script}
</body></html>
"""


def _photo(i: int, which: str) -> bytes:
    from io import BytesIO

    from PIL import Image, ImageDraw

    shade = (i * 37 + (0 if which == "a" else 120)) % 256
    image = Image.new("RGB", (480, 360), (shade, 255 - shade, (i * 91) % 256))
    draw = ImageDraw.Draw(image)
    for k in range(6):  # some structure, so photos differ beyond their colour
        x, y = (i * 53 + k * 71) % 400, (i * 29 + k * 47) % 280
        draw.ellipse((x, y, x + 60 + k * 8, y + 50 + k * 6), fill=((shade + k * 40) % 256, 80, 160))
    draw.rectangle((0, 320, 480, 360), fill=(20, 20, 20))
    draw.text((12, 330), f"post {i} photo {which}", fill=(255, 255, 255))
    out = BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _avatar(k: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (40, 40), ((k * 60) % 256, 120, 200)).save(out, "PNG")
    return out.getvalue()


def _make_clip(directory: Path) -> bytes:
    clip = directory / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc=duration=3:size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(clip)],
        check=True,
    )
    return clip.read_bytes()


def build_site(posts: list[Post], directory: Path) -> dict[str, tuple[bytes, str]]:
    """Every path of the site: body and content type."""
    routes: dict[str, tuple[bytes, str]] = {"/static/site.css": (CSS, "text/css")}
    clip = _make_clip(directory)
    for k in range(len(NAMES)):
        routes[f"/img/avatar-{k}.png"] = (_avatar(k), "image/png")
    for post in posts:
        routes[post.path] = (_post_html(post).encode(), "text/html; charset=utf-8")
        for which in "ab":
            routes[f"/img/{post.index}-{which}.jpg"] = (_photo(post.index, which), "image/jpeg")
        if post.video:
            routes[f"/video/{post.index}.mp4"] = (clip, "video/mp4")
    return routes


class _Site(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[bytes, str]]] = {}

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        found = self.routes.get(self.path.split("?")[0])
        if found is None:
            payload, kind, status = b"not found", "text/plain", 404
        else:
            payload, kind = found
            status = 200
        if kind.startswith("text/html"):
            payload = payload.replace(b"@@ORIGIN@@",
                                      f"http://{self.headers.get('Host', HOST)}".encode())
        start, end = 0, len(payload) - 1
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged and status == 200 and int(ranged[1]) < len(payload):
            start = int(ranged[1])
            end = min(int(ranged[2]), end) if ranged[2] else end
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(payload)}")
        self.send_header("Connection", "close")
        self.end_headers()
        if body:
            try:
                self.wfile.write(payload[start:end + 1])
            except (ConnectionError, TimeoutError):
                return

    def log_message(self, *_args: Any) -> None:
        pass


# --- auto-archiver: its own venv, once -----------------------------------------------

def ensure_auto_archiver() -> Path:
    """auto-archiver's command in its own venv, installing it there the first time."""
    python, command = AA_VENV / "bin" / "python", AA_VENV / "bin" / "auto-archiver"
    check = [str(python), "-c",
             "import importlib.metadata as m; print(m.version('auto-archiver'))"]
    if command.exists():
        done = subprocess.run(check, capture_output=True, text=True, check=False)
        if done.stdout.strip() == AA_VERSION:
            return command
        print(f"{AA_VENV} holds no auto-archiver {AA_VERSION}: making it again", file=sys.stderr)
        shutil.rmtree(AA_VENV)
    print(f"installing auto-archiver=={AA_VERSION} into {AA_VENV} (once, about a minute)",
          file=sys.stderr)
    AA_VENV.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(AA_VENV)], check=True)
    log = AA_VENV.parent / f"pip-auto-archiver-{AA_VERSION}.log"
    with log.open("w") as out:
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", f"auto-archiver=={AA_VERSION}"],
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )
    if installed.returncode != 0:
        shutil.rmtree(AA_VENV)
        raise SystemExit(f"pip install auto-archiver=={AA_VERSION} failed; see {log}")
    return command


def _slug(url: str) -> str:
    """auto-archiver's folder for a URL (python-slugify of the URL, 70 characters), for
    ASCII URLs like ours."""
    return re.sub(r"[^a-z0-9]+", "-", url.lower()).strip("-")[:70]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_auto_archiver(workdir: Path, urls: list[str], posts: list[Post]) -> dict[str, Any]:
    """What auto-archiver really kept, per URL: its CSV row and the files in its folder,
    each re-hashed against the SHA-256 recorded in the CSV."""
    rows: dict[str, dict[str, str]] = {}
    db = workdir / "db.csv"
    if db.exists():
        csv.field_size_limit(1 << 30)
        with db.open(newline="", encoding="utf-8") as data:
            for row in csv.DictReader(data):
                found = re.search(r"'url': '([^']+)'", row.get("metadata", ""))
                if found:
                    rows[found[1]] = row
    counts = {"rows": len(rows), "success": 0, "archived": 0, "with_media": 0,
              "with_video": 0, "with_image": 0, "text_kept": 0, "files": 0,
              "files_verified": 0, "hash_mismatches": 0}
    statuses: dict[str, int] = {}
    for url, post in zip(urls, posts, strict=True):
        row = rows.get(url, {})
        status = row.get("status", "(no row)")
        statuses[status] = statuses.get(status, 0) + 1
        counts["success"] += "success" in status
        recorded = set(re.findall(r"SHA-256:([0-9a-f]{64})", row.get("media", "")))
        folder = workdir / "archive" / _slug(url)
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        kinds = set()
        for file in files:
            counts["files"] += 1
            digest = _sha256(file)
            if digest in recorded and file.stem == digest[:24]:
                counts["files_verified"] += 1
            else:
                counts["hash_mismatches"] += 1
            kinds.add(file.suffix.lower())
            if file.suffix == ".html" and post.text in file.read_text(errors="replace"):
                counts["text_kept"] += 1
        media = kinds - {".html", ".json"}
        counts["archived"] += bool(files)
        counts["with_media"] += bool(media)
        counts["with_video"] += bool(media & {".mp4", ".webm", ".mkv", ".mov"})
        counts["with_image"] += bool(media & {".jpg", ".jpeg", ".png", ".webp", ".gif"})
    return {**counts, "statuses": statuses}


# --- ours: through the CLI -----------------------------------------------------------

def _our_env(home: Path, *, host_limits: bool = True) -> dict[str, str]:
    """Our settings: the defaults, private networks allowed (the site is on loopback);
    without ``host_limits`` the per-host politeness (2 captures of one host at once, one
    started per second) is lifted, as auto-archiver has none: all 50 posts are on one
    host, so with it the rate is one capture per second whatever else happens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    env.update(ARCHIVER_HOME=str(home), ARCHIVER_SIGNING__PASSPHRASE="bench",
               ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS="true")
    if not host_limits:
        env.update(ARCHIVER_DAEMON__PER_HOST_RATE="0", ARCHIVER_DAEMON__PER_HOST_CONCURRENCY="64")
    return env


def _get_artifact(home: Path, capture_id: str, name: str, out: Path) -> Path | None:
    done = subprocess.run([str(ARCHIVER), "get", capture_id, name, "-o", str(out)],
                          env=_our_env(home), capture_output=True, text=True, check=False)
    return out if done.returncode == 0 and out.exists() else None


def check_ours(workdir: Path, home: Path, urls: list[str], posts: list[Post]
               ) -> tuple[dict[str, Any], list[tuple[Post, dict[str, Any]]]]:
    """Counts from `archiver capture --json`, each capture's rendered DOM (does it hold
    the post's text?) and provenance.json."""
    lines = [json.loads(line) for line in (workdir / "capture.jsonl").read_text().splitlines()
             if line.strip().startswith("{")]
    by_url = {line.get("url"): line for line in lines}
    counts: dict[str, Any] = {"lines": len(lines), "completed": 0, "browser_ok": 0,
                              "media_ok": 0, "with_media": 0, "with_video": 0,
                              "with_image": 0, "text_kept": 0, "scripted": 0,
                              "script_text_seen": 0,
                              "same_media_twice": 0}
    outcomes: dict[str, int] = {}
    provenances: list[tuple[Post, dict[str, Any]]] = []
    for url, post in zip(urls, posts, strict=True):
        line = by_url.get(url, {})
        counts["completed"] += line.get("status") == "completed"
        browser = (line.get("outcomes") or {}).get("browser") or {}
        media = (line.get("outcomes") or {}).get("media") or {}
        key = f"browser {browser.get('status', 'n/a')}, media {media.get('status', 'n/a')}"
        outcomes[key] = outcomes.get(key, 0) + 1
        counts["browser_ok"] += browser.get("status") == "ok"
        counts["media_ok"] += media.get("status") == "ok"
        media_artifacts = [a for a in line.get("artifacts", []) if a.get("role") == "media"]
        kinds = [a.get("media_type", "") for a in media_artifacts]
        digests = [a.get("sha256") for a in media_artifacts]
        counts["same_media_twice"] += len(set(digests)) < len(digests)
        counts["with_media"] += bool(kinds)
        counts["with_video"] += any(k.startswith("video/") for k in kinds)
        counts["with_image"] += any(k.startswith("image/") for k in kinds)
        capture_id = line.get("id")
        if not capture_id:
            continue
        dom = _get_artifact(home, capture_id, "dom.html", workdir / f"dom-{post.index}.html")
        seen = dom is not None and post.text in dom.read_text(errors="replace")
        counts["text_kept"] += seen
        counts["scripted"] += post.scripted
        counts["script_text_seen"] += seen and post.scripted
        prov = _get_artifact(home, capture_id, "provenance.json",
                             workdir / f"provenance-{post.index}.json")
        if prov is not None:
            provenances.append((post, json.loads(prov.read_text())))
    counts["outcomes"] = outcomes
    return counts, provenances


# --- where the time goes ---------------------------------------------------------------

def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _seconds(value: Any, key: str) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value / 1000 if key.endswith("_ms") else float(value)


def _stamp(value: Any) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


EXPECTED = {  # phase rows always shown (n/a when missing); other numbers found are added
    "browser": ["launch", "navigate", "network_idle_wait", "scroll", "artifacts", "total"],
    "media": ["yt_dlp_seconds", "images_seconds", "total_seconds"],
}
DERIVED = {  # rows computed here: what the fetchers' own figures leave out
    "browser": "browser.other (total minus its steps: close, gaps)",
    "media": "media.other (total minus yt-dlp and images: sealing items, PDQ hashes)",
    "capture": "capture.rest (duration minus page, browser, media: seal, store, ledger)",
}


def _phase_values(prov: dict[str, Any]) -> dict[str, float]:
    """One capture's phases in seconds, keyed 'fetcher.key' (and capture.*)."""
    values: dict[str, float] = {}
    duration = _seconds(_dig(prov, "timings.duration_ms"), "duration_ms")
    if duration is None:
        start, end = _stamp(_dig(prov, "timings.started")), _stamp(_dig(prov, "timings.ended"))
        duration = end - start if start is not None and end is not None else None
    if duration is not None:
        values["capture.duration"] = duration
    fetchers = _dig(prov, "fetchers")
    fetchers = fetchers if isinstance(fetchers, dict) else {}
    for name, fetcher in fetchers.items():
        for section in ("durations_s", "timings"):
            figures = _dig(fetcher, section)
            for key, raw in (figures.items() if isinstance(figures, dict) else ()):
                seconds = _seconds(raw, key)
                if seconds is not None:
                    values[f"{name}.{key}"] = seconds
    browser_total = values.get("browser.total")
    steps = [values.get(f"browser.{k}") for k in EXPECTED["browser"][:-1]]
    if browser_total is not None and None not in steps:
        values[DERIVED["browser"]] = browser_total - sum(s for s in steps if s is not None)
    media_total = values.get("media.total_seconds")
    if media_total is not None and "media.yt_dlp_seconds" in values:
        values[DERIVED["media"]] = (
            media_total - values["media.yt_dlp_seconds"] - values.get("media.images_seconds", 0))
    page = None
    began = _stamp(_dig(prov, "timings.started"))
    browser_began = _stamp(_dig(fetchers, "browser.timings.started"))
    if began is not None and browser_began is not None:
        page = values["capture.page fetch (to browser start)"] = browser_began - began
    if None not in (duration, page, browser_total, media_total):
        values[DERIVED["capture"]] = (
            (duration or 0) - (page or 0) - (browser_total or 0) - (media_total or 0))
    return values


GROUPS: dict[str, Callable[[Post], bool]] = {
    "all": lambda post: True, "video": lambda post: post.video,
    "no_video": lambda post: not post.video,
}


def time_breakdown(provenances: list[tuple[Post, dict[str, Any]]]
                   ) -> dict[str, dict[str, float | None]]:
    """Median of each phase, over all captures and over those with and without a video
    (whose media phases differ by an order of magnitude)."""
    per_capture = [(post, _phase_values(prov)) for post, prov in provenances]
    keys = ["capture.duration", "capture.page fetch (to browser start)"]
    for fetcher, names in EXPECTED.items():
        keys += [f"{fetcher}.{n}" for n in names] + [DERIVED[fetcher]]
    keys += [DERIVED["capture"]]
    keys += sorted({k for _, values in per_capture for k in values} - set(keys))
    medians: dict[str, dict[str, float | None]] = {}
    for group, member in GROUPS.items():
        medians[group] = {}
        for key in keys:
            found = [v[key] for post, v in per_capture if member(post) and key in v]
            medians[group][key] = statistics.median(found) if found else None
    return medians


# --- phases: each tool in a fresh interpreter ----------------------------------------------

def _run_tool(command: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str
              ) -> dict[str, Any]:
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        began = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=err, check=False)
        wall = time.perf_counter() - began
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": wall, "returncode": done.returncode, "peak_rss_mib": peak_kib / 1024}


def phase_ours(workdir: str, home: str, urls: list[str], host_limits: bool = True
               ) -> dict[str, Any]:
    return _run_tool([str(ARCHIVER), "capture", "--json", *urls], workdir,
                     _our_env(Path(home), host_limits=host_limits),
                     f"{workdir}/capture.jsonl", f"{workdir}/capture.log")


def phase_auto_archiver(workdir: str, command: str, urls: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # its venv alone
    env["PATH"] = f"{Path(command).parent}{os.pathsep}{env.get('PATH', '')}"
    env["AUTO_ARCHIVER_ALLOW_RESTART"] = "0"
    return _run_tool([command, "--config", "orchestration.yaml", *urls], workdir, env,
                     f"{workdir}/auto-archiver.out", f"{workdir}/auto-archiver.log")


PHASES: dict[str, Callable[..., dict[str, Any]]] = {
    "ours": phase_ours, "auto_archiver": phase_auto_archiver,
}


# --- the run ---------------------------------------------------------------------------

def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "n/a" if value is None else f"{round(value * scale, digits) + 0.0:.{digits}f}"


def _overlap(provenances: list[tuple[Post, dict[str, Any]]]) -> tuple[float, float] | None:
    """Seconds during which at least one capture ran (the union of their started-ended
    intervals) and the sum of their durations; None if a capture's times are missing."""
    spans = []
    for _, prov in provenances:
        began, ended = _stamp(_dig(prov, "timings.started")), _stamp(_dig(prov, "timings.ended"))
        if began is None or ended is None:
            return None
        spans.append((began, ended))
    if not spans:
        return None
    covered, reach = 0.0, float("-inf")
    for began, ended in sorted(spans):
        covered += max(0.0, ended - max(began, reach))
        reach = max(reach, ended)
    return covered, sum(ended - began for began, ended in spans)


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _iter_table(rows: list[list[str]]) -> Iterator[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        yield "  " + "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(row, widths, strict=True)))


def _print_where_time_goes(phases: dict[str, dict[str, float | None]],
                           provenances: list[tuple[Post, dict[str, Any]]], wall: float,
                           n: int) -> tuple[float | None, float | None]:
    """Print our phase medians; return the time per URL during which no capture ran
    (start-up, gaps, shut-down) and how many captures ran at once on average."""
    overlap = _overlap(provenances) if len(provenances) == n else None
    covered, summed = overlap if overlap is not None else (None, None)
    idle = (wall - covered) / n if covered is not None else None
    concurrency = summed / covered if covered and summed is not None else None
    print(f"where the time goes (ours): medians over each capture's provenance.json, "
          f"{len(provenances)} captures ({sum(p.video for p, _ in provenances)} with a video)")
    rows = [["phase, ms", "all", "with video", "no video"]]
    rows += [[key] + [_fmt(phases[group][key], 1000, 0) for group in GROUPS]
             for key in phases["all"]]
    print("\n".join(_iter_table(rows)))
    print(f"  no capture running (start-up, gaps, shut-down): {_fmt(idle, 1000, 0)} ms per "
          f"URL; captures in flight on average while any ran: {_fmt(concurrency)}")
    print(f"  browser view per page: {_fmt(phases['all'].get('browser.total'))} s median, "
          f"of which Chromium's launch {_fmt(phases['all'].get('browser.launch'))} s")
    return idle, concurrency


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 posts instead of 50")
    parser.add_argument("--posts", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="work in DIR (new or empty) and keep it, to inspect both outputs")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](**json.loads(args.params))))
        return 0
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"--keep {args.keep}: not empty")

    count = args.posts or (6 if args.quick else 50)
    posts = _posts(count)
    ensure_loopback_name(HOST)
    aa_command = ensure_auto_archiver()
    subprocess.run([str(aa_command), "--version"], capture_output=True, check=False)  # warm
    script = str(Path(__file__).resolve())
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-capture-rate-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep.resolve()
        work.mkdir(parents=True, exist_ok=True)
        _Site.routes = build_site(posts, work)
        with serve(_Site) as base:
            origin = base.replace("127.0.0.1", HOST)
            urls = [origin + post.path for post in posts]

            aa_dir = work / "auto-archiver"
            aa_dir.mkdir()
            (aa_dir / "orchestration.yaml").write_text(AA_CONFIG)
            theirs = run_phase(script, "auto_archiver", workdir=str(aa_dir),
                               command=str(aa_command), urls=urls)
            if theirs["returncode"] != 0:
                raise SystemExit(f"auto-archiver exited {theirs['returncode']}:\n"
                                 + _tail(aa_dir / "auto-archiver.log"))

            ours_dir, home = work / "ours", work / "ours-home"
            ours_dir.mkdir()
            began = time.perf_counter()
            init = subprocess.run([str(ARCHIVER), "init"], env=_our_env(home),
                                  capture_output=True, text=True, check=False)
            init_s = time.perf_counter() - began
            if init.returncode != 0:
                raise SystemExit(f"archiver init exited {init.returncode}:\n"
                                 + "\n".join(init.stderr.splitlines()[-15:]))
            ours = run_phase(script, "ours", workdir=str(ours_dir), home=str(home), urls=urls)
            if ours["returncode"] not in (0, 1):  # 1: some capture failed, counted below
                raise SystemExit(f"archiver capture exited {ours['returncode']}:\n"
                                 + _tail(ours_dir / "capture.log"))

            # the same again with the per-host limits lifted (auto-archiver has none)
            free_dir, free_home = work / "ours-unlimited", work / "ours-unlimited-home"
            free_dir.mkdir()
            subprocess.run([str(ARCHIVER), "init"], env=_our_env(free_home),
                           capture_output=True, text=True, check=True)
            free = run_phase(script, "ours", workdir=str(free_dir), home=str(free_home),
                             urls=urls, host_limits=False)
            free_mine, free_provenances = check_ours(free_dir, free_home, urls, posts)

            aa = check_auto_archiver(aa_dir, urls, posts)
            mine, _provenances = check_ours(ours_dir, home, urls, posts)
            if mine["lines"] == 0:
                raise SystemExit(f"archiver capture exited {ours['returncode']} and reported "
                                 "no capture:\n" + _tail(ours_dir / "capture.log"))
        phases = time_breakdown(free_provenances)

    load_after = os.getloadavg()[0]
    n = len(urls)
    videos, scripted = sum(p.video for p in posts), sum(p.scripted for p in posts)
    ours_per, aa_per = ours["wall_s"] / n, theirs["wall_s"] / n
    free_per = free["wall_s"] / n
    ratio = ours_per / aa_per
    free_ratio = free_per / aa_per
    print(f"capture rate: {n} local posts ({videos} with a video, {scripted} with "
          f"script-inserted text), served as http://{HOST}; {os.cpu_count()} CPUs, load "
          f"average {load_before:.2f} before, {load_after:.2f} after (other work skews it)")
    rows = [["tool", "URLs", "completed", "with media", "with video", "text kept",
             "wall s", "s/URL", "peak RSS MiB"],
            ["evidence-archiver, per-host limits", str(n), str(mine["completed"]),
             str(mine["with_media"]), str(mine["with_video"]), str(mine["text_kept"]),
             _fmt(ours["wall_s"]), _fmt(ours_per), _fmt(ours["peak_rss_mib"], digits=0)],
            ["evidence-archiver, no host limit", str(n), str(free_mine["completed"]),
             str(free_mine["with_media"]), str(free_mine["with_video"]),
             str(free_mine["text_kept"]), _fmt(free["wall_s"]), _fmt(free_per),
             _fmt(free["peak_rss_mib"], digits=0)],
            [f"auto-archiver {AA_VERSION}", str(n), str(aa["success"]), str(aa["with_media"]),
             str(aa["with_video"]), str(aa["text_kept"]), _fmt(theirs["wall_s"]),
             _fmt(aa_per), _fmt(theirs["peak_rss_mib"], digits=0)]]
    print("\n".join(_iter_table(rows)))
    print(f"  ratio ours / auto-archiver per URL: {ratio:.2f}x with our default per-host "
          f"limits (2 at once, 1 started per second: every post here is on one host), "
          f"{free_ratio:.2f}x without them ({'slower' if free_ratio > 1 else 'faster'}); "
          f"our `archiver init` took {init_s:.2f} s (not counted)")
    print(f"  ours: {mine['completed']}/{n} completed; outcomes "
          + ", ".join(f"{v}x {k}" for k, v in sorted(mine["outcomes"].items()))
          + f"; script-inserted text in the rendered DOM {mine['script_text_seen']}/"
          f"{mine['scripted']}; {mine['with_image']} with page images, "
          f"{mine['with_video']} with the video")
    print(f"  auto-archiver: {aa['archived']}/{n} URLs with files stored, "
          f"{aa['with_media']} with media ({aa['with_video']} video, {aa['with_image']} "
          f"image); {aa['files_verified']}/{aa['files']} stored files match the SHA-256 in "
          f"its CSV ({aa['hash_mismatches']} mismatches); statuses "
          + ", ".join(f"{v}x {k!r}" for k, v in sorted(aa["statuses"].items()))
          + f"; post text kept for {aa['text_kept']} (in its HTML page)")
    # what each should manage on this site: ours every post, auto-archiver every video
    short = mine["completed"] < n or aa["with_video"] < videos or aa["hash_mismatches"]
    if short:
        print("  WARNING: a tool archived less than expected (ours: every post; "
              "auto-archiver: every post with a video); see above")

    print("where the time goes is shown for the run without host limits")
    idle, concurrency = _print_where_time_goes(phases, free_provenances, free["wall_s"], n)
    if mine["same_media_twice"]:
        print(f"  note: {mine['same_media_twice']} captures hold the same media file twice "
              "(two artifacts with one SHA-256), each hashed and sealed on its own")

    figures = {
        "benchmark": "capture_rate", "urls": n, "videos": videos, "scripted": scripted,
        "cpus": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": load_after,
        "ours": {**ours, "per_url_s": ours_per, "init_s": init_s, **mine,
                 "idle_s_per_url": idle, "concurrency": concurrency},
        "auto_archiver": {**theirs, "version": AA_VERSION, "per_url_s": aa_per, **aa},
        "ours_no_host_limit": {**free, "per_url_s": free_per, **free_mine},
        "ratio_ours_per_auto_archiver_per_url": ratio,
        "ratio_ours_no_host_limit_per_auto_archiver_per_url": free_ratio,
        "ours_phase_medians_s": phases,
    }
    print(json.dumps(figures))
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
