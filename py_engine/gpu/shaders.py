"""Finding WGSL kernel files and specializing their compile-time constants.

Kernels declare their tunables as WGSL pipeline-overridable constants with a default:

    override TILE_M: u32 = 4u;

`specialize` rewrites every one of them into a plain `const` (the value given, else the default)
before compilation. A `const` (unlike an `override`) may size private arrays and lets the
compiler unroll loops, which register-tiled kernels depend on; each line stays a line, so
compiler positions still match the file on disk.
"""

import re
from pathlib import Path

_OVERRIDE = re.compile(
    r"^(?P<indent>[ \t]*)override[ \t]+(?P<name>\w+)[ \t]*:[ \t]*(?P<type>\w+)[ \t]*"
    r"(?:=[ \t]*(?P<default>[^;]+))?;",
    re.MULTILINE,
)

_SUFFIX = {"u32": "u", "i32": "i", "f32": "f"}


def shader_dir():
    """The folder holding the .wgsl files: inside the installed package, else the source tree."""
    packaged = Path(__file__).resolve().parent.parent / "shaders"
    if packaged.is_dir():
        return packaged
    source_tree = Path(__file__).resolve().parents[2] / "shaders"
    if source_tree.is_dir():
        return source_tree
    raise FileNotFoundError(f"no shaders folder at {packaged} or {source_tree}")


def load_source(name):
    """The text of shaders/<name>; `name` may also be a path to any .wgsl file."""
    path = Path(name)
    if not path.is_absolute():
        path = shader_dir() / name
    if not path.is_file():
        known = sorted(p.name for p in shader_dir().glob("*.wgsl"))
        raise FileNotFoundError(f"no WGSL file {name!r}; shaders/ holds {known}")
    return path.read_text(encoding="utf-8")


def declared_constants(source):
    """{name: (type, default text or None)} for every `override` in the source."""
    return {m["name"]: (m["type"], m["default"]) for m in _OVERRIDE.finditer(source)}


def _literal(value, wgsl_type, name):
    if wgsl_type == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"constant {name} is bool, got {value!r}")
        return "true" if value else "false"
    if wgsl_type in ("u32", "i32"):
        if isinstance(value, bool) or int(value) != value:
            raise TypeError(f"constant {name} is {wgsl_type}, got {value!r}")
        if wgsl_type == "u32" and value < 0:
            raise ValueError(f"constant {name} is u32, got negative {value}")
        return f"{int(value)}{_SUFFIX[wgsl_type]}"
    if wgsl_type == "f32":
        return f"{float(value)!r}f".replace("inf", "1e39").replace("nanf", "0f")
    raise TypeError(f"constant {name} has unsupported type {wgsl_type}")


def specialize(source, constants, source_name="<wgsl>"):
    """Return `source` with every `override` turned into a `const`: the value from `constants`,
    else the declared default."""
    declared = declared_constants(source)
    unknown = sorted(set(constants) - set(declared))
    if unknown:
        raise ValueError(
            f"{source_name} declares no override constant named {', '.join(unknown)}; "
            f"it declares {sorted(declared)}"
        )

    def replace(match):
        name = match["name"]
        if name in constants:
            value = _literal(constants[name], match["type"], name)
        elif match["default"] is not None:
            value = match["default"].strip()
        else:
            raise ValueError(f"{source_name}: override constant {name} has no default; pass a value")
        return f"{match['indent']}const {name}: {match['type']} = {value};"

    return _OVERRIDE.sub(replace, source)


_NAGA_POSITION = re.compile(r"wgsl:(\d+):(\d+)")


def compile_error(source_name, source, message, line=None, column=None):
    """Build a ShaderCompileError, finding the position in a naga-style message if not given."""
    from .errors import ShaderCompileError

    if line is None:
        found = _NAGA_POSITION.search(message)
        if found:
            line, column = int(found[1]), int(found[2])
    source_line = None
    if line is not None:
        lines = source.splitlines()
        if 1 <= line <= len(lines):
            source_line = lines[line - 1]
    return ShaderCompileError(source_name, message.strip(), line, column, source_line)
