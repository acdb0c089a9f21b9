"""The one settings object of RadPilot.

Every option can be given on the command line, as a ``RADPILOT_*`` environment
variable, or (for the lists of remote nodes and allowed peers) in a YAML file.
Nothing else in the package keeps global configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AE_TITLE_MAX_LENGTH = 16


def _validate_ae_title(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("AE title must not be empty")
    if len(stripped) > AE_TITLE_MAX_LENGTH:
        raise ValueError(f"AE title {stripped!r} is longer than {AE_TITLE_MAX_LENGTH} characters")
    if "\\" in stripped or any(ord(c) < 32 for c in stripped):
        raise ValueError(f"AE title {stripped!r} contains a backslash or control character")
    return stripped


class RemoteNode(BaseModel):
    """A DICOM node RadPilot may talk to (a PACS, a modality, a workstation)."""

    name: str = Field(description="Short name used on the command line, e.g. 'pacs'")
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    dicomweb_url: str | None = Field(default=None, description="Base URL of its DICOMweb service, if any")
    transport: Literal["dimse", "dicomweb"] = Field(
        default="dimse", description="How results are sent to it: C-STORE (dimse) or STOW-RS (dicomweb)"
    )

    def model_post_init(self, __context: Any) -> None:
        if self.transport == "dicomweb" and not self.dicomweb_url:
            raise ValueError(f"node {self.name!r} uses transport 'dicomweb' but has no dicomweb_url")

    _check_ae = field_validator("ae_title")(lambda cls, v: _validate_ae_title(v))


class AllowedPeer(BaseModel):
    """A calling AE title (and optionally the host it must come from) allowed to associate."""

    ae_title: str
    host: str | None = None

    _check_ae = field_validator("ae_title")(lambda cls, v: _validate_ae_title(v))


class Hl7Destination(BaseModel):
    """An HL7 v2 receiver (RIS, EHR interface engine) that takes ORU^R01 results over MLLP."""

    name: str = Field(description="Short name, e.g. 'ris'")
    host: str
    port: int = Field(ge=1, le=65535)
    receiving_application: str = Field(default="", description="MSH-5")
    receiving_facility: str = Field(default="", description="MSH-6")


class ResearchExportTarget(BaseModel):
    """A DICOMweb server that research exports may be sent to by name (a research PACS, an XNAT, a trial archive)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Short name a researcher picks, e.g. 'research-pacs'")
    dicomweb_url: str = Field(pattern=r"^https?://", description="Base URL of its DICOMweb service (STOW-RS at URL/studies)")
    bearer_token_file: Path | None = Field(default=None, description="File holding the bearer token sent to it (never logged)")


class Settings(BaseSettings):
    """RadPilot's settings (environment prefix ``RADPILOT_``)."""

    model_config = SettingsConfigDict(env_prefix="RADPILOT_", extra="ignore")

    data_dir: Path = Field(default=Path(".radpilot"), description="Archive files and the SQLite index live here")
    ae_title: str = "RADPILOT"
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    http_port: int = Field(default=8000, ge=0, le=65535)
    bind_address: str = Field(default="127.0.0.1", description="Address the DICOM and HTTP listeners bind to")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir")
    nodes_file: Path | None = Field(default=None, description="YAML file with 'nodes' and 'allowed_peers' lists")
    nodes: list[RemoteNode] = Field(default_factory=list)
    allowed_peers: list[AllowedPeer] | None = Field(default=None, description="If set, only these calling AE titles may associate")
    ohif_dir: Path | None = Field(default=None, description="Built OHIF viewer (dist/); default third_party/ohif/dist")
    rules_file: Path | None = Field(default=None, description="Routing rules YAML; default: the rules shipped with RadPilot")
    quiet_period_s: float = Field(default=30.0, ge=0, description="A study is complete when no instance arrived for this long")
    analysis_enabled: bool = Field(default=True, description="Route complete studies to analyses automatically")
    queue_backend: Literal["embedded", "celery"] = Field(default="embedded", description="Where jobs run")
    workers: int = Field(default=1, ge=0, description="Embedded worker processes started by 'radpilot serve'")
    broker_url: str | None = Field(default=None, description="Celery broker, e.g. redis://127.0.0.1:6379/0")
    dicom_acse_timeout: float = Field(default=30.0, gt=0, description="Association set-up/release timeout (s)")
    dicom_dimse_timeout: float = Field(default=60.0, gt=0, description="Wait for a DIMSE response (s)")
    dicom_network_timeout: float = Field(default=60.0, gt=0, description="Idle association timeout (s)")
    dicom_connection_timeout: float = Field(default=10.0, gt=0, description="TCP connect timeout for outgoing associations (s)")
    dicom_drain_timeout: float = Field(default=60.0, gt=0, description="On stop, wait this long for associations in progress (s)")
    dicom_max_pdu_bytes: int = Field(
        default=16 * 1024**2,
        ge=4096,
        description="Maximum PDU length RadPilot announces as DIMSE SCP and enforces: a longer PDU ends the association (bytes)",
    )
    dicom_max_dataset_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="Largest dataset a DIMSE peer may send (bytes): pynetdicom holds it in memory; beyond it the association ends",
    )
    dicom_min_transfer_rate: int = Field(
        default=16 * 1024,
        gt=0,
        description=(
            "Slowest a DIMSE peer may send: a PDU must arrive within dicom_network_timeout plus its length at this rate "
            "(bytes/s), so a peer trickling bytes (slow-loris) is cut off"
        ),
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="An HTTP client must send a request's line and headers within this long, or the connection is closed (s)",
    )
    http_body_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="A STOW-RS body that sends nothing for this long is refused with 408 (s)"
    )
    max_request_bytes: int = Field(
        default=100 * 1024**2,
        gt=0,
        description="Largest HTTP request body accepted outside /dicomweb (bytes; 413 above it): dictation audio, JSON, forms",
    )
    max_stow_bytes: int = Field(default=2 * 1024**3, gt=0, description="Largest STOW-RS request body accepted (bytes)")
    max_inflated_bytes: int = Field(
        default=512 * 1024**2,
        gt=0,
        description=(
            "Largest size a Deflated Explicit VR Little Endian dataset may inflate to (bytes); a larger one is refused "
            "(C-STORE 0xC000, STOW-RS FailureReason 0xC000) after inflating at most this much, in 8 MiB steps (about 2 s of CPU for the default): a deflate bomb"
        ),
    )
    min_free_bytes: int = Field(
        default=512 * 1024**2,
        ge=0,
        description=(
            "Free space kept on the archive's disk; an instance that would leave less is refused "
            "(C-STORE 0xA700, STOW-RS 503) before anything is written, and accepted again once space returns"
        ),
    )
    durability: Literal["full", "file", "none"] = Field(
        default="file",
        description=(
            "full: fsync file, folder and index before acknowledging; file: fsync the file before acknowledging, "
            "rename and index without waiting for the disk, and re-index after an unclean stop; none: no fsync"
        ),
    )
    organisation: str = Field(
        default="RadPilot", description="Verifying Organization written into the SR a radiologist verifies (the hospital's name)"
    )
    # Sign-in and sessions (issue 16). The session cookie is HttpOnly and SameSite=Lax; Secure when the
    # request came over HTTPS, or always when session_cookie_secure is true.
    session_max_age_s: int = Field(default=12 * 3600, gt=0, description="A session ends this long after sign-in (s)")
    session_idle_timeout_s: int = Field(default=3600, gt=0, description="A session ends after this long without a request (s)")
    session_cookie_secure: bool = Field(default=False, description="Mark the session cookie Secure even on plain HTTP")
    login_max_failures: int = Field(default=5, ge=1, description="Wrong passwords in login_window_s before a user is locked out")
    login_window_s: int = Field(default=900, gt=0, description="The window in which wrong passwords are counted (s)")
    login_lockout_s: int = Field(default=900, gt=0, description="How long a locked-out user is refused (s)")
    pseudonym_secret_file: Path | None = Field(
        default=None, description="Secret the researcher's patient pseudonyms derive from; default data_dir/pseudonym.key (created)"
    )
    oidc_issuer: str | None = Field(default=None, description="OpenID Connect issuer URL of the hospital's single sign-on (optional)")
    oidc_client_id: str | None = Field(default=None, description="RadPilot's client ID at the OpenID Connect provider")
    oidc_client_secret_file: Path | None = Field(default=None, description="File holding the OpenID Connect client secret")
    oidc_username_claim: str = Field(default="preferred_username", description="ID token claim that names the RadPilot user")
    oidc_scope: str = Field(default="openid profile", description="Scopes asked of the OpenID Connect provider")
    create_first_users: bool = Field(
        default=True, description="On a node without users, 'radpilot serve' creates an administrator and a radiologist"
    )
    login_max_failures_per_client: int = Field(
        default=50, ge=1, description="Wrong sign-ins from one address in login_window_s before that address is refused"
    )
    dictation_model_en: str = Field(
        default="whisper-tiny.en", description="English dictation model (a manifest in radpilot/dictation/models)"
    )
    dictation_model_ko: str | None = Field(
        default=None,
        description="Korean dictation model: 'whisper-base' recognises Korean but is unvalidated (no Korean speech corpus here), so it is opt-in",
    )
    dictation_max_seconds: float = Field(default=300.0, gt=0, description="Longest dictation clip or stream accepted (s)")
    dictation_threads: int = Field(default=2, ge=1, description="CPU threads of the speech recogniser")
    dictation_beam_size: int = Field(default=5, ge=1, description="Beam width of the final (not the partial) recognition")
    dictation_command_rescoring: bool = Field(
        default=True,
        description="Check a short clip without a heard voice command against the command phrases (radpilot.dictation.service)",
    )
    # 0.25 s: the first partial came 0.80-0.96 s after speech onset against 1.05-1.18 s at 0.5 s (benchmarks/dictation_wer.py,
    # alternated in one session under load); partials never overlap, so a shorter interval costs no more than back-to-back decoding.
    dictation_partial_interval_s: float = Field(default=0.25, gt=0, description="Streaming: new audio (s) before the next partial text")
    log_level: str = "INFO"
    report_templates_dir: Path | None = Field(
        default=None, description="Folder of report template YAML files overriding the shipped ones of the same name"
    )
    hl7_destinations: list[Hl7Destination] = Field(default_factory=list, description="MLLP receivers of signed reports (ORU^R01)")
    hl7_sending_application: str = Field(default="RADPILOT", description="MSH-3 of the ORU messages")
    hl7_sending_facility: str = Field(default="RADIOLOGY", description="MSH-4 of the ORU messages")
    fhir_base_url: str | None = Field(default=None, description="FHIR R4 server that receives signed reports (POST DiagnosticReport)")
    message_timeout_s: float = Field(default=30.0, gt=0, description="Connect and answer timeout for MLLP and FHIR deliveries (s)")
    report_delivery_max_attempts: int = Field(
        default=8, ge=1, description="Attempts of an HL7 or FHIR delivery before it is marked failed (retried with backoff)"
    )
    dicom_store_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Second DIMSE port for C-STORE and C-ECHO only, received on dcmtk's network layer (faster ingest; the same "
            "archive, statuses, peers and audit as dicom_port); needs the native receiver that 'make setup' builds"
        ),
    )
    dicom_tls_port: int | None = Field(
        default=None, ge=0, le=65535, description="Second DIMSE port, TLS only (BCP 195); needs tls_cert_file"
    )
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (chain) for DICOM TLS and HTTPS")
    tls_key_file: Path | None = Field(
        default=None, description="PEM private key of tls_cert_file (passphrase: RADPILOT_TLS_KEY_PASSWORD or a file)"
    )
    tls_key_password_file: Path | None = Field(default=None, description="File holding the key's passphrase")
    tls_ca_file: Path | None = Field(default=None, description="CA bundle that client certificates must chain to")
    tls_require_client_cert: bool = Field(default=False, description="Mutual TLS: refuse peers without a certificate signed by tls_ca_file")
    https: bool = Field(default=True, description="Serve the web over HTTPS when tls_cert_file is set")
    audit_source_id: str = Field(default="RADPILOT", description="AuditSourceID in DICOM audit messages")
    audit_syslog_host: str | None = Field(default=None, description="Syslog collector (TLS, RFC 5425) the audit trail is forwarded to")
    audit_syslog_port: int = Field(default=6514, ge=1, le=65535)
    audit_forward_interval_s: float = Field(default=5.0, gt=0, description="How often 'radpilot serve' forwards new audit rows")
    audit_syslog_ca_file: Path | None = Field(default=None, description="CA certificate that signed the collector's certificate")
    audit_syslog_cert_file: Path | None = Field(default=None, description="Our client certificate for the collector (optional)")
    audit_syslog_key_file: Path | None = Field(default=None, description="Key of that client certificate")
    deid_key_file: Path | None = Field(
        default=None, description="Fernet key file for de-identification pseudonyms and the mapping; else env RADPILOT_DEID_KEY"
    )
    deid_mapping_file: Path | None = Field(
        default=None, description="Encrypted re-identification mapping; default data_dir/deid-mapping.fernet (never inside an output)"
    )
    research_export_dir: Path | None = Field(
        default=None, description="Research exports started from the web go into folders here; default data_dir/research-exports"
    )
    research_export_targets: list[ResearchExportTarget] = Field(
        default_factory=list, description="DICOMweb servers research exports may be sent to, by name (JSON list)"
    )

    _check_ae = field_validator("ae_title")(lambda cls, v: _validate_ae_title(v))

    def model_post_init(self, __context: Any) -> None:
        if self.nodes_file is not None:
            self._load_nodes_file(self.nodes_file)
        if self.dicom_tls_port is not None and self.tls_cert_file is None:
            raise ValueError("dicom_tls_port needs tls_cert_file (and tls_key_file): a TLS port without a certificate cannot accept anyone")

    def _load_nodes_file(self, path: Path) -> None:
        if not path.is_file():
            raise ValueError(f"nodes file {path} does not exist")
        content = yaml.safe_load(path.read_text()) or {}
        if not isinstance(content, dict):
            raise ValueError(f"nodes file {path} must hold a mapping with 'nodes' and/or 'allowed_peers'")
        unknown = set(content) - {"nodes", "allowed_peers"}
        if unknown:
            raise ValueError(f"nodes file {path} has unknown keys {sorted(unknown)}; expected 'nodes', 'allowed_peers'")
        self.nodes = [RemoteNode(**n) for n in content.get("nodes") or []] + list(self.nodes)
        if content.get("allowed_peers") is not None:
            self.allowed_peers = [AllowedPeer(**p) for p in content["allowed_peers"]]

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def resolved_deid_mapping_file(self) -> Path:
        return self.deid_mapping_file or self.data_dir / "deid-mapping.fernet"

    @property
    def resolved_research_export_dir(self) -> Path:
        return self.research_export_dir or self.data_dir / "research-exports"

    def research_export_target(self, name: str) -> ResearchExportTarget:
        """The configured research DICOMweb target ``name``; KeyError naming the configured ones otherwise."""
        for target in self.research_export_targets:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.research_export_targets) or "none"
        raise KeyError(f"unknown research export target {name!r}; configured: {known}")

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "dicom"

    @property
    def model_cache_dir(self) -> Path:
        """Models shipped split across packages are joined here once (a cache: safe to delete, not backed up)."""
        return self.data_dir / "model-cache"

    def node(self, name_or_ae: str) -> RemoteNode:
        """Find a configured remote node by its name or AE title.

        Raises
        ------
        KeyError
            If no node has that name or AE title; the message lists the known nodes.
        """
        for node in self.nodes:
            if node.name == name_or_ae or node.ae_title == name_or_ae:
                return node
        known = ", ".join(f"{n.name} ({n.ae_title}@{n.host}:{n.port})" for n in self.nodes) or "none"
        raise KeyError(f"unknown DICOM node {name_or_ae!r}; configured nodes: {known}")
