"""TLS of the local stack: a private CA and one server certificate for 127.0.0.1 / localhost,
made once with openssl into ``<state_dir>/tls`` (ignored by git). Kafka's broker and the S3
gateway present the server certificate; every client trusts the CA (``Settings.local_ca``),
the JVM (Spark's S3A) through a PKCS#12 truststore of it (``Settings.local_truststore``)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from core.settings import LOCAL_TRUSTSTORE_PASSWORD, Settings
from tools.stack.supervisor import StackError

DAYS = 825
"""Server certificates valid longer than this are refused by some clients (Apple's rule)."""


@dataclass(frozen=True)
class ServerTls:
    ca: Path
    certificate: Path
    """The server certificate followed by the CA (a chain)."""
    key: Path
    """Unencrypted PKCS#8 private key, readable by the owner only."""


def ensure_server_tls(settings: Settings) -> ServerTls:
    """The stack's CA, server certificate and truststore, made on first use."""
    folder = settings.local_ca.parent
    tls = ServerTls(settings.local_ca, folder / "server-chain.pem", folder / "server.key")
    if not all(path.is_file() for path in (tls.ca, tls.certificate, tls.key)):
        _make_certificates(tls)
        settings.local_truststore.unlink(missing_ok=True)  # of an earlier CA
    if not settings.local_truststore.is_file():
        _make_truststore(tls.ca, settings.local_truststore)
    return tls


def _make_certificates(tls: ServerTls) -> None:
    folder = tls.ca.parent
    if shutil.which("openssl") is None:
        raise StackError("tls: `openssl` not found; install it (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key, csr, server_cert, ext = folder / "ca.key", folder / "server.csr", folder / "server.pem", folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run = [
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ca_key, "-out", tls.ca, "-days", str(DAYS), "-subj", "/CN=Fruits local stack CA"],
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", tls.key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", tls.ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", server_cert, "-days", str(DAYS), "-extfile", ext],
    ]  # fmt: skip
    for command in run:
        _run(command)
    tls.certificate.write_text(server_cert.read_text() + tls.ca.read_text())
    for path in (ca_key, tls.key):
        path.chmod(0o600)


def _make_truststore(ca: Path, truststore: Path) -> None:
    """The CA as the JVM's truststore (Java 17 reads no PEM truststore)."""
    if shutil.which("keytool") is None:
        raise StackError("tls: `keytool` not found; it comes with the Java 17 the stack needs")
    made = truststore.with_suffix(".tmp")
    made.unlink(missing_ok=True)
    _run(["keytool", "-importcert", "-noprompt", "-alias", "fruits-local-ca", "-file", ca, "-keystore", made,
          "-storetype", "PKCS12", "-storepass", LOCAL_TRUSTSTORE_PASSWORD])  # fmt: skip
    made.replace(truststore)  # whole or absent


def _run(command: list[str | Path]) -> None:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"tls: `{' '.join(map(str, command))}` failed:\n{(result.stderr or result.stdout)[-2000:]}")
