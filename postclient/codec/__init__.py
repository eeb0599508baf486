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

from postclient.codec._common import MimeError
from postclient.extensions import load

__all__ = ["encode", "Encoder", "MimeError", "IMPLEMENTATION"]

# _import_error: why the compiled module is not in use (None when it is); for
# `postclient check` and for the test that fails when it silently did not load.
_module, IMPLEMENTATION, _import_error = load("postclient.codec._encode_c",
                                              "postclient.codec._encode_py")
Encoder, encode = _module.Encoder, _module.encode
