"""Keys, the consortium configuration and its signature, the TLS CA.

Imports only `cryptography` (and the standard library).

    KeysError
    ├── ConfigError           consortium.json / node.toml does not parse or breaks a rule
    ├── ConfigSignatureError  consortium.json is not signed by the pinned institute key
    └── KeyFileError          a key file is missing, unreadable or has loose permissions
"""


class KeysError(Exception):
    """Base of every error in `keys`."""


class ConfigError(KeysError):
    pass


class ConfigSignatureError(KeysError):
    pass


class KeyFileError(KeysError):
    pass
