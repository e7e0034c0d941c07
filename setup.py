"""The one thing pyproject.toml cannot say: the optional C extension (the resampler's inner loop).

``gateway/audio/_polyphase.c`` makes resampling 2-5x cheaper per chunk (``python bench/audio.py``); the
gateway runs the same filter in NumPy when it is not built, with the same output to the bit. As
websockets does for its speedups, ``GATEWAY_BUILD_EXTENSION`` decides: unset, the build is tried and a
missing compiler only costs speed; ``yes``, a failed build fails the install (the container image and
CI); ``no``, it is not tried.
"""

import os
import sys

from setuptools import Extension, setup

mode = os.environ.get("GATEWAY_BUILD_EXTENSION", "").lower()
if mode not in ("", "yes", "no"):
    sys.exit(f"GATEWAY_BUILD_EXTENSION must be yes, no or unset, not {mode!r}")

extensions = []
if mode != "no":
    extensions.append(
        Extension(
            "gateway.audio._polyphase",
            ["gateway/audio/_polyphase.c"],
            optional=mode != "yes",
            # The inner loop is written for the compiler to vectorise, which GCC and Clang do at -O3.
            extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
        )
    )

setup(ext_modules=extensions)
