"""The pure decisions of mrqart.live.auth: passwords, the users file, roles, sessions,
request checks and patient-data filtering (no trio, no Quart)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mrqart.headers.phi import filter_phi, initials
from mrqart.live.auth import (
    Account,
    Sessions,
    Throttle,
    User,
    UsersFileError,
    cross_site,
    csrf_ok,
    default_allowed_hosts,
    exposure_error,
    hash_password,
    host_allowed,
    host_name,
    is_json,
    load_users,
    may,
    parse_users,
    phi_for,
    role_needed,
    save_account,
    verify_password,
)


def test_password_hash_round_trip_and_salt() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$32768$8$1$")
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert hash_password("correct horse") != stored  # a fresh salt each time


@pytest.mark.parametrize("stored", [
    None, "", "plain", "scrypt$1$2$3", "md5$16384$8$1$AAAA$AAAA",
    "scrypt$16384$8$1$!!!$AAAA", "scrypt$3$8$1$AAAA$AAAA",  # N not a power of 2
])
def test_verify_refuses_missing_and_malformed_hashes(stored: str | None) -> None:
    assert not verify_password("", stored)


@pytest.mark.parametrize(("role", "needed", "ok"), [
    ("viewer", "viewer", True), ("viewer", "operator", False), ("viewer", "physicist", False),
    ("operator", "viewer", True), ("operator", "operator", True), ("operator", "physicist", False),
    ("physicist", "viewer", True), ("physicist", "operator", True), ("physicist", "physicist", True),
])
def test_roles_are_ordered(role: str, needed: str, ok: bool) -> None:
    assert may(role, needed) is ok


@pytest.mark.parametrize(("method", "endpoint", "needed"), [
    ("GET", "state_route", "viewer"), ("HEAD", "index", "viewer"),
    ("GET", "report", "physicist"), ("GET", "project", "physicist"),
    ("POST", "acknowledge", "operator"),
    ("POST", "pin_protocol", "physicist"), ("DELETE", "pin_protocol", "physicist"),
    ("POST", "accept_template", "physicist"),  # a route added later fails closed
    ("PUT", None, "physicist"),
])
def test_role_needed(method: str, endpoint: str | None, needed: str) -> None:
    assert role_needed(method, endpoint) == needed


USERS = """
[users.alice]
role = "operator"
password = "scrypt$16384$8$1$AAAA$AAAA"

[users."bob.smith"]
role = "viewer"
phi = "initials"

[users.carol]
role = "physicist"
"""


def test_parse_users() -> None:
    accounts = parse_users(USERS)
    assert accounts["alice"] == Account("alice", "operator", "scrypt$16384$8$1$AAAA$AAAA")
    assert accounts["bob.smith"] == Account("bob.smith", "viewer", None, "initials")
    assert accounts["carol"].role == "physicist"


@pytest.mark.parametrize(("text", "says"), [
    ("[users.a]\nrole = 'admin'", "role must be one of"),
    ("[users.a]\nrole = 'viewer'\nphi = 'some'", "phi must be one of"),
    ("[users.a]\nrole = 'viewer'\npassword = 'hunter2'", "never the password itself"),
    ("[users.'a b']\nrole = 'viewer'", "not a valid account"),
    ("users = 3", "must be a table"),
    ("[users.a\n", "users file"),
])
def test_bad_users_files_say_why(text: str, says: str) -> None:
    with pytest.raises(UsersFileError, match=says):
        parse_users(text)


def test_save_account_keeps_others_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    save_account(path, Account("alice", "operator", hash_password("pw-alice-1")))
    save_account(path, Account("bob", "viewer", None, "hide"))
    save_account(path, Account("alice", "physicist", hash_password("pw-alice-2")))
    accounts = load_users(path)
    assert {a.name: a.role for a in accounts.values()} == {"alice": "physicist", "bob": "viewer"}
    assert verify_password("pw-alice-2", accounts["alice"].password)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(UsersFileError, match="letters"):
        save_account(path, Account("a]b", "viewer"))
    with pytest.raises(UsersFileError, match="No such file"):
        load_users(tmp_path / "nope.toml")


def test_sessions_expire_extend_and_end() -> None:
    sessions = Sessions(lifetime=10.0)
    user = User("alice", "operator", "show")
    token, session = sessions.start(user, now=0.0)
    assert len(token) >= 40 and session.csrf != token
    assert sessions.get(token, 9.0) is session  # extends to 19
    assert sessions.alive(token, 18.0) and not sessions.alive(token, 19.0)
    assert sessions.get(token, 19.5) is None  # expired, and forgotten
    assert sessions.get(token, 1.0) is None
    token, _ = sessions.start(user, now=0.0)
    sessions.end(token)
    assert sessions.get(token, 1.0) is None
    assert sessions.get(None, 1.0) is None and sessions.get("guess", 1.0) is None


@pytest.mark.parametrize(("host", "name"), [
    ("LocalHost:8080", "localhost"), ("127.0.0.1", "127.0.0.1"), ("[::1]:80", "::1"),
    ("::1", "::1"), ("console.hosp.example", "console.hosp.example"), ("", None), (None, None),
])
def test_host_name(host: str | None, name: str | None) -> None:
    assert host_name(host) == name


def test_host_allow_list() -> None:
    allowed = default_allowed_hosts("127.0.0.1")
    assert host_allowed("127.0.0.1:8080", allowed) and host_allowed("localhost", allowed)
    assert host_allowed("[::1]:8080", allowed)
    # DNS rebinding: the attacker's name, resolving to 127.0.0.1
    assert not host_allowed("attacker.example:8080", allowed)
    assert not host_allowed(None, allowed)
    assert "console" in default_allowed_hosts("console:8080")


@pytest.mark.parametrize(("origin", "site", "cross"), [
    (None, None, False),  # not a browser
    ("http://127.0.0.1:8080", "same-origin", False),
    ("https://127.0.0.1:8080", None, False),  # a TLS proxy in front
    ("http://127.0.0.2:8080", None, True),
    ("http://127.0.0.1:9090", None, True),  # another port is another origin
    ("null", None, True),  # a sandboxed frame or a file:// page
    ("http://portal.example", "cross-site", False),  # allowed by configuration
    (None, "cross-site", True), (None, "same-site", True), (None, "none", False),
])
def test_cross_site(origin: str | None, site: str | None, cross: bool) -> None:
    assert cross_site(origin, site, "127.0.0.1:8080", frozenset({"http://portal.example"})) is cross


@pytest.mark.parametrize(("by_cookie", "origin", "token", "ok"), [
    (False, None, None, True),  # local console or proxy: no cookie to ride on
    (True, "http://127.0.0.1:8080", None, True),  # the browser said where it came from
    (True, None, None, False),
    (True, None, "wrong", False),
    (True, None, "tok", True),
])
def test_csrf(by_cookie: bool, origin: str | None, token: str | None, ok: bool) -> None:
    assert csrf_ok(by_cookie=by_cookie, origin=origin, fetch_site=None, token=token,
                   expected="tok") is ok


@pytest.mark.parametrize(("content_type", "ok"), [
    ("application/json", True), ("Application/JSON; charset=utf-8", True),
    ("text/plain", False), ("application/x-www-form-urlencoded", False),
    ("multipart/form-data; boundary=x", False), (None, False),
])
def test_only_json_bodies(content_type: str | None, ok: bool) -> None:
    assert is_json(content_type) is ok


def test_exposure() -> None:
    assert exposure_error("127.0.0.1", users=None, trust_proxy=(), no_auth=False) is None
    assert exposure_error("localhost", users=None, trust_proxy=(), no_auth=False) is None
    refusal = exposure_error("0.0.0.0", users=None, trust_proxy=(), no_auth=False)
    assert refusal is not None and "--users FILE" in refusal and "--no-auth" in refusal
    assert exposure_error("0.0.0.0", users=Path("u.toml"), trust_proxy=(), no_auth=False) is None
    assert exposure_error("10.0.0.5", users=None, trust_proxy=("127.0.0.1",), no_auth=False) is None
    assert exposure_error("10.0.0.5", users=None, trust_proxy=(), no_auth=True) is None


MESSAGE = {
    "station": "AWP1", "type": "new", "series": "1.2.3:7",
    "content": {"status": "conform", "errors": {},
                "input": {"SubID": "Doe^John", "Operator": "Roe^Jane", "Comments": "claustrophobic",
                          "AcqDate": "20261124", "AcqTime": "101500", "StudyUID": "1.2.3",
                          "SeriesUID": "1.2.3.4", "TR": 1300.0},
                "template": {"TR": 1300.0}},
}


def test_filter_phi() -> None:
    assert filter_phi(MESSAGE, "show") is MESSAGE
    hidden = filter_phi(MESSAGE, "hide")
    assert hidden["content"]["input"] == {"AcqTime": "101500", "StudyUID": "1.2.3", "TR": 1300.0}
    assert hidden["series"] == "1.2.3:7" and hidden["content"]["template"] == {"TR": 1300.0}
    short = filter_phi(MESSAGE, "initials")["content"]["input"]
    assert (short["SubID"], short["Operator"], short["AcqDate"]) == ("D.J.", "R.J.", "20261124")
    assert "Comments" not in short
    assert MESSAGE["content"]["input"]["SubID"] == "Doe^John"  # the original is untouched
    state = {"AWP1": {"station": "AWP1", "content": MESSAGE["content"]}}
    assert "Doe" not in repr(filter_phi(state, "hide"))
    rows = [{"series": "1.2.3:7", "content": MESSAGE["content"]}]
    assert "Doe" not in repr(filter_phi(rows, "initials"))
    unreadable = {"type": "unreadable", "content": {"path": "/in/20261124.Doe_John/x.dcm"}}
    assert filter_phi(unreadable, "hide")["content"]["path"] == "x.dcm"


@pytest.mark.parametrize(("name", "short"), [
    ("Doe^John", "D.J."), ("doe^john^q^dr", "D.J.Q."), ("MRQART_test_sub01", "M.T.S."),
    ("sub01", "S."), ("", ""), ("^", ""),
])
def test_initials(name: str, short: str) -> None:
    assert initials(name) == short


def test_phi_defaults_by_role() -> None:
    assert phi_for(None, "viewer", None) == "hide"
    assert phi_for(None, "operator", None) == "show"
    assert phi_for(None, "operator", "initials") == "initials"
    assert phi_for("show", "viewer", "hide") == "show"  # the account's own setting wins


def test_failed_logins_lock_a_name_for_a_while() -> None:
    throttle = Throttle(limit=3, window=60.0)
    for t in (0.0, 10.0, 20.0):
        assert not throttle.blocked("otto", t)
        throttle.failed("otto", t)
    assert throttle.blocked("otto", 30.0) and not throttle.blocked("vera", 30.0)
    assert not throttle.blocked("otto", 60.0)  # the first failure is a minute old
    throttle.failed("otto", 61.0)
    assert throttle.blocked("otto", 62.0)
    throttle.succeeded("otto")
    assert not throttle.blocked("otto", 62.0)
