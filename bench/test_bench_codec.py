"""Codec benchmarks: the compiled encoder vs its Python twin vs bytes.replace.

Run (from the project root, after building the extension):

    python -m pytest bench/test_bench_codec.py

Two inputs, each measured side by side in the same run:
  - a 10 MB "realistic" 7-bit body (wrapped text, quotes, blank lines, a few
    long HTML-ish lines and dot lines, LF line endings as stored), encoded
    with the defaults (smtp_line_length_limit = 990);
  - an 8-bit MIME message (multipart/mixed: UTF-8 text/plain and text/html
    parts declared 8bit, a base64 attachment, a message/rfc822 whose inner
    part is 8bit), encoded with downgrade=True.
The baseline is the two-step bytes.replace chain (LF -> CRLF, then
dot-stuffing), which does not even fold, fix bare CRs or convert MIME.

When every benchmark of this module has run, the "## Codec" section of
bench/RESULTS.md is rewritten with the command, the machine and the numbers
(medians; ratios against the compiled encoder), and the targets of issue 3
are checked: compiled >= 10x twin and >= 1.5 GB/s and faster than the
replace chain on the 7-bit body; downgrade >= 5x twin.
"""

import os
import platform
import random
import re
import shlex
import sys

import pytest

from postclient.codec import _encode_py

try:
    from postclient.codec import _encode_c
except ImportError:
    _encode_c = None

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")

WORDS = (b"the of and to in is it that for you was with on as have but be they "
         b"mail relay queue message server client delivery postfix header body "
         b"recipient sender transport domain lookup connection cache timeout retry "
         b"configuration parameter Thursday meeting report quarterly numbers please "
         b"regards thanks attached document invoice shipment schedule").split()

UTF8_WORDS = ["Grüße", "Straße", "café", "naïve", "déjà", "vu", "über", "Köln",
              "señor", "año", "smørrebrød", "Ærø", "crème", "brûlée", "niño", "€5",
              "the", "and", "mail", "text", "with", "some", "accents", "here"]


def seven_bit_body(size, seed=3):
    """Deterministic text that looks like mail bodies, LF line endings."""
    rng = random.Random(seed)
    lines, total = [], 0
    while total < size:
        roll = rng.random()
        if roll < 0.08:
            line = b""
        elif roll < 0.09:
            line = b"." + b" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        elif roll < 0.10:        # unwrapped HTML or a long URL line
            line = b"<p>" + b" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 250)))
        else:
            words, length = [], 0
            target = rng.randint(30, 76)
            while length < target:
                word = rng.choice(WORDS)
                words.append(word)
                length += len(word) + 1
            line = b" ".join(words)
            if roll < 0.20:
                line = b"> " + line
        lines.append(line)
        total += len(line) + 1
    return b"\n".join(lines) + b"\n"


def utf8_text(rng, size, width):
    lines, total = [], 0
    while total < size:
        words, length = [], 0
        target = rng.randint(width // 2, width)
        while length < target:
            word = rng.choice(UTF8_WORDS)
            words.append(word)
            length += len(word) + 1
        line = " ".join(words).encode()
        lines.append(line)
        total += len(line) + 1
    return b"\n".join(lines)


def eight_bit_mime(seed=5):
    rng = random.Random(seed)
    import base64
    attachment = base64.encodebytes(bytes(rng.getrandbits(8) for _ in range(600_000)))
    return (
        b"From: Sender <sender@example.com>\n"
        b"To: Recipient <rcpt@example.net>\n"
        b"Subject: quarterly report\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=\"=_mixed_0123456789\"\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"This is a multi-part message in MIME format.\n"
        b"--=_mixed_0123456789\n"
        b"Content-Type: multipart/alternative; boundary=\"=_alt_9876\"\n"
        b"\n"
        b"--=_alt_9876\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n" + utf8_text(rng, 300_000, 76) + b"\n"
        b"--=_alt_9876\n"
        b"Content-Type: text/html; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n" + utf8_text(rng, 400_000, 400).replace(b"\n", b"<br>\n") + b"\n"
        b"--=_alt_9876--\n"
        b"--=_mixed_0123456789\n"
        b"Content-Type: application/pdf; name=\"report.pdf\"\n"
        b"Content-Transfer-Encoding: base64\n"
        b"Content-Disposition: attachment; filename=\"report.pdf\"\n"
        b"\n" + attachment +
        b"--=_mixed_0123456789\n"
        b"Content-Type: message/rfc822\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"From: Earlier <earlier@example.org>\n"
        b"Subject: forwarded\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n" + utf8_text(rng, 200_000, 76) + b"\n"
        b"--=_mixed_0123456789--\n"
    )


SEVEN_BIT = seven_bit_body(10 * 1000 * 1000)
EIGHT_BIT = eight_bit_mime()


def replace_chain(data):
    return data.replace(b"\n", b"\r\n").replace(b"\n.", b"\n..")


INPUTS = {
    "7bit": (SEVEN_BIT, {}),
    "8bit-mime": (EIGHT_BIT, {"downgrade": True}),
}

_collected = {}


def implementation(name):
    if name == "cython":
        if _encode_c is None:
            pytest.fail("postclient.codec._encode_c is not built")
        return _encode_c.encode
    if name == "python":
        return _encode_py.encode
    return None


@pytest.fixture(scope="module", autouse=True)
def write_results(request):
    yield
    expected = {(case, impl) for case in INPUTS for impl in ("cython", "python", "replace")}
    if set(_collected) == expected:
        _write_results(request.config)


@pytest.mark.parametrize("impl", ["cython", "python", "replace"])
@pytest.mark.parametrize("case", list(INPUTS))
def test_codec(benchmark, case, impl):
    data, options = INPUTS[case]
    benchmark.group = f"{case} ({len(data) / 1e6:.1f} MB)"
    encode = implementation(impl)
    if impl == "replace":
        result = benchmark(replace_chain, data)
        assert result.count(b"\r\n") >= data.count(b"\n")
    else:
        result = benchmark(encode, data, **options)
        if impl == "cython":
            assert result == _encode_py.encode(data, **options)
    if benchmark.stats is not None:              # None with --benchmark-disable
        stats = benchmark.stats.stats
        _collected[case, impl] = (stats.median, stats.min, len(data), stats.rounds)


def _machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            found = re.search(r"^model name\s*:\s*(.+)$", handle.read(), re.M)
            if found:
                model = found.group(1).strip()
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, "
            f"extension generated by Cython {_encode_c._cython_version}")


def _write_results(config):
    command = "python -m pytest " + " ".join(
        shlex.quote(arg) for arg in config.invocation_params.args)
    lines = [
        "## Codec",
        "",
        "Written by `bench/test_bench_codec.py` at the end of its run.",
        "",
        f"- Command: `{command}` (from the project root)",
        f"- Machine: {_machine()}",
        "- Times are pytest-benchmark medians and minimums; GB/s = input bytes / median; "
        "the last column is the median divided by the compiled encoder's.",
        "",
    ]
    for case, title in (("7bit", "10 MB realistic 7-bit body, `encode(body)`"),
                        ("8bit-mime", "8-bit MIME message, `encode(message, downgrade=True)`")):
        size = _collected[case, "cython"][2]
        compiled = _collected[case, "cython"][0]
        lines += [f"### {title} ({size / 1e6:.2f} MB)", "",
                  "| implementation | median | min | GB/s | rounds | time / compiled |",
                  "|---|---|---|---|---|---|"]
        for impl, label in (("cython", "compiled (Cython)"), ("python", "Python twin"),
                            ("replace", "bytes.replace chain")):
            median, minimum, size, rounds = _collected[case, impl]
            lines.append(f"| {label} | {median * 1e3:.2f} ms | {minimum * 1e3:.2f} ms | "
                         f"{size / median / 1e9:.3f} | {rounds} | "
                         f"{median / compiled:.1f}x |")
        lines.append("")
    seven = {impl: _collected["7bit", impl][0] for impl in ("cython", "python", "replace")}
    eight = {impl: _collected["8bit-mime", impl][0] for impl in ("cython", "python")}
    throughput = _collected["7bit", "cython"][2] / seven["cython"] / 1e9
    verdicts = [
        ("compiled encoder >= 10x its twin (7-bit)", seven["python"] / seven["cython"], 10),
        ("compiled encoder faster than the replace chain (7-bit)",
         seven["replace"] / seven["cython"], 1),
        ("compiled encoder >= 1.5 GB/s (7-bit)", throughput, 1.5),
        ("downgrade >= 5x its twin (8-bit MIME)", eight["python"] / eight["cython"], 5),
    ]
    lines += ["### Targets (issue 3)", "", "| target | measured | met |", "|---|---|---|"]
    for name, value, goal in verdicts:
        lines.append(f"| {name} | {value:.2f} | {'yes' if value >= goal else 'NO'} |")
    lines.append("")
    section = "\n".join(lines)

    try:
        with open(RESULTS) as handle:
            text = handle.read()
    except FileNotFoundError:
        text = "# Benchmark results\n\n"
    pattern = re.compile(r"^## Codec\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(RESULTS, "w") as handle:
        handle.write(text)
    print("\n" + section, file=sys.stderr)
