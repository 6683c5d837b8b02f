"""Keys, the consortium configuration and its signature, the TLS CA.

Imports only `cryptography` (and the standard library).

    KeysError
    ├── ConfigError           consortium.json / node.toml does not parse or breaks a rule
    ├── ConfigSignatureError  consortium.json is not signed by the pinned institute key
    ├── KeyFileError          a key file is missing, unreadable or has loose permissions
    └── SealError             a sealed number does not open with the members' key
"""


class KeysError(Exception):
    """Base of every error in `keys`."""


class ConfigError(KeysError):
    pass


class ConfigSignatureError(KeysError):
    pass


class KeyFileError(KeysError):
    pass


class SealError(KeysError):
    """A sealed value that does not open with the members' key (keys/sealing.py);
    ledger.sealing.SealError, a MalformedRecord, derives from it."""
