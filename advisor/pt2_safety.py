"""Scan an untrusted torch.export `.pt2` and hand torch only the bytes that were scanned.

Threat model
------------
Trusted: this process, the installed Python packages (torch, sympy, advisor) and what the user
types on the command line (`--arch`, `--trust-pickle`). Untrusted: every byte of the `.pt2` — its
zip structure (names, duplicates, roots, local headers), each member's content, and the advisor
metadata inside it. The goal: loading an untrusted `.pt2` without `--trust-pickle` must not run
code from the file; it may only fail with a ModelLoadError.

Routes by which `torch.export.load` (torch 2.13) and `ExportedProgram.module()` can run code
taken from the file, and how each is closed here:

1. The archive itself. torch's reader (`PyTorchFileReader`, miniz) and Python's `zipfile` read
   the same file differently: duplicates (miniz finds the first copy, zipfile the last), lookups
   that ignore case, entries outside the archive root, and `torch.export.load` deserialising every
   `models/*` entry, whatever its name. Closed by never letting torch read the file: the scan reads
   every entry once with `zipfile`, refuses duplicate names (also differing only in case), more
   than one root, entries outside the root, `..`/absolute/backslash/non-ASCII names and any member
   that is not on the allowlist of what `torch.export.save` writes; `repack()` then writes exactly
   the scanned bytes into a fresh in-memory archive (torch's own writer) and that is what torch
   loads. Anything torch could read is therefore something the scan has classified and checked.
2. Pickles. Weights/constants marked `use_pickle`, legacy `data/weights/<m>.pt` /
   `data/constants/<m>.pt`, TorchBind `custom_obj_*` and `opaque_obj_*` constants are unpickled with
   full pickle; sample inputs are tried with `weights_only=True` and fall back to full unpickling.
   Closed: all of those are refused, and the sample inputs must load with `weights_only=True`
   (the same bytes are repacked, so torch's first attempt succeeds and it never falls back).
   Payload members must be the `weight_<n>`/`tensor_<n>` files a config references.
3. AOTInductor (`data/aotinductor/`): native shared libraries are loaded. Refused.
4. `sympy.sympify` (an `eval`) on every `expr_str`, and `guards_code` compiled into Python by
   `.module()`. Both must be arithmetic over allowlisted names (`_safe_expression`).
5. FX code generation: `.module()` (and deserialising the graph) generates Python source from node
   names, keyword names, `forward_arg_names` and parameter/buffer paths, and `exec`s it; a name such
   as `x=__import__('os').system(...)` is code. Names must be identifiers, paths dotted
   identifiers without dunders, and no string may hold a line break (comments carry stack traces)
   other than a `\\n` inside a stack trace.
6. Operator resolution: node targets and `as_operator` arguments are resolved by `getattr` on
   torch/math/operator; only `torch.ops.<ns>.<op>[.<overload>]`, `math.*` and a few `_operator`
   functions are allowed (no dunders, no `#extension` handlers).
7. pytree specs (`in_spec`/`out_spec`): `collections.defaultdict` contexts and `__enum__` contexts
   make torch `importlib.import_module` a module named by the file. Only the container types
   torch registers by default (without defaultdict) and no `__enum__` are allowed.
8. Custom objects (`custom_obj_values`) are refused.

What stays trusted: torch's weights-only unpickler, its JSON → dataclass decoding and its tensor
reading (bugs there are torch's), and `getattr` on torch namespaces for allowlisted targets.
With `--trust-pickle` none of this runs: the user vouches for the file and torch reads it as is.
"""
from __future__ import annotations

import io
import json
import re
import tokenize
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advisor.errors import ModelLoadError

__all__ = ["Pt2Scan", "scan_pt2", "pt2_hazards"]

_HINT_CORRUPT = "the file is corrupt or was edited by hand: export it again with torch.export.save"

# members the writer creates itself (not copied: the repacked archive gets its own)
_WRITER_MEMBERS = frozenset({".data/version", "byteorder", ".data/serialization_id"})
_ROOT = re.compile(r"^[A-Za-z0-9_.\-]+$")
_MEMBER_CHARS = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_PROGRAM = re.compile(r"^models/([A-Za-z0-9_][A-Za-z0-9_.\-]*)\.json$")
_EXTRA = re.compile(r"^extra/([A-Za-z0-9_][A-Za-z0-9_.\-]*)$")
_PAYLOAD = {"weights": re.compile(r"^weight_\d+$"), "constants": re.compile(r"^tensor_\d+$")}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# module paths: dotted segments of letters, digits, "_" and (inside a segment) "-", as in
# torchvision's RegNet ("trunk_output.block4.block4-5"); torch.fx writes a segment that is not an
# identifier as a quoted string (getattr(self, "block4-5")), and "-" cannot end a string literal
_FQN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_][A-Za-z0-9_\-]*)*$")
# a line break for Python's tokenizer (\r, \n) or any other control character
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")

_NAME_KEYS = frozenset({"name", "as_name", "user_input_name", "custom_obj_name"})
_NAME_LIST_KEYS = frozenset({"as_names", "forward_arg_names", "field_names"})
_FQN_KEYS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "fqn",
                       "class_fqn"})
_NAMED_VALUE_DICTS = frozenset({"tensor_values", "sym_int_values", "sym_bool_values",
                                "sym_float_values", "custom_obj_values", "range_constraints"})
_TREESPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict",
                             "collections.OrderedDict", "collections.namedtuple",
                             "collections.deque", "torch.Size",
                             "torch.fx.immutable_collections.immutable_list",
                             "torch.fx.immutable_collections.immutable_dict"})

_SAFE_OPERATOR = frozenset(
    "add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge and_ or_ xor not_ "
    "invert getitem".split())
_SAFE_OP_TARGET = re.compile(r"^(torch\.ops\.[A-Za-z_]\w*\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)?"
                             r"|math\.[a-z]\w*|_operator\.(\w+))$")
_EXPR_NAMES = frozenset(
    "Symbol Integer Rational Float Max Min Abs Mul Add Pow Mod Eq Ne Lt Le Gt Ge And Or Not "
    "StrictLessThan StrictGreaterThan LessThan GreaterThan Equality Unequality Piecewise ITE "
    "sqrt floor ceiling oo zoo nan true false True False None integer positive nonnegative "
    "negative nonpositive real finite zero commutative FloorDiv ModularIndexing Where "
    "PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural FloatPow "
    "FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt "
    "RoundToInt RoundDecimal ToFloat Identity L args size stride storage_offset dim and or not "
    "is in".split())
_SYMBOL_NAME = re.compile(r"^[a-z]{1,4}\d+$")


@dataclass
class Pt2Scan:
    """What the scan read: the archive's members (relative name → bytes, in archive order) and
    the reasons why loading them could run code (empty: none found)."""

    path: Path
    root: str
    members: dict[str, bytes] = field(default_factory=dict)
    hazards: list[str] = field(default_factory=list)

    def repack(self) -> io.BytesIO:
        """A fresh archive holding exactly the scanned members, for `torch.export.load`."""
        if self.hazards:
            raise ValueError("refusing to repack an archive with hazards")
        from torch.export.pt2_archive import PT2ArchiveWriter

        buf = io.BytesIO()
        with PT2ArchiveWriter(buf) as writer:
            for rel, data in self.members.items():
                if rel not in _WRITER_MEMBERS:
                    writer.write_bytes(rel, data)
        buf.seek(0)
        return buf


def pt2_hazards(path: Path) -> list[str]:
    """Reasons why loading `path` could run code from the file (empty: none found)."""
    return scan_pt2(Path(path)).hazards


def scan_pt2(path: Path, json_extras: tuple[str, ...] = ("advisor.json",)) -> Pt2Scan:
    """Read and check every member of the `.pt2` at `path` (see the module docstring).

    Raises ModelLoadError for an unreadable archive or a member that is not valid JSON/UTF-8
    where torch needs it to be; `json_extras` are extra files that must be JSON as well.
    """
    path = Path(path)
    entries = _read_entries(path)
    scan = Pt2Scan(path, "")
    structure = _structure_hazards([n for n, _ in entries])
    if structure:
        scan.hazards = structure
        return scan
    scan.root = entries[0][0].split("/", 1)[0]
    scan.members = {n[len(scan.root) + 1:]: d for n, d in entries}
    scan.hazards = list(dict.fromkeys(_content_hazards(scan, json_extras)))
    return scan


# ---- the zip structure --------------------------------------------------------------------------

def _read_entries(path: Path) -> list[tuple[str, bytes]]:
    """Every entry, read by its own central-directory record (duplicates stay separate)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [(info.filename, zf.read(info)) for info in zf.infolist()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, ValueError,
            NotImplementedError, EOFError) as e:
        raise ModelLoadError(f"{path} is truncated or corrupt (an unreadable zip archive: "
                             f"{_first_line(e)})", "the file was cut short while saving or "
                             "copying: copy or export it again") from e


def _structure_hazards(names: list[str]) -> list[str]:
    if not names:
        return ["an empty archive"]
    out = []
    for n in names:
        if "\\" in n:
            out.append(f"a member name with a backslash ({n[:80]!r})")
        elif n.startswith("/") or re.match(r"^[A-Za-z]:", n):
            out.append(f"a member with an absolute path ({n[:80]!r})")
        elif any(part in ("", ".", "..") for part in n.split("/")):
            out.append(f"a member name with '..', '.' or an empty part ({n[:80]!r})")
        elif not _MEMBER_CHARS.match(n):
            out.append(f"a member name with unusual characters ({n[:80]!r})")
        elif "/" not in n:
            out.append(f"a member outside the archive root ({n[:80]!r})")
    if out:
        return list(dict.fromkeys(out))
    roots = list(dict.fromkeys(n.split("/", 1)[0] for n in names))
    if len(roots) != 1:
        return [f"more than one archive root ({', '.join(r[:40] for r in roots[:3])})"]
    if not _ROOT.match(roots[0]):
        return [f"an unusual archive root ({roots[0][:40]!r})"]
    seen: dict[str, str] = {}
    for n in names:
        key = n.lower()
        if key in seen:
            same = seen[key] == n
            out.append(f"a duplicate member ({n[:80]!r})" if same else
                       f"members whose names differ only in case ({seen[key][:60]!r}, "
                       f"{n[:60]!r}: a duplicate for torch's reader)")
        seen.setdefault(key, n)
    return list(dict.fromkeys(out))


# ---- the members ------------------------------------------------------------------------------

def _content_hazards(scan: Pt2Scan, json_extras: tuple[str, ...]) -> list[str]:
    m = scan.members
    if m.get("archive_format") != b"pt2":
        return ["no 'archive_format: pt2' marker (a legacy or hand-made layout)"]
    out: list[str] = []
    classified = {"archive_format", "archive_version"} | (_WRITER_MEMBERS & m.keys())
    programs = [g.group(1) for r in m if (g := _PROGRAM.match(r))]
    if "model" not in programs:
        out.append("no exported program named 'model' inside")
    referenced: set[str] = set()
    for name in programs:
        classified.add(f"models/{name}.json")
        program = _json_member(scan, f"models/{name}.json", dict)
        out += _program_hazards(program)
        for kind in ("weights", "constants"):
            legacy = f"data/{kind}/{name}.pt"
            if legacy in m:
                classified.add(legacy)
                out.append(f"legacy pickled {kind}")
            cfg = f"data/{kind}/{name}_{kind}_config.json"
            if cfg in m:
                classified.add(cfg)
                out += _payload_hazards(scan, cfg, kind, referenced)
        sample = f"data/sample_inputs/{name}.pt"
        if sample in m:
            classified.add(sample)
            if not _weights_only_ok(m[sample]):
                out.append("sample inputs that need full unpickling")
    for rel in m:
        if rel in classified:
            continue
        if rel in referenced:
            continue
        if rel.startswith("data/aotinductor/"):
            out.append("it contains AOTInductor native code")
        elif re.match(r"^data/constants/(custom_obj_|opaque_obj_)", rel):
            out.append("a custom Python object constant")
        elif _EXTRA.match(rel):
            _text_member(scan, rel)
            if rel[len("extra/"):] in json_extras:
                _json_member(scan, rel, None)
        elif re.match(r"^data/(weights|constants)/(weight|tensor)_\d+$", rel):
            out.append(f"a payload member no config refers to ({rel})")
        else:
            out.append(f"a member torch.export.save does not write ({rel[:80]})")
    return out


def _payload_hazards(scan: Pt2Scan, cfg_name: str, kind: str, referenced: set[str]) -> list[str]:
    cfg = _json_member(scan, cfg_name, dict)
    config = cfg.get("config", {})
    if not isinstance(config, dict):
        raise _corrupt(scan, cfg_name, "its 'config' is not a JSON object")
    out = []
    for fqn, entry in config.items():
        if not isinstance(entry, dict):
            raise _corrupt(scan, cfg_name, f"the entry for {fqn[:60]!r} is not a JSON object")
        if not _safe_fqn(fqn):
            out.append(f"an unusual {kind} name {fqn[:60]!r}")
        path_name = str(entry.get("path_name", ""))
        if entry.get("use_pickle"):
            out.append(f"pickled {kind} ({fqn[:60]})")
        if kind == "constants" and not path_name.startswith("tensor_"):
            out.append(f"a custom Python object constant ({fqn[:60]})")
        elif not _PAYLOAD[kind].match(path_name):
            out.append(f"an unusual {kind} file name {path_name[:60]!r}")
        else:
            referenced.add(f"data/{kind}/{path_name}")
    return out


def _weights_only_ok(data: bytes) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(data), weights_only=True)
    except Exception:
        return False
    return True


def _text_member(scan: Pt2Scan, rel: str) -> str:
    try:
        return scan.members[rel].decode("utf-8")
    except UnicodeDecodeError as e:
        raise _corrupt(scan, rel, f"it is not UTF-8 text ({e.reason} at byte {e.start})") from e


def _json_member(scan: Pt2Scan, rel: str, kind: type | None) -> Any:
    text = _text_member(scan, rel)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _corrupt(scan, rel, f"it is not valid JSON ({e.msg} at line {e.lineno} "
                                  f"column {e.colno})") from e
    except RecursionError as e:
        raise _corrupt(scan, rel, "it is not valid JSON (nested too deeply)") from e
    if kind is not None and not isinstance(obj, kind):
        raise _corrupt(scan, rel, f"it holds a JSON {type(obj).__name__}, not an object")
    return obj


def _corrupt(scan: Pt2Scan, rel: str, why: str) -> ModelLoadError:
    return ModelLoadError(f"{scan.path}: member {scan.root}/{rel} is corrupt: {why}",
                          _HINT_CORRUPT)


# ---- one exported program -----------------------------------------------------------------------

def _program_hazards(program: dict) -> list[str]:
    out = []
    for guard in program.get("guards_code") or []:
        if not _safe_expression(str(guard)):
            out.append(f"guard code {str(guard)[:60]!r}")
    for kind, value in _walk(program):
        if kind == "target" and not _safe_target(value):
            out.append(f"a call to {value[:60]!r}, not a torch operator")
        elif kind == "expr" and not _safe_expression(value):
            out.append(f"a symbolic expression {value[:60]!r}")
        elif kind == "spec":
            out += _treespec_hazards(value)
        elif kind == "bad":
            out.append(value)
    graph = program.get("graph_module", {}) if isinstance(program.get("graph_module"), dict) \
        else {}
    if isinstance(graph.get("graph"), dict) and graph["graph"].get("custom_obj_values"):
        out.append("custom Python objects")
    return out


def _walk(obj: Any):
    """Yield ('target'|'expr'|'spec', str) to check, and ('bad', reason) for strings that would
    reach generated Python code: names, dotted paths, line breaks."""
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        o, key = stack.pop()
        if isinstance(o, dict):
            if isinstance(o.get("target"), str) and "inputs" in o and "outputs" in o:
                yield "target", o["target"]
            if isinstance(o.get("as_operator"), str):
                yield "target", o["as_operator"]
            if isinstance(o.get("expr_str"), str):
                yield "expr", o["expr_str"]
            for k in ("in_spec", "out_spec"):
                if isinstance(o.get(k), str):
                    yield "spec", o[k]
            for k, v in o.items():
                if not isinstance(k, str) or _CONTROL.search(k) or "\n" in k:
                    yield "bad", f"a control character in the key {str(k)[:60]!r}"
                elif key in _NAMED_VALUE_DICTS and not _IDENT.match(k):
                    yield "bad", f"an unusual value name {k[:60]!r}"
                stack.append((v, k))
        elif isinstance(o, list):
            stack.extend((v, key) for v in o)
        elif isinstance(o, str):
            reason = _string_reason(o, key)
            if reason:
                yield "bad", reason


def _string_reason(s: str, key: str) -> str | None:
    if _CONTROL.search(s) or ("\n" in s and key != "stack_trace"):
        return f"a line break or control character in {key or 'a string'} ({s[:40]!r})"
    if (key in _NAME_KEYS or key in _NAME_LIST_KEYS) and not _IDENT.match(s):
        return f"an unusual {key} {s[:60]!r} (names become Python code)"
    if key in _FQN_KEYS and s != "" and not _safe_fqn(s):
        return f"an unusual {key} {s[:60]!r} (paths become Python code)"
    return None


def _safe_fqn(s: str) -> bool:
    return bool(_FQN.match(s)) and not any(p.startswith("__") for p in s.split("."))


def _treespec_hazards(text: str) -> list[str]:
    """pytree specs may name `collections.defaultdict` (imports a module named in the file) or
    hold `__enum__` contexts (the same); only the default container types are allowed."""
    try:
        protocol, schema = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return [f"a call signature that cannot be checked ({text[:40]!r})"]
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            return ["a call signature that cannot be checked"]
        typ, ctx = node.get("type"), node.get("context")
        if typ not in _TREESPEC_TYPES:
            return [f"a call signature with the type {str(typ)[:60]!r}"]
        if isinstance(ctx, str) and "__enum__" in ctx:
            return ["a call signature whose context imports a module"]
        children = node.get("children_spec") or []
        if not isinstance(children, list):
            return ["a call signature that cannot be checked"]
        stack.extend(children)
    return []


def _safe_target(target: str) -> bool:
    m = _SAFE_OP_TARGET.match(target)
    if not m or "__" in target:
        return False
    return m.group(3) is None or m.group(3) in _SAFE_OPERATOR


def _safe_expression(text: str) -> bool:
    """Only arithmetic on allowlisted names, plain numbers and identifier-like strings, so
    nothing reachable from `eval` can call into Python (no dunders, no builtins)."""
    if _CONTROL.search(text) or "\n" in text:
        return False
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    for tok in tokens:
        if tok.type == tokenize.NAME:
            if tok.string not in _EXPR_NAMES and not _SYMBOL_NAME.match(tok.string):
                return False
        elif tok.type == tokenize.STRING:
            if not re.fullmatch(r"'[A-Za-z_]\w*'|\"[A-Za-z_]\w*\"", tok.string):
                return False
        elif tok.type not in (tokenize.OP, tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL,
                              tokenize.ENDMARKER):
            return False
    return True


def _first_line(e: BaseException) -> str:
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()[:200]
    return type(e).__name__
