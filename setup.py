"""Build postclient: the Python package plus the Cython hot paths.

Every ``pyx/NAME.pyx`` is compiled into the extension module
``postclient.<package>.NAME``, the package named in EXTENSION_PACKAGES
(``codec`` unless listed).  The sources are written for both Cython 0.29.32
(Debian bookworm) and Cython 3.x, so ``language_level`` is pinned to 3.
"""
import glob
import os

from setuptools import Extension, find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


EXTENSION_PACKAGES = {"_fileio_c": "queue", "_records_c": "queue"}


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
    ext_modules=codec_extensions(),
    install_requires=["pyOpenSSL>=21", "dnspython>=2.3", "setproctitle>=1.3"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "pytest-benchmark>=4",
                 "aiosmtpd>=1.4", "Cython>=0.29.32"],
    },
    entry_points={"console_scripts": ["postclient = postclient.cli.main:main"]},
    zip_safe=False,
)
