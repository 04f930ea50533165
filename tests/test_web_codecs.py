"""web_codecs.py's multi-byte codecs against Chromium's TextDecoder (the reader of the pages
users import, fatal: a code without a character is an error): every one- and two-byte code of
gb18030, gbk, big5, euc-jp, shift_jis and euc-kr, every EUC-JP three-byte code, GB 18030's
four-byte codes (fresh random ones each run, and the edges of its ranges), and random runs of
codes, valid and not. Then text encodes back to codes that read as that text, of the same
length (the web importer's byte offsets need it)."""

import random
import re

import pytest

from py_engine.data import charsets, web_codecs
from py_engine.data.importers.website import ByteOffsets

ENCODINGS = ["gb18030", "gbk", "big5", "euc-jp", "shift_jis", "euc-kr"]

# Chromium reads big5's four codes whose character is two code points (0x8862, 0x8864, 0x88A3,
# 0x88A5: the standard's pointers 1133, 1135, 1164 and 1166) as a C1 control and a lone
# surrogate; the standard gives the pairs on the right (and so does Python's big5hkscs).
CHROMIUM_BIG5_PAIRS = {"\x93\udf04": "\u00ca\u0304", "\x93\udf0c": "\u00ca\u030c",
                       "\xb3\udf04": "\u00ea\u0304", "\xb3\udf0c": "\u00ea\u030c"}

# Each code decoded alone by a fresh fatal TextDecoder: its text, or null.
CHROMIUM_DECODE = """([encoding, codes]) => codes.map(code => {
    try { return new TextDecoder(encoding, {fatal: true}).decode(new Uint8Array(code)); }
    catch (e) { return null; }
})"""


def chromium(page, encoding, codes):
    texts = page.evaluate(CHROMIUM_DECODE, [encoding, [list(code) for code in codes]])
    if encoding == "big5":
        texts = [text and re.sub("|".join(CHROMIUM_BIG5_PAIRS), lambda m: CHROMIUM_BIG5_PAIRS[m[0]], text)
                 for text in texts]
    return dict(zip(codes, texts))


def ours(code, encoding):
    try:
        return charsets.decode(code, encoding)
    except UnicodeDecodeError:
        return None


def gb18030_four_byte_codes(rng):
    """Random four-byte codes, and those at the edges of the standard's ranges: the BMP's
    (pointers to 39419), the gap to 189000, the supplementary planes' (to 1237575) and past."""
    def code(pointer):
        b4, pointer = pointer % 10, pointer // 10
        b3, pointer = pointer % 126, pointer // 126
        b2, b1 = pointer % 10, pointer // 10
        return bytes([b1 + 0x81, b2 + 0x30, b3 + 0x81, b4 + 0x30])
    edges = [p + d for p in (0, 7457, 39419, 189000, 1237575, 1237576, 1587599) for d in (-1, 0, 1)]
    pointers = [p for p in edges if 0 <= p < 126 * 10 * 126 * 10] + [
        rng.randrange(126 * 10 * 126 * 10) for _ in range(20000)]
    return [code(p) for p in pointers]


def short_codes(encoding, rng):
    codes = [bytes([a]) for a in range(256)]
    codes += [bytes([a, b]) for a in range(0x80, 0x100) for b in range(256)]
    if encoding == "euc-jp":
        codes += [bytes([0x8F, a, b]) for a in range(0xA1, 0xFF) for b in range(0xA1, 0xFF)]
    if encoding in ("gb18030", "gbk"):
        codes += gb18030_four_byte_codes(rng)
    return codes


@pytest.fixture(scope="module")
def read_by_chromium(browser):
    """{encoding: {code: Chromium's text or None}} for every short code, the seed, the page."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    page = browser.new_page()
    yield {encoding: chromium(page, encoding, short_codes(encoding, rng))
           for encoding in ENCODINGS}, seed, page
    page.close()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_short_code_reads_as_chromium_reads_it(read_by_chromium, encoding):
    reference, seed, _ = read_by_chromium
    differ = [(code.hex(), want, ours(code, encoding)) for code, want in reference[encoding].items()
              if ours(code, encoding) != want]
    assert not differ, f"seed {seed}: {len(differ)} codes differ, such as {differ[:5]}"


def _python(code, codec):
    try:
        return code.decode(codec)
    except UnicodeDecodeError:
        return None


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_runs_of_codes_read_as_chromium_reads_them(read_by_chromium, encoding):
    """Codes one after another (overrides among them, and now and then a byte that is no
    code): the same text, or both refuse; where we refuse, all before the byte named reads."""
    reference, seed, page = read_by_chromium
    rng = random.Random(seed)
    valid = [code for code, text in reference[encoding].items() if text is not None]
    changed = [code for code in valid if _python(code, _base(encoding)) != reference[encoding][code]]
    invalid = [code for code, text in reference[encoding].items() if text is None]
    runs = []
    for _ in range(400):
        run = []
        for _ in range(rng.randrange(1, 12)):
            pool = rng.choices([valid, changed or valid, invalid], weights=[70, 25, 2])[0]
            run.append(rng.choice(pool))
        runs.append(b"".join(run))
    want = chromium(page, encoding, runs)
    for run in runs:
        try:
            got = charsets.decode(run, encoding)
        except UnicodeDecodeError as e:
            assert want[run] is None, f"seed {seed}: {run.hex()} refused at {e.start}, Chromium reads it"
            assert ours(run[:e.start], encoding) is not None, f"seed {seed}: {run.hex()}"
            assert chromium(page, encoding, [run[:e.start]])[run[:e.start]] is not None, (seed, run.hex())
            continue
        assert got == want[run], f"seed {seed}: {run.hex()}"
        codec = charsets.python_codec(encoding)
        back = got.encode(codec)
        assert back.decode(codec) == got, f"seed {seed}: {run.hex()}"


def _base(encoding):
    codec = charsets.python_codec(encoding)
    spec = charsets.web_codecs.MULTI_BYTE.get(codec)
    return spec.base if spec else codec


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_text_encodes_back_to_its_code(read_by_chromium, encoding):
    """Each code's text encodes to a code Chromium reads as that text, as long as the one it
    came from, but where the standard reads the text from codes of two lengths (GB 18030's
    0xA6D9 and 0x84318236 are both U+FE10): there to the shorter, as the standard's encoders
    write it, but the euro sign to GB 18030's 0xA2E3 (not gbk's 0x80)."""
    reference, seed, page = read_by_chromium
    codec = charsets.python_codec(encoding)
    back = {code: text.encode(codec) for code, text in reference[encoding].items()
            if text is not None and (len(text) == 1 or encoding == "big5")}   # (big5 has pairs)
    read = chromium(page, encoding, sorted(set(back.values())))
    wrong = [(code.hex(), code_back.hex()) for code, code_back in back.items()
             if read[code_back] != reference[encoding][code]]
    assert not wrong, f"seed {seed}: {wrong[:5]}"
    longer = {code.hex(): code_back.hex() for code, code_back in back.items()
              if len(code_back) > len(code) and reference[encoding][code] != "\u20ac"}
    assert not longer, f"seed {seed}: {longer}"


def test_what_the_standard_changes_reads_as_written():
    """A few of the codes Python reads otherwise, as pages use them."""
    assert charsets.decode(b"\xad\xa1\xad\xa2 \xa1\xc1", "euc-jp") == "\u2460\u2461 \uff5e"
    assert charsets.decode(b"\x80100", "gbk") == "\u20ac100"
    assert charsets.decode(b"\xa6\xd9", "gb18030") == "\ufe10"
    assert charsets.decode(b"\x87\x7a\xa1\x45", "big5") == "\u3875\u2027"
    with pytest.raises(UnicodeDecodeError, match="position 3: no character in the Encoding Standard"):
        charsets.decode(b"abc\xa0", "shift_jis")
    with pytest.raises(ValueError, match="errors='strict' only, not 'replace'"):
        b"\x80".decode("web-gb18030", "replace")


def iso_2022_jp_run(rng, jis_codes):
    """Random ISO-2022-JP bytes: segments after random escape sequences, mostly valid."""
    parts = []
    for _ in range(rng.randrange(1, 8)):
        escape = rng.choice([b"\x1b(B", b"\x1b(J", b"\x1b(I", b"\x1b$@", b"\x1b$B"])
        if escape in (b"\x1b$@", b"\x1b$B"):
            segment = b"".join(rng.choice(jis_codes) for _ in range(rng.randrange(1, 5)))
        elif escape == b"\x1b(I":
            segment = bytes(rng.randrange(0x21, 0x60) for _ in range(rng.randrange(1, 5)))
        else:
            segment = bytes(rng.randrange(0x20, 0x7F) for _ in range(rng.randrange(1, 5)))
        if rng.random() < 0.1:          # no character before the next escape
            segment = b""
        if rng.random() < 0.1:          # a byte no state reads, or half a JIS code
            at = rng.randrange(len(segment) + 1)
            odd = rng.choice([b"\x0e", b"\x1b", b"\x1bX", b"\x80", b"\xa1", b"\x7f", b"!"])
            segment = segment[:at] + odd + segment[at:]
        parts.append(escape + segment)
    return b"".join(parts)


def test_iso_2022_jp_reads_as_chromium_reads_it(read_by_chromium):
    """Runs of escapes and text (JIS X 0208 codes drawn from all of euc-jp's two-byte ones,
    NEC's and IBM's extensions among them), valid and not; our text encodes back to bytes
    Chromium reads as it."""
    reference, seed, page = read_by_chromium
    rng = random.Random(seed)
    jis_codes = [bytes([code[0] - 0x80, code[1] - 0x80]) for code, text in reference["euc-jp"].items()
                 if len(code) == 2 and code[0] >= 0xA1 and text is not None]
    runs = [iso_2022_jp_run(rng, jis_codes) for _ in range(1500)]
    want = chromium(page, "iso-2022-jp", runs)
    texts = {}
    for run in runs:
        try:
            got = charsets.decode(run, "iso-2022-jp")
        except UnicodeDecodeError as e:
            assert want[run] is None, f"seed {seed}: {run!r} refused at {e.start}, Chromium reads it"
            assert ours(run[:e.start], "iso-2022-jp") is not None, f"seed {seed}: {run!r}"
            continue
        assert got == want[run], f"seed {seed}: {run!r}"
        texts[got.encode("web-iso-2022-jp")] = got
    assert sum(text is None for text in want.values()) > 100 and len(texts) > 500
    back = chromium(page, "iso-2022-jp", list(texts))
    assert all(back[code] == text for code, text in texts.items()), f"seed {seed}"


def test_iso_2022_jp_byte_offsets_point_at_each_characters_code(read_by_chromium):
    """The web importer's byte offsets in an ISO-2022-JP page (from iso_2022_jp_runs, since a
    part of such text does not re-encode alone): each character's offset is where its code
    starts, which read after its run's escape sequence gives that character."""
    reference, seed, _ = read_by_chromium
    rng = random.Random(seed + 1)
    jis_codes = [bytes([code[0] - 0x80, code[1] - 0x80]) for code, text in reference["euc-jp"].items()
                 if len(code) == 2 and code[0] >= 0xA1 and text is not None]
    checked = 0
    for _ in range(300):
        data = iso_2022_jp_run(rng, jis_codes)
        text = ours(data, "iso-2022-jp")
        if not text:
            continue
        bom = rng.choice([0, 3])
        to_bytes = ByteOffsets(text, "web-iso-2022-jp", bom, b"\xef\xbb\xbf"[:bom] + data)
        runs = web_codecs.iso_2022_jp_runs(data)
        for first, (start, pos, width) in enumerate(runs):
            end = runs[first + 1][0] if first + 1 < len(runs) else len(text)
            escape = data[pos - 3:pos] if pos >= 3 else b""
            for c in range(start, end):
                at = to_bytes(c) - bom
                assert ours(escape + data[at:at + width], "iso-2022-jp") == text[c], (seed, data, c)
                checked += 1
        assert to_bytes(len(text)) - bom == runs[-1][1] + (len(text) - runs[-1][0]) * runs[-1][2]
    assert checked > 1000
