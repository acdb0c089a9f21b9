"""TLS for DICOM and the web: the PS3.15 BCP 195 profile, certificates and keys from files.

PS3.15 Annex B.9/B.10 (BCP 195, RFC 7525 and its non-downgrading variant): TLS 1.2 or
newer only, and for TLS 1.2 only the AEAD suites with forward secrecy that BCP 195
recommends; TLS 1.3 suites are all acceptable. The key's passphrase, when it has one,
comes from a file or the environment (``RADPILOT_TLS_KEY_PASSWORD``) and is never logged.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from radpilot.config import Settings

# RFC 7525 section 4.2 recommended suites, in OpenSSL's names.
BCP195_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)
KEY_PASSWORD_ENV = "RADPILOT_TLS_KEY_PASSWORD"


class TlsConfigError(ValueError):
    """A certificate, key or CA file is missing or unusable; the message names the file, never a secret."""


@dataclass(frozen=True)
class TlsFiles:
    """Our certificate chain and key; the CA bundle that peers' certificates must chain to (for mutual TLS)."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_client_cert: bool = False
    key_password_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles | None:
        """The configured certificate, or None when no tls_cert_file is set."""
        if settings.tls_cert_file is None:
            return None
        return cls(
            settings.tls_cert_file,
            settings.tls_key_file or settings.tls_cert_file,
            settings.tls_ca_file,
            settings.tls_require_client_cert,
            settings.tls_key_password_file,
        )

    def key_password(self) -> str | None:
        if self.key_password_file is not None:
            try:
                return self.key_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise TlsConfigError(f"cannot read the TLS key password file {self.key_password_file}: {exc.strerror}") from None
        return os.environ.get(KEY_PASSWORD_ENV) or None

    def server_context(self) -> ssl.SSLContext:
        """A server context: BCP 195, our certificate; peers must present one signed by ``ca_file`` when required."""
        if self.require_client_cert and self.ca_file is None:
            raise TlsConfigError("mutual TLS needs a CA file to check client certificates against (tls_ca_file)")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _bcp195(context)
        self._load(context)
        if self.ca_file is not None:
            _load_ca(context, self.ca_file)
            context.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        for what, path in (("certificate", self.cert_file), ("key", self.key_file)):
            if not path.is_file():
                raise TlsConfigError(f"TLS {what} file {path} does not exist")
        try:
            context.load_cert_chain(str(self.cert_file), str(self.key_file), password=self.key_password())
        except ssl.SSLError as exc:
            raise TlsConfigError(
                f"TLS certificate {self.cert_file} and key {self.key_file} cannot be used together: {exc.reason}"
            ) from None


def _bcp195(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE


def _load_ca(context: ssl.SSLContext, ca_file: Path) -> None:
    if not ca_file.is_file():
        raise TlsConfigError(f"TLS CA file {ca_file} does not exist")
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise TlsConfigError(f"TLS CA file {ca_file} is not a PEM certificate bundle: {exc.reason}") from None


def client_context(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """A client context under BCP 195 that checks the server against ``ca_file``, with our certificate for mutual TLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _bcp195(context)
    _load_ca(context, ca_file)
    if cert_file is not None:
        TlsFiles(cert_file, key_file or cert_file)._load(context)
    return context
