"""Random ids, without importing ``secrets``.

``secrets`` pulls in ``hmac`` and ``hashlib`` (OpenSSL), an import every
report process would pay. ``os.urandom`` is the same source of randomness.
"""

import os


def token(nbytes: int) -> str:
    """``2 * nbytes`` random hex digits."""
    return os.urandom(nbytes).hex()
