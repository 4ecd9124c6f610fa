"""Python clients for the Universal Model Launcher; see :mod:`client.universal_client`.

The package needs only ``protocol/`` (msgspec), httpx and websockets, never the server's
dependencies (litestar, celery, redis, torch): ``pip install universal-model-launcher``
installs just those; the server is the ``server`` extra (docs/client.md).
"""

from client.universal_client import *  # noqa: F403
from client.universal_client import __all__ as __all__
