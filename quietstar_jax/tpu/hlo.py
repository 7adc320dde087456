"""HLO module text -> computations and instructions, with while-loop trip counts.

    comps = parse_module(compiled.as_text())   # {name: Computation}; .entry marks the ENTRY one
    mod = Module(text); mod.trip_count(caller, while_instr)

Pure text parsing: no XLA, no device. Trip counts: the `known_trip_count` XLA puts in a while op's
backend_config when present, else read off the loop (what jax's scan / fori_loop lower to): the
condition's root compares the counter (a tuple element of the loop state) with a constant, the counter
starts at a constant in the init tuple and the body adds a constant to it; None when unreadable.
Shape sizes: logical (dims x element size) or as the TPU stores them (the layout's tiles, padding
included).
"""

from __future__ import annotations

import dataclasses
import math
import re

from quietstar_jax.errors import HloParseError

# Bytes per element (sub-byte types at their bit width: s4 = half a byte).
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5,
               "s2": 0.25, "u2": 0.25, "f4e2m1fn": 0.5, "token": 0}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\](\{[^}]*\})?")
_NAME = re.compile(r"%([\w.\-]+)")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s")
# Ops that move no data of their own (control flow's cost is its bodies').


def _dtype_bytes(dtype: str) -> float:
    if dtype in DTYPE_BYTES:
        return DTYPE_BYTES[dtype]
    if dtype.startswith("f8"):  # f8e4m3fn, f8e5m2, f8e4m3b11fnuz, ...
        return 1
    raise HloParseError(f"unknown HLO element type {dtype!r}")


def _padded(dims: list[int], layout: str) -> list[int]:
    """Dimensions as stored under a TPU tiled layout "{minor_to_major:T(a,b)...}": the most-minor dimension
    rounded up to b, the next to a (T(b) alone: the most-minor only)."""
    m = re.match(r"\{([\d,]*):T\(([\d,]+)\)", layout or "")
    if not m:
        return dims
    m2m = [int(x) for x in m.group(1).split(",") if x] or [0]
    tile = [int(x) for x in m.group(2).split(",")]
    dims = list(dims) or [1]
    for t, d in zip(reversed(tile), m2m):
        if d < len(dims):
            dims[d] = -(-dims[d] // t) * t
    return dims


def shape_bytes(shape: str, padded: bool = False) -> float:
    """Bytes of an HLO shape string: an array "bf16[2,3]{1,0:T(8,128)}" or a tuple of them (summed).
    Logical size by default; padded=True rounds the tiled dimensions up to the layout's tile, i.e. what
    the TPU stores (and XLA's cost model counts)."""
    total = 0.0
    for dtype, dims, layout in _ARRAY.findall(shape):
        # "<=8": a bounded dynamic dimension, counted at its bound.
        ds = [int(d.strip().lstrip("<=")) for d in dims.split(",") if d.strip()]
        total += math.prod(_padded(ds, layout) if padded else ds) * _dtype_bytes(dtype)
    return total


def tuple_elements(shape: str) -> list[str]:
    """Top-level elements of a tuple shape "(a, (b, c), d)" -> ["a", "(b, c)", "d"]; an array -> [it]."""
    shape = re.sub(r"/\*.*?\*/", "", shape).strip()
    if not shape.startswith("("):
        return [shape]
    out, depth, cur = [], 0, ""
    for ch in shape[1:-1]:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _matching(text: str, start: int) -> int:
    """Index of the bracket closing the one at text[start]."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    depth, quote = 0, False
    for i in range(start, len(text)):
        ch = text[i]
        if ch == '"' and text[i - 1] != "\\":
            quote = not quote
        elif not quote and ch in pairs:
            depth += 1
        elif not quote and ch in pairs.values():
            depth -= 1
            if depth == 0:
                return i
    raise HloParseError(f"unbalanced brackets in: {text[:200]}")


@dataclasses.dataclass
class Instr:
    name: str
    shape: str  # the result shape text
    opcode: str
    operands: list  # operand instruction names
    attrs: str  # everything after the operand list
    root: bool = False
    literal: str = ""  # the text inside the parentheses of parameter(N) / constant(V)

    @property
    def param_index(self) -> int | None:
        return int(self.literal) if self.opcode == "parameter" and self.literal.strip().isdigit() else None

    @property
    def int_value(self) -> int | None:
        """The value of an integer scalar constant, else None."""
        if self.opcode != "constant" or not re.fullmatch(r"[su]\d+\[\]\S*", self.shape):
            return None
        try:
            return int(self.literal.strip())
        except ValueError:
            return None

    def attr(self, key: str) -> str | None:
        """The text of attribute `key=...` (a name, or a {...} block), or None."""
        m = re.search(r"(?:^|[,\s])" + re.escape(key) + r"=", self.attrs)
        if not m:
            return None
        i = m.end()
        if i < len(self.attrs) and self.attrs[i] in "{[":
            return self.attrs[i:_matching(self.attrs, i) + 1]
        j = i
        while j < len(self.attrs) and self.attrs[j] not in ", ":
            j += 1
        return self.attrs[i:j]

    @property
    def op_name(self) -> str:
        m = re.search(r'op_name="([^"]*)"', self.attrs)
        return m.group(1) if m else ""

    def called(self, key: str) -> list[str]:
        """Names of the computations in attribute `key` (body=%b, calls=%f, branch_computations={%a, %b})."""
        v = self.attr(key)
        if not v:
            return []
        return _NAME.findall(v) or [v.lstrip("%")]


@dataclasses.dataclass
class Computation:
    name: str
    instrs: list
    entry: bool = False

    def __post_init__(self):
        self.by_name = {i.name: i for i in self.instrs}
        roots = [i for i in self.instrs if i.root]
        self.root = roots[0] if roots else (self.instrs[-1] if self.instrs else None)


def _parse_instr(line: str) -> Instr | None:
    m = _INSTR.match(line)
    if not m:
        return None
    rest, i = line, m.end()
    if rest[i] == "(":  # tuple shape
        j = _matching(rest, i) + 1
    else:
        j = i
        while j < len(rest) and rest[j] != " ":
            j += 1
    shape = rest[i:j]
    op = re.match(r"\s*([a-z][\w\-]*)\(", rest[j:])
    if not op:
        return None
    k = j + op.end() - 1
    close = _matching(rest, k)
    inside = rest[k + 1:close]
    return Instr(name=m.group(2), shape=shape, opcode=op.group(1), operands=_NAME.findall(inside),
                 attrs=rest[close + 1:], root=bool(m.group(1)),
                 literal=inside if op.group(1) in ("parameter", "constant") else "")


def parse_module(text: str) -> dict:
    """HLO module text -> {computation name: Computation}. Raises HloParseError."""
    comps, cur, instrs = {}, None, []
    for line in text.splitlines():
        if cur is None:
            if line and not line[0].isspace() and line.rstrip().endswith("{") and "->" in line \
                    and not line.startswith("HloModule"):
                m = _HEADER.match(line)
                cur = Computation(m.group(2), [], entry=bool(m.group(1))) if m else None
                instrs = []
        elif line.strip() == "}":
            comps[cur.name] = Computation(cur.name, instrs, cur.entry)
            cur = None
        else:
            ins = _parse_instr(line)
            if ins is not None:
                instrs.append(ins)
    if not any(c.entry for c in comps.values()):
        raise HloParseError("no ENTRY computation found (is this HLO module text?)")
    return comps


# --------------------------------------------------------------------------- trip counts
def through(comp: Computation, name: str) -> Instr | None:
    """The instruction `name`, looking through ops that pass a value on unchanged."""
    ins = comp.by_name.get(name)
    while ins is not None and ins.opcode in ("copy", "bitcast", "convert", "reshape") and ins.operands:
        ins = comp.by_name.get(ins.operands[0])
    return ins


def _gte_index(ins: Instr | None, comp: Computation) -> int | None:
    """Tuple index of a get-tuple-element of the computation's (only) parameter."""
    if ins is None or ins.opcode != "get-tuple-element":
        return None
    src = comp.by_name.get(ins.operands[0]) if ins.operands else None
    if src is None or src.opcode != "parameter":
        return None
    m = re.search(r"index=(\d+)", ins.attrs)
    return int(m.group(1)) if m else None


class Module:
    def __init__(self, text: str):
        self.comps = parse_module(text)
        self.entry = next(c for c in self.comps.values() if c.entry)
        m = re.search(r"num_partitions=(\d+)", text)
        self.num_partitions = int(m.group(1)) if m else 1
        m = re.search(r"replica_count=(\d+)", text)
        self.replica_count = int(m.group(1)) if m else 1

    @staticmethod
    def const(comp, name: str) -> int | None:
        ins = through(comp, name)
        return ins.int_value if ins is not None else None

    def trip_count(self, caller: Computation, w: Instr) -> int | None:
        """Iterations of while op `w` (in `caller`), or None when it cannot be read."""
        m = re.search(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)', w.attrs)
        if m:
            return int(m.group(1))
        cond = self.comps.get((w.called("condition") or [""])[0])
        body = self.comps.get((w.called("body") or [""])[0])
        if cond is None or body is None or cond.root is None:
            return None
        root, ccomp = cond.root, cond
        if root.opcode == "fusion":  # the compare fused: read it inside, its parameters are the operands
            fused = self.comps.get((root.called("calls") or [""])[0])
            if fused is None or fused.root is None or fused.root.opcode != "compare":
                return None
            args = []
            for op in fused.root.operands:
                p = through(fused, op)
                if p is not None and p.param_index is not None and p.param_index < len(root.operands):
                    args.append(root.operands[p.param_index])  # a name in the condition computation
                else:
                    args.append(p.name if p is not None else None)  # e.g. a constant inside the fusion
            root = dataclasses.replace(fused.root, operands=args)
            ccomp = MergedLookup(cond, fused)
        if root.opcode != "compare" or len(root.operands) != 2 or None in root.operands:
            return None
        direction = (re.search(r"direction=(\w+)", root.attrs) or [None, ""])[1]
        a, b = root.operands
        ia, ib = _gte_index(through(ccomp, a), ccomp), _gte_index(through(ccomp, b), ccomp)
        ca, cb = self.const(ccomp, a), self.const(ccomp, b)
        if ia is not None and cb is not None:
            idx, bound = ia, cb
        elif ib is not None and ca is not None:  # bound < i  ==  i > bound
            idx, bound = ib, ca
            direction = {"LT": "GT", "LE": "GE", "GT": "LT", "GE": "LE"}.get(direction, direction)
        else:
            return None
        # The counter's start: element idx of the init tuple.
        init_t = through(caller, w.operands[0]) if w.operands else None
        if init_t is None or init_t.opcode != "tuple" or idx >= len(init_t.operands):
            return None
        start = self.const(caller, init_t.operands[idx])
        # The step: body root tuple element idx = add(counter, constant).
        step = None
        broot = body.root
        if broot is not None and broot.opcode == "tuple" and idx < len(broot.operands):
            upd = through(body, broot.operands[idx])
            if upd is not None and upd.opcode in ("add", "subtract") and len(upd.operands) == 2:
                x, y = upd.operands
                cx, cy = self.const(body, x), self.const(body, y)
                c = cy if cy is not None else cx
                if c is not None:
                    step = -c if upd.opcode == "subtract" else c
        if start is None or not step:
            return None
        if direction in ("LT", "LE") and step > 0:
            n = (bound - start + (1 if direction == "LE" else 0) + step - 1) // step
        elif direction in ("GT", "GE") and step < 0:
            n = (start - bound + (1 if direction == "GE" else 0) - step - 1) // -step
        else:
            return None
        return max(0, n)


class MergedLookup:
    """A condition computation plus its fused compare: one namespace for through / _gte_index."""

    def __init__(self, outer: Computation, fused: Computation):
        self.by_name = {**fused.by_name, **outer.by_name}
        self.name = outer.name
