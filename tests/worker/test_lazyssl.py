"""asyncio without ssl in the zygote (mist/worker/lazyssl.py): sandboxes start without ssl
loaded, and TLS through asyncio still works the moment a function uses it."""

import datetime
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mist.worker import lazyssl
from tests.worker.conftest import call, value

pytestmark = pytest.mark.skipif(not lazyssl.SUPPORTED, reason="lazy ssl is done on Python 3.11 only")


def self_signed() -> tuple[str, str]:
    """(certificate PEM, key PEM) for 'localhost'."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


# A TLS echo over a unix socket with asyncio's streams, in the process that runs it: the server
# and the client both go through asyncio.sslproto. event = {"cert", "key", "dir"}.
TLS_ECHO = '''
import asyncio, os, sys

def handler(event, context):
    loaded_before = "ssl" in sys.modules
    return {"ssl_loaded_before": loaded_before, "echo": asyncio.run(asyncio.wait_for(echo(event), 10))}

async def echo(event):
    import ssl
    d = event["dir"]
    with open(f"{d}/cert.pem", "w") as f:
        f.write(event["cert"])
    with open(f"{d}/key.pem", "w") as f:
        f.write(event["key"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(f"{d}/cert.pem", f"{d}/key.pem")
    client_ctx = ssl.create_default_context(cafile=f"{d}/cert.pem")

    async def serve(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    path = f"{d}/tls.sock"
    server = await asyncio.start_unix_server(serve, path, ssl=server_ctx)
    async with server:
        reader, writer = await asyncio.open_unix_connection(path, ssl=client_ctx, server_hostname="localhost")
        writer.write(b"over tls\\n")
        line = await reader.readline()
        peer = writer.get_extra_info("peercert")["subject"]
        writer.close()
        return [line.decode(), peer[0][0][1]]
'''


def test_asyncio_imported_without_ssl_does_tls_once_something_uses_it(tmp_path):
    cert, key = self_signed()
    repo = str(Path(lazyssl.__file__).parents[2])
    script = textwrap.dedent(f"""
        import json, sys, types
        for name in ("mist", "mist.worker"):  # as the zygote's bootstrap: no package __init__ run
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__path__ = [{repo!r} + "/" + name.replace(".", "/")]
        from mist.worker import lazyssl
        lazyssl.import_asyncio()
        assert "ssl" not in sys.modules and "_ssl" not in sys.modules, "ssl was loaded"
        ns = {{}}
        exec({TLS_ECHO!r}, ns)
        out = ns["handler"]({{"cert": {cert!r}, "key": {key!r}, "dir": {str(tmp_path)!r}}}, None)
        import asyncio.base_events, asyncio.sslproto, asyncio.selector_events
        assert all(m.ssl is sys.modules["ssl"] for m in (asyncio.base_events, asyncio.sslproto, asyncio.selector_events))
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"ssl_loaded_before": false, "echo": ["over tls\\n", "localhost"]}'


@pytest.mark.sandbox
async def test_a_sandbox_starts_without_ssl_and_asyncio_tls_works_in_it(worker, function):
    cert, key = self_signed()
    got = value(await call(worker, function(TLS_ECHO), {"cert": cert, "key": key, "dir": "/tmp"}))
    assert got == {"ssl_loaded_before": False, "echo": ["over tls\n", "localhost"]}
