"""The consortium's own certificate authority and the nodes' TLS certificates.

Members talk over mutual TLS. The CA puts each node's participant id in its
certificate twice: as the subject common name and as the SAN URI
`markex://participant/<id>`, which is what `participant_from_cert` reads. It
also carries the DNS SAN `<id>.participant.markex.invalid`
(`participant_dns_name`): a client dialling participant X asks TLS for that
name (gRPC's `grpc.ssl_target_name_override`), so the handshake itself refuses
a server certificate the CA issued to another participant. A
record is still trusted by its signature, never by the certificate of the node
that relayed it; the certificate only says which member is on the line.

Keys are ECDSA P-256 (what every TLS stack speaks), as unencrypted PKCS#8 PEM.
Time is always an argument: nothing here reads the clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keys import ConfigError, KeyFileError

PARTICIPANT_URI_PREFIX = "markex://participant/"
CA_VALIDITY = timedelta(days=3650)
NODE_VALIDITY = timedelta(days=730)
# Certificates start a little before `now` so a peer whose clock lags still accepts them.
BACKDATE = timedelta(minutes=5)
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
PARTICIPANT_DNS_SUFFIX = ".participant.markex.invalid"  # .invalid: never a real host (RFC 6761)


def make_ca(name: str, now: datetime) -> tuple[bytes, bytes]:
    """A new consortium CA: (private key PEM, self-signed certificate PEM), valid 10 years."""
    if not name:
        raise ConfigError("the CA needs a non-empty name")
    start = _utc(now) - BACKDATE
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "markex consortium"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def make_node_cert(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    participant_id: str,
    hosts: list[str],
    now: datetime,
) -> tuple[bytes, bytes]:
    """A node's key and certificate, issued by the CA: (key PEM, certificate PEM).

    The certificate names the participant (CN, SAN URI and the DNS SAN
    `participant_dns_name(participant_id)`), serves "localhost",
    127.0.0.1 and every entry of `hosts` (IP literals as IP SANs, the rest as
    DNS names), is good for both ends of mutual TLS, and lasts 2 years (never
    past the CA's own end).
    """
    _check_participant_id(participant_id)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(
        ca_key_pem, ca_cert_pem, key.public_key(), participant_id,
        _alt_names(participant_id, hosts),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], now,
    )
    return _key_pem(key), cert


def _issue(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    pub: ec.EllipticCurvePublicKey,
    common_name: str,
    names: list[x509.GeneralName],
    ekus: list[x509.ObjectIdentifier],
    now: datetime,
) -> bytes:
    """The CA's leaf certificate (PEM) for `pub`: every property but the names and
    the extended key usages is the CA's (validity 2 years, never past its own end)."""
    ca_key = _load_ca_key(ca_key_pem)
    ca_cert = _load_cert(ca_cert_pem)
    if ca_key.public_key().public_numbers() != _ec_public(ca_cert).public_numbers():
        raise ConfigError("the CA key does not belong to the CA certificate")
    start = _utc(now) - BACKDATE
    end = min(start + NODE_VALIDITY, ca_cert.not_valid_after_utc)
    if end <= start:
        raise ConfigError("the CA certificate has expired; make a new CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def participant_dns_name(participant_id: str) -> str:
    """The DNS name only participant `participant_id`'s certificate carries:
    the TLS target name of every channel that dials that participant."""
    _check_participant_id(participant_id)
    return participant_id + PARTICIPANT_DNS_SUFFIX


def participant_from_cert(cert_pem_or_der: bytes) -> str:
    """The participant id the CA put in a certificate (PEM or DER).

    Read from the SAN URI `markex://participant/<id>`, else from the subject
    CN. Raises ConfigError when the certificate names no participant, names
    two, or its CN disagrees with its URI. This does not check who issued the
    certificate: that is `verify_issued_by` (or the TLS handshake).
    """
    cert = _load_cert(cert_pem_or_der)
    from_uri: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as e:
        # extensions are parsed lazily: a garbled or repeated one surfaces here
        raise ConfigError(f"certificate extensions do not parse: {e}") from e
    if san is not None:
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(PARTICIPANT_URI_PREFIX):
                from_uri.add(uri[len(PARTICIPANT_URI_PREFIX):])
    try:
        subject = cert.subject  # parsed lazily too: a garbled name surfaces here
    except ValueError as e:
        raise ConfigError(f"certificate subject does not parse: {e}") from e
    cns = [
        a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if isinstance(a.value, str)
    ]
    if len(from_uri) > 1:
        raise ConfigError(f"certificate names several participants: {sorted(from_uri)}")
    if from_uri:
        pid = from_uri.pop()
        if cns and cns[0] != pid:
            raise ConfigError(
                f"certificate CN {cns[0]!r} disagrees with its participant URI {pid!r}"
            )
    elif cns:
        pid = cns[0]
    else:
        raise ConfigError("certificate names no participant (no participant URI, no CN)")
    _check_participant_id(pid)
    return pid


def verify_issued_by(
    cert_pem: bytes, ca_cert_pem: bytes, now: datetime | None = None
) -> None:
    """Raise ConfigError unless the consortium CA issued `cert_pem`.

    Checks that the issuer is a CA certificate, that the certificate names it
    as issuer and that its signature verifies with the CA's public key. With
    `now`, also that both certificates are valid at that time.
    """
    cert = _load_cert(cert_pem)
    ca = _load_cert(ca_cert_pem)
    try:
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ConfigError("the issuer certificate is not a CA certificate")
    try:
        cert.verify_directly_issued_by(ca)
    except ValueError as e:
        raise ConfigError(f"certificate was not issued by this CA: {e}") from e
    except InvalidSignature as e:
        raise ConfigError("certificate was not signed by this CA's key") from e
    except TypeError as e:
        raise ConfigError(f"cannot check the certificate's signature: {e}") from e
    if now is not None:
        t = _utc(now)
        for what, c in (("certificate", cert), ("CA certificate", ca)):
            if not c.not_valid_before_utc <= t <= c.not_valid_after_utc:
                raise ConfigError(
                    f"{what} is valid from {c.not_valid_before_utc:%Y-%m-%d %H:%M} "
                    f"to {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not at {t:%Y-%m-%d %H:%M}"
                )


# ---- internals ---------------------------------------------------------------


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ConfigError("`now` must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_cert(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as e:  # InvalidVersion: not a ValueError
        raise ConfigError(f"not an X.509 certificate (PEM or DER): {e}") from e


def _load_ca_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError("the CA key is not an unencrypted PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError("the CA key is not an ECDSA key")
    return key


def _ec_public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise ConfigError("the CA certificate does not hold an ECDSA key")
    return pub


def _check_participant_id(pid: str) -> None:
    # The same rule consortium.json applies, so a certificate can never name an id it could not.
    if not pid or not all(c.isalnum() or c in "-_." for c in pid):
        raise ConfigError(f"bad participant id {pid!r}")


def check_hosts(hosts: Sequence[str]) -> None:
    """Raise ConfigError unless every entry is a name a node certificate may
    carry: an IP address or a DNS name, never empty, never a participant name."""
    _alt_names("check", list(hosts))


def _alt_names(participant_id: str, hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(PARTICIPANT_URI_PREFIX + participant_id),
        x509.DNSName(participant_dns_name(participant_id)),
    ]
    seen: set[str] = {participant_dns_name(participant_id)}
    for host in (*DEFAULT_HOSTS, *hosts):
        host = host.strip()
        if not host:
            raise ConfigError("a certificate host name must not be empty")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            name = host.lower().rstrip(".")
            if name.endswith(PARTICIPANT_DNS_SUFFIX):
                # Only the participant's own name goes there, or one node could pass for another.
                raise ConfigError(f"{host!r} is a participant name, not a host name") from None
            if not all(label and (label.replace("-", "").isalnum() or label == "*")
                       for label in name.split(".")) or not name.isascii():
                raise ConfigError(f"{host!r} is neither an IP address nor a DNS name") from None
            if name not in seen:
                seen.add(name)
                names.append(x509.DNSName(name))
            continue
        if str(ip) not in seen:
            seen.add(str(ip))
            names.append(x509.IPAddress(ip))
    return names


# ---- certificate requests and admin certificates (the cross-organisation flow) ------

ADMIN_URI_PREFIX = "markex://admin/"
MEMBER, ADMIN = "member", "admin"
CERT_KINDS = (MEMBER, ADMIN)


def admin_common_name(participant_id: str) -> str:
    """The CN of an admin certificate: never a valid participant id (it holds
    spaces), so `participant_from_cert` refuses an admin certificate."""
    return f"markex admin {participant_id}"


def make_csr(
    participant_id: str, kind: str = MEMBER, hosts: list[str] | None = None
) -> tuple[bytes, bytes]:
    """A new key and a certificate request for it: (key PEM, CSR PEM).

    `kind` "member" asks for the node's TLS certificate (CN and SAN URI
    `markex://participant/<id>`, plus `hosts` as DNS/IP SANs); "admin" asks for
    the operator's client certificate for the node's Admin API (SAN URI
    `markex://admin/<id>`, no hosts). The key never leaves the caller.
    """
    _check_participant_id(participant_id)
    key = ec.generate_private_key(ec.SECP256R1())
    if kind == MEMBER:
        cn = participant_id
        names = _alt_names(participant_id, list(hosts or []))
    elif kind == ADMIN:
        if hosts:
            raise ConfigError("an admin certificate serves no host")
        cn = admin_common_name(participant_id)
        names = [x509.UniformResourceIdentifier(ADMIN_URI_PREFIX + participant_id)]
    else:
        raise ConfigError(f"certificate kind must be one of {', '.join(CERT_KINDS)}")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CsrRequest:
    """What a checked certificate request asks for."""

    kind: str                 # "member" or "admin"
    participant: str
    hosts: tuple[str, ...]    # DNS names and IP literals (member certificates only)


def read_csr(csr_pem: bytes) -> tuple[x509.CertificateSigningRequest, CsrRequest]:
    """Parse and check a request: its signature by its own key, an ECDSA P-256
    key, exactly one markex URI naming a valid participant id, a CN that agrees
    with it, and nothing else in the SAN but host names. Raises ConfigError."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise ConfigError(f"not a PEM certificate request: {e}") from e
    try:
        valid = csr.is_signature_valid
        pub = csr.public_key()
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cns = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except x509.ExtensionNotFound as e:
        raise ConfigError("the request names no participant (no subject alternative name)") from e
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as e:
        raise ConfigError(f"the request does not parse: {e}") from e
    if not valid:
        raise ConfigError("the request is not signed by the key it holds")
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise ConfigError("the request's key must be ECDSA P-256")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    marked = [
        (MEMBER, u[len(PARTICIPANT_URI_PREFIX):]) if u.startswith(PARTICIPANT_URI_PREFIX)
        else (ADMIN, u[len(ADMIN_URI_PREFIX):])
        for u in uris if u.startswith((PARTICIPANT_URI_PREFIX, ADMIN_URI_PREFIX))
    ]
    if len(marked) != 1 or len(uris) != 1:
        raise ConfigError("the request must name exactly one markex participant or admin URI")
    kind, pid = marked[0]
    _check_participant_id(pid)
    expect_cn = pid if kind == MEMBER else admin_common_name(pid)
    if cns != [expect_cn]:
        raise ConfigError(f"the request's CN must be {expect_cn!r}, got {cns!r}")
    hosts = [str(v) for v in san.get_values_for_type(x509.DNSName)]
    hosts += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    if len(hosts) + 1 != len(list(san)):
        raise ConfigError("the request's alternative names hold more than the URI and hosts")
    if kind == ADMIN and hosts:
        raise ConfigError("an admin request names no host")
    own_reserved = f"{pid}.participant.markex.invalid"
    asked: list[str] = []
    for h in hosts:
        name = h.lower().rstrip(".")
        if "*" in name:
            raise ConfigError(f"the request asks for a wildcard name {h!r}")
        if name.endswith(".invalid"):
            # Names under .invalid (RFC 6761) are the CA's own naming of participants:
            # a request may carry its own (the CA adds it anyway), never another's.
            if name != own_reserved:
                raise ConfigError(f"the request asks for the reserved name {h!r}")
            continue
        asked.append(h)
    _alt_names(pid, asked)  # the same host rules make_node_cert applies
    return csr, CsrRequest(kind, pid, tuple(asked))


def issue_from_csr(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    csr_pem: bytes,
    now: datetime,
    participant_id: str | None = None,
) -> tuple[CsrRequest, bytes]:
    """The CA signs a checked request: (what it asked for, certificate PEM).

    Only the request's key and checked names are copied; every other property
    (validity, key usage, EKU) is the CA's. A member certificate is good for
    both ends of mutual TLS; an admin certificate only as a client. With
    `participant_id`, the request must name that participant.
    """
    csr, req = read_csr(csr_pem)
    if participant_id is not None and req.participant != participant_id:
        raise ConfigError(
            f"the request names {req.participant!r}, not the expected {participant_id!r}"
        )
    pub = csr.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)  # read_csr checked it
    if req.kind == MEMBER:
        cn = req.participant
        names = _alt_names(req.participant, list(req.hosts))
        ekus = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    else:
        cn = admin_common_name(req.participant)
        names = [x509.UniformResourceIdentifier(ADMIN_URI_PREFIX + req.participant)]
        ekus = [ExtendedKeyUsageOID.CLIENT_AUTH]
    return req, _issue(ca_key_pem, ca_cert_pem, pub, cn, names, ekus, now)


def make_admin_cert(
    ca_key_pem: bytes, ca_cert_pem: bytes, participant_id: str, now: datetime
) -> tuple[bytes, bytes]:
    """An operator's admin client key and certificate (key PEM, certificate PEM),
    made as the cross-organisation flow makes them: a request, then the CA."""
    key, csr = make_csr(participant_id, ADMIN)
    _, cert = issue_from_csr(ca_key_pem, ca_cert_pem, csr, now, participant_id)
    return key, cert


def admin_from_cert(cert_pem_or_der: bytes) -> str:
    """The participant whose operator holds this admin certificate (its SAN URI
    `markex://admin/<id>`). Raises ConfigError for any other certificate, a
    node's TLS certificate included. Who issued it is the handshake's check."""
    cert = _load_cert(cert_pem_or_der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound as e:
        raise ConfigError("not an admin certificate (no alternative names)") from e
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as e:
        raise ConfigError(f"certificate extensions do not parse: {e}") from e
    admins = [u[len(ADMIN_URI_PREFIX):] for u in uris if u.startswith(ADMIN_URI_PREFIX)]
    if any(u.startswith(PARTICIPANT_URI_PREFIX) for u in uris):
        raise ConfigError("a member certificate is not an admin certificate")
    if len(admins) != 1:
        raise ConfigError("not an admin certificate (it must name exactly one markex admin URI)")
    _check_participant_id(admins[0])
    return admins[0]
