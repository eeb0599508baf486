"""Build postclient: the Python package plus its compiled hot paths.

Every ``pyx/NAME.pyx`` is compiled into the extension module
``postclient.<package>.NAME``, the package named in EXTENSION_PACKAGES
(``codec`` unless listed).  The sources are written for both Cython 0.29.32
(Debian bookworm) and Cython 3.x, so ``language_level`` is pinned to 3.

The delivery agent's per-message modules (AGENT_MODULES) are ordinary Python,
compiled as they are by mypyc when it is installed: calls between them and
attribute access on their classes become C, which takes about a sixth of the
instructions off each message (bench/RESULTS.md, "Session 11").  Without mypyc,
or with POSTCLIENT_PURE_PYTHON=1, they stay pure Python: same behaviour, slower.
"""
import glob
import os
import sys

from setuptools import Extension, find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


EXTENSION_PACKAGES = {"_fileio_c": "queue", "_records_c": "queue"}

# One compilation group: their calls to each other are direct, so a test that
# replaces one of their functions is not seen by the others (tests replace what
# they must from outside the group: the scache client, the clock).  mypyc checks
# declared types at run time, so these modules declare Any (the type in a
# comment) wherever Python would take another type: compiled, they must behave
# exactly as their source.
AGENT_MODULES = ["postclient/smtp/{}.py".format(name) for name in (
    "commands", "driver", "engine", "events", "protocol", "reply", "reuse", "service", "trouble")]


def codec_extensions():
    from Cython.Build import cythonize

    sources = sorted(glob.glob(os.path.join("pyx", "*.pyx")))
    extensions = [
        Extension(
            "postclient.{}.{}".format(EXTENSION_PACKAGES.get(name, "codec"), name),
            [path],
            extra_compile_args=["-O2"],
        )
        for path, name in ((path, os.path.splitext(os.path.basename(path))[0]) for path in sources)
    ]
    return cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False,
                             "wraparound": False, "cdivision": True},
    )


def agent_extensions():
    if os.environ.get("POSTCLIENT_PURE_PYTHON", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("setup.py: mypyc is not installed: the delivery agent stays pure Python",
              file=sys.stderr)
        return []
    # The modules they import stay Python: mypy reads them for types only.
    return mypycify(["--follow-imports=silent"] + AGENT_MODULES, opt_level="3")


def read_version():
    with open(os.path.join(HERE, "postclient", "__init__.py")) as handle:
        for line in handle:
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    raise RuntimeError("no __version__ in postclient/__init__.py")


setup(
    name="postclient",
    version=read_version(),
    description="Outbound SMTP/LMTP relay: the Postfix smtp(8) client rebuilt in Python",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["postclient", "postclient.*"]),
    package_data={"postclient.config": ["defaults/*"]},
    ext_modules=codec_extensions() + agent_extensions(),
    install_requires=["pyOpenSSL>=21", "dnspython>=2.3", "setproctitle>=1.3"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "pytest-benchmark>=4",
                 "aiosmtpd>=1.4", "Cython>=0.29.32", "mypy>=1.10"],
    },
    entry_points={"console_scripts": ["postclient = postclient.cli.main:main"]},
    zip_safe=False,
)
