"""Finding WGSL kernel files, expanding their includes and specializing their compile-time constants.

WGSL has no #include; a kernel file names a shared piece with a comment line of its own,

    //#include "lib/workgroup_sum.wgsl"

(the path relative to the including file's folder). `load_source` leaves that line where it is,
still a comment, and appends each included file's text after the kernel's last line, behind a
marker comment `//#line 1 "lib/workgroup_sum.wgsl"` (C's #line: the next line is line 1 of that
file). WGSL's module-scope declarations may come in any order, so the appended text can use what
the kernel declares (its WORKGROUP, a type alias) and the other way round. Every line of the
kernel keeps its number, and `compile_error` maps a position in the appended text back to the
included file's own name and line. A file included twice in one expansion (a diamond) is
appended once; files may include files; a cycle or a missing file is a ShaderIncludeError at
the directive's line.

Kernels declare their tunables as WGSL pipeline-overridable constants with a default:

    override TILE_M: u32 = 4u;

`specialize` rewrites every one of them into a plain `const` (the value given, else the default)
before compilation, in included files as in the kernel's own text. A `const` (unlike an
`override`) may size private arrays and lets the compiler unroll loops, which register-tiled
kernels depend on; each line stays a line, so compiler positions still match the files on disk.
"""

import re
from pathlib import Path

from .errors import ShaderCompileError, ShaderIncludeError

_OVERRIDE = re.compile(
    r"^(?P<indent>[ \t]*)override[ \t]+(?P<name>\w+)[ \t]*:[ \t]*(?P<type>\w+)[ \t]*"
    r"(?:=[ \t]*(?P<default>[^;]+))?;",
    re.MULTILINE,
)

_SUFFIX = {"u32": "u", "i32": "i", "f32": "f"}

# A line holding only `//#word ...` is a directive; `//#include "path"` is the one a file may use.
_DIRECTIVE = re.compile(r"^[ \t]*//#(?P<word>\S*)(?P<argument>.*?)[ \t]*$")
_INCLUDE_ARGUMENT = re.compile(r'[ \t]+"(?P<path>[^"]+)"')
# Written by the expansion only: the next line is line `line` of file `name`.
_LINE_MARKER = re.compile(r'^//#line (?P<line>\d+) "(?P<name>[^"]*)"$')


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
    """The text of shaders/<name> with its includes expanded; `name` may also be a path to any
    .wgsl file."""
    path = Path(name)
    if not path.is_absolute():
        path = shader_dir() / name
    if not path.is_file():
        known = sorted(p.name for p in shader_dir().glob("*.wgsl"))
        raise FileNotFoundError(f"no WGSL file {name!r}; shaders/ holds {known}")
    return expand_includes(path.read_text(encoding="utf-8"), path, str(name))


def expand_includes(text, path, name):
    """`text`, the file at `path` (called `name` in messages), followed by every file it
    includes, directly or through others, each once, each behind a `//#line 1` marker."""
    path = Path(path).resolve()
    appended = []
    _append_includes(text, path, name, [(path, name)], {path}, path.parent, appended)
    if not appended:
        return text
    return "".join(_ending_in_newline(part) for part in [text, *appended])


def _append_includes(text, path, name, chain, seen, root, appended):
    """Append (depth first) the files `text` includes that `seen` does not hold yet; `chain`
    holds (path, name) of the kernel and each file on the way to this one."""
    included_by = chain[0][1] if len(chain) > 1 else None
    for line_number, source_line, target in _include_directives(text, name, included_by):
        found = (path.parent / target).resolve()
        cycle = [shown for p, shown in chain if p == found]
        if cycle:
            names = " -> ".join([shown for _, shown in chain] + cycle[:1])
            raise ShaderIncludeError(name, f"including {target!r} closes a cycle: {names}",
                                     line_number, None, source_line, included_by)
        if found in seen:
            continue
        if not found.is_file():
            raise ShaderIncludeError(name, f"no file {target!r} to include (looked for {found})",
                                     line_number, None, source_line, included_by)
        seen.add(found)
        included_name = _shown_name(found, root)
        included_text = found.read_text(encoding="utf-8")
        appended.append(f'//#line 1 "{included_name}"\n' + _ending_in_newline(included_text))
        _append_includes(included_text, found, included_name, [*chain, (found, included_name)],
                         seen, root, appended)


def _include_directives(text, name, included_by):
    """(line number, line, path) of each include directive in `text`; anything else starting
    with //# on a line of its own is a mistake, reported as one."""
    for number, line in enumerate(text.splitlines(), start=1):
        directive = _DIRECTIVE.match(line)
        if directive is None:
            continue
        argument = _INCLUDE_ARGUMENT.fullmatch(directive["argument"])
        if directive["word"] != "include" or argument is None:
            raise ShaderIncludeError(
                name, f'{line.strip()!r} is not a directive; the one directive is '
                      f'//#include "path/to/file.wgsl" on a line of its own',
                number, None, line, included_by)
        yield number, line, argument["path"]


def _shown_name(path, root):
    """An included file's name in messages: relative to the kernel's folder (shaders/) if under it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _ending_in_newline(text):
    return text if text.endswith("\n") else text + "\n"


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
# naga's source excerpt: "12 │   code", the line number right-aligned in a gutter.
_NAGA_GUTTER = re.compile(r"^(?P<gutter>[ \t]*\d+)(?= │)", re.MULTILINE)


def source_position(source, line, kernel_name):
    """(file name, line in that file) of line `line` of an expanded kernel's text: the kernel
    itself up to its first appended include, then the file named by the nearest //#line marker
    above `line`."""
    lines = source.splitlines()
    for index in range(min(line, len(lines)) - 1, -1, -1):
        marker = _LINE_MARKER.match(lines[index])
        if marker:
            return marker["name"], int(marker["line"]) + (line - 1) - (index + 1)
    return kernel_name, line


def compile_error(source_name, source, message, line=None, column=None):
    """Build a ShaderCompileError for kernel `source_name` compiled from the expanded text
    `source`, finding the position in a naga-style message if not given. A position inside an
    included file is reported as that file's name and line, the kernel as `included_by`."""
    if line is None:
        found = _NAGA_POSITION.search(message)
        if found:
            line, column = int(found[1]), int(found[2])
    file_name, file_line, source_line = source_name, line, None
    if line is not None:
        lines = source.splitlines()
        if 1 <= line <= len(lines):
            source_line = lines[line - 1]
        file_name, file_line = source_position(source, line, source_name)
    message = _relabel_positions(message, source, source_name)
    included_by = source_name if file_name != source_name else None
    return ShaderCompileError(file_name, message.strip(), file_line, column, source_line, included_by)


def _relabel_positions(message, source, kernel_name):
    """naga's "wgsl:LINE:COL" locations and excerpt line numbers, in the files' own terms."""
    def location(found):
        name, line = source_position(source, int(found[1]), kernel_name)
        return f"{name}:{line}:{found[2]}"

    def gutter(found):
        text = found["gutter"]
        _, line = source_position(source, int(text), kernel_name)
        return str(line).rjust(len(text))

    return _NAGA_GUTTER.sub(gutter, _NAGA_POSITION.sub(location, message))
