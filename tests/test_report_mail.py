"""`mrqart report --mail` to a real SMTP server (aiosmtpd on loopback, started here):
what arrives, to whom, with STARTTLS and login."""

from __future__ import annotations

import email
import email.policy
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from reportkit import DAY2, build_month

from mrqart.cli import main
from mrqart.report.mail import MailSettingsError, load_settings, parse_hostport
from mrqart.store import Store

PHYSICIST, PI_BRAIN, PI_KIDS = "physicist@example.org", "pi.brain@example.org", "kids@example.org"
USER, PASSWORD = "mrqart", "s3cret pass"


@dataclass
class Inbox:
    """What the SMTP server accepted: (envelope recipients, parsed message) per mail."""

    mails: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        ok = (data.login, data.password) == (USER.encode(), PASSWORD.encode())
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "mrqart.sqlite"
    with Store(path) as store:
        build_month(store)
    return path


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def settings_file(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "mail.toml"
    path.write_text(f"""
[smtp]
host = "127.0.0.1"
port = {port}
from = "mrqart <mrqart@scanner.example.org>"
{extra}
[recipients]
all = ["{PHYSICIST}"]
"brain^wellness" = ["{PI_BRAIN}"]
"Kids/Study 2" = ["{PI_KIDS}"]
""")
    return path


def parts(message: EmailMessage) -> tuple[str, str, dict[str, bytes]]:
    """The text part, the HTML part, and the inline images by Content-ID."""
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    images = {p["Content-ID"].strip("<>"): p.get_content() for p in message.walk()
              if p.get_content_type() == "image/png"}
    return text, html, images


def test_each_recipient_gets_their_projects(
    db: Path, inbox: tuple[Inbox, int], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    box, port = inbox
    config = settings_file(tmp_path, port)
    assert main(["report", "--db", str(db), "--day", "2026-11-30", "--mail",
                 "--mail-config", str(config)]) == 0
    by_to = {tuple(to): m for to, m in box.mails}
    assert sorted(by_to) == [(PI_KIDS,), (PHYSICIST,), (PI_BRAIN,)]
    assert {to: m["Subject"] for to, m in by_to.items()} == {
        (PHYSICIST,): "mrqart 2026-11-30: 2 of 8 series differ, 1 incomplete, 1 missing, "
                      "1 without template",
        (PI_BRAIN,): "mrqart 2026-11-30: 2 of 6 series differ, 1 incomplete, 1 missing, "
                     "1 without template",
        (PI_KIDS,): "mrqart 2026-11-30: 2 series, all conform",
    }
    # the physicist's mail: both projects, both parts, the plots inline by cid
    text, html, images = parts(by_to[(PHYSICIST,)])
    assert by_to[(PHYSICIST,)]["From"] == "mrqart <mrqart@scanner.example.org>"
    assert "    XX 3 rest: TR: expected 1300, got 2000 (+700), 4 scan days in a row" in text
    assert "Kids/Study 2: 2 series, all conform" in text
    assert "TR: expected 1300, got 2000 (+700), 4 scan days in a row</span>" in html
    assert len(images) == 2 and all(png.startswith(b"\x89PNG\r\n") for png in images.values())
    assert sorted(html.count(f'src="cid:{cid}"') for cid in images) == [1, 1]
    assert "<svg" not in html and "http" not in html  # nothing for a mail client to fetch
    # subject names leave the hospital as initials only ("sub-b" -> "S.")
    assert "sub-a" not in text + html and "sub-b" not in text + html
    assert "  S.  (" in text and " · S.</" in html
    # a PI sees their project only
    text, html, images = parts(by_to[(PI_BRAIN,)])
    assert "Kids/Study 2" not in text and "Kids/Study 2" not in html and len(images) == 2
    text, html, images = parts(by_to[(PI_KIDS,)])
    assert "Brain^Wellness" not in text + html and images == {}
    assert capsys.readouterr().out.count("sent 'mrqart 2026-11-30:") == 3


@pytest.mark.parametrize(("phi", "shown"), [([], "sub-b"), (["--phi", "initials"], "S."),
                                             (["--phi", "hide"], "")])
def test_printed_report_shows_subjects_as_asked(
    db: Path, capsys: pytest.CaptureFixture[str], phi: list[str], shown: str,
) -> None:
    assert main(["report", "--db", str(db), "--day", "2026-11-30", *phi]) == 0
    out = capsys.readouterr().out
    assert f"  {shown}  ({DAY2})" in out  # sub-b's session
    assert ("sub-b" in out) == (shown == "sub-b")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_inbox(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    import ssl

    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True, auth_required=True,
                            authenticator=box.authenticate)
    controller.start()
    try:
        yield box, port, cert
    finally:
        controller.stop()


def test_starttls_and_login(
    db: Path, tls_inbox: tuple[Inbox, int, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    box, port, cert = tls_inbox
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    config = settings_file(tmp_path, 1, f'starttls = true\nusername = "{USER}"\n'
                           f'password_file = "smtp-password"\ncafile = "{cert}"\n')
    argv = ["report", "--db", str(db), "--day", "2026-11-30", "--mail",
            "--mail-config", str(config), "--smtp", f"127.0.0.1:{port}"]
    assert main(argv) == 0
    assert box.logins == [(USER.encode(), PASSWORD.encode())]
    assert len(box.mails) == 3
    # the environment overrides the file: a wrong password is refused by the server
    monkeypatch.setenv("MRQART_SMTP_PASSWORD", "wrong")
    assert main(argv) == 1
    assert "535" in capsys.readouterr().err  # authentication failed
    assert len(box.mails) == 3
    # without STARTTLS the server refuses to go on
    monkeypatch.setenv("MRQART_SMTP_STARTTLS", "0")
    monkeypatch.setenv("MRQART_SMTP_PASSWORD", PASSWORD)
    assert main(argv) == 1
    assert len(box.mails) == 3


def test_settings_from_the_environment() -> None:
    s = load_settings(env={"MRQART_SMTP": "mail.example.org:587", "MRQART_SMTP_STARTTLS": "1",
                           "MRQART_SMTP_USER": "u", "MRQART_SMTP_PASSWORD": "pa55-word",
                           "MRQART_MAIL_TO": "a@x.org, b@x.org"})
    assert (s.host, s.port, s.starttls, s.username, s.password, s.everyone) == (
        "mail.example.org", 587, True, "u", "pa55-word", ("a@x.org", "b@x.org"))
    assert "pa55-word" not in repr(s)  # the password never shows in a repr
    assert s.recipients("any") == ("a@x.org", "b@x.org")


@pytest.mark.parametrize(("toml", "env"), [
    ('[smtp]\npassword = "x"\n', {}),  # never in the file itself
    ('[smtp]\nusername = "u"\n', {}),  # a login needs a password
    ('[smtp]\nport = "25"\n', {}),
    ('[smtp]\nhots = "x"\n', {}),
    ('[recipients]\nall = ["not an address"]\n', {}),
    ("", {"MRQART_SMTP": "host:notaport"}),
])
def test_malformed_settings(tmp_path: Path, toml: str, env: dict[str, str]) -> None:
    path = tmp_path / "mail.toml"
    path.write_text(toml)
    with pytest.raises(MailSettingsError):
        load_settings(path, env=env)


@pytest.mark.parametrize(("text", "expected"), [
    ("smtp.example.org:587", ("smtp.example.org", 587)), ("localhost", ("localhost", 25)),
    ("[::1]:2525", ("::1", 2525))])
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


def test_no_recipients_is_an_error(db: Path, inbox: tuple[Inbox, int],
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    box, port = inbox
    monkeypatch.delenv("MRQART_MAIL_CONFIG", raising=False)
    monkeypatch.delenv("MRQART_MAIL_TO", raising=False)
    assert main(["report", "--db", str(db), "--day", "2026-11-30", "--mail",
                 "--smtp", f"127.0.0.1:{port}"]) == 1
    assert "no recipients" in capsys.readouterr().err and box.mails == []
