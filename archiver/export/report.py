"""The custody report of an evidence bundle, in HTML and PDF, for people.

It says, in plain words, what the bundle holds: which pages were captured, when, by whom
and through what; every file with its size, SHA-256 and SHA-512; every custody event on
the ledger; the signed checkpoint and the trusted timestamps (or, prominently, their
absence). It is derived from the signed files of the bundle and proves nothing by
itself: ``VERIFY.md`` says how to check those.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReportTimestamp:
    tsa: str
    gen_time: str
    tsa_subject: str
    serial: str


@dataclass(frozen=True)
class ReportCapture:
    id: str
    url: str
    status: str
    requested_by: str
    requested_at: str
    requested_via: str
    note: str | None
    final_url: str | None
    http_status: int | None
    reason: str | None
    message: str | None
    started: str | None
    ended: str | None
    manifest_sha256: str | None
    signer_key_id: str | None
    ledger_seq: int | None
    artifacts: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class ReportEntry:
    seq: int
    time: str
    actor: str
    action: str
    subject: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class ReportData:
    case: str
    exported_at: str
    exported_by: str
    origin: str
    signing_key_id: str
    bag_name: str
    checkpoint_size: int
    checkpoint_root: str
    checkpoint_key_id: str
    software: Mapping[str, str]
    captures: tuple[ReportCapture, ...]
    entries: tuple[ReportEntry, ...]
    timestamps: tuple[ReportTimestamp, ...] = ()
    timestamp_problems: tuple[str, ...] = ()
    keys: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


def _time_statement(data: ReportData) -> str:
    if data.timestamps:
        first = min(t.gen_time for t in data.timestamps)
        return (f"An independent Time-Stamping Authority attests that the custody record below "
                f"(the signed checkpoint of {data.checkpoint_size} ledger entries) existed at "
                f"{first}. Every event listed here happened no later than that.")
    reasons = "; ".join(data.timestamp_problems) or "none was obtained"
    return ("WARNING: this bundle carries NO trusted timestamp (" + reasons + "). The times "
            "below are those of the archive's own clock, and nothing independent confirms "
            "them.")


def _summary(data: ReportData) -> list[tuple[str, str]]:
    completed = sum(1 for c in data.captures if c.status == "completed")
    return [
        ("Case", data.case),
        ("Exported", f"{data.exported_at} by {data.exported_by}"),
        ("Archive", data.origin),
        ("Captures", f"{len(data.captures)} ({completed} completed, "
                     f"{len(data.captures) - completed} failed)"),
        ("Custody events", str(len(data.entries))),
        ("Bundle signing key", data.signing_key_id),
        ("Checkpoint", f"{data.checkpoint_size} entries, root {data.checkpoint_root}, "
                       f"signed by key {data.checkpoint_key_id}"),
        ("Trusted time", "; ".join(f"{t.gen_time} by {t.tsa_subject} ({t.tsa}, serial "
                                   f"{t.serial})" for t in data.timestamps) or "NONE"),
    ]


def _capture_rows(capture: ReportCapture) -> list[tuple[str, str]]:
    rows = [
        ("URL", capture.url),
        ("Status", capture.status if capture.status == "completed"
         else f"{capture.status}: {capture.reason}: {capture.message}"),
        ("Requested", f"{capture.requested_at} by {capture.requested_by} via "
                      f"{capture.requested_via}"),
    ]
    if capture.note:
        rows.append(("Note", capture.note))
    if capture.status == "completed":
        rows += [
            ("Captured", f"{capture.started} to {capture.ended}"),
            ("Final URL", f"{capture.final_url} (HTTP {capture.http_status})"),
            ("Manifest SHA-256", capture.manifest_sha256 or ""),
            ("Signed by key", capture.signer_key_id or ""),
        ]
    rows.append(("Ledger entry", str(capture.ledger_seq)))
    return rows


def _payload_text(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False)


_INTRO = ("This report describes an evidence bundle: a signed package of web captures and "
          "their chain of custody. It is a reading aid. The evidence is the signed files of "
          "the bundle; VERIFY.md, at the top of the bundle, explains how anyone can check "
          "each of them with standard tools, and 'archiver verify-bundle' checks them all.")


# -- HTML -----------------------------------------------------------------------------------


def render_html(data: ReportData) -> bytes:
    """A self-contained HTML page (no scripts, no external resources)."""
    e = html.escape
    out: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Custody report: {e(data.case)}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;width:100%}"
        "td,th{border:1px solid #bbb;padding:.25em .5em;vertical-align:top;text-align:left}"
        "code,.hash{font-family:monospace;font-size:.85em;word-break:break-all}"
        ".warn{background:#fee;border:2px solid #c00;padding:.5em 1em}"
        ".ok{background:#efe;border:1px solid #080;padding:.5em 1em}</style>",
        "</head><body>",
        f"<h1>Custody report: {e(data.case)}</h1>",
        f"<p>{e(_INTRO)}</p>",
    ]
    klass = "ok" if data.timestamps else "warn"
    out.append(f'<p class="{klass}">{e(_time_statement(data))}</p>')
    out.append("<h2>Summary</h2><table>")
    for label, value in _summary(data):
        out.append(f"<tr><th>{e(label)}</th><td class=\"hash\">{e(value)}</td></tr>")
    out.append("</table>")
    out.append("<h2>Captures</h2>")
    for capture in data.captures:
        out.append(f"<h3>Capture <code>{e(capture.id)}</code></h3><table>")
        for label, value in _capture_rows(capture):
            out.append(f"<tr><th>{e(label)}</th><td class=\"hash\">{e(value)}</td></tr>")
        out.append("</table>")
        if capture.artifacts:
            out.append("<table><tr><th>File</th><th>Role</th><th>Bytes</th>"
                       "<th>SHA-256 / SHA-512</th></tr>")
            for a in capture.artifacts:
                out.append(
                    f"<tr><td><code>{e(str(a['name']))}</code></td><td>{e(str(a['role']))}"
                    f"</td><td>{e(str(a['size']))}</td><td class=\"hash\">"
                    f"{e(str(a['sha256']))}<br>{e(str(a['sha512']))}</td></tr>"
                )
            out.append("</table>")
    out.append("<h2>Custody events (ledger entries)</h2>")
    out.append("<p>Every event recorded about these captures, this case and the archive's "
               "signing keys, in ledger order. Each is proven to be in the signed "
               "checkpoint by its inclusion proof (data/custody/proofs).</p>")
    out.append("<table><tr><th>#</th><th>Time (archive clock)</th><th>Who</th>"
               "<th>What</th><th>Subject</th><th>Details</th></tr>")
    for entry in data.entries:
        out.append(
            f"<tr><td>{entry.seq}</td><td>{e(entry.time)}</td><td>{e(entry.actor)}</td>"
            f"<td>{e(entry.action)}</td><td class=\"hash\">{e(entry.subject)}</td>"
            f"<td class=\"hash\">{e(_payload_text(entry.payload))}</td></tr>"
        )
    out.append("</table>")
    out.append("<h2>Signing keys</h2><table><tr><th>Key id (SHA-256 of the raw Ed25519 key)"
               "</th><th>Created</th><th>Retired</th></tr>")
    for key in data.keys:
        out.append(f"<tr><td class=\"hash\">{e(str(key['key_id']))}</td>"
                   f"<td>{e(str(key.get('created') or ''))}</td>"
                   f"<td>{e(str(key.get('retired') or '-'))}</td></tr>")
    out.append("</table>")
    out.append("<h2>Software</h2><p>" + e(", ".join(
        f"{name} {version}" for name, version in sorted(data.software.items()))) + "</p>")
    out.append("</body></html>\n")
    return "\n".join(out).encode("utf-8")


# -- PDF ------------------------------------------------------------------------------------


_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


def _fonts() -> tuple[str, str, str]:
    """(sans, bold, mono): DejaVu where installed, whose glyphs cover Cyrillic, Greek,
    Arabic and more (URLs and notes of evidence are rarely Latin only); else the PDF
    standard fonts, which show Latin-1 only."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    files = {"DejaVuSans": "DejaVuSans.ttf", "DejaVuSans-Bold": "DejaVuSans-Bold.ttf",
             "DejaVuSansMono": "DejaVuSansMono.ttf"}
    if not all((_DEJAVU / f).is_file() for f in files.values()):
        return "Helvetica", "Helvetica-Bold", "Courier"
    for name, file_name in files.items():
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(_DEJAVU / file_name)))
    return "DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono"


def render_pdf(data: ReportData, path: Path) -> None:
    """The same report as a PDF (reportlab), written to ``path``."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    sans, bold, monospace = _fonts()
    styles = getSampleStyleSheet()
    for name in ("Title", "Heading2", "Heading3"):
        styles[name].fontName = bold
    body = styles["BodyText"]
    body.fontName = sans
    small = ParagraphStyle("small", parent=body, fontSize=7.5, leading=9)
    mono = ParagraphStyle("mono", parent=small, fontName=monospace, fontSize=6.5, leading=8)
    warning = ParagraphStyle("warning", parent=body, textColor=colors.darkred,
                             borderColor=colors.darkred, borderWidth=1, borderPadding=4)

    def p(text: str, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(html.escape(text), style)

    def table(rows: Sequence[Sequence[Any]], widths: Sequence[float]) -> Table:
        t = Table([list(r) for r in rows], colWidths=list(widths), repeatRows=0)
        t.setStyle(TableStyle([
            ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 3),
            ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ]))
        return t

    width = A4[0] - 30 * mm
    story: list[Any] = [
        p(f"Custody report: {data.case}", styles["Title"]),
        p(_INTRO),
        Spacer(1, 4 * mm),
        p(_time_statement(data), body if data.timestamps else warning),
        Spacer(1, 4 * mm),
        p("Summary", styles["Heading2"]),
        table([(p(k, small), p(v, mono)) for k, v in _summary(data)], [35 * mm, width - 35 * mm]),
        p("Captures", styles["Heading2"]),
    ]
    for capture in data.captures:
        story.append(p(f"Capture {capture.id}", styles["Heading3"]))
        story.append(table([(p(k, small), p(v, mono)) for k, v in _capture_rows(capture)],
                           [35 * mm, width - 35 * mm]))
        if capture.artifacts:
            rows: list[Sequence[Any]] = [(p("File", small), p("Role", small), p("Bytes", small),
                                          p("SHA-256 / SHA-512", small))]
            rows += [(p(str(a["name"]), mono), p(str(a["role"]), small),
                      p(str(a["size"]), small),
                      p(f"{a['sha256']} {a['sha512']}", mono)) for a in capture.artifacts]
            story.append(Spacer(1, 2 * mm))
            story.append(table(rows, [40 * mm, 20 * mm, 18 * mm, width - 78 * mm]))
    story.append(p("Custody events (ledger entries)", styles["Heading2"]))
    rows = [(p("#", small), p("Time (archive clock)", small), p("Who / what", small),
             p("Subject and details", small))]
    for entry in data.entries:
        rows.append((p(str(entry.seq), small), p(entry.time, mono),
                     p(f"{entry.actor}: {entry.action}", small),
                     p(f"{entry.subject} {_payload_text(entry.payload)}", mono)))
    story.append(table(rows, [10 * mm, 32 * mm, 45 * mm, width - 87 * mm]))
    story.append(p("Signing keys", styles["Heading2"]))
    story.append(table([(p(str(k["key_id"]), mono), p(str(k.get("created") or ""), small),
                         p(str(k.get("retired") or "-"), small)) for k in data.keys],
                       [width - 70 * mm, 40 * mm, 30 * mm]))
    story.append(p("Software: " + ", ".join(
        f"{name} {version}" for name, version in sorted(data.software.items())), small))
    document = SimpleDocTemplate(
        str(path), pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm,
        topMargin=15 * mm, bottomMargin=15 * mm,
        title=f"Custody report: {data.case}", author=data.origin,
        subject=f"Evidence bundle {data.bag_name}",
    )
    document.build(story)


__all__ = ["ReportCapture", "ReportData", "ReportEntry", "ReportTimestamp", "render_html",
           "render_pdf"]
