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
The TPU compiler writes a reduce-scatter as an all-reduce fusion that returns only the chip's slice
(`all-reduce-scatter`): counted as the reduce-scatter it runs as, (n-1)/n x the all-reduced buffer.
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
from quietstar_jax.tpu.hlo import Computation, Instr, Module, shape_bytes, tuple_elements  # noqa: F401

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
PHASES = ("sampling", "forward", "backward", "optimizer", "unattributed")

_NO_TRAFFIC = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while", "call", "conditional",
               "after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency", "domain",
               "async-start", "async-update", "async-done", "copy-done", "send-done", "recv-done"}

# --------------------------------------------------------------------------- collectives
def _group_size(ins: Instr, mod: Module) -> int:
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
    m = re.search(r"replica_groups=mesh\[([^\]]*)\](?:\s*,\s*device_ids=\((?:[^()]|\([^()]*\))*\))?\s*\{([^}]*)\}", ins.attrs)
    if m:  # mesh['a'=2,'b'=4] {'b'} (or with a device_ids=(...) order between): the group spans the listed axes
        sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'\s*=\s*(\d+)", m.group(1))}
        return math.prod(sizes[a] for a in re.findall(r"'([^']+)'", m.group(2)) if a in sizes) or 1
    return mod.num_partitions * mod.replica_count


def _collective_kind(opcode: str) -> str | None:
    base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
    return base if base in KINDS else None


def _through_bitcasts(comp: Computation, name: str) -> Instr | None:
    ins = comp.by_name.get(name)
    while ins is not None and ins.opcode == "bitcast" and ins.operands:
        ins = comp.by_name.get(ins.operands[0])
    return ins


def is_fused_reduce_scatter(ins: Instr, comp: Computation) -> bool:
    """An all-reduce whose computation returns only this chip's slice of it: how the TPU compiler
    writes a reduce-scatter (a kCustom fusion `all-reduce-scatter`: all-reduce, then a dynamic-slice at
    the chip's shard offset), which runs as a reduce-scatter on the wire."""
    root = comp.root
    return (ins.opcode in ("all-reduce", "all-reduce-start") and root is not None
            and root.opcode == "dynamic-slice" and bool(root.operands)
            and _through_bitcasts(comp, root.operands[0]) is ins)


def collective_bytes(ins: Instr, comp: Computation, mod: Module, done_shape: str | None = None) -> float:
    """Per-chip bytes of one execution of collective `ins` (conventions in the module docstring)."""
    kind = _collective_kind(ins.opcode)
    operands = [comp.by_name[o].shape for o in ins.operands if o in comp.by_name]
    in_bytes = sum(shape_bytes(s) for s in operands)
    if ins.opcode.endswith("-start"):
        if done_shape is not None:
            out_bytes = shape_bytes(done_shape)
        else:  # no -done found: the start's tuple is (operands..., results...)
            elems = tuple_elements(ins.shape)
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
        if is_fused_reduce_scatter(ins, comp):
            return (n - 1) / n * buf
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
    group: int = 0  # devices per replica group (collective-permute: the whole program's devices)


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

    def by_group(self) -> dict:
        """{devices per replica group: bytes per chip per step} (the roofline's ICI links depend on it)."""
        out: dict = {}
        for c in self.collectives:
            out[c.group] = out.get(c.group, 0.0) + c.bytes
        return out


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

    def __init__(self, mod: Module, once: bool):
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
            if kind == "all-reduce" and is_fused_reduce_scatter(ins, comp):
                kind = "reduce-scatter"
            if kind is not None:
                b = collective_bytes(ins, comp, self.mod, dones.get(ins.name))
                tally.bytes[(kind, phase)] += mult * b
                tally.count[(kind, phase)] += mult
                group = self.mod.num_partitions if kind == "collective-permute" else _group_size(ins, self.mod)
                tally.items.append(Collective(kind, phase, ins.name, name, dones.get(ins.name, ins.shape), mult,
                                              mult * b, group))
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
    mod = Module(text)
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
