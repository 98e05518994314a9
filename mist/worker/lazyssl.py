"""asyncio in the zygote without `ssl`: loaded in a sandbox only when something there uses it.

The zygote pre-imports asyncio so that async handlers start without paying for it, but
asyncio's own `import ssl` brings in the ssl module, _ssl and libssl (~1.3 MB, 0.8 MB of it
written at import): pages every sandbox forked from the zygote maps, while few functions
without a dependency layer use TLS (those with one fork from a layer zygote, which imports
the layer's packages and with them ssl). `import_asyncio` imports asyncio with `ssl` hidden,
then puts `LazySSL` where asyncio's modules keep their `ssl`: the first attribute asked of it
(asyncio checks `ssl.SSLSocket`, builds `ssl.MemoryBIO()`, ...) imports the real module, puts it
in their place and finishes what asyncio.sslproto does at import when ssl is there. A function
that imports ssl itself pays its import (~5 ms) in its init phase, as on AWS Lambda.

This follows asyncio's module layout, which changes between Python versions: it is done on
the version it was written and tested for (3.11); any other version imports asyncio plainly.
"""

from __future__ import annotations

import sys
import types

_USERS = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")  # modules with `ssl` globals
SUPPORTED = sys.version_info[:2] == (3, 11)


class LazySSL(types.ModuleType):
    """Stands for `ssl` in asyncio's modules until an attribute of it is asked for."""

    def __getattr__(self, name: str) -> object:
        import ssl  # noqa: PLC0415 - the point of this class

        for modname in _USERS:
            module = sys.modules.get(modname)
            if module is not None and module.__dict__.get("ssl") is self:
                module.ssl = ssl  # type: ignore[attr-defined]
        sslproto = sys.modules.get("asyncio.sslproto")
        if sslproto is not None and not hasattr(sslproto, "SSLAgainErrors"):  # as sslproto's import would
            sslproto.SSLAgainErrors = (ssl.SSLWantReadError, ssl.SSLSyscallError)  # type: ignore[attr-defined]
        return getattr(ssl, name)


def import_asyncio() -> None:
    """Import asyncio, leaving ssl unloaded where that is supported and ssl is not loaded yet."""
    if not SUPPORTED or "ssl" in sys.modules or "asyncio" in sys.modules:
        import asyncio  # noqa: F401, PLC0415

        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # asyncio's `import ssl` fails: ssl = None
    try:
        import asyncio  # noqa: F401, PLC0415
    finally:
        del sys.modules["ssl"]
    stand_in = LazySSL("ssl", "asyncio's ssl, imported on first use (mist.worker.lazyssl)")
    for modname in _USERS:
        module = sys.modules.get(modname)
        if module is not None and module.__dict__.get("ssl", ...) is None:
            module.ssl = stand_in  # type: ignore[attr-defined]
