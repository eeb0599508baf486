"""Output content rewriting: generic maps and the restricted header/body checks.

Exports ContentFilter.  Reads smtp_generic_maps, smtp_header_checks,
smtp_mime_header_checks, smtp_nested_header_checks, smtp_body_checks (or the
lmtp_* mirrors) and recipient_delimiter, mydestination, myhostname.

Runs before the codec, and only when one of those tables is configured, so
ordinary mail goes straight to the codec.  Content is handled as text decoded
with UTF-8 + surrogateescape, which gives back every original byte.

- smtp_generic_maps rewrite the envelope sender and recipients and the
  addresses in the primary message's address headers (From, To, Cc, ...),
  with Postfix's lookup order (postclient.maps.address).  A result of the form
  ``@domain`` keeps the user part and replaces the domain.
- The checks see the primary headers (smtp_header_checks), MIME headers of
  the message and its parts (smtp_mime_header_checks), headers of attached
  messages (smtp_nested_header_checks) and body lines (smtp_body_checks).
  Only WARN, INFO, REPLACE, PREPEND, STRIP, IGNORE, DUNNO and OK are
  supported, as in Postfix's smtp(8); any other action is logged as
  unsupported and the line is kept.
"""

import logging
import re

from .. import maps
from ..config.registry import protocol_name
from ..maps.address import lookup_address

log = logging.getLogger("postclient.smtp")

ADDRESS_HEADERS = frozenset(h.lower() for h in (
    "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Resent-From", "Resent-Sender",
    "Resent-Reply-To", "Resent-To", "Resent-Cc", "Resent-Bcc", "Return-Receipt-To", "Errors-To",
    "Disposition-Notification-To", "Mail-Followup-To", "Mail-Reply-To", "Apparently-To",
    "Delivered-To", "Return-Path", "Envelope-To"))
SUPPORTED = ("WARN", "INFO", "REPLACE", "PREPEND", "STRIP", "IGNORE", "DUNNO", "OK")
_BOUNDARY_RE = re.compile(r'boundary\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.IGNORECASE)

PRIMARY, MIME, NESTED = "header", "mime header", "nested header"


def _tables(config, protocol, name):
    return maps.open_tables(config.expand(protocol_name(name, protocol)))


class ContentFilter:
    def __init__(self, config, protocol, queue_id=""):
        self.queue_id = queue_id
        self.generic = _tables(config, protocol, "smtp_generic_maps")
        self.checks = {
            PRIMARY: _tables(config, protocol, "smtp_header_checks"),
            MIME: _tables(config, protocol, "smtp_mime_header_checks"),
            NESTED: _tables(config, protocol, "smtp_nested_header_checks"),
            "body": _tables(config, protocol, "smtp_body_checks"),
        }
        self.local_domains = tuple(d.lower() for d in config.get("mydestination"))
        self.delimiter = config.get("recipient_delimiter")
        self.content_active = bool(self.generic.tables) or any(t.tables for t in self.checks.values())

    # --- envelope -----------------------------------------------------------------
    def rewrite_address(self, address):
        """An envelope or header address after smtp_generic_maps ("" stays "")."""
        if not address or not self.generic.tables:
            return address
        result = lookup_address(self.generic, address, local_domains=self.local_domains,
                                recipient_delimiter=self.delimiter)
        if not result:
            return address
        if result.startswith("@") and "@" in address:
            return address.rpartition("@")[0] + result
        return result

    # --- content ------------------------------------------------------------------
    def filter(self, content):
        """The message with header/body checks and header address rewriting applied."""
        if not self.content_active:
            return content
        text = content.decode("utf-8", "surrogateescape")
        lines = text.splitlines(keepends=True)
        out = []
        state = _MimeState()
        index = 0
        kind = PRIMARY
        while index < len(lines):
            # Header block: collect logical headers up to the empty line.
            header_lines = []
            while index < len(lines) and lines[index].strip("\r\n"):
                line = lines[index]
                if header_lines and line[0] in " \t":
                    header_lines[-1] += line
                elif not header_lines and line[0] in " \t":
                    break
                elif ":" not in line.split(" ", 1)[0] and not re.match(r"^[!-9;-~]+:", line):
                    break
                else:
                    header_lines.append(line)
                index += 1
            for header in header_lines:
                state.header(header, kind)
                out.extend(self._header(header, kind))
            # Body lines up to the next MIME part's headers.
            kind = None
            while index < len(lines):
                line = lines[index]
                index += 1
                next_kind = state.body_line(line)
                if next_kind is None:
                    out.extend(self._line(line, "body"))
                else:
                    out.append(line)
                    kind = next_kind
                    break
            if kind is None:
                break
        return "".join(out).encode("utf-8", "surrogateescape")

    def _header(self, header, kind):
        name = header.split(":", 1)[0].strip()
        if kind == PRIMARY and name.lower() in ADDRESS_HEADERS and self.generic.tables:
            header = _rewrite_header_addresses(header, self.rewrite_address)
        tables = self.checks[MIME] if (kind != NESTED and _is_mime_header(name) and self.checks[MIME].tables) \
            else self.checks[kind]
        return self._apply(header, tables, kind)

    def _line(self, line, kind):
        return self._apply(line, self.checks[kind], kind)

    def _apply(self, line, tables, where):
        if not tables.tables:
            return [line]
        ending = line[len(line.rstrip("\r\n")):]
        subject = line[:len(line) - len(ending)].replace("\r\n", "\n")
        result = tables.lookup(subject)
        if result is None:
            return [line]
        action, _, text = result.strip().partition(" ")
        action = action.upper()
        text = text.strip()
        shown = subject.replace("\n", " ")[:200]
        ending = ending or "\n"
        if action in ("DUNNO", "OK"):
            return [line]
        if action in ("WARN", "INFO"):
            self._log(action.lower() if action == "INFO" else "warning", where, shown, text)
            return [line]
        if action == "REPLACE":
            self._log("replace", where, shown, text)
            return [text + ending]
        if action == "PREPEND":
            self._log("prepend", where, shown, text)
            return [text + ending, line]
        if action == "STRIP":
            self._log("strip", where, shown, text)
            return []
        if action == "IGNORE":
            return []
        log.warning("%s: unsupported %s_checks action %s in %s; keeping the line",
                    self.queue_id or "NOQUEUE", "body" if where == "body" else "header",
                    action, where)
        return [line]

    def _log(self, action, where, shown, text):
        message = f"{self.queue_id or 'NOQUEUE'}: {action}: {where} {shown}"
        log.info(message + (f": {text}" if text else ""))


def _is_mime_header(name):
    lower = name.lower()
    return lower.startswith("content-") or lower == "mime-version"


class _MimeState:
    """Just enough MIME structure to tell part headers and nested headers from body lines."""

    def __init__(self):
        self.boundaries = []
        self.pending_boundary = None
        self.pending_nested = False

    def header(self, header, kind):
        name, _, value = header.partition(":")
        if name.strip().lower() != "content-type":
            return
        value = " ".join(value.split())
        lower = value.lower()
        if lower.startswith("multipart/"):
            match = _BOUNDARY_RE.search(value)
            if match:
                self.boundaries.append(match.group(1) if match.group(1) is not None else match.group(2))
        elif lower.startswith("message/rfc822"):
            self.pending_nested = True

    def body_line(self, line):
        """None for an ordinary body line, else the kind of headers that follow it."""
        stripped = line.rstrip("\r\n")
        if self.pending_nested:
            self.pending_nested = False
            return None if stripped else NESTED
        if stripped.startswith("--") and self.boundaries:
            for depth in range(len(self.boundaries) - 1, -1, -1):
                boundary = self.boundaries[depth]
                if stripped.rstrip() == "--" + boundary:
                    del self.boundaries[depth + 1:]
                    return MIME
                if stripped.rstrip() == "--" + boundary + "--":
                    del self.boundaries[depth:]
                    return None
        return None


def _rewrite_header_addresses(header, rewrite):
    """Rewrite every address in an address header, keeping names, comments and layout."""
    name, _, value = header.partition(":")
    out = []
    index = 0
    length = len(value)
    element_start = 0
    angle_seen = False
    while index <= length:
        char = value[index] if index < length else ","
        if char == '"':
            end = index + 1
            while end < length and value[end] != '"':
                end += 2 if value[end] == "\\" else 1
            index = end + 1
            continue
        if char == "(":
            depth, end = 0, index
            while end < length:
                if value[end] == "(":
                    depth += 1
                elif value[end] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            index = end + 1
            continue
        if char == "<":
            close = value.find(">", index)
            if close < 0:
                return header      # unbalanced: leave the header as it was
            out.append(value[element_start:index + 1])
            out.append(rewrite(value[index + 1:close].strip()))
            element_start = close
            index = close + 1
            angle_seen = True
            continue
        if char in ",;:" or index == length:
            segment = value[element_start:min(index, length)]
            if not angle_seen and char != ":" and "@" in segment:
                token = segment.strip()
                if token and not any(c in token for c in ' \t"()<>'):
                    lead = segment[:len(segment) - len(segment.lstrip())]
                    tail = segment[len(segment.rstrip()):]
                    segment = lead + rewrite(token) + tail
            out.append(segment)
            if index < length:
                out.append(char)
            element_start = index + 1
            angle_seen = False
        index += 1
    return name + ":" + "".join(out)
