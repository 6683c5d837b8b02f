"""A whole local consortium on disk, and each node's configuration file.

`init_consortium(DIR, ...)` writes:

    DIR/consortium.json, DIR/consortium.json.sig   signed by the configuration key
    DIR/config/config.key                          that key (0600), apart from every node
    DIR/config/config.pub                          its public key, base64: what nodes pin
    DIR/ca/ca.pem                                  the consortium CA certificate
    DIR/ca/ca.key                                  its key (0600)
    DIR/<id>/signing.key                           the participant's Ed25519 key (0600)
    DIR/<id>/tls.key, DIR/<id>/tls.pem             the node's TLS key (0600) and certificate
    DIR/<id>/admin.key, DIR/<id>/admin.pem         the operator's Admin API client credential
    DIR/<id>/members.key                           the members' sealing key (0600), one for all
    DIR/<id>/node.toml                             the node's configuration (NodeConfig)
    DIR/<id>/data/                                 empty; the node's database goes here

Participants are `institute`, `carrier-1..N`, `internet-1..M`, then (when
asked: `complaints`, `regulators`, 0 each by default here, 1 each from
`markex consortium init`) `complaints-1..` (the 12321 centre) and
`regulator-1..` (the communication administration), each with a
node, `auditor-1` and `callcenter-1` (signing key, TLS key and certificate; no
node, no admin credential; DIR/<id>/config.pub holds the pin its clients verify
consortium.json with). Every participant but the call centre gets the one
members' key (keys/sealing.py) whose id consortium.json names: the call centre
asks the screen in clear over TLS and never seals a number itself.
Node k (0-based, institute first) gets member port `base_port + 2k`, public
port `base_port + 2k + 1` and, after those of all N nodes, tiles port
`base_port + 2N + k`, then metrics port `base_port + 3N + k` (on 127.0.0.1):
4N ports in all. Paths in node.toml are relative to it, so a copied folder
opens its own files; `hosts` (`--host`) and where the nodes listen are in
docs/config.md.

A local consortium keeps every key in one folder; docs/consortium-setup.md is
the set-up across organisations, where each key stays with its holder.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import shutil
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from keys import ConfigError
from keys.consortium import ISSUES_NOTHING, Consortium, Participant, Policy
from keys.sealing import KEY_FILE, MembersKey
from keys.signing import SigningKey, write_private
from keys.tls import check_hosts, make_admin_cert, make_ca, make_node_cert

# A weight is a mark's weight in the view; the complaints centre and the
# regulator mark nothing (ledger/payloads ROLE_PAYLOADS), so theirs is 0.
WEIGHTS = {"institute": 5, "carrier": 2, "internet": 1, "auditor": 0, "callcenter": 0,
           "complaints": 0, "regulator": 0}
CONFIG_KEY = Path("config") / "config.key"
DEFAULT_NAME = "markex-local"

# Chinese mobile prefixes by the operator that was first assigned them; with three carriers
# each gets one operator's list, so the demo looks like the real market.
MOBILE_PREFIXES: tuple[tuple[str, ...], ...] = (
    (  # China Mobile
        "+86134", "+86135", "+86136", "+86137", "+86138", "+86139",
        "+86150", "+86151", "+86152", "+86157", "+86158", "+86159",
        "+86182", "+86183", "+86184", "+86187", "+86188", "+86198",
    ),
    (  # China Unicom
        "+86130", "+86131", "+86132", "+86155", "+86156", "+86185", "+86186", "+86166",
    ),
    (  # China Telecom
        "+86133", "+86153", "+86180", "+86181", "+86189", "+86199", "+86173", "+86177",
    ),
)
# Beijing and Shanghai fixed lines, 400 service numbers, 95xxx short service numbers.
SERVICE_PREFIXES: tuple[str, ...] = ("+8610", "+8621", "+86400", "+8695")


def number_ranges(carrier_ids: list[str]) -> dict[str, tuple[str, ...]]:
    """Prefixes per carrier, every prefix held by exactly one carrier.

    Three carriers get one operator's mobile prefixes each; any other count
    gets the same prefixes, in order, dealt round-robin. The service prefixes
    are always dealt round-robin.
    """
    n = len(carrier_ids)
    if n == 0:
        return {}
    dealt: list[list[str]] = [[] for _ in carrier_ids]
    if n == len(MOBILE_PREFIXES):
        for i, group in enumerate(MOBILE_PREFIXES):
            dealt[i].extend(group)
    else:
        for i, pre in enumerate(p for group in MOBILE_PREFIXES for p in group):
            dealt[i % n].append(pre)
    for i, pre in enumerate(SERVICE_PREFIXES):
        dealt[i % n].append(pre)
    return {cid: tuple(pres) for cid, pres in zip(carrier_ids, dealt, strict=True)}


# ---- node.toml ---------------------------------------------------------------

# The roles whose nodes `consortium init` has keep the screen's rows (`screen_rows`): those
# that screen at their own node (a call centre screens at a member's node and runs none).
SCREEN_ROWS_ROLES: frozenset[str] = frozenset({"carrier", "institute"})

# The log levels a node knows, least severe first (node/logs.py maps them to `logging`'s).
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class NodeConfig:
    """One node's configuration, as in `DIR/<id>/node.toml`.

    Paths here are absolute. In the file they are relative to the file's folder
    (`consortium init` and `node configure` write them so, which is what lets a
    copied consortium folder open its own data and keys); absolute ones, as
    older files hold, are read as they are. `source` is the file it was read
    from (None when built in code): it is no key of the file, and messages name
    it. Every key is documented in docs/config.md. `institute_key` is the raw
    32-byte public key of the institute's configuration key (never a node's
    key), which the node pins to load `consortium.json`; the file holds it in
    base64.
    """

    participant: str
    consortium: Path
    data_dir: Path
    signing_key: Path
    tls_key: Path
    tls_cert: Path
    ca_cert: Path
    member_listen: str
    public_listen: str
    metrics_listen: str
    institute_key: bytes
    # Optional keys (older files without them still load):
    # the operator states this node's feed is new, so on an empty store it may
    # sign seq 1 without a quorum of peers vouching for its feed's head
    # (node/feedgate.py). `consortium init` writes true; set it to false, or
    # run with --restored, when a store is ever lost or restored.
    new_feed: bool = False
    # HOST:PORT of the HTTPS tlog-tiles endpoint (node/tilesrv.py, docs/tiles.md); "" = off.
    tiles_listen: str = ""
    # The least level of the node's log lines (docs/operations.md); `--log-level` wins.
    log_level: str = "info"
    # How a carrier's node sends SMS (node/sms.py): "" (the outbox file
    # sms-outbox.jsonl in the node's folder, a stand-in) or smpp://ID:PW@HOST:PORT.
    sms_gateway: str = ""
    # The members' sealing key (keys/sealing.py); None = members.key beside
    # the signing key (in the file: beside node.toml). Attached when it exists.
    members_key: Path | None = None
    # Whether the node keeps the call-path screen's rows (node/screenindex.py):
    # a node its participants' switches screen at (a carrier's, the
    # institute's) keeps them; one that serves no call path spends no CPU on
    # them and answers a screen from the entries (the same answers, slower).
    screen_rows: bool = True
    source: Path | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        if not self.participant or not all(c.isalnum() or c in "-_." for c in self.participant):
            raise ConfigError(f"bad participant id {self.participant!r}")
        if self.members_key is None:
            object.__setattr__(self, "members_key", self.signing_key.parent / KEY_FILE)
        for key in ("member_listen", "public_listen", "metrics_listen"):
            _check_listen(key, getattr(self, key))
        if self.tiles_listen:
            _check_listen("tiles_listen", self.tiles_listen)
        if self.sms_gateway not in ("", "outbox") and not self.sms_gateway.startswith("smpp://"):
            raise ConfigError(f"sms_gateway {self.sms_gateway!r} is neither \"\" (the outbox "
                              "file) nor smpp://SYSTEM_ID:PASSWORD@HOST:PORT")
        if len(self.institute_key) != 32:
            raise ConfigError("institute_key must be a 32-byte Ed25519 public key")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        """Read and check a node.toml. Every key is required but the optional
        ones (`_OPTIONAL`); unknown keys are refused."""
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read node configuration {path}: {e.strerror}") from e
        try:
            obj = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            # ValueError covers TOMLDecodeError and the int digit limit.
            raise ConfigError(f"{path} is not valid TOML: {e}") from e
        cfg = cls.from_dict(obj, base=path.parent, source=str(path))
        cfg = replace(cfg, source=path.absolute())
        _check_own_folder(cfg, path)
        return cfg

    @classmethod
    def from_dict(cls, obj: dict[str, Any], base: Path, source: str = "node.toml") -> NodeConfig:
        known = list(TOML_KEYS)
        unknown = sorted(set(obj) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r}")
        values: dict[str, Any] = {}
        for name, kind in _OPTIONAL.items():
            if name in obj:
                if not isinstance(obj[name], kind):
                    raise ConfigError(f"{source}: key {name!r} must be a {kind.__name__}")
                if isinstance(obj[name], str) and "\x00" in obj[name]:
                    raise ConfigError(f"{source}: key {name!r} holds a NUL byte")
                values[name] = obj[name]
        for name in known:
            if name in _OPTIONAL:
                continue
            if name not in obj:
                raise ConfigError(f"{source}: missing key {name!r}")
            v = obj[name]
            if not isinstance(v, str):
                raise ConfigError(f"{source}: key {name!r} must be a string")
            if "\x00" in v:
                raise ConfigError(f"{source}: key {name!r} holds a NUL byte")
            values[name] = v
        values.setdefault("members_key", KEY_FILE)  # the participant's folder
        for name in _PATH_KEYS:
            p = Path(values[name])
            values[name] = p if p.is_absolute() else (base / p).resolve()
        try:
            values["institute_key"] = base64.b64decode(values["institute_key"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise ConfigError(f"{source}: key 'institute_key' is not base64") from e
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def for_participant(cls, consortium_dir: Path, pid: str) -> NodeConfig:
        """The configuration of participant `pid` in a folder `init_consortium` wrote."""
        if not pid or not all(c.isalnum() or c in "-_." for c in pid) or pid in (".", ".."):
            raise ConfigError(f"bad participant id {pid!r}")
        path = consortium_dir / pid / "node.toml"
        if not path.is_file():
            raise ConfigError(
                f"participant {pid!r} has no node configuration in {consortium_dir} "
                f"({path} does not exist)"
            )
        cfg = cls.load(path)
        if cfg.participant != pid:
            raise ConfigError(f"{path} is the configuration of {cfg.participant!r}, not {pid!r}")
        return cfg

    def to_toml(self, at: Path | None = None) -> str:
        """The file's text. With `at`, the file's own path: when `at` lies in the
        consortium folder, every path inside that folder is written relative to
        `at`'s folder; every other path is written absolute."""
        lines = []
        for name in TOML_KEYS:
            v = getattr(self, name)
            if name == "institute_key":
                v = base64.b64encode(v).decode()
            elif name in _PATH_KEYS and at is not None:
                v = _relative_to(v, at.parent, self.consortium)
            if isinstance(v, bool):
                lines.append(f"{name} = {'true' if v else 'false'}")
                continue
            lines.append(f"{name} = {_toml_string(str(v))}")
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        """Write the file at `path`, its paths relative to it (see `to_toml`)."""
        path.write_text(self.to_toml(at=path), encoding="utf-8")


# Keys a node.toml may leave out (the field's default applies), with their TOML type.
_OPTIONAL: dict[str, type] = {"new_feed": bool, "tiles_listen": str, "log_level": str,
                             "sms_gateway": str, "members_key": str, "screen_rows": bool}
_PATH_KEYS = ("consortium", "data_dir", "signing_key", "tls_key", "tls_cert", "ca_cert",
              "members_key")
# The keys of a node.toml, in the order it is written: every field but `source`.
TOML_KEYS: tuple[str, ...] = tuple(f.name for f in fields(NodeConfig) if f.name != "source")


def _relative_to(path: Path, folder: Path, consortium: Path) -> str:
    """`path` as node.toml in `folder` writes it: relative when both lie in `consortium`."""
    home = consortium.resolve()
    target, here = path.resolve(), folder.resolve()
    if _inside(target, home) and _inside(here, home):
        return os.path.relpath(target, here)
    return str(path)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_own_folder(cfg: NodeConfig, path: Path) -> None:
    """Refuse a node.toml that lies in one consortium folder (DIR/<id>/node.toml next
    to DIR/consortium.json) but names another: a copied folder whose absolute paths
    still open the original's data and keys."""
    home = path.resolve().parent.parent
    if not (home / "consortium.json").is_file() or cfg.consortium.resolve() == home:
        return
    raise ConfigError(
        f"{path} lies in the consortium folder {home} but its key 'consortium' names "
        f"{cfg.consortium}: a copy would open the original's data and keys; write the "
        'paths relative to the file (consortium = "..", data_dir = "data", ...)'
    )


def load_consortium(cfg: NodeConfig) -> Consortium:
    """The consortium configuration, verified with the node's pinned configuration
    key, which must list the node's own participant; carrying the members' key
    when node.toml's `members_key` file exists (ConfigError naming the file
    when it is no key, or not the key whose id consortium.json names)."""
    conf = Consortium.load(cfg.consortium, cfg.institute_key)
    if conf.participant(cfg.participant) is None:
        raise ConfigError(f"participant {cfg.participant!r} is not in the consortium")
    path = cfg.members_key
    if path is None or not path.exists():
        return conf  # a node without the key screens nothing sealed (docs/config.md)
    try:
        key = MembersKey.load(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the members' key {path}: {e}") from e
    try:
        return conf.with_members_key(key)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def _check_listen(key: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    digits = port.isascii() and port.isdigit()
    if not sep or not host or not digits or not 0 <= int(port) <= 65535:
        raise ConfigError(f"key {key!r} must be HOST:PORT, got {value!r}")


def _toml_string(s: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# ---- init --------------------------------------------------------------------


def init_consortium(
    directory: Path,
    carriers: int = 3,
    internet: int = 2,
    base_port: int = 7400,
    hosts: Sequence[str] = (),
    *,
    now: datetime,
    name: str = DEFAULT_NAME,
    listen_all: bool = False,
    complaints: int = 0,
    regulators: int = 0,
) -> Consortium:
    """Write a whole local consortium into `directory` (created if missing, must be empty).

    `hosts` (DNS names or IP addresses) name the machine the nodes run on:
    every node certificate carries them beside its participant name,
    localhost and 127.0.0.1, and consortium.json's endpoints use the first
    (default 127.0.0.1). Nodes listen on the first host when it is an IP
    address, on 0.0.0.0 with `listen_all`, else on 127.0.0.1; metrics stay on
    127.0.0.1 (docs/config.md). Every argument is checked before anything is
    written; if writing fails midway, everything written is removed again.
    """
    if isinstance(carriers, bool) or not isinstance(carriers, int) or carriers < 1:
        raise ConfigError(f"a consortium needs at least one carrier, got {carriers!r}")
    if isinstance(internet, bool) or not isinstance(internet, int) or internet < 0:
        raise ConfigError(f"the number of internet firms must be 0 or more, got {internet!r}")
    for what, n in (("complaints centres", complaints), ("regulators", regulators)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"the number of {what} must be 0 or more, got {n!r}")
    count = 1 + carriers + internet + complaints + regulators  # nodes; the auditor runs none
    if isinstance(base_port, bool) or not isinstance(base_port, int) or base_port < 1:
        raise ConfigError(f"base port must be a positive integer, got {base_port!r}")
    # Two gRPC ports per node, then one tiles port and one metrics port per node.
    if base_port + 4 * count - 1 > 65535:
        raise ConfigError(
            f"{count} participants need ports {base_port}..{base_port + 4 * count - 1}, "
            "past 65535; choose a lower --base-port"
        )
    if isinstance(hosts, str) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"hosts must be a list of names, got {hosts!r}")
    names = [h.strip() for h in hosts]
    check_hosts(names)
    host = names[0] if names else "127.0.0.1"
    listen_host = "0.0.0.0" if listen_all else _local_listen_host(host)
    if now.tzinfo is None:
        raise ConfigError("`now` must be a timezone-aware datetime")

    directory = directory.resolve()
    created_dir = False
    if directory.exists():
        if not directory.is_dir():
            raise ConfigError(f"{directory} exists and is not a folder")
        if any(directory.iterdir()):
            raise ConfigError(f"{directory} is not empty; init writes only into an empty folder")
    else:
        try:
            directory.mkdir(parents=True)
        except OSError as e:
            raise ConfigError(f"cannot create {directory}: {e.strerror}") from e
        created_dir = True

    try:
        return _write_consortium(directory, carriers, internet, base_port, names, host,
                                 listen_host, now, name, complaints, regulators)
    except BaseException:
        # The folder was empty when we started: leave it as we found it.
        if created_dir:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def _write_consortium(
    directory: Path,
    carriers: int,
    internet: int,
    base_port: int,
    hosts: list[str],
    host: str,
    listen_host: str,
    now: datetime,
    name: str,
    complaints: int = 0,
    regulators: int = 0,
) -> Consortium:
    # Nodes after the internet firms, so adding them moves no other node's ports.
    roles = (
        [("institute", "institute", "Research institute")]
        + [(f"carrier-{i}", "carrier", f"Carrier {i}") for i in range(1, carriers + 1)]
        + [(f"internet-{i}", "internet", f"Internet firm {i}") for i in range(1, internet + 1)]
        + [(f"complaints-{i}", "complaints", "12321 centre" if i == 1 else f"12321 centre {i}")
           for i in range(1, complaints + 1)]
        + [(f"regulator-{i}", "regulator",
            "Communication administration" if i == 1 else f"Communication administration {i}")
           for i in range(1, regulators + 1)]
        + [("auditor-1", "auditor", "Auditor 1")]
        + [("callcenter-1", "callcenter", "Call centre 1")]
    )
    nodes = [(pid, role) for pid, role, _ in roles if role not in ISSUES_NOTHING]
    try:
        (directory / "ca").mkdir()
        ca_key, ca_cert = make_ca(f"{name} CA", now)
        write_private(directory / "ca" / "ca.key", ca_key)
        (directory / "ca" / "ca.pem").write_bytes(ca_cert)
        # The key that signs consortium.json belongs to no participant and no node.
        (directory / CONFIG_KEY).parent.mkdir()
        config_key = SigningKey.generate()
        config_key.save(directory / CONFIG_KEY)
        members_key = MembersKey.generate()
        (directory / CONFIG_KEY).with_suffix(".pub").write_text(
            base64.b64encode(config_key.public_bytes).decode() + "\n"
        )

        participants: list[Participant] = []
        for pid, role, title in roles:
            pdir = directory / pid
            pdir.mkdir()
            key = SigningKey.generate()
            key.save(pdir / "signing.key")
            tls_key, tls_cert = make_node_cert(ca_key, ca_cert, pid, hosts, now)
            write_private(pdir / "tls.key", tls_key)
            (pdir / "tls.pem").write_bytes(tls_cert)
            member = public = ""
            if role != "callcenter":  # it sends numbers to the screen in clear, seals none
                members_key.write(pdir / KEY_FILE)
            if role in ISSUES_NOTHING:
                # No node.toml: the pin it verifies consortium.json with, on its own.
                (pdir / "config.pub").write_text(
                    base64.b64encode(config_key.public_bytes).decode() + "\n"
                )
            else:
                (pdir / "data").mkdir()
                admin_key, admin_cert = make_admin_cert(ca_key, ca_cert, pid, now)
                write_private(pdir / "admin.key", admin_key)
                (pdir / "admin.pem").write_bytes(admin_cert)
                k = nodes.index((pid, role))
                member = _endpoint(host, base_port + 2 * k)
                public = _endpoint(host, base_port + 2 * k + 1)
            participants.append(
                Participant(
                    id=pid,
                    role=role,
                    public_key=key.public_bytes,
                    weight=WEIGHTS[role],
                    member_endpoint=member,
                    public_endpoint=public,
                    name=title,
                )
            )

        carrier_ids = [pid for pid, role, _ in roles if role == "carrier"]
        # A quorum of peers is at most every other node: 1 in a consortium of two nodes
        # (the auditor runs none, so it neither cosigns nor restores anyone).
        quorum = min(2, len(nodes) - 1)
        policy = Policy(cosign_quorum=quorum, restore_quorum=quorum)
        draft = Consortium(name, tuple(participants), number_ranges(carrier_ids), policy=policy,
                           members_key_id=members_key.id)
        draft.write(directory, config_key)

        for k, (pid, role) in enumerate(nodes):
            pdir = directory / pid
            NodeConfig(
                participant=pid,
                consortium=directory,
                data_dir=pdir / "data",
                signing_key=pdir / "signing.key",
                tls_key=pdir / "tls.key",
                tls_cert=pdir / "tls.pem",
                ca_cert=directory / "ca" / "ca.pem",
                member_listen=_endpoint(listen_host, base_port + 2 * k),
                public_listen=_endpoint(listen_host, base_port + 2 * k + 1),
                # The operator's alone, on loopback; fixed, so a scraper finds it after a restart.
                metrics_listen=_endpoint("127.0.0.1", base_port + 3 * len(nodes) + k),
                institute_key=config_key.public_bytes,
                new_feed=True,  # every feed of a consortium just made starts here
                tiles_listen=_endpoint(listen_host, base_port + 2 * len(nodes) + k),
                # the roles whose switches screen at their own node keep the rows
                screen_rows=role in SCREEN_ROWS_ROLES,
            ).write(pdir / "node.toml")
    except OSError as e:
        raise ConfigError(f"cannot write the consortium into {directory}: {e}") from e
    # What a node will see: the exact signed bytes, verified against the pin.
    return Consortium.load(directory, config_key.public_bytes).with_members_key(members_key)


def _local_listen_host(host: str) -> str:
    """Where a local consortium's nodes listen without --listen-all: the host when
    it is an IP address, else loopback (never every interface unasked)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "127.0.0.1"
    return host.strip("[]")


def _listen_host(host: str) -> str:
    """Where a node listens: the host itself when it is an IP literal, else every address."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "0.0.0.0"
    return host


def _endpoint(host: str, port: int) -> str:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"{host}:{port}"
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
