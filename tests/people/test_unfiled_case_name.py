"""No command makes a case called ``unfiled`` (in any letter case): it is the name of
the pseudo-case of captures filed under no case. Through the ``archiver`` command, on
SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from archive_cli import Cli

from archiver import models

RESERVED = ("{!r} cannot be the name of a case: 'unfiled' (in any letter case) names the "
            "captures filed under no case; leave the case out to file them there, or "
            "choose another name")


def test_no_command_creates_a_case_called_unfiled(people_cli: Cli, tmp_path: Path) -> None:
    """capture (now and --queue), watch add, watch import and case add refuse the name,
    however written, as a usage error (exit 2) saying why; nothing is recorded."""
    with people_cli.archive() as archive:
        size = archive.ledger.size()
    watchlist = tmp_path / "list.csv"
    for name in ("unfiled", "Unfiled", "UNFILED", " unfiled"):
        watchlist.write_text(f"url,kind,case\nhttps://example.org/feed,feed,{name}\n")
        for argv in (("capture", "https://example.org/a", "--case", name),
                     ("capture", "--queue", "https://example.org/a", "--case", name),
                     ("watch", "add", "https://example.org/feed", "--kind", "feed",
                      "--case", name),
                     ("watch", "import", str(watchlist)),
                     ("case", "add", name)):
            code, out, err = people_cli(*argv)
            message = RESERVED.format(name)
            if argv[0] == "case" and name != name.strip():
                message = "a case name must not be empty or start or end with spaces"
            assert (code, out, err) == (2, "", f"archiver: error: {message}\n"), argv
    with people_cli.archive() as archive:
        assert archive.ledger.size() == size
        with archive.engine.connect() as conn:
            for table in (models.cases, models.jobs, models.watches, models.captures):
                assert conn.execute(sa.select(sa.func.count()).select_from(table)
                                    ).scalar_one() == 0, table.name
    # the pseudo-case itself is still there to grant roles on, and a name that merely
    # contains the word is a case like any other
    people_cli.ok("case", "add", "unfiled leads")
    people_cli.ok("watch", "add", "https://example.org/feed", "--kind", "feed",
                  "--case", "Unfiled leads")
