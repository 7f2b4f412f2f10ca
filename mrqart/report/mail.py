"""The report by e-mail: an HTML part with PNG plots inline (cid:) and a plain-text part,
sent through SMTP (STARTTLS and login optional).

Settings come from a TOML file (``--mail-config`` or ``MRQART_MAIL_CONFIG``), then the
environment, then the command line (``--smtp host:port``); the password only ever from
a file or the environment, never the command line::

    [smtp]
    host = "smtp.example.org"
    port = 587
    starttls = true                 # upgrade the connection before logging in
    username = "mrqart"
    password_file = "/etc/mrqart/smtp-password"   # or MRQART_SMTP_PASSWORD
    from = "mrqart <mrqart@example.org>"
    # cafile = "/etc/ssl/certs/site-ca.pem"      # a site CA for STARTTLS

    [recipients]
    all = ["physicist@example.org"]                # every project's report
    "Brain^Wellness" = ["pi.brain@example.org"]    # this project's report

Environment: MRQART_SMTP (host:port), MRQART_SMTP_STARTTLS (1/0), MRQART_SMTP_USER,
MRQART_SMTP_PASSWORD, MRQART_MAIL_FROM, MRQART_MAIL_TO (addresses for every project,
separated by commas).

Each recipient gets one e-mail with the report of the projects they follow; recipients
following the same projects share one message.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.utils import make_msgid
from os import PathLike
from pathlib import Path
from typing import Any

from mrqart.report.model import Report
from mrqart.report.render import Figure, to_html, to_text
from mrqart.rules.check import squash

#: Seconds to wait for the SMTP server at each step.
SMTP_TIMEOUT = 30.0


class MailSettingsError(ValueError):
    """The mail settings are incomplete or malformed (the message says which)."""


@dataclass(frozen=True)
class MailSettings:
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "mrqart@localhost"
    cafile: str | None = None
    #: recipients of every project's report
    everyone: tuple[str, ...] = ()
    #: project -> recipients of that project's report
    projects: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def recipients(self, project: str) -> tuple[str, ...]:
        """Who receives ``project``'s report (its own recipients, and everyone's)."""
        key = _fold(project)
        own = [a for name, addresses in self.projects.items() if _fold(name) == key
               for a in addresses]
        return tuple(dict.fromkeys((*self.everyone, *own)))


def _fold(name: str) -> str:
    return squash(name).casefold()


def parse_hostport(text: str) -> tuple[str, int]:
    """``"smtp.example.org:587"`` -> (host, port); a bare host means port 25."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, 25
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MailSettingsError(f"{text!r}: give the SMTP server as HOST:PORT")
    return host.strip("[]"), int(port)


def _addresses(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) and "@" in v for v in value):
        raise MailSettingsError(f"{where}: give a list of e-mail addresses")
    return tuple(v.strip() for v in value)


def load_settings(
    path: str | PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    smtp: str | None = None,
) -> MailSettings:
    """The settings from the TOML file at ``path`` (default: ``MRQART_MAIL_CONFIG``, if
    set), overridden by the environment and then by ``smtp`` ("host:port").

    Raises MailSettingsError for a malformed value, OSError when a file cannot be
    read, tomllib.TOMLDecodeError for bad TOML."""
    env = os.environ if env is None else env
    path = path or env.get("MRQART_MAIL_CONFIG")
    settings = MailSettings()
    if path:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        settings = _from_toml(Path(path), doc, settings)
    if "MRQART_SMTP" in env:
        host, port = parse_hostport(env["MRQART_SMTP"])
        settings = replace(settings, host=host, port=port)
    if "MRQART_SMTP_STARTTLS" in env:
        settings = replace(settings, starttls=env["MRQART_SMTP_STARTTLS"] not in ("", "0"))
    for var, name in (("MRQART_SMTP_USER", "username"), ("MRQART_SMTP_PASSWORD", "password"),
                      ("MRQART_MAIL_FROM", "sender")):
        if env.get(var):
            settings = replace(settings, **{name: env[var]})
    if env.get("MRQART_MAIL_TO"):
        settings = replace(settings, everyone=_addresses("MRQART_MAIL_TO", env["MRQART_MAIL_TO"]))
    if smtp:
        host, port = parse_hostport(smtp)
        settings = replace(settings, host=host, port=port)
    if settings.username and settings.password is None:
        raise MailSettingsError(f"a login as {settings.username!r} needs a password: "
                                "password_file in the mail settings or MRQART_SMTP_PASSWORD")
    return settings


def _from_toml(path: Path, doc: Mapping[str, Any], base: MailSettings) -> MailSettings:
    smtp, recipients = doc.get("smtp", {}), doc.get("recipients", {})
    known = {"host", "port", "starttls", "username", "password_file", "from", "cafile"}
    if not isinstance(smtp, dict) or (unknown := set(smtp) - known):
        raise MailSettingsError(f"{path}: [smtp] takes {', '.join(sorted(known))}"
                                + (f", not {sorted(unknown)}" if isinstance(smtp, dict) else ""))
    if "password" in smtp:
        raise MailSettingsError(f"{path}: keep the password in password_file")
    fields: dict[str, Any] = {}
    for key, name, kind in (("host", "host", str), ("port", "port", int),
                            ("starttls", "starttls", bool), ("username", "username", str),
                            ("from", "sender", str), ("cafile", "cafile", str)):
        if key in smtp:
            if not isinstance(smtp[key], kind) or (kind is int and isinstance(smtp[key], bool)):
                raise MailSettingsError(f"{path}: [smtp] {key} must be {kind.__name__}")
            fields[name] = smtp[key]
    if "password_file" in smtp:
        secret = Path(smtp["password_file"])
        if not secret.is_absolute():
            secret = path.parent / secret
        fields["password"] = secret.read_text().strip()
    if not isinstance(recipients, dict):
        raise MailSettingsError(f"{path}: [recipients] must be a table")
    everyone = recipients.get("all", ())
    return replace(
        base, **fields,
        everyone=_addresses(f"{path}: [recipients] all", list(everyone)) if everyone else (),
        projects={name: _addresses(f"{path}: [recipients] {name!r}", v)
                  for name, v in recipients.items() if name != "all"},
    )


@dataclass(frozen=True)
class Image:
    """A PNG plot of one project, shown inline in the HTML part."""

    project: str
    caption: str
    png: bytes


def messages(report: Report, settings: MailSettings,
             images: Sequence[Image] = ()) -> list[EmailMessage]:
    """One message per group of recipients who follow the same projects, each with the
    report of those projects. MailSettingsError if nobody would receive anything."""
    follows: dict[str, list[str]] = {a: [] for a in settings.everyone}
    for project in report.projects:
        for address in settings.recipients(project.project):
            follows.setdefault(address, []).append(project.project)
    groups: dict[tuple[str, ...], list[str]] = {}
    for address, projects in follows.items():
        groups.setdefault(tuple(projects), []).append(address)
    if not groups:
        raise MailSettingsError("no recipients: give [recipients] in the mail settings "
                                "or MRQART_MAIL_TO")
    return [_message(report.only(projects), settings, to, images)
            for projects, to in groups.items()]


def _message(report: Report, settings: MailSettings, to: Sequence[str],
             images: Sequence[Image]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = report.subject()
    msg["From"] = settings.sender
    msg["To"] = ", ".join(to)
    msg["Message-ID"] = make_msgid(domain="mrqart")
    msg.set_content(to_text(report))
    mine = [i for i in images if i.project in {p.project for p in report.projects}]
    cids = [make_msgid(domain="mrqart") for _ in mine]
    figures: dict[str, list[Figure]] = {}
    for image, cid in zip(mine, cids):
        figures.setdefault(image.project, []).append(Figure(image.caption, src=f"cid:{cid[1:-1]}"))
    msg.add_alternative(to_html(report, figures=figures), subtype="html")
    html_part = msg.get_payload()[1]  # type: ignore[index]
    for n, (image, cid) in enumerate(zip(mine, cids), start=1):
        # the caption names a series (header text): keep it out of the MIME headers
        html_part.add_related(image.png, "image", "png", cid=cid, filename=f"plot{n}.png")
    return msg


def send(msgs: Sequence[EmailMessage], settings: MailSettings) -> None:
    """Send the messages over one SMTP connection (STARTTLS and login if configured).
    Raises smtplib.SMTPException or OSError as smtplib does."""
    with smtplib.SMTP(settings.host, settings.port, timeout=SMTP_TIMEOUT) as smtp:
        smtp.ehlo()
        if settings.starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=settings.cafile))
            smtp.ehlo()
        if settings.username:
            smtp.login(settings.username, settings.password or "")
        for msg in msgs:
            smtp.send_message(msg)
