"""The CLI's answers to bad input: one line on stderr and a non-zero exit, never a
traceback (issue 16); and output that is not hard-wrapped when it is not a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app as cli
from service.settings import get_settings
from tests.conftest import Database


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    def invoke(*args: str, **env: str):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(cli, list(args))
        finally:
            get_settings.cache_clear()

    yield invoke


def assert_one_line_error(result, code: int, mentions: str) -> None:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert mentions in lines[0]
    assert "Traceback" not in result.output


class TestBadConfiguration:
    @pytest.mark.parametrize(
        ("url", "mentions"),
        [
            ("nonsense://x", "DATABASE_URL"),
            ("not a url", "DATABASE_URL"),
            ("postgresql+psycopg://postgres@127.0.0.1:1/x", "database"),
        ],
    )
    @pytest.mark.parametrize("command", [["status"], ["migrate"], ["jobs", "run"], ["rebuild"]])
    def test_database_url(self, run, url: str, mentions: str, command: list[str]):
        assert_one_line_error(run(*command, DATABASE_URL=url), 2, mentions)

    def test_bad_key_entry(self, run, tmp_path: Path):
        result = run("status", DATABASE_URL=f"sqlite:///{tmp_path}/x.db", API_KEYS="sha256:x")
        assert_one_line_error(result, 2, "64 hex digits")


class TestStatus:
    def test_empty_database_exits_non_zero(self, run, tmp_path: Path):
        result = run("status", DATABASE_URL=f"sqlite:///{tmp_path}/empty.db")
        assert result.exit_code == 1
        assert "not migrated" in result.output

    def test_migrated_database_exits_zero(self, run, fresh_database: Database):
        result = run("status", DATABASE_URL=fresh_database.url)
        assert result.exit_code == 0, result.output


class TestJobsRun:
    @pytest.mark.parametrize("today", ["2026-13-01", "tomorrow", "2026-02-30"])
    def test_bad_day(self, run, fresh_database: Database, today: str):
        result = run("jobs", "run", "--today", today, DATABASE_URL=fresh_database.url)
        assert_one_line_error(result, 2, "--today")


class TestFxLoad:
    @pytest.mark.parametrize(
        ("content", "mentions"),
        [
            (b"currency,day,rate\nEURO,2025-01-01,1.1\n", "ISO 4217"),
            (b"currency,day,rate\neur,2025-01-01,-1.1\n", "outside"),
            (b"currency,day,rate\neur,2025-01-01,0\n", "outside"),
            (b"currency,day,rate\neur,2025-01-01,1e999999\n", "outside"),
            (b"currency,day,rate\nusd,2025-01-01,1.5\n", "reporting currency"),
            (b"currency,day,rate\neur,2025-13-01,1.1\n", "expected currency,day,rate"),
            (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00", "not a UTF-8"),
            (b"currency,day,rate\neur,2025-01-01,1.1\x00\n", "expected currency,day,rate"),
        ],
    )
    def test_refused_and_nothing_stored(
        self, run, fresh_database: Database, tmp_path: Path, content: bytes, mentions: str
    ):
        path = tmp_path / "rates.csv"
        path.write_bytes(content)
        result = run("fx-load", str(path), DATABASE_URL=fresh_database.url)
        assert_one_line_error(result, 2, mentions)
        from sqlalchemy import func, select

        from service.ledger.models import FxRate

        with fresh_database.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(FxRate)) == 0

    def test_good_file_loads(self, run, fresh_database: Database, tmp_path: Path):
        path = tmp_path / "rates.csv"
        path.write_text("currency,day,rate\neur,2025-01-01,1.1\n")
        result = run("fx-load", str(path), DATABASE_URL=fresh_database.url)
        assert result.exit_code == 0, result.output
        assert "loaded 1 rates" in result.output


class TestFxSync:
    """`fx-sync` run as a command, the ECB behind respx (tests/ledger/test_fx_sync.py has
    the rates themselves)."""

    URL = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist-90d.xml"
    # A `since` months before today reads the whole history (same shape, more days).
    HIST = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist.xml"
    FEED = (Path(__file__).parent / "fixtures" / "ecb" / "eurofxref-hist-90d.xml").read_bytes()

    def _count(self, database: Database) -> int:
        from sqlalchemy import func, select

        from service.ledger.models import FxRate

        with database.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(FxRate)) or 0

    def test_stores_then_nothing_new(self, run, fresh_database: Database):
        import respx

        with respx.mock(assert_all_called=True) as router:
            router.get(self.HIST).respond(200, content=self.FEED)
            first = run("fx-sync", "--since", "2025-01-02", DATABASE_URL=fresh_database.url)
            again = run("fx-sync", "--since", "2025-01-02", DATABASE_URL=fresh_database.url)
        assert first.exit_code == 0, first.output
        # 3 days × (JPY, GBP, CHF, SEK, EUR) to USD.
        assert "eurofxref-hist.xml through 2025-01-06: 15 rates stored" in first.output
        assert again.exit_code == 0, again.output
        assert "0 rates stored" in again.output
        assert self._count(fresh_database) == 15

    @pytest.mark.parametrize(
        ("status", "body", "mentions"),
        [
            (503, b"<html>Service Unavailable</html>", "HTTP 503"),
            (500, b"", "HTTP 500"),
            (200, b"<gesmes:Envelope", "not XML"),
            (200, b"<?xml version='1.0'?><html/>", "no Cube"),
        ],
    )
    def test_errors_exit_non_zero_and_store_nothing(
        self, run, fresh_database: Database, status: int, body: bytes, mentions: str
    ):
        import respx

        with respx.mock() as router:
            router.get(self.URL).respond(status, content=body)
            result = run("fx-sync", DATABASE_URL=fresh_database.url)
        assert_one_line_error(result, 1, mentions)
        assert "nothing stored" in result.output
        assert self._count(fresh_database) == 0

    def test_bad_since(self, run, fresh_database: Database):
        result = run("fx-sync", "--since", "2025-02-30", DATABASE_URL=fresh_database.url)
        assert_one_line_error(result, 2, "--since")


class TestNoHardWrap:
    def test_long_lines_stay_whole(self, run, tmp_path: Path):
        # A database path far past 80 columns: the refusal names it on one line.
        deep = tmp_path / ("d" * 120)
        deep.mkdir()
        result = run("serve", DATABASE_URL=f"sqlite:///{deep}/empty.db")
        assert result.exit_code == 2
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert "d" * 120 in result.output and "churn-ledger migrate" in result.output


class TestRebuild:
    """`rebuild` as a user runs it: by default in as many worker processes as CPUs (at
    most 4), with the same ledger as in this process."""

    def test_default_workers_are_the_cpus_capped(self):
        import os

        from service.cli import _rebuild_workers

        assert _rebuild_workers() == max(1, min(len(os.sched_getaffinity(0)), 4))

    def test_default_workers_rebuild_the_same_ledger(
        self, run, fresh_database: Database, monkeypatch: pytest.MonkeyPatch
    ):
        from sqlalchemy import func, select, update
        from sqlalchemy.orm import Session

        import service.projector.service as projector
        from service.cli import _rebuild_workers
        from service.ledger.models import MrrMovement
        from service.webhooks.schemas import parse_event
        from service.webhooks.service import store_event
        from sim.simulate import event_bytes, simulate
        from tests.projector.test_bulk_rebuild import snapshot

        with Session(fresh_database.engine) as session:
            for event in simulate(customers=12, months=6, seed=5).events:
                body = event_bytes(event)
                store_event(session, body, parse_event(body))
            session.commit()
        workers: list[int] = []
        real = projector.rebuild

        def spy(*args, **kwargs):
            workers.append(kwargs["workers"])
            return real(*args, **kwargs)

        monkeypatch.setattr(projector, "rebuild", spy)
        url = fresh_database.url
        in_process = run("rebuild", "--workers", "1", "--batch", "5", DATABASE_URL=url)
        assert in_process.exit_code == 0, in_process.output
        with Session(fresh_database.engine) as session:
            expected = snapshot(session)
            assert session.scalar(select(func.count()).select_from(MrrMovement)) > 0
            session.execute(update(MrrMovement).values(to_mrr=MrrMovement.to_mrr + 1))
            session.commit()
        default = run("rebuild", "--batch", "5", DATABASE_URL=url)
        assert default.exit_code == 0, default.output
        assert "rebuilt 12 customers" in default.output
        assert workers == [1, _rebuild_workers()]
        with Session(fresh_database.engine) as session:
            assert snapshot(session) == expected
