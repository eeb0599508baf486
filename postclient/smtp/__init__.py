"""The SMTP/LMTP delivery agent: destinations, resolution, protocol, policy, content.

The protocol core is Sans-I/O (docs/smtp-protocol.md): protocol.py (the state
machine: Client, Settings, State), events.py (events, results, errors),
reply.py (bounded reply parsing), ehlo.py (greeting and EHLO keywords),
commands.py (envelope and command lines) and xtext.py (parameter encodings).

setup.py compiles the per-message modules with mypyc where it can;
POSTCLIENT_NO_EXTENSIONS=1 loads them from source instead (extensions.py).
"""

from .. import extensions

extensions.source_first(__path__)
