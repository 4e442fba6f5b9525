"""The production stack of issue 16 (docker-compose.yml, Dockerfile, deploy/),
checked without a Docker engine (none runs on these machines):

- the file against the Compose Specification's JSON schema;
- each rule, read from the files: profiles such that the embedded and the
  distributed runner never both consume; pinned images; trygg with the
  application role; a named spool volume owned by the image's runtime user;
  healthchecks on every service; MQTT over TLS on 8883 only, the plain
  listeners on the internal network; grafana_reader created;
- and what can run here, run: the roles script against a real PostgreSQL,
  the migrations as the owner's login (no superuser), trygg as the
  application's, every dashboard panel as grafana_reader; the broker's TLS
  listener with a certificate; the healthcheck of bridges and workers.

tests/test_compose.py checks commands, mounts, settings and passwords.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import REPO, trygg_cli
from tests.roles import as_login
from tests.test_dashboards import END, MAY_BE_EMPTY, START, _panels, _sqls, expand
from tests.test_dashboards import filled as filled  # the dashboards' database, as fixture

COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text()
ROLES_SCRIPT = REPO / "deploy" / "postgres" / "10-trygg-roles.sh"
MOSQUITTO_CONF = (REPO / "ingest" / "mosquitto.conf").read_text()
SCHEMA = REPO / "tests" / "data" / "compose-spec" / "compose-spec.json"

# the commands that consume the device topics, and the runner each belongs to
CONSUMERS = {"run": "embedded", "bridge": "distributed", "worker": "distributed"}
PASSWORDS = {
    "POSTGRES_PASSWORD": "superuser-pw",
    "TRYGG_OWNER_DB_PASSWORD": "owner-pw",
    "TRYGG_APP_DB_PASSWORD": "app-pw",
    "GRAFANA_DB_PASSWORD": "reader-pw",
}


def _interpolate(value: str) -> str:
    """Compose's ${VAR...} interpolation with every variable set to ``<VAR>``."""
    return re.sub(r"\$\{(\w+)[^}]*\}", lambda m: f"<{m.group(1)}>", value)


def _profiles(svc: dict[str, Any]) -> set[str]:
    return set(svc.get("profiles", []))


def _active(profile: str) -> dict[str, dict[str, Any]]:
    """The services `docker compose --profile PROFILE up` starts."""
    return {n: s for n, s in SERVICES.items() if not _profiles(s) or profile in _profiles(s)}


def _one_shot(name: str) -> bool:
    """A job that runs once: restart "no" and waited for to complete."""
    if SERVICES[name].get("restart") != "no":
        return False
    waits = [
        dep.get("condition")
        for s in SERVICES.values()
        for d, dep in (s.get("depends_on") or {}).items()
        if d == name
    ]
    return bool(waits) and set(waits) == {"service_completed_successfully"}


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    text = DOCKERFILE.replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


# ------------------------------------------------------------------ schema


def test_the_file_follows_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert not errors, "\n".join(errors)
    # and the validator does catch a mistake
    bad = yaml.safe_load(COMPOSE_TEXT)
    bad["services"]["mosquitto"]["healthcheck"]["intervall"] = "5s"
    assert list(validator.iter_errors(bad))


# ------------------------------------------------------------------ profiles


def test_the_two_runners_are_never_started_together() -> None:
    consumers = {n: s for n, s in SERVICES.items() if s.get("command", [None])[0] in CONSUMERS}
    assert {s["command"][0] for s in consumers.values()} == set(CONSUMERS)
    for name, svc in consumers.items():
        assert _profiles(svc) == {CONSUMERS[svc["command"][0]]}, (
            f"{name} consumes the device topics: it belongs to its runner's profile only"
        )
    for profile in ("embedded", "distributed"):
        running = {n for n in _active(profile) if n in consumers}
        kinds = {CONSUMERS[consumers[n]["command"][0]] for n in running}
        assert kinds == {profile}, f"--profile {profile} starts {sorted(running)}"
    assert not {n for n in _active("none") if n in consumers}, "a runner starts without profile"
    # Kafka and its jobs only with the distributed runner
    for name in ("kafka-1", "kafka-2", "kafka-3", "kafka-topics", "api"):
        assert _profiles(SERVICES[name]) == {"distributed"}, name


def test_every_dependency_is_started_with_its_dependent() -> None:
    for profile in ("embedded", "distributed"):
        active = _active(profile)
        for name, svc in active.items():
            for dep in svc.get("depends_on") or {}:
                assert dep in active, f"--profile {profile}: {name} depends on {dep}, not started"


# ------------------------------------------------------------------ images


PINNED = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+(-[\w.-]+)?(@sha256:[0-9a-f]{64})?$")


def test_images_are_pinned_to_full_versions() -> None:
    images = {n: s["image"] for n, s in SERVICES.items() if "image" in s}
    assert set(images) == {"mosquitto", "timescaledb", "grafana", "kafka-1", "kafka-2", "kafka-3"}
    for name, image in images.items():
        assert PINNED.match(image), f"{name}: {image} is not pinned to a full version"
        assert "latest" not in image
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert base and PINNED.match(base.group(1)), f"Dockerfile FROM {base}"
    for name, svc in SERVICES.items():
        assert "image" in svc or svc.get("build") == ".", name


# ------------------------------------------------------------------ database roles


def _db_url(svc: dict[str, Any]) -> str:
    url = _interpolate(svc["environment"]["TRYGG_DATABASE_URL"])
    parts = urlsplit(url)
    assert parts.hostname == "timescaledb" and parts.path == "/trygg"
    return url


def test_trygg_runs_as_the_application_role() -> None:
    trygg = {n: s for n, s in SERVICES.items() if s.get("build") == "."}
    users = {}
    for name, svc in trygg.items():
        if "TRYGG_DATABASE_URL" in svc.get("environment", {}):
            users[name] = urlsplit(_db_url(svc)).username
    assert users.pop("migrate") == "trygg_migrator"
    assert set(users) >= {"trygg", "bridge-1", "bridge-2", "worker-1", "worker-2", "api"}
    assert set(users.values()) == {"trygg_service"}
    db_env = SERVICES["timescaledb"]["environment"]
    assert db_env["POSTGRES_USER"] == "postgres"
    for name, svc in SERVICES.items():  # the superuser's password reaches no service
        if name != "timescaledb":
            assert "POSTGRES_PASSWORD" not in json.dumps(svc), name
    # the logins' groups, as the roles script grants them
    script = ROLES_SCRIPT.read_text()
    grants = dict((b, a) for a, b in re.findall(r"^GRANT (\w+) TO (\w+);", script, re.M))
    assert grants == {
        "trygg_migrator": "trygg_owner",
        "trygg_service": "trygg_app",
        "grafana_reader": "trygg_reader",
    }
    mounts = SERVICES["timescaledb"]["volumes"]
    assert (
        "./deploy/postgres/10-trygg-roles.sh:/docker-entrypoint-initdb.d/10-trygg-roles.sh:ro"
        in mounts
    )
    for var in ("TRYGG_OWNER_DB_PASSWORD", "TRYGG_APP_DB_PASSWORD", "GRAFANA_DB_PASSWORD"):
        assert var in db_env and f'"${{{var}:?' in script, var
    assert os.access(ROLES_SCRIPT, os.X_OK)


def test_grafana_reads_as_grafana_reader() -> None:
    ds = yaml.safe_load((REPO / "dashboards/provisioning/datasources/trygg.yaml").read_text())
    source = ds["datasources"][0]
    assert source["user"] == "grafana_reader" and source["jsonData"]["database"] == "trygg"
    assert source["secureJsonData"]["password"] == "$GRAFANA_DB_PASSWORD"
    assert "GRAFANA_DB_PASSWORD" in SERVICES["grafana"]["environment"]
    script = ROLES_SCRIPT.read_text()
    assert "ALTER ROLE grafana_reader SET search_path = reporting, public;" in script
    assert "migrate" in SERVICES["grafana"]["depends_on"]  # the views exist first


# ------------------------------------------------------------------ spool and user


def test_the_image_runs_as_its_own_user_with_absolute_state_dirs() -> None:
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert len(user) == 1
    uid, _, gid = user[0].partition(":")
    assert uid.isdigit() and int(uid) >= 1000, "a numeric uid that is not root or nobody"
    env = _dockerfile_env()
    for var in ("TRYGG_SPOOL_DIR", "TRYGG_WORKER_DATA_DIR"):
        path = env[var]
        assert path.startswith("/var/lib/trygg/"), f"{var}={path}"
        created = re.search(
            rf"install -d -o {uid} -g {gid or uid} -m 07[05]0 .*{path}\b", DOCKERFILE
        )
        assert created, f"{path} is created owned by {uid} in the image"
    assert re.search(r"^WORKDIR /var/lib/trygg$", DOCKERFILE, re.M)


def _named_mount(svc: dict[str, Any], target: str) -> str:
    for vol in svc.get("volumes", []):
        source, _, rest = vol.partition(":")
        if rest.split(":")[0] == target:
            assert not source.startswith((".", "/")), f"{vol} is a bind mount"
            assert source in COMPOSE["volumes"], f"{source} is not a named volume"
            return source
    raise AssertionError(f"nothing mounted at {target}")


def test_state_lives_on_named_volumes() -> None:
    env = _dockerfile_env()
    spool = _named_mount(SERVICES["trygg"], env["TRYGG_SPOOL_DIR"])
    assert spool == "trygg-spool"
    assert "TRYGG_SPOOL_DIR" not in SERVICES["trygg"]["environment"]  # the image's own
    data = {
        _named_mount(SERVICES[w], env["TRYGG_WORKER_DATA_DIR"]) for w in ("worker-1", "worker-2")
    }
    assert len(data) == 2, "each worker keeps its own Faust data"
    for w in ("worker-1", "worker-2"):
        assert "TRYGG_WORKER_DATA_DIR" not in SERVICES[w]["environment"]


# ------------------------------------------------------------------ healthchecks


def test_every_service_has_a_healthcheck() -> None:
    for name, svc in SERVICES.items():
        if _one_shot(name):
            assert "healthcheck" not in svc, name
            continue
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable") and hc.get("test"), f"{name} has no healthcheck"
    assert {n for n in SERVICES if _one_shot(n)} == {"migrate", "kafka-topics"}


def test_bridges_and_workers_check_their_connections() -> None:
    for name, svc in SERVICES.items():
        cmd = svc.get("command", [None])[0]
        if cmd not in ("bridge", "worker"):
            continue
        test = svc["healthcheck"]["test"]
        assert test[:2] == ["CMD", "trygg-healthcheck"], name
        env = svc["environment"]
        kafka_port = env["TRYGG_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1]
        assert kafka_port in test[2:], name
        if cmd == "bridge":
            mqtt_port = str(urlsplit(_interpolate(env["TRYGG_MQTT_URL"])).port)
            assert mqtt_port in test[2:], name
    assert "COPY deploy/trygg-healthcheck.py /usr/local/bin/trygg-healthcheck" in DOCKERFILE


# ------------------------------------------------------------------ network and MQTT


def _published(svc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of every published port."""
    out = []
    for p in svc.get("ports", []):
        parts = str(p).split(":")
        ip = parts[0] if len(parts) == 3 else ""
        out.append((ip, parts[-2], parts[-1]))
    return out


def test_mqtt_is_published_over_tls_only() -> None:
    assert _published(SERVICES["mosquitto"]) == [("", "8883", "8883")]
    listeners = re.findall(r"^listener (\d+)", MOSQUITTO_CONF, re.M)
    assert listeners == ["1883", "1884", "8883"]
    tls = MOSQUITTO_CONF.split("\nlistener 8883\n", 1)[1].split("\n\n", 1)[0]
    assert "allow_anonymous false" in tls and "use_username_as_clientid true" in tls
    assert "certfile /mosquitto/certs/server.crt" in tls
    assert "keyfile /mosquitto/certs/server.key" in tls
    assert "./deploy/mosquitto/certs:/mosquitto/certs:ro" in SERVICES["mosquitto"]["volumes"]
    assert (REPO / "deploy/mosquitto/certs/README.md").exists()


def test_the_plain_listeners_stay_on_the_internal_network() -> None:
    nets = COMPOSE["networks"]
    assert nets["backend"].get("internal") is True
    assert not nets["edge"].get("internal")
    for name in ("timescaledb", "kafka-1", "kafka-2", "kafka-3"):
        assert SERVICES[name]["networks"] == ["backend"], name
        assert not SERVICES[name].get("ports"), name
    for name, svc in SERVICES.items():
        assert "backend" in svc["networks"], f"{name} cannot reach the database or broker"
        for ip, host_port, container_port in _published(svc):
            assert container_port not in ("1883", "1884", "5432", "9092"), name
            if name != "mosquitto":
                assert ip == "127.0.0.1", f"{name} publishes {host_port} beyond the host"
    for name in ("trygg", "worker-1", "worker-2"):
        assert "edge" in SERVICES[name]["networks"], f"{name} must reach webhooks"


# ------------------------------------------------------------------ the roles script, run


def _run_roles_script(server_url: str, database: str) -> subprocess.CompletedProcess[str]:
    parts = urlsplit(server_url)
    env = {
        **os.environ,
        **PASSWORDS,
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": database,
    }
    return subprocess.run(
        ["sh", str(ROLES_SCRIPT)], env=env, capture_output=True, text=True, check=True, timeout=60
    )


def test_the_roles_script_then_the_owner_migrates_and_the_app_runs(empty_db: str) -> None:
    database = urlsplit(empty_db).path.lstrip("/")
    out = _run_roles_script(empty_db, database)
    assert f"trygg roles ready in database {database}" in out.stdout
    _run_roles_script(empty_db, database)  # idempotent
    owner = as_login(empty_db, "trygg_migrator")
    with psycopg.connect(owner) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, False)
    out = trygg_cli("db", "migrate", "--database-url", owner)
    assert "applied 0007_roles" in out.stdout
    app = as_login(empty_db, "trygg_service")
    with psycopg.connect(empty_db) as conn:
        assert conn.execute(
            "SELECT relowner::regrole::text FROM pg_class WHERE relname = 'access_log'"
        ).fetchone() == ("trygg_owner",)
        assert conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = 'events' AND owner = 'trygg_owner'"
        ).fetchone() == (1,)
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO access_log (actor, role, action) VALUES ('nurse', 'care_staff', 'view')"
        )
        conn.execute(
            "INSERT INTO events (time, device, event_id, type, resident, received_at)"
            " VALUES (now(), 'd-1', 'e-1', 'heartbeat', 'r-1', now())"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("TRUNCATE access_log")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO chain_anchors (tbl, chain_seq, hash, reason)"
                " VALUES ('access_log', 1, '\\x00', 'x')"
            )
    assert "access_log: ok, 1 rows" in trygg_cli("audit", "verify", "--database-url", app).stdout
    assert "events deleted: 0" in trygg_cli("db", "retention", "--database-url", app).stdout
    # the owner changes the retention policy; the application may not
    out = trygg_cli(
        "db",
        "retention",
        "--set-policy",
        "--database-url",
        owner,
        env={"TRYGG_RETENTION_EVENTS_DAYS": "30"},
    )
    assert out.stdout.startswith("retention policy: ") and ", events 30 days," in out.stdout
    out = trygg_cli("db", "retention", "--set-policy", "--database-url", app, check=False)
    assert out.returncode == 1 and "only the database owner" in out.stderr
    assert "schema is up to date" in trygg_cli("db", "migrate", "--database-url", owner).stdout


def test_every_dashboard_panel_runs_as_grafana_reader(filled: str) -> None:
    database = urlsplit(filled).path.lstrip("/")
    _run_roles_script(filled, database)
    reader = as_login(filled, "grafana_reader")
    with psycopg.connect(reader) as conn:
        conn.execute("SET statement_timeout = '20s'")
        for name, pid, sql in _sqls():
            with conn.transaction():
                cur = conn.execute(expand(sql, START, END))
                rows = cur.fetchall()
            title = next(
                p["title"]
                for p in _panels(json.loads((REPO / "dashboards" / name).read_text()))
                if p["id"] == pid
            )
            assert rows or title in MAY_BE_EMPTY, f"{name} {title}: nothing as grafana_reader"
        for table in ("public.alerts", "public.events", "public.access_log", "chain_anchors"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")


# ------------------------------------------------------------------ the broker over TLS


def _self_signed(certs: Path) -> None:
    certs.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(certs / "server.key"),
            "-out",
            str(certs / "server.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _connect(port: int, user: str, password: str, ca: Path | None, wait: float = 10) -> Any:
    """A CONNACK reason code, or the exception the connection ended with."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"t-{time.monotonic_ns()}", protocol=mqtt.MQTTv5
    )
    c.username_pw_set(user, password)
    if ca is not None:
        c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(cl: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        result["rc"] = rc
        done.set()

    c.on_connect = on_connect
    try:
        c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()
        done.wait(wait)
    except (OSError, ssl.SSLError) as exc:
        return exc
    finally:
        c.loop_stop()
        c.disconnect()
    return result.get("rc")


def test_the_tls_listener_takes_devices(tmp_path: Path, db: str) -> None:
    from tests.broker import ProductionMosquitto
    from trygg.devenv import free_port

    reg = tmp_path / "registry.yaml"
    reg.write_text(
        "residents:\n  - {id: r-0001, team: t}\n"
        "devices:\n  - {id: dev-a, resident: r-0001, kind: button, room: livingroom}\n"
    )
    out = tmp_path / "generated"
    trygg_cli("devices", "credentials", "--registry", str(reg), "--site", "oslo", "--out", str(out))
    with (out / "credentials.csv").open() as f:
        creds = {row["user"]: row["password"] for row in csv.DictReader(f)}
    certs = tmp_path / "certs"
    _self_signed(certs)
    tls_port = free_port()
    with ProductionMosquitto(generated=out, tls_port=tls_port, certs=certs):
        ok = _connect(tls_port, "dev-a", creds["dev-a"], certs / "server.crt")
        assert ok is not None and not isinstance(ok, Exception) and not ok.is_failure, ok
        bad = _connect(tls_port, "dev-a", "wrong", certs / "server.crt")
        assert isinstance(bad, Exception) or bad is None or bad.is_failure
        plain = _connect(tls_port, "dev-a", creds["dev-a"], None, wait=3)  # no TLS on the TLS port
        assert isinstance(plain, Exception) or plain is None


# ------------------------------------------------------------------ the healthcheck script


def _healthcheck(*ports: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python3", str(REPO / "deploy" / "trygg-healthcheck.py"), *map(str, ports)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_healthcheck_sees_established_connections() -> None:
    from trygg.devenv import free_port

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    peer, _ = server.accept()
    try:
        ok = _healthcheck(port)
        assert ok.returncode == 0 and f"connected to port {port}" in ok.stdout
        unused = free_port()
        missing = _healthcheck(port, unused)
        assert missing.returncode == 1 and f"no established connection to port {unused}" in (
            missing.stdout
        )
    finally:
        client.close()
        peer.close()
        server.close()
    assert _healthcheck().returncode == 2


def test_the_healthcheck_reads_proc_net_tcp() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("hc", REPO / "deploy" / "trygg-healthcheck.py")
    assert spec and spec.loader
    hc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hc)
    lines = [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid",
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000",
        "   1: 0200000A:C350 0300000A:075C 01 00000000:00000000 00:00000000 00000000  1000",
        "   2: 0200000A:C351 0400000A:2384 06 00000000:00000000 00:00000000 00000000  1000",
    ]
    # 0x075C = 1884 established; 0x2384 = 9092 in TIME_WAIT; 0x1F90 listening
    assert hc.established_peer_ports(lines) == {1884}


def _with_env(value: Any) -> str:
    """Compose's interpolation with a plausible .env: ``${VAR:-default}`` is its
    default, any other variable a value of its kind."""

    def one(m: re.Match[str]) -> str:
        name, op, rest = m.group(1), m.group(2) or "", m.group(3) or ""
        if op == ":-":
            return rest
        return {"TRYGG_SITE": "oslo"}.get(name, "s3cret" if "PASSWORD" in name else "x")

    return re.sub(r"\$\{(\w+)(:[-?])?([^}]*)\}", one, str(value))


@pytest.mark.parametrize(
    "name", [n for n, s in SERVICES.items() if s.get("build") == "."], ids=lambda n: n
)
def test_each_trygg_service_has_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What trygg check and trygg run would say of the service's environment."""
    from trygg.settings_load import read_settings

    for var in list(os.environ):
        if var.startswith("TRYGG_"):
            monkeypatch.delenv(var)
    env = {**_dockerfile_env(), **SERVICES[name].get("environment", {})}
    for var, value in env.items():
        if var.startswith("TRYGG_"):
            monkeypatch.setenv(var, _with_env(value))
    _, problems = read_settings()
    assert problems == [], f"{name}: {problems}"


def test_the_image_installs_the_pinned_faust_stack() -> None:
    """The image gets the versions tests/test_distributed_pins.py checks the
    Faust patches against, not whatever PyPI has on the day it is built."""
    assert "COPY constraints ./constraints" in DOCKERFILE
    assert re.search(r"pip install [^\n]*-c constraints/distributed\.txt", DOCKERFILE)
