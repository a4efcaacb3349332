"""C2PA content credentials: a signed manifest saying "made by swaplab, trainedAlgorithmicMedia".

A third signal beside the watermark (in the pixels) and the XMP/container record (in the file's
metadata): a C2PA manifest embedded in the file and signed (ES256) with a local certificate, read
by any C2PA reader. The certificate is generated on first use (a local CA and a signing
certificate under it, P-256) in ``<user config>/c2pa/`` (``$SWAPLAB_CONFIG``, else
``$XDG_CONFIG_HOME/swaplab``, else ``~/.config/swaplab``): ``signer.pem`` (the chain) and
``signer.key``. Replace both with a certificate from a trusted issuer to make the manifests
trusted; with the local one readers report the signature valid but the signer untrusted.

Signing needs ``c2pa-python``; without it (or on any signing failure) the file keeps its other two
marks and a warning says why. Nothing here decides whether a file is synthetic: ``verify`` does.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from swaplab.io.atomic import temporary_prefix

log = logging.getLogger(__name__)

#: The IPTC digital source type of swaplab's outputs (as in the XMP record).
SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
#: A swaplab assertion with the provenance fields the watermark carries in short.
ASSERTION = "org.swaplab.provenance"


def config_dir() -> Path:
    env = os.environ.get("SWAPLAB_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME")
    return (Path(base) if base else Path.home() / ".config") / "swaplab"


def signer_files() -> tuple[Path, Path]:
    """(certificate chain, private key) paths, created with a new local certificate if missing."""
    folder = config_dir() / "c2pa"
    chain, key = folder / "signer.pem", folder / "signer.key"
    if not (chain.is_file() and key.is_file()):
        _create_local_certificate(chain, key)
    return chain, key


def _create_local_certificate(chain_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from swaplab.io.atomic import atomic_write_bytes

    def name(common: str) -> x509.Name:
        return x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, common), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swaplab")]
        )

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not sign,
            crl_sign=not sign,
            encipher_only=False,
            decipher_only=False,
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("swaplab local CA"))
        .issuer_name(name("swaplab local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # C2PA wants an end-entity signing certificate (not a CA) with a protection EKU, under an issuer.
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("swaplab local signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        key_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    atomic_write_bytes(chain_path, leaf.public_bytes(pem) + ca.public_bytes(pem))
    log.info("created a local C2PA signing certificate in %s (replace it to have manifests trusted)", chain_path.parent)


def _manifest(provenance: Any, title: str) -> dict[str, Any]:
    from swaplab._version import __version__

    fields = provenance.to_dict() if hasattr(provenance, "to_dict") else dict(provenance)
    return {
        "claim_generator_info": [{"name": "swaplab", "version": __version__}],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": SOURCE_TYPE}]},
            },
            {"label": ASSERTION, "data": {k: v for k, v in fields.items() if isinstance(v, (str, int, float, bool))}},
        ],
    }


def sign_in_place(path: str | Path, provenance: Any) -> bool:
    """Embed a signed manifest in ``path`` (replaced atomically); False, with a warning, if it cannot be."""
    path = Path(path)
    try:
        import c2pa

        chain, key = signer_files()
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain.read_bytes(), key.read_bytes(), None)
        signer = c2pa.Signer.from_info(info)
        fd, signed = tempfile.mkstemp(prefix=temporary_prefix(path, "partial"), suffix=path.suffix, dir=path.parent)
        os.close(fd)
        os.unlink(signed)  # the signer creates it
        try:
            builder = c2pa.Builder(json.dumps(_manifest(provenance, path.name)))
            builder.sign_file(str(path), signed, signer)
            os.chmod(signed, os.stat(path).st_mode & 0o777)
            os.replace(signed, path)
        finally:
            Path(signed).unlink(missing_ok=True)
        return True
    except Exception as err:  # noqa: BLE001 - the file keeps its watermark and metadata either way
        log.warning("no C2PA manifest written to %s: %s", path, str(err).splitlines()[0] if str(err) else err)
        return False


def read_credentials(path: str | Path) -> dict[str, Any] | None:
    """The file's C2PA manifest, checked: None when it has none (or c2pa-python is missing).

    Returns ``state`` ("Valid", "Invalid", ...), ``codes`` (failure codes, e.g. a changed pixel's
    ``assertion.dataHash.mismatch``), ``trusted`` (signer chains to a trusted root), ``generator``,
    ``synthetic`` (the active manifest declares trainedAlgorithmicMedia) and ``swaplab`` (its assertion).
    """
    try:
        import c2pa
    except ImportError:
        return None
    try:
        report = json.loads(c2pa.Reader(str(path)).json())
    except Exception:  # noqa: BLE001 - no manifest, or a format the reader does not know
        return None
    manifests = report.get("manifests") or {}
    active = manifests.get(report.get("active_manifest") or "", {})
    if not active:
        return None
    codes = [status.get("code", "") for status in report.get("validation_status") or []]
    actions = []
    swaplab = None
    for assertion in active.get("assertions") or []:
        if assertion.get("label", "").startswith("c2pa.actions"):
            actions += (assertion.get("data") or {}).get("actions") or []
        if assertion.get("label") == ASSERTION:
            swaplab = assertion.get("data")
    generator = ", ".join(g.get("name", "") for g in active.get("claim_generator_info") or [])
    return {
        "state": report.get("validation_state") or ("Invalid" if codes else "Valid"),
        "codes": [c for c in codes if c != "signingCredential.untrusted"],
        "trusted": "signingCredential.untrusted" not in codes,
        "generator": generator,
        "synthetic": any(a.get("digitalSourceType") == SOURCE_TYPE for a in actions),
        "swaplab": swaplab,
    }
