"""A carrier node's SMS gateway: how its one-time codes reach a number.

`SmsGateway` is the interface (`send(to_e164, text) -> message id`).
`OutboxGateway` is the local consortium's stand-in: it sends nothing and
appends each message as one JSON line `{"to", "text", "sent_at"}` to
`sms-outbox.jsonl` in the carrier's node folder (design.md), which the demo
and the tests read. `SmppGateway` speaks SMPP 3.4 to a real SMS centre
(smpplib): bind_transmitter, one submit_sm per part (UCS2 when the text is
not GSM 7-bit, as Chinese text is), unbind. `gateway_from_config` reads
node.toml's `sms_gateway` value (docs/config.md).

Errors: `SmsUnavailable` (no connection, a timeout), `SmsRefused` (the SMS
centre answered with an error status); both are `SmsError`."""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

OUTBOX_FILE = "sms-outbox.jsonl"
SMPP_TIMEOUT_S = 10.0


class SmsError(Exception):
    """A message was not handed to the SMS network."""


class SmsUnavailable(SmsError):
    """The gateway could not be reached, or did not answer in time."""


class SmsRefused(SmsError):
    """The SMS centre refused the message (its SMPP status in the text)."""


class SmsGateway(Protocol):
    def send(self, to_e164: str, text: str) -> str:
        """Hands `text` to the network for `to_e164`; returns the gateway's
        message id. Raises SmsError when the message was not accepted."""
        ...


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


class OutboxGateway:
    """The local stand-in for an SMS gateway: each message is one JSON line
    appended to `path` (sent_at in ISO 8601 UTC); nothing is sent."""

    def __init__(self, path: Path, clock_ms: Callable[[], int] | None = None) -> None:
        self.path = path
        self._clock = clock_ms  # None: the wall clock
        self._lock = threading.Lock()
        self._count = 0

    def send(self, to_e164: str, text: str) -> str:
        now = self._clock() if self._clock else int(datetime.now(UTC).timestamp() * 1000)
        line = json.dumps({"to": to_e164, "text": text, "sent_at": _iso(now)},
                          ensure_ascii=False) + "\n"
        with self._lock:
            try:
                # O_APPEND: one write per line, so readers never see half a message.
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, line.encode("utf-8"))
                finally:
                    os.close(fd)
            except OSError as e:
                raise SmsUnavailable(f"cannot write the outbox {self.path}: {e.strerror}") from e
            self._count += 1
            return f"outbox-{now}-{self._count}"


def read_outbox(path: Path) -> list[dict[str, str]]:
    """The messages in an outbox file, oldest first (empty when there is none)."""
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


class SmppGateway:
    """SMPP 3.4 to an SMS centre at host:port as `system_id`: one bound
    session per message (bind_transmitter, submit_sm per part, unbind), each
    network step bounded by `timeout` seconds."""

    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        *,
        source_addr: str = "markex",
        timeout: float = SMPP_TIMEOUT_S,
    ) -> None:
        self.host, self.port = host, port
        self.system_id, self.password = system_id, password
        self.source_addr = source_addr
        self.timeout = timeout

    def send(self, to_e164: str, text: str) -> str:
        import smpplib.client
        import smpplib.consts as c
        import smpplib.exceptions as x
        import smpplib.gsm

        cl = smpplib.client.Client(self.host, self.port, timeout=self.timeout,
                                   allow_unknown_opt_params=True)
        try:
            cl.connect()
            cl.bind_transmitter(system_id=self.system_id, password=self.password)
            parts, coding, esm_class = smpplib.gsm.make_parts(text)
            src_ton = c.SMPP_TON_UNK if self.source_addr.isdigit() else c.SMPP_TON_ALNUM
            ids = []
            for part in parts:
                cl.send_message(
                    source_addr_ton=src_ton,
                    source_addr_npi=c.SMPP_NPI_UNK,
                    source_addr=self.source_addr,
                    dest_addr_ton=c.SMPP_TON_INTL,
                    dest_addr_npi=c.SMPP_NPI_ISDN,
                    destination_addr=to_e164.lstrip("+"),
                    short_message=part,
                    data_coding=coding,
                    esm_class=esm_class,
                    registered_delivery=False,
                )
                resp = cl.read_pdu()
                if resp.command != "submit_sm_resp":
                    raise SmsRefused(f"the SMS centre answered {resp.command}, not submit_sm_resp")
                if resp.is_error():
                    raise SmsRefused(f"the SMS centre refused the message: status {resp.status} "
                                     f"({c.DESCRIPTIONS.get(resp.status, 'unknown')})")
                mid = resp.message_id
                ids.append(mid.decode("ascii", "replace") if isinstance(mid, bytes) else str(mid))
            cl.unbind()
            return ",".join(ids)
        except x.PDUError as e:
            raise SmsRefused(f"the SMS centre refused: {e.args[0] if e.args else e}") from e
        except (x.ConnectionError, OSError) as e:
            raise SmsUnavailable(
                f"SMS centre {self.host}:{self.port} unreachable or silent: {e or type(e).__name__}"
            ) from e
        finally:
            cl.disconnect()


def gateway_from_config(value: str, node_folder: Path) -> SmsGateway:
    """node.toml's `sms_gateway`: "" or "outbox" for the outbox file in the
    node's folder; `smpp://SYSTEM_ID:PASSWORD@HOST:PORT[?source=ADDR]` for an
    SMS centre. Raises ValueError naming what is wrong."""
    if value in ("", "outbox"):
        return OutboxGateway(node_folder / OUTBOX_FILE)
    u = urllib.parse.urlsplit(value)
    if u.scheme != "smpp" or not u.hostname or not u.username:
        raise ValueError(f"sms_gateway {value!r} is neither 'outbox' nor "
                         "smpp://SYSTEM_ID:PASSWORD@HOST:PORT")
    try:
        port = u.port or 2775
    except ValueError as e:
        raise ValueError(f"sms_gateway {value!r}: bad port") from e
    q = urllib.parse.parse_qs(u.query)
    return SmppGateway(
        u.hostname, port, urllib.parse.unquote(u.username), urllib.parse.unquote(u.password or ""),
        source_addr=q.get("source", ["markex"])[0],
    )
