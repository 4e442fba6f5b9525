"""Login roles for the tests of migration 0007's roles.

The ``db`` fixture's URL is the superuser ``postgres``, which bypasses every
privilege; an attack is only a test when it runs as a login that is not a
superuser and is a member of one trygg group role. Roles are cluster-wide, so
a login is created once per test server (trust authentication: no password).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg

APP = "trygg_test_app"  # member of trygg_app only
READER = "trygg_test_reader"  # member of trygg_reader only, search_path reporting
OWNER = "trygg_test_owner"  # member of trygg_owner, not a superuser


def as_login(url: str, login: str) -> str:
    """``url`` with its user replaced by ``login``."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{login}@{host}"))


def login_url(url: str, login: str, group: str, search_path: str | None = None) -> str:
    """Create ``login`` (LOGIN, NOSUPERUSER, member of ``group`` only) if missing;
    return ``url`` for it. ``url`` must be a superuser's on a migrated database."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [login]).fetchone()
        if not exists:
            conn.execute(f'CREATE ROLE "{login}" LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB')
            conn.execute(f'GRANT "{group}" TO "{login}"')
        if search_path is not None:
            conn.execute(f'ALTER ROLE "{login}" SET search_path = {search_path}')
    return as_login(url, login)


def app_url(url: str) -> str:
    return login_url(url, APP, "trygg_app")


def reader_url(url: str) -> str:
    return login_url(url, READER, "trygg_reader", search_path="reporting, public")


def owner_url(url: str) -> str:
    return login_url(url, OWNER, "trygg_owner")
