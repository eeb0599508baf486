"""DATA encoding: what the SMTP client sends between 354 and the final ".".

This is the selector of the codec's two implementations, which have the same
names, signatures and results:
  postclient.codec._encode_c   compiled from pyx/_encode_c.pyx (Cython), used
                               by default;
  postclient.codec._encode_py  the pure-Python twin, the readable
                               specification, used when
                               POSTCLIENT_NO_EXTENSIONS=1 or when the compiled
                               module cannot be imported.

Exports:
  encode(content, *, line_length_limit=990, downgrade=False,
         mime_nesting_limit=100, mime_boundary_length_limit=2048) -> bytes
  Encoder(**same options)    streaming form: feed(chunk) -> bytes, finish()
  MimeError                  MIME nesting beyond the limit (.dsn == "5.6.0")
  IMPLEMENTATION             "cython" or "python": which one is in use

Parameters it relates to: smtp_line_length_limit (line_length_limit),
mime_nesting_limit, mime_boundary_length_limit, and
disable_mime_output_conversion (the caller passes downgrade=True only when it
is "no", the server lacks 8BITMIME and the message is not declared 7bit).
See docs/codec.md for the rules.
"""

import os

from postclient.codec._common import MimeError

__all__ = ["encode", "Encoder", "MimeError", "IMPLEMENTATION"]

# Why the compiled module is not in use (None when it is); for `postclient
# check` and for the test that fails when the extension silently did not load.
_import_error = None


def _extensions_disabled():
    return os.environ.get("POSTCLIENT_NO_EXTENSIONS", "") not in ("", "0")


if _extensions_disabled():
    from postclient.codec._encode_py import Encoder, encode
    IMPLEMENTATION = "python"
    _import_error = "disabled by POSTCLIENT_NO_EXTENSIONS"
else:
    try:
        from postclient.codec._encode_c import Encoder, encode
        IMPLEMENTATION = "cython"
    except ImportError as error:
        from postclient.codec._encode_py import Encoder, encode
        IMPLEMENTATION = "python"
        _import_error = f"{type(error).__name__}: {error}"
