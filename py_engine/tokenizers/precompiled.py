"""SentencePiece's "Precompiled" normalizer (nmt_nfkc, nfkc... rules compiled into the model):
the precompiled_charsmap of a tokenizer.json read and applied as Hugging Face `tokenizers`
applies it, in pure Python for the browser.

The charsmap (base64 in tokenizer.json) is a little-endian uint32 byte size of a Darts
double-array trie, the trie's uint32 units, then a blob of NUL-terminated replacement strings;
the trie maps UTF-8 byte strings to offsets into that blob.

The library normalizes grapheme cluster by grapheme cluster: a cluster shorter than 6 UTF-8 bytes
whose bytes start with a key of the trie is replaced by the replacement of the SHORTEST such key
(the rest of the cluster is dropped: "ｅ" + U+0301 becomes "e"); any other cluster is mapped
character by character. This differs from sentencepiece's own normalizer (longest match over
the whole text) on such clusters; the tokenizer.json's behaviour is the one reproduced here.

Grapheme clusters follow Unicode's extended grapheme cluster rules (UAX #29) with the break
properties derived from `unicodedata` categories and code point ranges (no property tables ship
with Python); they only matter for clusters of several characters under 6 bytes. A mark that
Python's Unicode does not have yet (U+0CF3 is 15.0's, and the host's Python 3.11 has 14.0) is
read as no mark, where the library, on a newer Unicode, joins it to the character before.
"""

import base64
import binascii
import struct
import unicodedata

# ---- the double-array trie --------------------------------------------------------------


def _offset(unit):
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


class Precompiled:
    """The Precompiled normalizer of a tokenizer.json: {"type": "Precompiled",
    "precompiled_charsmap": base64 or null}."""

    def __init__(self, charsmap_b64):
        if charsmap_b64 is None:       # an empty charsmap normalizes nothing
            self._units, self._blob = None, b""
        else:
            try:
                data = base64.b64decode(charsmap_b64, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ValueError("Precompiled normalizer: precompiled_charsmap is not base64") \
                    from None
            if len(data) < 4:
                raise ValueError("Precompiled normalizer: precompiled_charsmap is too short")
            (size,) = struct.unpack_from("<I", data)
            if size % 4 or 4 + size > len(data):
                raise ValueError(f"Precompiled normalizer: the trie size {size} does not fit "
                                 f"the {len(data)}-byte precompiled_charsmap")
            self._units = struct.unpack_from(f"<{size // 4}I", data, 4) if size else None
            self._blob = data[4 + size:]
        self._cache = {}       # text of a cluster or character -> its replacement or None
        self._chars = {}       # character -> what it becomes on its own

    def _shortest_match(self, key):
        """The replacement of the shortest trie key that starts `key` (bytes), or None."""
        units = self._units
        if not units:
            return None
        pos = _offset(units[0])
        for c in key:
            if c == 0:
                return None
            pos ^= c
            if pos >= len(units):
                return None
            unit = units[pos]
            if unit & ((1 << 31) | 0xFF) != c:
                return None
            pos ^= _offset(unit)
            if (unit >> 8) & 1:
                return self._replacement(units[pos] & ((1 << 31) - 1))
        return None

    def _replacement(self, index):
        end = self._blob.find(b"\0", index)
        raw = self._blob[index:end if end >= 0 else len(self._blob)]
        return raw.decode("utf-8", errors="replace")

    def transform(self, text):
        """What one cluster or character becomes, or None where the trie leaves it."""
        try:
            return self._cache[text]
        except KeyError:
            out = self._cache[text] = self._shortest_match(text.encode("utf-8"))
            return out

    def _units_of(self, text):
        """(start, end, replacement or None) covering text: the library's pieces."""
        out, transform = [], self.transform
        for a, b in grapheme_spans(text):
            if b - a > 1:
                cluster = text[a:b]
                if len(cluster.encode("utf-8")) < 6:
                    new = transform(cluster)
                    if new is not None:
                        out.append((a, b, new))
                        continue
                for k in range(a, b):
                    out.append((k, k + 1, transform(text[k])))
            else:
                out.append((a, b, transform(text[a])))
        return out

    def normalize(self, text):
        if self._units is None:
            return text
        if not any(map(_JOINING.__contains__, map(_break_property, text))):
            # every character its own cluster (most text): map character by character
            chars = self._chars
            return "".join([chars[c] if c in chars else self._char(c) for c in text])
        return "".join(text[a:b] if new is None else new for a, b, new in self._units_of(text))

    def _char(self, c):
        new = self.transform(c)
        out = self._chars[c] = c if new is None else new
        return out

    def normalize_aligned(self, text, align):
        """normalize() with alignment: each character of a replacement stands for the whole
        cluster or character it replaced."""
        if self._units is None:
            return text, align
        out, out_align = [], []
        for a, b, new in self._units_of(text):
            if new is None:
                out.append(text[a:b])
                out_align += align[a:b]
            else:
                out.append(new)
                out_align += [(align[a][0], align[b - 1][1])] * len(new)
        return "".join(out), out_align


# ---- extended grapheme clusters (UAX #29) --------------------------------------------------

_CR, _LF, _CONTROL, _EXTEND, _ZWJ, _SPACING, _PREPEND, _RI = range(8)
_L, _V, _T, _LV, _LVT, _PICTO, _OTHER = range(8, 15)

# Grapheme_Extend characters outside categories Mn/Me (Other_Grapheme_Extend), and the
# SpacingMark / Prepend ones outside Mc / Cf, as code point ranges.
_EXTRA_EXTEND = ((0x200C, 0x200C), (0x09BE, 0x09BE), (0x09D7, 0x09D7), (0x0B3E, 0x0B3E),
                 (0x0B57, 0x0B57), (0x0BBE, 0x0BBE), (0x0BD7, 0x0BD7), (0x0CC2, 0x0CC2),
                 (0x0CD5, 0x0CD6), (0x0D3E, 0x0D3E), (0x0D57, 0x0D57), (0x0DCF, 0x0DCF),
                 (0x0DDF, 0x0DDF), (0x1B35, 0x1B35), (0x302E, 0x302F), (0xFF9E, 0xFF9F),
                 (0x1D165, 0x1D165), (0x1D16E, 0x1D172), (0x1F3FB, 0x1F3FF),
                 (0xE0020, 0xE007F))
_EXTRA_SPACING = ((0x0E33, 0x0E33), (0x0EB3, 0x0EB3))
# Spacing marks (Mc) that UAX #29 leaves out of SpacingMark: they start a cluster of their own.
_NOT_SPACING = ((0x102B, 0x102C), (0x1038, 0x1038), (0x1062, 0x1064), (0x1067, 0x106D),
                (0x1083, 0x1083), (0x1087, 0x108C), (0x108F, 0x108F), (0x109A, 0x109C),
                (0x1A61, 0x1A61), (0x1A63, 0x1A64), (0xAA7B, 0xAA7B), (0xAA7D, 0xAA7D),
                (0x11720, 0x11721))
_PREPENDS = ((0x0600, 0x0605), (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891),
             (0x08E2, 0x08E2), (0x110BD, 0x110BD), (0x110CD, 0x110CD))
# Extended_Pictographic, in outline: the emoji blocks and the older symbols emoji use.
_PICTOGRAPHIC = ((0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049),
                 (0x2122, 0x2122), (0x2139, 0x2139), (0x2194, 0x2199), (0x21A9, 0x21AA),
                 (0x231A, 0x231B), (0x2328, 0x2328), (0x2388, 0x2388), (0x23CF, 0x23CF),
                 (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2), (0x25AA, 0x25AB),
                 (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x2605),
                 (0x2607, 0x2612), (0x2614, 0x2685), (0x2690, 0x2705), (0x2708, 0x2712),
                 (0x2714, 0x2714), (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721),
                 (0x2728, 0x2728), (0x2733, 0x2734), (0x2744, 0x2744), (0x2747, 0x2747),
                 (0x274C, 0x274C), (0x274E, 0x274E), (0x2753, 0x2755), (0x2757, 0x2757),
                 (0x2763, 0x2767), (0x2795, 0x2797), (0x27A1, 0x27A1), (0x27B0, 0x27B0),
                 (0x27BF, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C),
                 (0x2B50, 0x2B50), (0x2B55, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D),
                 (0x3297, 0x3297), (0x3299, 0x3299), (0x1F000, 0x1F0FF), (0x1F10D, 0x1F10F),
                 (0x1F12F, 0x1F12F), (0x1F16C, 0x1F171), (0x1F17E, 0x1F17F),
                 (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A), (0x1F1AD, 0x1F1E5),
                 (0x1F201, 0x1F20F), (0x1F21A, 0x1F21A), (0x1F22F, 0x1F22F),
                 (0x1F232, 0x1F23A), (0x1F23C, 0x1F23F), (0x1F249, 0x1F3FA),
                 (0x1F400, 0x1F53D), (0x1F546, 0x1F64F), (0x1F680, 0x1F6FF),
                 (0x1F774, 0x1F77F), (0x1F7D5, 0x1F7FF), (0x1F80C, 0x1F80F),
                 (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F),
                 (0x1F8AE, 0x1F8FF), (0x1F90C, 0x1F93A), (0x1F93C, 0x1F945),
                 (0x1F947, 0x1FAFF), (0x1FC00, 0x1FFFD))


def _within(cp, ranges):
    return any(a <= cp <= b for a, b in ranges)


def _break_property(ch):
    try:
        return _PROPERTIES[ch]
    except KeyError:
        prop = _PROPERTIES[ch] = _computed_property(ch)
        return prop


_PROPERTIES = {}    # character -> its break property, as met


def _computed_property(ch):
    cp = ord(ch)
    if ch == "\r":
        return _CR
    if ch == "\n":
        return _LF
    if cp == 0x200D:
        return _ZWJ
    if 0x1F1E6 <= cp <= 0x1F1FF:
        return _RI
    if _within(cp, _EXTRA_EXTEND):
        return _EXTEND
    if _within(cp, _PREPENDS):
        return _PREPEND
    if 0x1100 <= cp <= 0x115F or 0xA960 <= cp <= 0xA97C:
        return _L
    if 0x1160 <= cp <= 0x11A7 or 0xD7B0 <= cp <= 0xD7C6:
        return _V
    if 0x11A8 <= cp <= 0x11FF or 0xD7CB <= cp <= 0xD7FB:
        return _T
    if 0xAC00 <= cp <= 0xD7A3:
        return _LV if (cp - 0xAC00) % 28 == 0 else _LVT
    category = unicodedata.category(ch)
    if category in ("Mn", "Me"):
        return _EXTEND
    if category == "Mc" and not _within(cp, _NOT_SPACING) or _within(cp, _EXTRA_SPACING):
        return _SPACING
    if category in ("Cc", "Zl", "Zp", "Cf"):
        return _CONTROL
    if _within(cp, _PICTOGRAPHIC):
        return _PICTO
    return _OTHER


# What may join a cluster with its neighbour (CR only before LF).
_JOINING = frozenset((_CR, _EXTEND, _ZWJ, _SPACING, _PREPEND, _RI, _L, _V, _T, _LV, _LVT))
_HANGUL_JOINS = {(_L, _L), (_L, _V), (_L, _LV), (_L, _LVT), (_LV, _V), (_LV, _T), (_V, _V),
                 (_V, _T), (_LVT, _T), (_T, _T)}
_BREAKING = (_CONTROL, _CR, _LF)


def grapheme_spans(text):
    """(start, end) of each extended grapheme cluster of text."""
    if text.isascii() and "\r\n" not in text:
        return [(k, k + 1) for k in range(len(text))]
    spans, start = [], 0
    props = [_break_property(ch) for ch in text]
    picto_then_extends = False     # after ExtPict Extend*: a ZWJ there joins an ExtPict
    ri_run = 0                     # regional indicators just before, in this run
    for k in range(1, len(text)):
        before, after = props[k - 1], props[k]
        if before == _PICTO:
            picto_then_extends = True
        elif before not in (_EXTEND, _ZWJ):
            picto_then_extends = False
        ri_run = ri_run + 1 if before == _RI else 0
        if before == _CR and after == _LF:
            join = True
        elif before in _BREAKING or after in _BREAKING:
            join = False
        elif (before, after) in _HANGUL_JOINS:
            join = True
        elif after in (_EXTEND, _ZWJ, _SPACING) or before == _PREPEND:
            join = True
        elif before == _ZWJ and after == _PICTO:
            join = picto_then_extends
        elif before == _RI and after == _RI:
            join = ri_run % 2 == 1
        else:
            join = False
        if not join:
            spans.append((start, k))
            start = k
    if text:
        spans.append((start, len(text)))
    return spans
