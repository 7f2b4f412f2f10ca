"""Access control wired into the Quart app: every request and WebSocket is checked here
before any route runs, and every response leaves with the security headers.

    before a request     Host allowed? (400) · from another site? (403) · JSON body? (415)
                         who is it (trusted proxy header, session cookie, or the local
                         console) · logged in? (401, or the login page) · role enough? (403)
                         · CSRF token when the browser gave no Origin (403)
    before a WebSocket   Host allowed? · Origin this page's own (or allowed)? · logged in?
    after a response     security headers; patient data filtered for the user's ``phi``;
                         one audit line per change (who, what, answer)

    GET  /login          the login page
    POST /api/login      {"name", "password"}: sets the session cookie
    POST /api/logout     ends the session
    GET  /api/me         {"name", "role", "phi", "auth", "csrf"}

The decisions are :mod:`mrqart.live.auth`'s; this module only moves request fields to
them and their answers into responses.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import trio
from quart import Response, abort, g, jsonify, redirect, request, websocket
from quart_trio import QuartTrio

from mrqart.config import Config
from mrqart.headers.phi import PHI_MODES, filter_phi
from mrqart.live.auth import (
    HSTS,
    SAFE_METHODS,
    SECURITY_HEADERS,
    Account,
    Session,
    Sessions,
    Throttle,
    User,
    cross_site,
    csrf_ok,
    default_allowed_hosts,
    host_allowed,
    host_name,
    is_json,
    is_loopback,
    load_users,
    may,
    phi_for,
    role_needed,
    verify_password,
)

audit = logging.getLogger("mrqart.audit")

COOKIE = "mrqart_session"
#: Endpoints anyone may reach: the login page and its assets, logging in and out, health.
PUBLIC = frozenset({"static", "login_page", "login", "logout", "healthz"})
#: Pages: someone not logged in is sent to the login page instead of a 401.
PAGES = frozenset({"index", "station_page"})
#: Longest password accepted (scrypt takes any length; this bounds the work per attempt).
MAX_PASSWORD = 1024
#: WebSocket close code for "your session ended": the page goes to the login page.
CLOSE_SESSION_ENDED = 4401


@dataclass
class Guard:
    """How this process decides who may do what (built from the Config)."""

    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str] = frozenset()
    accounts: Mapping[str, Account] | None = None  # None: no users file
    trust_proxy: frozenset[str] = frozenset()
    proxy_header: str = "X-Remote-User"
    no_auth: bool = False
    phi: str | None = None
    tls: bool = False
    sessions: Sessions = field(default_factory=Sessions)
    throttle: Throttle = field(default_factory=Throttle)
    clock: Callable[[], float] = time.monotonic
    #: scrypt runs in a thread, one at a time: a flood of logins costs one core at most.
    hashing: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))

    @classmethod
    def from_config(cls, config: Config) -> Guard:
        """Raises auth.UsersFileError if the users file cannot be used."""
        if config.phi is not None and config.phi not in PHI_MODES:
            raise ValueError(f"phi must be one of {', '.join(PHI_MODES)}")
        return cls(
            allowed_hosts=default_allowed_hosts(config.host)
            | {n for h in config.allowed_hosts if (n := host_name(h))},
            allowed_origins=frozenset(o.rstrip("/").lower() for o in config.allowed_origins),
            accounts=load_users(config.users) if config.users is not None else None,
            trust_proxy=frozenset(config.trust_proxy),
            proxy_header=config.proxy_header,
            no_auth=config.no_auth,
            phi=config.phi,
            tls=config.certfile is not None,
            sessions=Sessions(lifetime=config.session_minutes * 60),
        )

    @property
    def mode(self) -> str:
        """``none`` (--no-auth), ``accounts`` / ``proxy``, or ``local`` (loopback only)."""
        if self.no_auth:
            return "none"
        if self.accounts is not None:
            return "accounts"
        return "proxy" if self.trust_proxy else "local"

    def identify(self, headers: Mapping[str, str], cookie: str | None,
                 remote: str | None) -> tuple[User | None, Session | None]:
        """The user of a request and, if it came with a session cookie, its session."""
        if remote in self.trust_proxy and (name := headers.get(self.proxy_header)):
            account = (self.accounts or {}).get(name)
            role = account.role if account else "viewer"
            return User(name, role, phi_for(account and account.phi, role, self.phi)), None
        if cookie and (session := self.sessions.get(cookie, self.clock())):
            return session.user, session
        if self.no_auth or (self.mode == "local" and _local(remote)):
            # today's console: whoever sits at this host (or anyone: --no-auth) does everything
            name = "anonymous" if self.no_auth else "local"
            return User(name, "physicist", phi_for(None, "physicist", self.phi),
                        signed_in=False), None
        return None, None


def _local(remote: str | None) -> bool:
    # No client address: in-process (the test client) or a unix socket.
    return remote in (None, "", "<local>") or is_loopback(remote)  # type: ignore[arg-type]


def current_user() -> User | None:
    return g.get("user")


def author(typed: str | None) -> str | None:
    """Who made a change: the signed-in person, else the name typed on the page."""
    user = current_user()
    return user.name if user is not None and user.signed_in else typed


def install(app: QuartTrio, guard: Guard) -> None:
    """Check every request and WebSocket of ``app`` with ``guard``; add the login routes."""

    @app.before_request
    async def check_request() -> Any:
        host = request.headers.get("Host")
        if not host_allowed(host, guard.allowed_hosts):
            abort(400, "unknown Host: add this name to --allowed-hosts")
        origin, site = request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site")
        mutating = request.method not in SAFE_METHODS
        if mutating and cross_site(origin, site, host, guard.allowed_origins):
            abort(403, "request from another site refused")
        if mutating and not is_json(request.content_type):
            abort(415, "send JSON (Content-Type: application/json)")
        user, session = guard.identify(request.headers, request.cookies.get(COOKIE),
                                       request.remote_addr)
        g.user, g.session = user, session
        if request.endpoint in PUBLIC:
            return None
        if user is None:
            if request.method == "GET" and request.endpoint in PAGES:
                return redirect(f"/login?next={quote(request.path)}")
            abort(401, "log in first")
        needed = role_needed(request.method, request.endpoint)
        if not may(user.role, needed):
            abort(403, f"this needs the {needed} role")
        if mutating and not csrf_ok(by_cookie=session is not None, origin=origin, fetch_site=site,
                                    token=request.headers.get("X-CSRF-Token"),
                                    expected=session and session.csrf):
            abort(403, "missing or wrong X-CSRF-Token")
        return None

    @app.before_websocket
    async def check_websocket() -> None:
        host = websocket.headers.get("Host")
        if not host_allowed(host, guard.allowed_hosts):
            abort(400, "unknown Host")
        origin = websocket.headers.get("Origin")
        # Browsers always send Origin on a WebSocket; another page's must not read /ws.
        if origin is not None and cross_site(origin, None, host, guard.allowed_origins):
            abort(403, "WebSocket from another origin refused")
        user, session = guard.identify(websocket.headers, websocket.cookies.get(COOKIE),
                                       websocket.remote_addr)
        if user is None:
            abort(401, "log in first")
        g.user, g.session = user, session

    @app.after_request
    async def finish(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if guard.tls:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        user = g.get("user")
        if user is not None and user.phi != "show" and response.mimetype == "application/json":
            data = json.loads(await response.get_data())
            response.set_data(json.dumps(filter_phi(data, user.phi), separators=(",", ":")))
        if request.method not in SAFE_METHODS:
            who = f"{user.name!r} ({user.role})" if user else "nobody"
            audit.info("%s %s %r -> %d", who, request.method, request.path, response.status_code)
        return response

    @app.get("/login")
    async def login_page() -> Any:
        return await app.send_static_file("login.html")

    @app.post("/api/login")
    async def login() -> Any:
        body = await request.get_json(silent=True)
        name = body.get("name") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if not (isinstance(name, str) and isinstance(password, str)
                and len(password) <= MAX_PASSWORD):
            abort(400, 'give {"name", "password"}')
        if guard.accounts is None:
            abort(404, "this service has no accounts (no users file)")
        if guard.throttle.blocked(name, guard.clock()):
            audit.warning("login as %r refused: too many failures", name)
            abort(429, "too many failed logins for this name: try again in 5 minutes")
        account = guard.accounts.get(name)
        ok = await trio.to_thread.run_sync(
            verify_password, password, account.password if account else None,
            limiter=guard.hashing,
        )
        if not ok or account is None:
            guard.throttle.failed(name, guard.clock())
            audit.warning("failed login as %r from %s", name, request.remote_addr)
            abort(401, "wrong name or password")
        guard.throttle.succeeded(name)
        user = User(account.name, account.role, phi_for(account.phi, account.role, guard.phi))
        token, session = guard.sessions.start(user, guard.clock())
        g.user = user
        response = jsonify(_me(guard, user, session))
        # HttpOnly: page scripts never see it; Strict: no other site's request carries it.
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                            secure=guard.tls, path="/")
        return response

    @app.post("/api/logout")
    async def logout() -> Any:
        guard.sessions.end(request.cookies.get(COOKIE))
        response = jsonify({"logged_out": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict",
                               secure=guard.tls)
        return response

    @app.get("/api/me")
    async def me() -> Any:
        return jsonify(_me(guard, g.user, g.session))


def _me(guard: Guard, user: User, session: Session | None) -> dict[str, Any]:
    return {"name": user.name, "role": user.role, "phi": user.phi, "auth": guard.mode,
            "csrf": session.csrf if session else None}


async def close_when_session_ends(cancel: trio.CancelScope, guard: Guard) -> None:
    """Cancel ``cancel`` (an open WebSocket's sender) once its session has expired or
    logged out; checks at most once a second. Returns at once for sessionless users."""
    session: Session | None = g.get("session")
    token = websocket.cookies.get(COOKIE)
    if session is None:
        return
    while guard.sessions.alive(token, guard.clock()):
        await trio.sleep(min(1.0, max(0.05, session.expires - guard.clock())))
    g.session_ended = True
    cancel.cancel()


def session_ended() -> bool:
    return bool(g.get("session_ended"))
