"""Who may see and change what: accounts, roles, sessions, request checks, patient data.

Everything here is pure (no trio, no Quart): the web layer (:mod:`mrqart.live.access`)
asks these functions and moves the answers into responses.

Roles, each allowed what the one before it is:

    viewer      reads verdicts, checklists and alerts
    operator    also acknowledges alerts (the console's role)
    physicist   also pins and unpins protocols, accepts template changes, reads reports

Patient data (``phi``): ``show`` everything, ``initials`` (names cut to initials, free
text and the acquisition date dropped), ``hide`` (no names, no free text, no date, no
series UID). Viewers get ``hide`` unless their account says otherwise.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import socket
import tomllib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mrqart.headers.phi import PHI_MODES

ROLES = ("viewer", "operator", "physicist")
DEFAULT_PHI = {"viewer": "hide", "operator": "show", "physicist": "show"}

#: Mutating endpoints an operator may call; every other mutating endpoint (pins, template
#: acceptance, whatever is added later) needs a physicist: new routes fail closed.
OPERATOR_ENDPOINTS = frozenset({"acknowledge"})
#: Pages only a physicist reads: the reports (a day's or a project's history).
PHYSICIST_PAGES = frozenset({"report", "project"})
#: Methods that change nothing (routes must keep them so).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Account names: what people type, and safe as a TOML bare key.
USER_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
#: scrypt cost: 2**15 x 8 x 1 takes ~0.1 s and 32 MiB per check (OWASP's minimum is 2**17
#: x 8 x 1 for interactive use at 128 MiB; a login page on a small box is served within 0.1 s).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
#: Sessions kept at once: far more than the people of one department; the oldest go first.
MAX_SESSIONS = 10_000
#: A session lasts this long after its last use (a working day at the console).
SESSION_SECONDS = 8 * 3600.0

#: Names every browser on this host may use to reach a loopback-bound service.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

#: Sent with every response. The page loads only its own scripts and styles (no inline
#: script), may not be framed (clickjacking of Acknowledge and Pin), and sends no Referer.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: The reports are self-contained pages (inline CSS and SVG, no script at all): their
#: styles are inline, and nothing else is allowed.
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
              "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HSTS = "max-age=31536000"


# -- roles ------------------------------------------------------------------------------
def may(role: str, needed: str) -> bool:
    """True if ``role`` is ``needed`` or above it."""
    return ROLES.index(role) >= ROLES.index(needed)


def role_needed(method: str, endpoint: str | None) -> str:
    """The least role a request needs: reading needs a viewer, acknowledging an operator,
    any other change a physicist."""
    if method.upper() in SAFE_METHODS:
        return "physicist" if endpoint in PHYSICIST_PAGES else "viewer"
    return "operator" if endpoint in OPERATOR_ENDPOINTS else "physicist"


@dataclass(frozen=True)
class User:
    """Who is asking: an account, a proxy's user, or the local console without accounts."""

    name: str
    role: str
    phi: str
    #: False for the local console and --no-auth: the name says nothing about a person.
    signed_in: bool = True


# -- passwords --------------------------------------------------------------------------
def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) of ``password``: what the users file keeps."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    """True if ``password`` matches ``stored`` (from :func:`hash_password`); False for
    no or a malformed hash. Takes the same time whether or not it matches."""
    known = stored is not None
    if stored is None:
        stored = _dummy_hash()  # as slow as a real check: the answer does not tell who exists
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True),
                             n=int(n), r=int(r), p=int(p), maxmem=_SCRYPT_MAXMEM,
                             dklen=len(expected))
    except ValueError:  # wrong field count, bad base64 or number, parameters scrypt refuses
        return False
    return hmac.compare_digest(got, expected) and known


@functools.cache
def _dummy_hash() -> str:
    return hash_password("", salt=b"\0" * 16)


# -- the users file ---------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    """One entry of the users file. No password: only a trusted proxy may vouch for it."""

    name: str
    role: str
    password: str | None = None
    phi: str | None = None


class UsersFileError(ValueError):
    """The users file cannot be read or says something we cannot use."""


def parse_users(text: str, *, source: str = "users file") -> dict[str, Account]:
    """Accounts from TOML: ``[users.NAME]`` tables with ``role``, ``password`` (an scrypt
    hash), optional ``phi``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsersFileError(f"{source}: {error}") from None
    users = data.get("users", {})
    if not isinstance(users, dict):
        raise UsersFileError(f"{source}: [users] must be a table of [users.NAME] tables")
    accounts = {}
    for name, entry in users.items():
        if not (isinstance(entry, dict) and USER_NAME.match(name)):
            raise UsersFileError(f"{source}: [users.{name}]: not a valid account")
        role, password, phi = entry.get("role"), entry.get("password"), entry.get("phi")
        if role not in ROLES:
            raise UsersFileError(f"{source}: {name}: role must be one of {', '.join(ROLES)}")
        if phi is not None and phi not in PHI_MODES:
            raise UsersFileError(f"{source}: {name}: phi must be one of {', '.join(PHI_MODES)}")
        if password is not None and not (isinstance(password, str)
                                         and password.startswith("scrypt$")):
            raise UsersFileError(f"{source}: {name}: password must be a hash from "
                                 "'mrqart users add' (never the password itself)")
        accounts[name] = Account(name, role, password, phi)
    return accounts


def load_users(path: Path) -> dict[str, Account]:
    try:
        return parse_users(path.read_text(encoding="utf-8"), source=str(path))
    except OSError as error:
        raise UsersFileError(f"{path}: {error.strerror}") from None


def dump_users(accounts: Iterable[Account]) -> str:
    lines = ["# mrqart accounts: edit with 'mrqart users add NAME --role ROLE'.",
             "# Passwords are scrypt hashes; roles: viewer, operator, physicist.", ""]
    for a in sorted(accounts, key=lambda a: a.name):
        lines.append(f"[users.{a.name}]")
        lines.append(f'role = "{a.role}"')
        if a.password is not None:
            lines.append(f'password = "{a.password}"')
        if a.phi is not None:
            lines.append(f'phi = "{a.phi}"')
        lines.append("")
    return "\n".join(lines)


def save_account(path: Path, account: Account) -> None:
    """Add or replace ``account`` in the users file, written whole and readable by its
    owner only (it holds password hashes)."""
    if not USER_NAME.match(account.name):
        raise UsersFileError(f"{account.name!r}: use letters, digits and . _ @ - (at most 64)")
    accounts = load_users(path) if path.exists() else {}
    accounts[account.name] = account
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(dump_users(accounts.values()))
    os.replace(tmp, path)


# -- sessions ---------------------------------------------------------------------------
@dataclass
class Session:
    user: User
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Logged-in browsers: an unguessable token (the cookie) -> user, CSRF token, expiry.

    Kept in memory: a restart logs everyone out. Each use extends a session by
    ``lifetime`` seconds; ``now`` is passed in (any monotonic clock)."""

    lifetime: float = SESSION_SECONDS
    _by_token: OrderedDict[str, Session] = field(default_factory=OrderedDict)

    def start(self, user: User, now: float) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), now + self.lifetime)
        self._by_token[token] = session
        while len(self._by_token) > MAX_SESSIONS:
            self._by_token.popitem(last=False)
        return token, session

    def get(self, token: str | None, now: float) -> Session | None:
        """The live session of ``token`` (extended), or None (unknown or expired)."""
        session = self._by_token.get(token) if token else None
        if session is None:
            return None
        if session.expires <= now:
            del self._by_token[token]  # type: ignore[arg-type]
            return None
        session.expires = now + self.lifetime
        self._by_token.move_to_end(token)  # type: ignore[arg-type]
        return session

    def alive(self, token: str | None, now: float) -> bool:
        """Whether the session is still valid, without extending it (open WebSockets)."""
        session = self._by_token.get(token) if token else None
        return session is not None and session.expires > now

    def end(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)


@dataclass
class Throttle:
    """Failed logins per account name: after ``limit`` failures within ``window`` seconds
    the name is refused (without checking a password) until the oldest of them is
    ``window`` old. Guessing costs 5 tries per 5 minutes per name; the price is that
    someone may lock a colleague out for 5 minutes. Bounded: MAX_SESSIONS names."""

    limit: int = 5
    window: float = 300.0
    _failures: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)

    def blocked(self, name: str, now: float) -> bool:
        recent = [t for t in self._failures.get(name, ()) if now - t < self.window]
        if recent:
            self._failures[name] = recent
        else:
            self._failures.pop(name, None)
        return len(recent) >= self.limit

    def failed(self, name: str, now: float) -> None:
        self._failures.setdefault(name, []).append(now)
        self._failures.move_to_end(name)
        while len(self._failures) > MAX_SESSIONS:
            self._failures.popitem(last=False)

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)


# -- request checks ---------------------------------------------------------------------
def host_name(host: str | None) -> str | None:
    """The name part of a Host header, lower case, without port or IPv6 brackets."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = host_name(host) or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind: str) -> frozenset[str]:
    """The names a browser may use for a service bound to ``bind``: the loopback names,
    the bound name itself, and for a wildcard bind this host's name and addresses."""
    names = set(LOOPBACK_NAMES)
    bound = host_name(bind) or ""
    if bound in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        try:
            names |= {str(info[4][0]).lower()
                      for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:  # a host name that does not resolve: its name alone
            pass
    else:
        names.add(bound)
    return frozenset(names)


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    return host_name(host) in allowed


def same_origin(origin: str, host: str | None, allowed_origins: frozenset[str]) -> bool:
    """True if a browser's Origin header names this service as the browser reached it
    (scheme ignored: a TLS proxy in front changes it), or an allowed origin."""
    if origin.rstrip("/").lower() in allowed_origins:
        return True
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    return bool(host) and netloc == host.strip().lower()  # type: ignore[union-attr]


def cross_site(origin: str | None, fetch_site: str | None, host: str | None,
               allowed_origins: frozenset[str]) -> bool:
    """True if a browser says this request comes from another site or origin. A client
    that sends neither header is not a browser (and carries no ambient cookie of ours
    unless it holds the CSRF token too: see :func:`csrf_ok`)."""
    if origin is not None:  # the browser's own word for where the request comes from
        return not same_origin(origin, host, allowed_origins)
    return fetch_site is not None and fetch_site not in ("same-origin", "none")


def csrf_ok(*, by_cookie: bool, origin: str | None, fetch_site: str | None,
            token: str | None, expected: str | None) -> bool:
    """A mutating request authenticated by the session cookie needs proof it comes from
    our page: the browser's Origin or Sec-Fetch-Site (checked by :func:`cross_site`), or
    the session's CSRF token in ``X-CSRF-Token``."""
    if not by_cookie or origin is not None or fetch_site is not None:
        return True
    return token is not None and expected is not None and hmac.compare_digest(token, expected)


def is_json(content_type: str | None) -> bool:
    """Only JSON bodies are accepted: a form or a no-cors ``text/plain`` POST from another
    page cannot send this type without a CORS preflight, which we never grant."""
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


def exposure_error(host: str, *, users: Path | None, trust_proxy: Iterable[str],
                   no_auth: bool) -> str | None:
    """Why the service must not start on ``host`` as configured, or None."""
    if is_loopback(host) or users is not None or any(trust_proxy) or no_auth:
        return None
    return (f"refusing to serve on {host}, reachable from other machines, without accounts: "
            "give --users FILE (create it with 'mrqart users add NAME --role operator'), "
            "--trust-proxy ADDR (a reverse proxy that authenticates users), or --no-auth "
            "to let anyone who can reach the port use it")


def phi_for(account_phi: str | None, role: str, configured: str | None) -> str:
    """The account's own setting, else ``--phi``, else the role's default."""
    return account_phi or configured or DEFAULT_PHI[role]
