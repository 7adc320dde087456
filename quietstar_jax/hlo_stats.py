"""Per-chip, per-step communication and HBM traffic of a compiled XLA program, read from its HLO text.

    stats = analyze(compiled.as_text())      # the optimized, partitioned (per-chip SPMD) module
    stats.collective_bytes[("all-gather", "sampling")]   # bytes per chip per step
    stats.hbm_bytes                                      # bytes read + written per chip per step

Pure text parsing: no XLA, no device. What the module runs once per step is the ENTRY computation; a
while loop's body runs `trip count` times, nested loops multiply. XLA's cost_analysis() counts every
loop body once, which for a step whose layers, thought-decode steps and micro-batches run under
lax.scan under-counts by the product of those trip counts; here each op is weighted by how often it runs.

Trip counts: the `known_trip_count` XLA puts in a while op's backend_config when present, else read off
the loop (what jax's scan / fori_loop lower to): the condition's root compares the counter (a tuple
element of the loop state) with a constant, the counter starts at a constant in the init tuple and the
body adds a constant to it. A loop whose count cannot be read is counted once and listed in
`unknown_loops`. A conditional counts its costliest branch.

Collective bytes per chip (logical, unpadded shapes x dtype size; the -start/-done halves of an async
collective are one collective, counted at the start; tuple-shaped collectives sum their elements):
    all-gather           bytes received: result - operand          (= (n-1)/n of the gathered buffer)
    reduce-scatter       bytes sent:     operand - result          (= (n-1)/n of the input buffer)
    all-reduce           2 (n-1)/n x buffer     (a ring: reduce-scatter then all-gather)
    all-to-all           (n-1)/n x buffer       (sent, = received)
    collective-permute   buffer                 (sent by each chip that has a target)
n is the replica-group size (explicit groups, iota groups [G,n]<=[N], or mesh['axis'=k] {'axis'} form).
An all-reduce's buffer is its operand: the TPU compiler may reduce an f32 operand into a bf16 result.

Phases, from the op's metadata op_name (jax's name stack; an op without one inherits the op_name of
the loop / call it runs in): "sampling" (the sample_thoughts named scope: the no-grad thought decode),
"optimizer" (the optimizer named scope of training/step.py), "backward" (transpose(...): autodiff
transposes, including remat recomputation of the forward), "forward" (jvp(...) and not the above: the
differentiated loss), "unattributed" (anything else: e.g. gradient-accumulation adds, the grad-norm
metric, SPMD resharding without metadata at the top level).

HBM bytes per chip: for every op outside fusions (a fusion is one kernel: its internals stay on chip),
operand bytes + result bytes, except bookkeeping ops (parameter, tuple, get-tuple-element, bitcast,
constant, control flow), fusion operands that the fusion only slices (dynamic-slice / slice / gather,
also through nested fusions: the slice's bytes) and in-place dynamic-update-slice buffers (the update's
bytes). Sizes are the tiled ones the TPU stores (the layout's T(8,128) tiles: padding included, as
XLA's cost model counts them); the memory space a buffer was assigned (layout S(n), e.g. on-chip
memory) is not modelled, so all of it counts as HBM traffic. A model of what HloCostAnalysis counts,
weighted by trip counts; `hbm_bytes_once` is the same with every loop body counted once, to compare
with cost_analysis()["bytes accessed"].
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict

from quietstar_jax.errors import HloParseError  # noqa: F401 - re-exported

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
PHASES = ("sampling", "forward", "backward", "optimizer", "unattributed")

# Bytes per element (sub-byte types at their bit width: s4 = half a byte).
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5,
               "s2": 0.25, "u2": 0.25, "f4e2m1fn": 0.5, "token": 0}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\](\{[^}]*\})?")
_NAME = re.compile(r"%([\w.\-]+)")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s")
# Ops that move no data of their own (control flow's cost is its bodies').
_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while", "call", "conditional",
               "after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency", "domain",
               "async-start", "async-update", "async-done", "copy-done", "send-done", "recv-done"}


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


def _tuple_elements(shape: str) -> list[str]:
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
def _through(comp: Computation, name: str) -> Instr | None:
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


class _Module:
    def __init__(self, text: str):
        self.comps = parse_module(text)
        self.entry = next(c for c in self.comps.values() if c.entry)
        m = re.search(r"num_partitions=(\d+)", text)
        self.num_partitions = int(m.group(1)) if m else 1
        m = re.search(r"replica_count=(\d+)", text)
        self.replica_count = int(m.group(1)) if m else 1

    @staticmethod
    def const(comp, name: str) -> int | None:
        ins = _through(comp, name)
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
                p = _through(fused, op)
                if p is not None and p.param_index is not None and p.param_index < len(root.operands):
                    args.append(root.operands[p.param_index])  # a name in the condition computation
                else:
                    args.append(p.name if p is not None else None)  # e.g. a constant inside the fusion
            root = dataclasses.replace(fused.root, operands=args)
            ccomp = _MergedLookup(cond, fused)
        if root.opcode != "compare" or len(root.operands) != 2 or None in root.operands:
            return None
        direction = (re.search(r"direction=(\w+)", root.attrs) or [None, ""])[1]
        a, b = root.operands
        ia, ib = _gte_index(_through(ccomp, a), ccomp), _gte_index(_through(ccomp, b), ccomp)
        ca, cb = self.const(ccomp, a), self.const(ccomp, b)
        if ia is not None and cb is not None:
            idx, bound = ia, cb
        elif ib is not None and ca is not None:  # bound < i  ==  i > bound
            idx, bound = ib, ca
            direction = {"LT": "GT", "LE": "GE", "GT": "LT", "GE": "LE"}.get(direction, direction)
        else:
            return None
        # The counter's start: element idx of the init tuple.
        init_t = _through(caller, w.operands[0]) if w.operands else None
        if init_t is None or init_t.opcode != "tuple" or idx >= len(init_t.operands):
            return None
        start = self.const(caller, init_t.operands[idx])
        # The step: body root tuple element idx = add(counter, constant).
        step = None
        broot = body.root
        if broot is not None and broot.opcode == "tuple" and idx < len(broot.operands):
            upd = _through(body, broot.operands[idx])
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


class _MergedLookup:
    """A condition computation plus its fused compare: one namespace for _through / _gte_index."""

    def __init__(self, outer: Computation, fused: Computation):
        self.by_name = {**fused.by_name, **outer.by_name}
        self.name = outer.name


# --------------------------------------------------------------------------- collectives
def _group_size(ins: Instr, mod: _Module) -> int:
    """Devices per replica group of a collective (see the module docstring for the forms read)."""
    m = re.search(r"replica_groups=\[([\d,]+)\]<=\[", ins.attrs)
    if m:  # iota form [G, n] <= [N] (T(...)): groups of the last dimension's size
        return int(m.group(1).split(",")[-1])
    g = ins.attr("replica_groups")
    if g:
        if g.startswith("{{"):
            first = g[2:g.index("}")]
            return len([x for x in first.split(",") if x.strip()])
        if g == "{}":
            return mod.num_partitions * mod.replica_count
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", ins.attrs)
    if m:  # mesh['a'=2,'b'=4] {'b'}: the group spans the listed axes
        sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'\s*=\s*(\d+)", m.group(1))}
        return math.prod(sizes[a] for a in re.findall(r"'([^']+)'", m.group(2)) if a in sizes) or 1
    return mod.num_partitions * mod.replica_count


def _collective_kind(opcode: str) -> str | None:
    base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
    return base if base in KINDS else None


def collective_bytes(ins: Instr, comp: Computation, mod: _Module, done_shape: str | None = None) -> float:
    """Per-chip bytes of one execution of collective `ins` (conventions in the module docstring)."""
    kind = _collective_kind(ins.opcode)
    operands = [comp.by_name[o].shape for o in ins.operands if o in comp.by_name]
    in_bytes = sum(shape_bytes(s) for s in operands)
    if ins.opcode.endswith("-start"):
        if done_shape is not None:
            out_bytes = shape_bytes(done_shape)
        else:  # no -done found: the start's tuple is (operands..., results...)
            elems = _tuple_elements(ins.shape)
            out_bytes = sum(shape_bytes(e) for e in elems[len(operands):]) or shape_bytes(ins.shape) - in_bytes
    else:
        out_bytes = shape_bytes(ins.shape)
    if kind == "all-gather":
        return max(0.0, out_bytes - in_bytes)
    if kind == "reduce-scatter":
        return max(0.0, in_bytes - out_bytes)
    if kind == "collective-permute":
        return in_bytes if operands else out_bytes
    n = _group_size(ins, mod)
    buf = in_bytes if operands else out_bytes
    if kind == "all-reduce":
        return 2.0 * (n - 1) / n * buf
    return (n - 1) / n * buf  # all-to-all


_SCOPE = {"sampling": re.compile(r"(?:^|[/(])sample_thoughts(?:[/)]|$)"),
          "optimizer": re.compile(r"(?:^|[/(])optimizer(?:[/)]|$)")}


def phase_of(op_name: str) -> str:
    """The phase of an op from its metadata op_name (see the module docstring)."""
    if _SCOPE["sampling"].search(op_name):
        return "sampling"
    if _SCOPE["optimizer"].search(op_name):
        return "optimizer"
    if "transpose(" in op_name:
        return "backward"
    if "jvp(" in op_name:
        return "forward"
    return "unattributed"


def _informative(op_name: str) -> bool:
    # XLA-made names ("reshape.1361", "fusion") carry no jax name stack.
    return "/" in op_name


# --------------------------------------------------------------------------- HBM traffic
def _hbm(shape: str) -> float:
    return shape_bytes(shape, padded=True)


_SLICING = ("dynamic-slice", "slice", "gather")
_PASS_THROUGH = ("bitcast", "reshape", "copy", "convert")


def _param_reads(comps: dict, fused: Computation, param: str, full: float, depth: int = 0) -> float:
    """Bytes a fusion reads of its parameter `param` (full size `full`): only the slices when every use
    slices it (through bitcasts and nested fusions), else all of it."""
    users = [(u, j) for u in fused.instrs for j, o in enumerate(u.operands) if o == param]
    if not users or depth > 16:
        return full if users else 0.0
    total = 0.0
    for u, j in users:
        if u.opcode in _SLICING and j == 0:
            total += _hbm(u.shape)
        elif u.opcode in _PASS_THROUGH:
            total += _param_reads(comps, fused, u.name, full, depth + 1)
        elif u.opcode == "fusion":
            inner = comps.get((u.called("calls") or [""])[0])
            p = next((f.name for f in inner.instrs if f.param_index == j), None) if inner else None
            total += _param_reads(comps, inner, p, full, depth + 1) if p else full
        else:
            return full
    return min(full, total)


def _fusion_bytes(ins: Instr, comp: Computation, comps: dict) -> float:
    """HBM bytes one execution of fusion `ins` reads and writes (see the module docstring)."""
    operand_shapes = [comp.by_name[o].shape if o in comp.by_name else "" for o in ins.operands]
    fused = comps.get((ins.called("calls") or [""])[0])
    if fused is None or fused.root is None:
        return sum(map(_hbm, operand_shapes)) + _hbm(ins.shape)
    params = {f.name: f.param_index for f in fused.instrs if f.param_index is not None}
    # Outputs updated in place (a dynamic-update-slice of a parameter's buffer at the root) write only
    # the update; that parameter is otherwise not read.
    roots = [fused.by_name.get(o) for o in fused.root.operands] if fused.root.opcode == "tuple" else [fused.root]
    in_place, out = set(), 0.0
    for r in roots:
        if r is not None and r.opcode == "dynamic-update-slice" and r.operands[0] in params \
                and r.operands[1] in fused.by_name:
            in_place.add(r.operands[0])
            out += _hbm(fused.by_name[r.operands[1]].shape)
        elif r is not None:
            out += _hbm(r.shape)
    read = 0.0
    for pname, k in params.items():
        if pname in in_place:
            continue
        full = _hbm(operand_shapes[k]) if k < len(operand_shapes) else 0.0
        read += _param_reads(comps, fused, pname, full)
    return read + out


# --------------------------------------------------------------------------- the walk
@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective op of the module: its executions per step and bytes per chip per step (all runs)."""

    kind: str
    phase: str
    name: str  # the HLO instruction
    op_name: str  # jax name stack (own or inherited)
    shape: str  # its result shape
    runs: float
    bytes: float


@dataclasses.dataclass
class HloStats:
    """Per chip, per step. collective_bytes / collective_count: {(kind, phase): value} over KINDS x
    PHASES (count = executions per step). hbm_bytes: trip-weighted (hbm_by_phase: split by the ops'
    phases); hbm_bytes_once: every loop body once.
    loops: [(while op name, trip count or None, executions of the loop per step)]. collectives: every
    collective op (Collective), largest first."""

    collective_bytes: dict
    collective_count: dict
    hbm_bytes: float
    hbm_bytes_once: float
    hbm_by_phase: dict
    loops: list
    unknown_loops: list
    num_partitions: int
    collectives: list = dataclasses.field(default_factory=list)

    @property
    def total_collective_bytes(self) -> float:
        return sum(self.collective_bytes.values())

    def by_kind(self) -> dict:
        return {k: sum(self.collective_bytes[(k, p)] for p in PHASES) for k in KINDS}

    def by_phase(self) -> dict:
        return {p: sum(self.collective_bytes[(k, p)] for k in KINDS) for p in PHASES}


def _op_hbm_bytes(ins: Instr, comp: Computation, comps: dict, done_shape: str | None) -> float:
    """HBM bytes one execution of `ins` reads and writes; 0 for control flow (its bodies count)."""
    if ins.opcode == "fusion":
        return _fusion_bytes(ins, comp, comps)
    if ins.opcode in _NO_TRAFFIC or ins.opcode.endswith("-done"):
        return 0.0
    operand = lambda k: _hbm(comp.by_name[ins.operands[k]].shape) \
        if k < len(ins.operands) and ins.operands[k] in comp.by_name else 0.0  # noqa: E731
    if ins.opcode.endswith("-start") and _collective_kind(ins.opcode):  # read the input, write the result
        return sum(operand(k) for k in range(len(ins.operands))) + _hbm(done_shape or "")
    if ins.opcode == "copy-start":  # result (source, destination, context): one read, one write
        return 2 * operand(0)
    if ins.opcode == "dynamic-slice":
        return 2 * _hbm(ins.shape)
    if ins.opcode == "dynamic-update-slice":  # in place: the update is read and written
        return 2 * operand(1)
    return sum(operand(k) for k in range(len(ins.operands))) + _hbm(ins.shape)


class _Tally:
    """What a walk of a computation adds up: collective bytes / runs by (kind, phase), the collective
    ops, HBM bytes by phase."""

    def __init__(self):
        self.bytes, self.count, self.hbm = defaultdict(float), defaultdict(float), defaultdict(float)
        self.items = []

    def add(self, other: "_Tally") -> None:
        for mine, theirs in ((self.bytes, other.bytes), (self.count, other.count), (self.hbm, other.hbm)):
            for k, v in theirs.items():
                mine[k] += v
        self.items += other.items


class _Walker:
    """Walks the call graph from ENTRY, each computation weighted by how often it runs per step (once:
    every loop body once, as XLA's cost_analysis counts)."""

    def __init__(self, mod: _Module, once: bool):
        self.mod, self.once = mod, once
        self.loops, self.unknown, self._trips = [], [], {}

    def trip(self, comp: Computation, w: Instr) -> int | None:
        key = (comp.name, w.name)
        if key not in self._trips:
            self._trips[key] = self.mod.trip_count(comp, w)
            if self._trips[key] is None:
                self.unknown.append(w.name)
        return self._trips[key]

    def comp(self, name: str) -> Computation | None:
        return self.mod.comps.get(name)

    def walk(self, comp: Computation, mult: float, context: str, tally: _Tally, depth: int = 0) -> None:
        if depth > 64:
            raise HloParseError(f"computation nesting deeper than 64 at {comp.name}")
        dones = {i.operands[0]: i.shape for i in comp.instrs if i.opcode.endswith("-done") and i.operands}
        for ins in comp.instrs:
            name = ins.op_name if _informative(ins.op_name) else context
            phase = phase_of(name)
            kind = _collective_kind(ins.opcode)
            if kind is not None:
                b = collective_bytes(ins, comp, self.mod, dones.get(ins.name))
                tally.bytes[(kind, phase)] += mult * b
                tally.count[(kind, phase)] += mult
                tally.items.append(Collective(kind, phase, ins.name, name, dones.get(ins.name, ins.shape), mult,
                                              mult * b))
            tally.hbm[phase] += mult * _op_hbm_bytes(ins, comp, self.mod.comps, dones.get(ins.name))
            if ins.opcode == "while":
                n = self.trip(comp, ins)
                k = 1 if (self.once or n is None) else n
                self.loops.append((ins.name, n, mult))
                for c, m in ((ins.called("body"), k), (ins.called("condition"), 1 if self.once else k + 1)):
                    if c and self.comp(c[0]):
                        self.walk(self.comp(c[0]), mult * m, name, tally, depth + 1)
            elif ins.opcode == "conditional":  # one branch runs: count the costliest
                branches = ins.called("branch_computations") or (ins.called("true_computation")
                                                                 + ins.called("false_computation"))
                best = None
                for b in filter(self.comp, branches):
                    sub = _Tally()
                    self.walk(self.comp(b), mult, name, sub, depth + 1)
                    cost = (sum(sub.bytes.values()), sum(sub.hbm.values()))
                    if best is None or cost > best[0]:
                        best = (cost, sub)
                if best is not None:
                    tally.add(best[1])
            elif ins.opcode in ("call", "async-start", "fusion"):
                # Collectives inside a call, an async wrapper or a fusion count where they are; a fusion's
                # HBM traffic is its own (counted above), not its internals'.
                for c in filter(self.comp, ins.called("calls") or ins.called("to_apply")):
                    sub = _Tally()
                    self.walk(self.comp(c), mult, name, sub, depth + 1)
                    if ins.opcode == "fusion":
                        sub.hbm.clear()
                    tally.add(sub)


def analyze(text: str) -> HloStats:
    """Collective and HBM bytes per chip per step of an HLO module's text. Raises HloParseError."""
    mod = _Module(text)
    tally, walker = _Tally(), _Walker(mod, once=False)
    walker.walk(mod.entry, 1.0, "", tally)
    once = _Tally()
    _Walker(mod, once=True).walk(mod.entry, 1.0, "", once)
    return HloStats(collective_bytes={(k, p): tally.bytes[(k, p)] for k in KINDS for p in PHASES},
                    collective_count={(k, p): int(round(tally.count[(k, p)])) for k in KINDS for p in PHASES},
                    hbm_bytes=sum(tally.hbm.values()), hbm_bytes_once=sum(once.hbm.values()),
                    hbm_by_phase={p: tally.hbm[p] for p in PHASES}, loops=walker.loops,
                    unknown_loops=sorted(set(walker.unknown)), num_partitions=mod.num_partitions,
                    collectives=sorted(tally.items, key=lambda c: -c.bytes))
