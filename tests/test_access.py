"""Access control through the real service on port 0: each attack of issue 13 fails for
the attacker (400, 401, 403, 415, WebSocket refused) and the same request succeeds for
the right role; accounts, sessions, the proxy header, patient data per connection, TLS,
and the refusal to serve other machines without accounts."""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from mrqart import synth
from mrqart.ingest.inotify import Flag
from mrqart.ingest.watcher import MemoryEventSource
from mrqart.live.access import COOKIE, Guard
from mrqart.live.auth import SECURITY_HEADERS, Account, hash_password, load_users, save_account
from mrqart.live.service import Config, run_service
from mrqart.store import Store
from tests.test_service_compliance import record_past_sessions

SUBJECT = "Doe^Jane"  # the PatientName of every live file here
EVIL = "http://127.0.0.2:8000"
PASSWORDS = {"vera": "viewer-pass", "otto": "operator-pass", "phil": "physicist-pass"}
ROLES = {"vera": "viewer", "otto": "operator", "phil": "physicist"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call(url: str, path: str, *, method: str = "GET", body: Any = None,
               headers: dict[str, str] | None = None, cookie: str | None = None,
               context: ssl.SSLContext | None = None) -> Reply:
    """One request with exactly these headers (http.client in a worker thread). A dict or
    list body is sent as JSON unless a Content-Type is given."""
    parts = urlsplit(url)
    headers = dict(headers or {})
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    data = body
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")

    def run() -> Reply:
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=10, context=context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    return await trio.to_thread.run_sync(run)


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "/ws"


@dataclass
class Running:
    url: str
    db: Path
    write: Callable[[int, int, int, str], None]


@asynccontextmanager
async def serving(tmp_path: Path, **access: Any) -> AsyncIterator[Running]:
    """The real service on port 0 with a protocol learnt from two past sessions; ``write``
    feeds it a scanner file (session index, series, image, description)."""
    root = tmp_path / "scanner"
    sessions = [root / "session1", root / "session2"]
    for d in sessions:
        d.mkdir(parents=True)
    db = tmp_path / "db.sqlite"
    record_past_sessions(db, tmp_path)
    source = MemoryEventSource()
    config = Config(roots=(root,), db=db, port=0, catch_up=False, **access)

    def write(session: int, series: int, image: int, name: str) -> None:
        path = sessions[session] / f"001_{series:06d}_{image:06d}.dcm"
        synth.write_dicom(path, SequenceName=name, SeriesNumber=series, SubID=SUBJECT,
                          StudyUID=f"1.2.live.{session}")
        assert source.emit(path, Flag.CLOSE_WRITE)

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(lambda task_status: run_service(
            config, stop=stop, source=source, task_status=task_status))
        yield Running(url, db, write)
        stop.set()


async def until(ws: Any, type_: str, seen: list[str] | None = None) -> dict[str, Any]:
    """The next message of ``type_``; every text received is appended to ``seen``."""
    while True:
        text = await ws.get_message()
        if seen is not None:
            seen.append(text)
        message = json.loads(text)
        if message["type"] == type_:
            return message


async def raise_alert(running: Running, ws: Any, seen: list[str] | None = None) -> str:
    """Session 1 stops its rest series short, session 2 starts: the id of the alert."""
    for image in (1, 2):
        running.write(0, 1, image, "fmap")
    for image in range(1, 5):
        running.write(0, 2, image, "rest")
    running.write(1, 1, 1, "fmap")
    return str((await until(ws, "alert", seen))["content"]["id"])


def rejected_status(error: BaseException) -> int:
    assert isinstance(error, ConnectionRejected), error
    return error.status_code


async def ws_refused(url: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The HTTP status that refused the WebSocket handshake (fails if it was accepted)."""
    with pytest.raises(ConnectionRejected) as refused:
        async with open_websocket_url(ws_url(url), extra_headers=headers):
            pass
    return refused.value.status_code


async def raw_handshake(url: str, host: str) -> int:
    """The status answering a WebSocket handshake that names ``host`` (raw: WebSocket
    clients always send the URL's own Host)."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        await stream.send_all(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode())
        head = b""
        while b"\r\n" not in head:
            head += await stream.receive_some(1024)
    return int(head.split()[1])


def assert_security_headers(reply: Reply) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name.lower()) == value, (name, reply.status)
    assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]
    assert "'unsafe-inline'" not in reply.headers["content-security-policy"]


async def test_every_attack_fails_on_the_local_console_and_the_console_still_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Loopback, no accounts (today's default): the local operator may do everything, but
    another page in the console's browser, or a DNS-rebinding name, may do nothing."""
    caplog.set_level(logging.INFO, logger="mrqart.audit")
    with trio.fail_after(30):
        async with serving(tmp_path) as running:
            url = running.url
            own = f"http://{urlsplit(url).netloc}"
            async with open_websocket_url(ws_url(url)) as ws:
                alert = await raise_alert(running, ws)
            ack = f"/api/alerts/{alert}/ack"
            reason = {"reason": "pressed by another page"}
            # a no-cors POST with a text/plain body, and a form POST, from another origin
            for headers in ({"Content-Type": "text/plain", "Origin": EVIL},
                            {"Content-Type": "application/x-www-form-urlencoded", "Origin": EVIL},
                            {"Content-Type": "application/json", "Origin": EVIL},
                            {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
                            {"Content-Type": "application/json", "Origin": "null"}):
                r = await call(url, ack, method="POST", body=json.dumps(reason), headers=headers)
                assert r.status == 403, headers
                assert_security_headers(r)
            # a script that is not a browser still cannot send anything but JSON
            r = await call(url, ack, method="POST", body=json.dumps(reason),
                           headers={"Content-Type": "text/plain"})
            assert r.status == 415
            r = await call(url, "/api/projects/MRQART_test/protocol", method="DELETE", body={},
                           headers={"Origin": EVIL})
            assert r.status == 403
            # cross-site WebSocket hijacking
            assert await ws_refused(url, [(b"Origin", EVIL.encode())]) == 403
            assert await ws_refused(url, [(b"Origin", b"http://127.0.0.1:1")]) == 403
            # DNS rebinding: the API and /ws under a name that is not this service's
            r = await call(url, "/state", headers={"Host": "attacker.example:8080"})
            assert r.status == 400
            assert_security_headers(r)
            assert await raw_handshake(url, "attacker.example") == 400
            assert await raw_handshake(url, urlsplit(url).netloc) == 101  # the control
            # nothing was acknowledged
            store = Store(running.db)
            assert store.acks("1.2.live.0") == {}
            store.close()

            # the console's own page: same origin, JSON
            r = await call(url, ack, method="POST", body={"reason": "participant asked to stop"},
                           headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
            assert r.status == 200 and r.json()["by"] == "local"
            for path in ("/", "/state", "/static/js/main.js", "/login", "/nope"):
                assert_security_headers(await call(url, path))
            async with open_websocket_url(ws_url(url), extra_headers=[(b"Origin", own.encode())]):
                pass
    store = Store(running.db)
    assert [(a["reason"], a["by"]) for a in store.acks("1.2.live.0").values()] == [
        ("participant asked to stop", "local")]
    store.close()
    audit = [r.getMessage() for r in caplog.records if r.name == "mrqart.audit"]
    assert any(line.startswith("'local' (physicist) POST") and line.endswith("-> 200")
               for line in audit), audit
    assert sum(line.endswith("-> 403") for line in audit) >= 6
    assert not any(SUBJECT in r.getMessage() for r in caplog.records)


def write_users(tmp_path: Path, **extra: Account) -> Path:
    path = tmp_path / "users.toml"
    for name, password in PASSWORDS.items():
        save_account(path, Account(name, ROLES[name], hash_password(password)))
    for account in extra.values():
        save_account(path, account)
    return path


async def login(url: str, name: str, password: str | None = None) -> tuple[str, dict[str, Any]]:
    r = await call(url, "/api/login", method="POST",
                   body={"name": name, "password": password or PASSWORDS[name]})
    assert r.status == 200, r.body
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    return cookie.split(";")[0].split("=", 1)[1], r.json()


async def test_accounts_roles_sessions_and_patient_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mrqart.audit")
    users = write_users(tmp_path)
    with trio.fail_after(40):
        async with serving(tmp_path, users=users) as running:
            url = running.url
            # nobody: the page sends to the login page, the API and /ws refuse
            r = await call(url, "/")
            assert r.status == 302 and r.headers["location"].endswith("/login?next=/")
            assert (await call(url, "/login")).status == 200
            assert (await call(url, "/state")).status == 401
            assert (await call(url, "/api/stations")).status == 401
            assert await ws_refused(url, []) == 401
            assert (await call(url, "/api/login", method="POST",
                               body={"name": "otto", "password": "wrong"})).status == 401
            assert (await call(url, "/api/login", method="POST",
                               body={"name": "nobody", "password": "x"})).status == 401

            cookies, me = {}, {}
            for name in PASSWORDS:
                cookies[name], me[name] = await login(url, name)
                assert (me[name]["name"], me[name]["role"]) == (name, ROLES[name])
                assert me[name]["auth"] == "accounts" and me[name]["csrf"]
            assert me["vera"]["phi"] == "hide" and me["otto"]["phi"] == "show"
            assert (await call(url, "/api/me", cookie=cookies["vera"])).json()["name"] == "vera"

            seen: dict[str, list[str]] = {"vera": [], "otto": []}
            async with open_websocket_url(ws_url(url), extra_headers=[
                (b"Cookie", f"{COOKIE}={cookies['vera']}".encode())]) as viewer_ws, \
                    open_websocket_url(ws_url(url), extra_headers=[
                        (b"Cookie", f"{COOKIE}={cookies['otto']}".encode())]) as operator_ws:
                alert = await raise_alert(running, operator_ws, seen["otto"])
                assert alert == await raise_alert_seen(viewer_ws, seen["vera"])
                # the viewer's connection carried no patient name; the operator's did
                assert not any(SUBJECT in text or "SubID" in text for text in seen["vera"])
                assert any(SUBJECT in text for text in seen["otto"])
                assert any('"type":"new"' in text for text in seen["vera"])

                own = {"Origin": f"http://{urlsplit(url).netloc}"}
                ack = f"/api/alerts/{alert}/ack"
                body = {"reason": "participant asked to stop"}
                pin = "/api/projects/MRQART_test/protocol"
                assert (await call(url, ack, method="POST", body=body, headers=own,
                                   cookie=cookies["vera"])).status == 403
                assert (await call(url, pin, method="POST", body={"from_session": "1.2.live.0"},
                                   headers=own, cookie=cookies["otto"])).status == 403
                # a cookie without Origin or the CSRF token: refused
                assert (await call(url, ack, method="POST", body=body,
                                   cookie=cookies["otto"])).status == 403
                assert (await call(url, ack, method="POST", body=body, cookie=cookies["otto"],
                                   headers={"X-CSRF-Token": me["vera"]["csrf"]})).status == 403
                r = await call(url, ack, method="POST", body=body, cookie=cookies["otto"],
                               headers={"X-CSRF-Token": me["otto"]["csrf"]})
                assert r.status == 200 and r.json()["by"] == "otto"
                shown = (await until(viewer_ws, "ack", seen["vera"]))["content"]
                assert shown["by"] == "otto"
                r = await call(url, pin, method="POST", body={"from_session": "1.2.live.0"},
                               headers=own, cookie=cookies["phil"])
                assert r.status == 200 and r.json()["pinned"] is True
                # accepting a template change is the physicist's; by the signed-in name
                key = (await call(url, "/api/stations/AWP167046/series",
                                  cookie=cookies["phil"])).json()[0]["series"]
                accept = f"/api/series/{key}/accept"
                body = {"reason": "intended", "by": "someone else"}
                assert (await call(url, accept, method="POST", body=body, headers=own,
                                   cookie=cookies["otto"])).status == 403
                r = await call(url, accept, method="POST", body=body, headers=own,
                               cookie=cookies["phil"])
                assert r.status == 200 and r.json()["by"] == "phil"

            # the viewer's API answers carry no patient name either; the operator's do
            for path in ("/state", "/api/stations/AWP167046/series"):
                viewer = await call(url, path, cookie=cookies["vera"])
                operator = await call(url, path, cookie=cookies["otto"])
                assert viewer.status == operator.status == 200
                assert SUBJECT.encode() not in viewer.body and b"SubID" not in viewer.body
                assert SUBJECT.encode() in operator.body

            # logging out ends the session at once
            r = await call(url, "/api/logout", method="POST", body={}, cookie=cookies["otto"],
                           headers=own)
            assert r.status == 200 and f"{COOKIE}=;" in r.headers["set-cookie"]
            assert (await call(url, "/state", cookie=cookies["otto"])).status == 401
            assert (await call(url, "/state", cookie="forged")).status == 401
    # the store keeps who acknowledged and who pinned, by their signed-in names
    store = Store(running.db)
    assert [a["by"] for a in store.acks("1.2.live.0").values()] == ["otto"]
    assert store.protocol_pinned_by("MRQART_test")["by"] == "phil"
    store.close()
    audit = [r.getMessage() for r in caplog.records if r.name == "mrqart.audit"]
    assert any(line.startswith("'otto' (operator) POST '/api/alerts/") and line.endswith("200")
               for line in audit), audit
    assert any(line.startswith("'phil' (physicist) POST '/api/projects/") for line in audit)
    assert any("failed login as 'otto'" in line for line in audit)
    assert not any("wrong" in line or "pass" in line for line in audit)  # no password logged


async def test_repeated_failed_logins_lock_the_name(tmp_path: Path) -> None:
    users = write_users(tmp_path)
    with trio.fail_after(30):
        async with serving(tmp_path, users=users) as running:
            for _ in range(5):
                r = await call(running.url, "/api/login", method="POST",
                               body={"name": "otto", "password": "guess"})
                assert r.status == 401
            r = await call(running.url, "/api/login", method="POST",
                           body={"name": "otto", "password": PASSWORDS["otto"]})
            assert r.status == 429  # even the right password, for now
            await login(running.url, "vera")  # another name is not affected


async def raise_alert_seen(ws: Any, seen: list[str]) -> str:
    return str((await until(ws, "alert", seen))["content"]["id"])


async def test_an_expired_session_closes_its_websocket(tmp_path: Path) -> None:
    users = write_users(tmp_path)
    with trio.fail_after(20):
        async with serving(tmp_path, users=users, session_minutes=1.5 / 60) as running:
            cookie, _ = await login(running.url, "vera")
            async with open_websocket_url(ws_url(running.url), extra_headers=[
                    (b"Cookie", f"{COOKIE}={cookie}".encode())]) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()  # nothing is sent: the session runs out
            assert closed.value.reason.code == 4401
            assert (await call(running.url, "/state", cookie=cookie)).status == 401


async def test_a_trusted_proxy_names_the_user(tmp_path: Path) -> None:
    users = write_users(tmp_path, dana=Account("dana", "operator", None, "initials"))
    async with serving(tmp_path, users=users, trust_proxy=("127.0.0.1",)) as running:
        r = await call(running.url, "/api/me", headers={"X-Remote-User": "dana"})
        assert r.json() == {"name": "dana", "role": "operator", "phi": "initials",
                            "auth": "accounts", "csrf": None}
        r = await call(running.url, "/api/me", headers={"X-Remote-User": "someone"})
        assert r.json()["role"] == "viewer" and r.json()["phi"] == "hide"
        assert (await call(running.url, "/api/me")).status == 401
    # the same header from an address that is not the proxy is ignored
    async with serving(tmp_path / "2", users=users, trust_proxy=("127.0.0.9",)) as running:
        assert (await call(running.url, "/api/me", headers={"X-Remote-User": "dana"})).status == 401


def test_the_local_console_is_served_to_this_host_only() -> None:
    guard = Guard(allowed_hosts=frozenset({"localhost"}))
    assert guard.identify({}, None, "127.0.0.1")[0] is not None
    assert guard.identify({}, None, "::1")[0] is not None
    assert guard.identify({}, None, "10.1.2.3")[0] is None
    assert replace(guard, no_auth=True).identify({}, None, "10.1.2.3")[0] is not None


def non_loopback_address() -> str:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout
    return (out.split() or ["0.0.0.0"])[0]


@pytest.mark.parametrize("host", ["0.0.0.0", non_loopback_address()])
def test_refuses_to_serve_other_machines_without_accounts(tmp_path: Path, host: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mrqart", str(tmp_path), "--host", host, "--port", "0",
         "--db", str(tmp_path / "db.sqlite")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode == 2
    assert f"refusing to serve on {host}" in run.stderr
    assert "--users FILE" in run.stderr and "--no-auth" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_broken_users_file_is_one_clear_line(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text('[users.a]\nrole = "admin"\n')
    run = subprocess.run(
        [sys.executable, "-m", "mrqart", str(tmp_path), "--port", "0", "--users", str(users),
         "--db", str(tmp_path / "db.sqlite")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert run.returncode == 2 and "role must be one of" in run.stderr
    assert "Traceback" not in run.stderr


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


async def test_tls_serves_https_and_wss_with_secure_cookies(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    users = write_users(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    with trio.fail_after(30):
        async with serving(tmp_path, users=users, certfile=cert, keyfile=key) as running:
            url = running.url
            assert url.startswith("https://")
            r = await call(url, "/login", context=context)
            assert r.status == 200 and r.headers["strict-transport-security"].startswith("max-age")
            r = await call(url, "/api/login", method="POST", context=context,
                           body={"name": "otto", "password": PASSWORDS["otto"]})
            assert r.status == 200
            cookie = r.headers["set-cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie
            token = cookie.split(";")[0].split("=", 1)[1]
            async with open_websocket_url(
                url.replace("https", "wss", 1) + "/ws", context,
                extra_headers=[(b"Cookie", f"{COOKIE}={token}".encode())],
            ) as ws:
                running.write(0, 1, 1, "fmap")
                assert (await until(ws, "new"))["content"]["input"]["SubID"] == SUBJECT
            # plain HTTP on the TLS port gets nothing
            with pytest.raises((http.client.HTTPException, OSError)):
                await call(url.replace("https", "http", 1), "/login")


def test_users_add_list_and_purge_on_the_command_line(tmp_path: Path) -> None:
    users = tmp_path / "etc" / "users.toml"

    def mrqart(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mrqart", *args], input=stdin,
                              capture_output=True, text=True, timeout=60, check=False)

    added = mrqart("users", "add", "otto", "--role", "operator", "--users", str(users),
                   "--password-stdin", stdin="operator-pass\n")
    assert added.returncode == 0, added.stderr
    assert mrqart("users", "add", "dana", "--role", "viewer", "--phi", "initials",
                  "--users", str(users), "--no-password").returncode == 0
    short = mrqart("users", "add", "x", "--role", "viewer", "--users", str(users),
                   "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 8" in short.stderr
    listed = mrqart("users", "--users", str(users), "list").stdout
    assert listed.split("\n")[1:3] == ["dana  viewer    initials  none (proxy only)",
                                       "otto  operator  by role   set"]
    assert "operator-pass" not in users.read_text()
    assert load_users(users)["otto"].password.startswith("scrypt$")

    db = tmp_path / "db.sqlite"
    store = Store(db)
    for study, day in (("1.1", "20250105"), ("1.2", "20260105")):
        store.record_series({"StudyUID": study, "SeriesNumber": 1, "SubID": SUBJECT,
                             "Operator": "Roe^Jane", "Comments": "anxious", "AcqDate": day,
                             "AcqTime": "100000", "Project": "P", "SequenceName": "rest",
                             "Station": "S", "TR": 1300.0}, n_files=5)
    store.close()
    purged = mrqart("purge", "--before", "2026-01-01", "--db", str(db))
    assert purged.returncode == 0 and "from 1 series" in purged.stdout
    assert mrqart("purge", "--before", "yesterday", "--db", str(db)).returncode == 2
    store = Store(db)
    old, new = store.series_on("20250105"), store.series_on("20260105")
    template = store.template("P", "rest")
    store.close()
    assert SUBJECT not in json.dumps(old) and "Roe" not in json.dumps(old)
    assert "anxious" not in json.dumps(old) and old[0]["n_files"] == 5
    assert old[0]["header"]["TR"] == 1300.0 and template is not None
    assert new[0]["header"]["SubID"] == SUBJECT  # after the date: kept
