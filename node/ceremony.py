"""The key ceremony across organisations (docs/consortium-setup.md).

Each organisation makes its own keys on its own machine; only public material
travels:

    markex keys generate --id ID --role R --out DIR       keys, CSRs, DIR/<id>/member.json
    markex consortium keygen --out FILE                   the institute's configuration key
    markex ca init --ca CADIR                             the consortium CA (kept offline)
    markex ca sign --ca CADIR --csr FILE --out CERT       member or admin certificate
    markex consortium add-member DIR --member FILE.json   into the draft consortium.json
    markex consortium sign DIR --key CONFIG_KEY           signs the exact bytes; the first
                                                          signature makes the members' key
    markex node configure --consortium DIR --as ID --pin KEY   the node's node.toml

`markex consortium init` still makes a whole local consortium in one folder.
Every function here takes the time as an argument; only the CLI reads the clock.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keys import ConfigError
from keys.consortium import ISSUES_NOTHING, ROLES, Consortium, Participant, check_participant
from keys.layout import (
    SCREEN_ROWS_ROLES,
    WEIGHTS,
    NodeConfig,
    _endpoint,
    _listen_host,
    load_consortium,
)
from keys.sealing import KEY_FILE, MembersKey
from keys.signing import SigningKey, read_private, write_private
from keys.tls import (
    ADMIN,
    MEMBER,
    CsrRequest,
    issue_from_csr,
    make_ca,
    make_csr,
    participant_from_cert,
    read_csr,
    verify_issued_by,
)
from node import client
from node.command import show
from node.connect import Connect

MEMBER_FILE = "member.json"


# ------------------------------------------------------------------ participant side


def generate_member(
    out: Path,
    pid: str,
    role: str,
    hosts: list[str],
    member_endpoint: str = "",
    public_endpoint: str = "",
    name: str = "",
) -> dict[str, Any]:
    """Make a participant's keys in `out/<pid>/` and return its public description.

    Writes signing.key and tls.key (0600), tls.csr (the node's member
    certificate request), for roles that run a node admin.key (0600) and
    admin.csr (the operator's admin certificate request), and member.json:
    what the participant sends the institute (id, name, role, public key,
    endpoints). Nothing is written unless every argument checks out; no
    existing file is overwritten.
    """
    desc = {
        "id": pid,
        "name": name,
        "role": role,
        "public_key": "",
        "member_endpoint": member_endpoint,
        "public_endpoint": public_endpoint,
    }
    probe = _participant(desc | {"public_key": base64.b64encode(bytes(32)).decode()})
    if probe.role not in ISSUES_NOTHING and not (member_endpoint and public_endpoint):
        raise ConfigError(f"a {role} runs a node: give its member and public endpoints")
    pdir = out / pid
    if pdir.exists() and any(pdir.iterdir()):
        raise ConfigError(f"{pdir} is not empty; keys are never overwritten")
    tls_key, tls_csr = make_csr(pid, MEMBER, hosts)   # checks the hosts before anything is written
    key = SigningKey.generate()
    desc["public_key"] = base64.b64encode(key.public_bytes).decode()
    files: list[tuple[str, bytes, bool]] = [
        ("signing.key", key.private_pem(), True), ("tls.key", tls_key, True),
        ("tls.csr", tls_csr, False),
    ]
    if role not in ISSUES_NOTHING:
        admin_key, admin_csr = make_csr(pid, ADMIN)
        files += [("admin.key", admin_key, True), ("admin.csr", admin_csr, False)]
    files.append((MEMBER_FILE, (json.dumps(desc, indent=2, ensure_ascii=False) + "\n").encode(),
                  False))
    pdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for name, data, private in files:
            if private:
                write_private(pdir / name, data)
            else:
                (pdir / name).write_bytes(data)
            written.append(pdir / name)
    except BaseException:
        for path in written:  # half a set of keys is no set: leave the folder as it was
            path.unlink(missing_ok=True)
        raise
    return desc


def read_member(path: Path) -> Participant:
    """A participant's public description (member.json), checked. The weight is
    not the participant's to choose: it is the role's default until the
    institute sets another."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path} is not a JSON member description") from e
    if not isinstance(obj, dict):
        raise ConfigError(f"{path} must hold an object")
    unknown = sorted(set(obj) - {"id", "name", "role", "public_key", "member_endpoint",
                                 "public_endpoint"})
    if unknown:
        raise ConfigError(f"{path}: unknown field {unknown[0]!r}")
    return _participant(obj)


def _participant(obj: dict[str, Any]) -> Participant:
    pid, role = obj.get("id"), obj.get("role")
    if not isinstance(pid, str) or not pid or not all(c.isalnum() or c in "-_." for c in pid):
        raise ConfigError(f"bad participant id {pid!r}")
    if role not in ROLES:
        raise ConfigError(f"participant {pid}: role must be one of {', '.join(ROLES)}")
    try:
        pub = base64.b64decode(obj.get("public_key", ""), validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise ConfigError(f"participant {pid}: public_key is not base64") from e
    if len(pub) != 32:
        raise ConfigError(f"participant {pid}: public_key must be 32 bytes")
    fields: dict[str, str] = {}
    for k in ("name", "member_endpoint", "public_endpoint"):
        v = obj.get(k, "")
        if not isinstance(v, str):
            raise ConfigError(f"participant {pid}: {k} must be a string")
        fields[k] = v
    for k in ("member_endpoint", "public_endpoint"):
        if fields[k]:
            _check_endpoint(pid, k, fields[k])
    p = Participant(pid, role, pub, WEIGHTS[role], fields["member_endpoint"],
                    fields["public_endpoint"], fields["name"])
    check_participant(p)
    return p


def _check_endpoint(pid: str, key: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"participant {pid}: {key} must be HOST:PORT, got {value!r}")


# ------------------------------------------------------------------ institute side


def make_config_key(path: Path) -> SigningKey:
    """The institute's configuration key, in a file of its own (0600). It signs
    consortium.json and nothing else; no node ever holds it."""
    key = SigningKey.generate()
    write_private(path, key.private_pem())
    return key


def add_member(
    directory: Path,
    member: Participant,
    *,
    name: str | None = None,
    weight: int | None = None,
    ranges: tuple[str, ...] = (),
) -> Consortium:
    """Add `member` to DIR/consortium.json (a signed one or an unsigned draft)
    and return the new draft. The first member of a new draft is the institute
    and names the consortium. Refuses a duplicate id or key and anything the
    configuration's own rules refuse; the result is unsigned until `sign`."""
    path = directory / "consortium.json"
    if weight is not None:
        if member.role in ISSUES_NOTHING and weight != 0:
            raise ConfigError(f"a participant of role {member.role} has weight 0")
        member = replace(member, weight=weight)
    if ranges and member.role != "carrier":
        raise ConfigError(f"only carriers hold number ranges; {member.id} is a {member.role}")
    if path.exists():
        if name is not None:
            raise ConfigError(f"{path} exists; --name names a new consortium only")
        cur = _read_any(directory)
        if member.id in cur.by_id:
            raise ConfigError(f"{member.id} is already a participant")
        if any(p.public_key == member.public_key for p in cur.participants):
            raise ConfigError(f"{member.id}'s public key is already another participant's")
        if member.public_key == cur.config_key:
            raise ConfigError(f"{member.id}'s public key is the configuration key")
        number_ranges = dict(cur.number_ranges)
        if ranges:
            number_ranges[member.id] = ranges
        draft = replace(cur, participants=(*cur.participants, member),
                        number_ranges=number_ranges, raw=b"")
    else:
        if member.role != "institute":
            raise ConfigError("a new consortium starts with its institute")
        if not name:
            raise ConfigError("a new consortium needs a name (--name)")
        draft = Consortium(name, (member,), {})
    raw = draft.to_json_bytes()
    checked = Consortium.from_json_bytes(raw, draft=True)  # every node's rules, bar quorums
    directory.mkdir(parents=True, exist_ok=True)
    _replace_file(path, raw)
    # A changed configuration is unsigned until the institute signs it again.
    (directory / "consortium.json.sig").unlink(missing_ok=True)
    return checked


def sign_consortium(directory: Path, config_key: SigningKey,
                    members_key: Path | None = None) -> Consortium:
    """Sign DIR/consortium.json with the configuration key: the exact bytes in
    the file when it already names that key, else the draft naming it. Refuses
    a key that any participant holds (a node's key must never sign the
    configuration every node pins) and a draft naming another key.

    With `members_key` (a file path), a draft that names no members' key gets
    one: the key in that file, or a new one written there (0600), for the
    institute to hand each member but call centres privately; a draft that
    names one refuses a file holding another. The industries and everything
    else of the draft are signed as they are."""
    path = directory / "consortium.json"
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    conf = Consortium.from_json_bytes(raw)
    pub = config_key.public_bytes
    holder = [p.id for p in conf.participants if p.public_key == pub]
    if holder:
        raise ConfigError(f"that key is {holder[0]}'s signing key, not a configuration key")
    if conf.config_key and conf.config_key != pub:
        raise ConfigError("consortium.json names another configuration key")
    key_id = _members_key_id(conf, members_key)
    if not conf.config_key or key_id != conf.members_key_id:
        raw = replace(conf, config_key=pub, members_key_id=key_id, raw=b"").to_json_bytes()
        _replace_file(path, raw)
    sig = Consortium.sign_bytes(raw, config_key)
    _replace_file(directory / "consortium.json.sig", base64.b64encode(sig) + b"\n")
    return Consortium.load(directory, pub)


def _members_key_id(conf: Consortium, path: Path | None) -> bytes:
    """The members' key id the signed configuration names (see sign_consortium)."""
    if path is None:
        return conf.members_key_id
    if path.exists():
        try:
            key = MembersKey.load(path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the members' key {path}: {e}") from e
        if conf.members_key_id and key.id != conf.members_key_id:
            raise ConfigError(f"{path} holds the members' key {key.id.hex()}; consortium.json "
                              f"names {conf.members_key_id.hex()}")
        return key.id
    if conf.members_key_id:
        return conf.members_key_id  # made at an earlier signature, kept elsewhere since
    key = MembersKey.generate()
    key.write(path)
    return key.id


def _read_any(directory: Path) -> Consortium:
    """A signed consortium.json (verified against the key it names) or a draft."""
    if (directory / "consortium.json.sig").exists():
        return Consortium.load(directory)
    try:
        return Consortium.from_json_bytes((directory / "consortium.json").read_bytes(),
                                          draft=True)
    except OSError as e:
        raise ConfigError(f"cannot read {directory / 'consortium.json'}: {e.strerror}") from e


def _replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # readers see the old bytes or the new, never half


# ------------------------------------------------------------------ CA side


def ca_init(ca_dir: Path, name: str, now: datetime) -> bytes:
    """A new consortium CA in `ca_dir`: ca.pem and ca.key (0600). Returns ca.pem."""
    if (ca_dir / "ca.key").exists() or (ca_dir / "ca.pem").exists():
        raise ConfigError(f"{ca_dir} already holds a CA")
    key, cert = make_ca(name, now)
    ca_dir.mkdir(parents=True, exist_ok=True)
    write_private(ca_dir / "ca.key", key)
    (ca_dir / "ca.pem").write_bytes(cert)
    return cert


def ca_sign(
    ca_dir: Path,
    csr_pem: bytes,
    now: datetime,
    *,
    participant_id: str | None = None,
    consortium: Consortium | None = None,
) -> tuple[CsrRequest, bytes]:
    """The CA checks a request (its signature, the participant it names, and
    with `consortium` that the participant is listed and, for an admin
    certificate, runs a node) and issues the certificate."""
    ca_key = read_private(ca_dir / "ca.key")
    try:
        ca_cert = (ca_dir / "ca.pem").read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {ca_dir / 'ca.pem'}: {e.strerror}") from e
    if consortium is not None:
        _, req = read_csr(csr_pem)
        p = consortium.participant(req.participant)
        if p is None:
            raise ConfigError(f"{req.participant!r} is not a participant of {consortium.name}")
        if req.kind == ADMIN and p.role in ISSUES_NOTHING:
            raise ConfigError(f"{p.id} is of role {p.role}: it runs no node, "
                              "so no admin certificate")
    return issue_from_csr(ca_key, ca_cert, csr_pem, now, participant_id)


# ------------------------------------------------------------------ node side


def configure_node(
    directory: Path, pid: str, pin: bytes, now: datetime, *, new_feed: bool = False
) -> NodeConfig:
    """Write DIR/<pid>/node.toml for a participant whose folder holds its keys and
    certificates, after checking everything the node will rely on: the
    consortium verifies against `pin` and lists `pid` with this signing key;
    tls.pem was issued by DIR/ca/ca.pem to `pid`; every key file is 0600.
    `new_feed` is the operator's statement that this participant has never
    issued (its first start); without it an empty store waits for its peers."""
    pdir = directory / pid
    cons = Consortium.load(directory, pin)
    p = cons.participant(pid)
    if p is None:
        raise ConfigError(f"{pid!r} is not a participant of {cons.name}")
    if p.role in ISSUES_NOTHING or not p.member_endpoint or not p.public_endpoint:
        raise ConfigError(f"{pid} runs no node (role {p.role}, no endpoints)")
    if SigningKey.load(pdir / "signing.key").public_bytes != p.public_key:
        raise ConfigError(f"{pdir / 'signing.key'} is not the key consortium.json lists for {pid}")
    read_private(pdir / "tls.key")
    try:
        ca = (directory / "ca" / "ca.pem").read_bytes()
        cert = (pdir / "tls.pem").read_bytes()
    except OSError as e:
        raise ConfigError(f"missing certificate: {e.filename}") from e
    verify_issued_by(cert, ca, now)
    if participant_from_cert(cert) != pid:
        raise ConfigError(f"{pdir / 'tls.pem'} names another participant")
    (pdir / "data").mkdir(exist_ok=True)
    member_port = int(p.member_endpoint.rpartition(":")[2])
    public_port = int(p.public_endpoint.rpartition(":")[2])
    host = _listen_host(p.member_endpoint.rpartition(":")[0])
    # The tiles and metrics endpoints, the log level and the screen rows are in no
    # member.json: a rewritten node.toml keeps the ones it had (an unreadable old file
    # is what configure replaces: then tiles are off, metrics on a free port, the log
    # at info, the rows kept by the roles that screen at their own node).
    try:
        old = NodeConfig.load(pdir / "node.toml")
        tiles, metrics, level = old.tiles_listen, old.metrics_listen, old.log_level
        members_key: Path | None = old.members_key
        rows = old.screen_rows
    except ConfigError:
        tiles, metrics, level = "", _endpoint(host, 0), "info"
        members_key = None  # members.key in the participant's folder
        rows = p.role in SCREEN_ROWS_ROLES
    cfg = NodeConfig(
        participant=pid,
        consortium=directory.resolve(),
        data_dir=(pdir / "data").resolve(),
        signing_key=(pdir / "signing.key").resolve(),
        tls_key=(pdir / "tls.key").resolve(),
        tls_cert=(pdir / "tls.pem").resolve(),
        ca_cert=(directory / "ca" / "ca.pem").resolve(),
        member_listen=_endpoint(host, member_port),
        public_listen=_endpoint(host, public_port),
        metrics_listen=metrics,
        institute_key=pin,
        new_feed=new_feed,
        tiles_listen=tiles,
        log_level=level,
        members_key=members_key,
        screen_rows=rows,
    )
    cfg.write(pdir / "node.toml")  # paths relative to the file: a copied folder opens its own
    load_consortium(NodeConfig.for_participant(directory, pid))  # what the node will do
    return cfg


def parse_pin(value: str) -> bytes:
    """A configuration key as given on the command line: base64 of the 32 raw
    bytes, or a file holding that (such as `config/config.pub`)."""
    if Path(value).is_file():
        try:
            value = Path(value).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the pin from {value}") from e
    try:
        pin = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError("--pin must be the base64 configuration public key") from e
    if len(pin) != 32:
        raise ConfigError("--pin must be a 32-byte Ed25519 public key in base64")
    return pin


# ------------------------------------------------------------------ command line


def cmd_keys_generate(args: argparse.Namespace, _connect: Connect) -> int:
    member = public = ""
    if args.role not in ISSUES_NOTHING:
        member = _endpoint(args.host, args.member_port)
        public = _endpoint(args.host, args.public_port)
    desc = generate_member(Path(args.out), args.id, args.role, [args.host], member, public,
                           args.name or "")
    pdir = Path(args.out) / args.id
    show(args, {"id": desc["id"], "role": desc["role"], "public_key": desc["public_key"],
                  "member": str(pdir / MEMBER_FILE), "dir": str(pdir)})
    return 0


def cmd_consortium_keygen(args: argparse.Namespace, _connect: Connect) -> int:
    key = make_config_key(Path(args.out))
    show(args, {"key": str(Path(args.out)),
                  "public_key": base64.b64encode(key.public_bytes).decode()})
    return 0


def cmd_consortium_add_member(args: argparse.Namespace, _connect: Connect) -> int:
    ranges = tuple(x.strip() for x in args.ranges.split(",") if x.strip()) if args.ranges else ()
    draft = add_member(Path(args.dir), read_member(Path(args.member)), name=args.name,
                       weight=args.weight, ranges=ranges)
    show(args, {"name": draft.name, "participants": [p.id for p in draft.participants],
                  "signed": False})
    return 0


def cmd_consortium_sign(args: argparse.Namespace, _connect: Connect) -> int:
    # The members' key lives with the configuration key (offline), never in DIR, which is
    # published: the institute hands it to each member but call centres privately.
    members = Path(args.members_key) if args.members_key else Path(args.key).parent / KEY_FILE
    conf = sign_consortium(Path(args.dir), SigningKey.load(Path(args.key)), members)
    show(args, {"name": conf.name, "participants": [p.id for p in conf.participants],
                  "config_key": base64.b64encode(conf.config_key).decode(), "signed": True,
                  "members_key": str(members), "members_key_id": conf.members_key_id.hex()})
    return 0


def cmd_ca_init(args: argparse.Namespace, _connect: Connect) -> int:
    ca_init(Path(args.ca), args.name, datetime.now(UTC))
    show(args, {"ca": str(Path(args.ca) / "ca.pem")})
    return 0


def cmd_ca_sign(args: argparse.Namespace, _connect: Connect) -> int:
    try:
        csr = Path(args.csr).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {args.csr}: {e.strerror}") from e
    # The CA checks names against the configuration verified with the pinned key only.
    cons = (client.load_pinned(Path(args.consortium), args.institute_key, None)
            if args.consortium else None)
    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"{out} exists; a certificate is never overwritten")
    req, cert = ca_sign(Path(args.ca), csr, datetime.now(UTC), participant_id=args.id,
                        consortium=cons)
    out.write_bytes(cert)
    show(args, {"kind": req.kind, "participant": req.participant, "cert": str(out)})
    return 0


def cmd_node_configure(args: argparse.Namespace, _connect: Connect) -> int:
    if not args.as_id:
        raise ConfigError("--as ID is required: the participant whose node this is")
    d = client.consortium_dir(args.consortium)
    cfg = configure_node(d, args.as_id, parse_pin(args.pin), datetime.now(UTC),
                         new_feed=args.new_feed)
    show(args, {"participant": cfg.participant, "node_toml": str(d / args.as_id / "node.toml"),
                  "member_listen": cfg.member_listen, "public_listen": cfg.public_listen})
    return 0
