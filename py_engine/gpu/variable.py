"""Values rewritten between replays of a recorded program.

A recorded program binds its uniform buffers once. A value that must change from one replay to
the next (the position of a token decoded with a KV cache: the RoPE offset, the cache row its
keys and values are appended at, the attention's count of cached keys) is a Variable: pass it
to `device.uniform` in place of a number, and every uniform field it was packed into is
rewritten when it is set.

    position = Variable(0)
    params = device.uniform("4I", count, width, position, 0)    # records where it lives
    position.require(lambda p: p + rows <= capacity, "cache rows")
    ...
    position.set(17)          # checked against every requirement, then written into each use

Requirements are the recording kernels' bounds checks, kept with the value so that a replay
can never address memory the recorded shapes did not allow.
"""

import struct


class Variable:
    """A scalar (u32 "I", i32 "i" or f32 "f") recorded into uniforms and set between replays."""

    def __init__(self, value=0, kind="I", name="variable"):
        if kind not in ("I", "i", "f"):
            raise ValueError(f"a Variable holds a u32 ('I'), i32 ('i') or f32 ('f'), not {kind!r}")
        self.kind = kind
        self.name = name
        self._value = value
        self._uses = []           # (buffer, byte offset) of each uniform field holding it
        self._requirements = []   # (predicate, what) checked on set

    @property
    def value(self):
        return self._value

    def __repr__(self):
        return f"Variable({self.name}={self._value})"

    def require(self, predicate, what):
        """Refuse values for which predicate(value) is false (checked now and on every set)."""
        if not predicate(self._value):
            raise ValueError(f"{self.name} = {self._value} is out of range for {what}")
        self._requirements.append((predicate, what))

    def bind(self, buffer, offset):
        """Rewrite the field at byte `offset` of `buffer` whenever the value is set."""
        self._uses.append((buffer, offset))

    def set(self, value):
        for predicate, what in self._requirements:
            if not predicate(value):
                raise ValueError(f"{self.name} = {value} is out of range for {what}")
        data = struct.pack("<" + self.kind, value)
        for buffer, offset in self._uses:
            buffer.write(data, offset=offset)
        self._value = value

    def forget(self, buffers):
        """Stop rewriting fields of `buffers` (a program using them was released)."""
        ids = {id(b) for b in buffers}
        self._uses = [(b, o) for b, o in self._uses if id(b) not in ids]


def value_of(x):
    """The current value of a Variable, or x itself."""
    return x.value if isinstance(x, Variable) else x


def pack_uniform(fmt, values):
    """(bytes, [(Variable, byte offset)]) of struct.pack("<" + fmt, ...) with Variables packed
    at their current value. Every field is 4 bytes (u32, i32, f32) or explicit padding."""
    plain, bound, offset = [], [], 0
    codes = _expand(fmt)
    if len([c for c in codes if c != "x"]) != len(values):
        raise ValueError(f"uniform format {fmt!r} has {len(codes)} fields, got {len(values)} values")
    values = iter(values)
    for code in codes:
        if code == "x":
            offset += 1
            continue
        value = next(values)
        if isinstance(value, Variable):
            if value.kind != code:
                raise TypeError(f"{value!r} is {value.kind!r}, the uniform field is {code!r}")
            bound.append((value, offset))
            value = value.value
        plain.append(value)
        offset += 4
    return struct.pack("<" + fmt, *plain), bound


def _expand(fmt):
    """struct format codes one per field ("4I2f" -> "IIIIff")."""
    out, count = [], ""
    for ch in fmt:
        if ch.isdigit():
            count += ch
            continue
        if ch not in "Iifx":
            raise ValueError(f"uniform fields are u32 'I', i32 'i', f32 'f' or padding 'x'; got {ch!r}")
        out += [ch] * int(count or 1)
        count = ""
    return out
