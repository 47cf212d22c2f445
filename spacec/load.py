"""Loading spaces: names and paths -> parsed, checked, compiled `CompiledSpace` objects.

This is the one place (besides the CLI) that reads files. A space is named by a shipped name
(`darts_cnn`) or by a path to a .space file; imports inside a space are resolved relative to the
importing file, or by shipped name.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import linecache
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import ModuleType

from spacec import ast, check, codegen, cost, ir, parse, spec
from spacec.arch.derive import CellRule
from spacec.arch.rules import cell_rules
from spacec.errors import NO_SPAN, Diagnostic, SpaceError, Span, suggest
from spacec.files import locate_invalid, reason

SUFFIX = ".space"
# How deeply imports may nest (a imports b imports c ...): each level is a stack frame of the
# checker, and a chain this long is surely generated, not written.
MAX_IMPORT_DEPTH = 32


def shipped_spaces() -> dict[str, Path]:
    """Name -> path of every space shipped with spacec."""
    folder = resources.files("spacec.spaces")
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(SUFFIX):
            found[entry.name.removesuffix(SUFFIX)] = Path(str(entry))
    return dict(sorted(found.items()))


NOT_REGULAR = "is not a regular file (a device, a pipe or a socket), not a .space file"


def locate(name_or_path: str) -> Path:
    """A shipped space's path, or the given path; SpaceError when neither exists."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_spaces()
    if name_or_path in shipped:
        return shipped[name_or_path]
    if path.is_dir():
        raise SpaceError([Diagnostic(_path_span(str(path)), "is a folder, not a .space file")])
    if path.exists():
        raise SpaceError([Diagnostic(_path_span(str(path)), NOT_REGULAR)])
    if path.suffix == SUFFIX or "/" in name_or_path:
        raise SpaceError([Diagnostic(_path_span(str(path)), "no such file")])
    raise SpaceError(
        [
            Diagnostic(
                _path_span(name_or_path),
                f"no shipped space named '{name_or_path}' and no such file",
                suggest(name_or_path, shipped, "spaces"),
            )
        ]
    )


def _path_span(path: str) -> Span:
    return Span(path, 0, 0, 0)


def read_source(path: Path, shown: str | None = None) -> str:
    """A .space file's text (`shown`: its path in messages); SpaceError when it cannot be read,
    positioned at the first invalid byte when it is not UTF-8."""
    shown = shown or str(path)
    if path.is_dir():
        raise SpaceError([Diagnostic(_path_span(shown), "is a folder, not a .space file")])
    if path.exists() and not path.is_file():
        raise SpaceError([Diagnostic(_path_span(shown), NOT_REGULAR)])
    try:  # bytes, so CRLF files keep their bytes and the header's sha256 is the file's
        data = path.read_bytes()
    except OSError as error:
        raise SpaceError([Diagnostic(_path_span(shown), f"cannot read: {reason(error)}")]) from None
    try:
        return plain_text(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        position, _ = locate_invalid(data, error.start, error.end)
    at = Span(shown, position.line, position.column, 4 * position.length)
    diagnostic = Diagnostic(
        at, f"not UTF-8 text (byte 0x{position.byte:02x})", "save the file as UTF-8"
    )
    # The excerpt shows the line with its invalid bytes written \\xNN.
    raise SpaceError([diagnostic], {shown: data.decode("utf-8", "backslashreplace")})


_LONE_CR = re.compile("\r(?!\n)")


def plain_text(text: str) -> str:
    """A source's text as the parser reads it: a leading byte-order mark (some Windows editors
    write one) dropped, and the line ends of classic Mac files (a CR alone) made LF, since lines
    are counted by LF. A file with neither is taken as it is, byte for byte (its sha256 is the
    file's; CRLF files keep their CRs, which the line excerpts drop)."""
    text = text.removeprefix("\ufeff")
    return _LONE_CR.sub("\n", text) if "\r" in text else text


def display_path(path: Path) -> str:
    """Paths in messages and headers: `spaces/NAME.space` for a shipped space (the same bytes
    wherever spacec is installed), else relative to the working directory when inside it."""
    shipped = {p.resolve(): name for name, p in shipped_spaces().items()}
    if path.resolve() in shipped:
        return f"spaces/{path.name}"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, int | float]:
    """`--set C=36` strings -> {"C": 36}."""
    overrides: dict[str, int | float] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SpaceError([Diagnostic(NO_SPAN, f"--set {pair}: expected NAME=NUMBER")])
        overrides[key] = _number(text.strip(), pair)
    return overrides


def _number(text: str, pair: str) -> int | float:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    raise SpaceError([Diagnostic(NO_SPAN, f"--set {pair}: '{text}' is not a number")])


class _Importer:
    """Resolves `import ... from` declarations, rejecting missing files, self-imports and cycles."""

    def __init__(self, root: Path):
        self.stack = [root.resolve()]

    def __call__(self, decl: ast.Import, importing: str) -> spec.Space:
        base = self.stack[-1].parent
        if decl.is_path and "\0" in decl.source.text:  # the OS takes no such path
            raise SpaceError([Diagnostic(decl.source.span, "import: a path cannot hold a NUL")])
        if decl.is_path:
            path = (base / decl.source.text).resolve()
            if not decl.source.text or path.is_dir():
                raise SpaceError(
                    [Diagnostic(decl.source.span, f"import: '{decl.source.text}' is a folder")
                     if decl.source.text else
                     Diagnostic(decl.source.span, "import: an empty path names no file")]
                )
            if path.exists() and not path.is_file():
                raise SpaceError([Diagnostic(decl.source.span,
                                             f"import: '{decl.source.text}' {NOT_REGULAR}")])
            if not path.is_file():
                raise SpaceError(
                    [Diagnostic(decl.source.span, f"import: no such file '{decl.source.text}'")]
                )
        else:
            shipped = shipped_spaces()
            if decl.source.text not in shipped:
                raise SpaceError(
                    [
                        Diagnostic(
                            decl.source.span,
                            f"import: no shipped space '{decl.source.text}'",
                            suggest(decl.source.text, shipped, "spaces"),
                        )
                    ]
                )
            path = shipped[decl.source.text].resolve()
        if path == self.stack[-1]:
            raise SpaceError([Diagnostic(decl.source.span, "a space cannot import itself")])
        if path in self.stack:
            raise SpaceError(
                [Diagnostic(decl.source.span, f"import cycle through '{decl.source.text}'")]
            )
        if len(self.stack) > MAX_IMPORT_DEPTH:
            raise SpaceError(
                [Diagnostic(decl.source.span, f"imports nest more than {MAX_IMPORT_DEPTH} deep")]
            )
        text = read_source(path, display_path(path))
        self.stack.append(path)
        try:
            return check.check(parse.parse(text, display_path(path)), resolve=self, library=True)
        finally:
            self.stack.pop()


def compile_file(path: Path, overrides: dict | None = None) -> CompiledSpace:
    shown = display_path(path)
    text = read_source(path, shown)
    with parse.collector_paused():
        tree = parse.parse(text, shown)
        checked = check.check(tree, overrides or {}, resolve=_Importer(path))
        del tree  # most of its objects: freed now, their memory is the IR's (a lower peak)
        try:
            built = ir.build(checked)
            # Sizes that reach zero (or halves that do not line up) at the space's input size
            # are compile-time errors, reported at the body statement, before anything is
            # allocated.
            cost.check_shapes(built, text)
        except SpaceError as error:
            raise SpaceError(error.diagnostics, {shown: text}, error.omitted) from None
        sized = cost.auxiliary_warnings(built, text)
        if sized:
            checked = dataclasses.replace(checked, warnings=(*checked.warnings, *sized))
    return CompiledSpace(checked, built, text, path, dict(overrides or {}))


def load(name_or_path: str | Path, **overrides) -> CompiledSpace:
    """`spacec.load("darts_cnn", C=16)`: parse, check and compile a space."""
    expect_argument("load", "name_or_path", name_or_path, (str, Path),
                    "a shipped space's name or a .space path")
    return compile_file(locate(str(name_or_path)), overrides)


def expect_argument(function: str, name: str, value: object, kinds: type | tuple[type, ...],
                    what: str) -> None:
    """TypeError naming the argument and what it takes, unless `value` is one of `kinds` (the
    Python API checks its arguments where they come in, not deep inside)."""
    if not isinstance(value, kinds):
        raise TypeError(f"{function}(): {name} must be {what}, got {type(value).__name__} "
                        f"{value!r:.60}")


@dataclass
class CompiledSpace:
    """A checked, compiled space: its IR, generated source, and the supernet it describes."""

    spec: spec.Space
    ir: ir.IR
    text: str
    file: Path | None = None  # the .space file it was compiled from
    overrides: dict[str, int | float] = field(default_factory=dict)  # the parameters set
    _module: ModuleType | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dag(self) -> dict:
        """The IR: cell type -> networkx.DiGraph (schema in spacec/ir.py)."""
        return self.ir.cells

    @cached_property
    def source(self) -> str:
        """The generated supernet module's source text."""
        return codegen.generate(self.ir)

    @property
    def params(self) -> dict[str, int | float]:
        return dict(self.spec.params)

    def listing(self) -> str:
        return ir.listing(self.ir)

    @cached_property
    def rules(self) -> dict[str, CellRule]:
        """Cell type -> its derivation rule (pure: no torch)."""
        return cell_rules(self.spec)

    def module(self) -> ModuleType:
        """Import the generated supernet module (this imports torch)."""
        if self._module is None:
            self._module = load_generated(self.source, f"{self.name}_supernet")
        return self._module

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the network's input (image spaces)."""
        network = self.spec.network
        size = network.get("image_size").value
        return (network.get("in_channels").value, size, size)

    def discrete_source(self, genotype) -> str:
        """Source of the standalone derived network for a genotype (object, preset, file, run dir)."""
        from spacec.arch.genotype import Genotype, GenotypeError, resolve

        if not isinstance(genotype, Genotype):
            genotype = resolve(str(genotype), self.name)
        try:
            return codegen.generate_discrete(self.ir, genotype)
        except GenotypeError as error:
            if genotype.space == self.name:
                raise
            raise GenotypeError(
                f"{error}\n  (the genotype was derived for space '{genotype.space}')"
            ) from None

    def with_params(self, **params: int | float) -> CompiledSpace:
        """The space compiled again with these parameters set (on top of its own), checked as
        `spacec.load` and `--set` check them; this space where they change nothing."""
        if self.file is None:
            raise ValueError(f"space {self.name} was not compiled from a file")
        if all(self.params.get(name) == value and type(self.params.get(name)) is type(value)
               for name, value in params.items()):
            return self
        return compile_file(self.file, {**self.overrides, **params})

    def discrete_network(self, genotype, **kwargs):
        """An instance of the derived network (imports torch). Keywords: the space's
        parameters (the network is compiled at them) and the network's own options
        (`auxiliary`, `drop_path_prob`; a language model's dropouts)."""
        params, options = self._split_keywords(kwargs)
        if params:
            return self.with_params(**params).discrete_network(genotype, **options)
        source = self.discrete_source(genotype)
        network = load_generated(source, f"{self.name}_derived").Network
        self._check_options("discrete_network", network, options)
        return network(**options)

    def supernet(self, **kwargs):
        """An instance of the generated supernet (`nn.Module`), at the compiled parameters.
        Keywords: the space's parameters (checked as `--set` checks them) and the network's own
        options (`relaxation`; a language model's dropouts)."""
        params, options = self._split_keywords(kwargs)
        if params:
            return self.with_params(**params).supernet(**options)
        network = self.module().Network
        self._check_options("supernet", network, options)
        network_params = {name for name, _ in codegen._network_params(self.spec)}
        defaults = {k: v for k, v in self.spec.params if k in network_params}
        return network(**defaults, **options)

    def _split_keywords(self, kwargs: dict) -> tuple[dict, dict]:
        """(the space's parameters among the keywords, the rest)."""
        params = {name: value for name, value in kwargs.items() if name in self.params}
        return params, {name: value for name, value in kwargs.items() if name not in params}

    def _check_options(self, method: str, network: type, options: dict) -> None:
        """SpaceError for a keyword that is neither a parameter of the space nor an option of
        the network, listing both."""
        known_options = network_options(network, set(self.params))
        unknown = [name for name in options if name not in known_options]
        if unknown:
            known = [*self.params, *known_options]
            raise SpaceError([
                Diagnostic(NO_SPAN, f"{method}(): {name}: no such parameter or option",
                           suggest(name, known, "parameters and options"))
                for name in unknown
            ])


def network_options(network: type, params: set[str]) -> list[str]:
    """The keyword options of a generated network's constructor beyond the space's parameters:
    its own named arguments and, where it passes **keywords on, its base's keyword-only ones."""
    found: list[str] = []
    for klass in network.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        arguments = list(inspect.signature(init).parameters.values())[1:]  # less self
        own = klass is network
        found += [a.name for a in arguments if a.name not in params and a.name not in found
                  and (a.kind is a.KEYWORD_ONLY or own and a.kind is a.POSITIONAL_OR_KEYWORD)]
        if not any(a.kind is a.VAR_KEYWORD for a in arguments):
            break
    return found


def load_generated(source: str, stem: str) -> ModuleType:
    """Execute generated source as a module whose tracebacks show its real lines."""
    import hashlib

    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    filename = f"<spacec-generated {stem} {digest}>.py"
    name = f"spacec_generated.{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module_spec = importlib.util.spec_from_loader(name, loader=None, origin=filename)
    module = importlib.util.module_from_spec(module_spec)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    sys.modules[name] = module
    return module
