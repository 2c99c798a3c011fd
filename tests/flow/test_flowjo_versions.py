"""The FlowJo tutorial analysis saved by FlowJo 7.2.5 ... 10.8: each workspace against FlowJo's
own counts (reference flow/flowjo_versions, see its README row).

Oracle: ``counts/<workspace>.tsv`` holds the count each FlowJo version stored for every sample ×
population. Tolerance max(15 events, 1 %) for every population (the issue's criterion), with
the FlowJo-compatibility rules of each version (``flowjo.flowjo_compat_rules``: 7.2's binned
display and edge-diameter ellipse, 7.6's and the Mac's effective ellipse as an 11-gon). Every
population of 7.2.5-9.7.2 is within it; every miss (10.x against 7.6.5) is printed.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from immunoprofile.errors import InputError
from immunoprofile.flow.engine import evaluate
from immunoprofile.flow.fcs import FCSData, read_fcs
from immunoprofile.flow.flowjo import (
    FlowJoStrategy,
    _ellipse_from_edges,
    _ellipse_polygon,
    flowjo_compat_rules,
    read_flowjo_workspace,
)
from immunoprofile.flow.gates import (
    BooleanGate,
    EllipseGate,
    PolygonGate,
    RectangleGate,
    Strategy,
)
from immunoprofile.flow.gatingml import write_gatingml
from immunoprofile.flow.strategy import load_strategy

# workspace -> (its own counts file, populations within tolerance of 164/168 measured)
OWN_COUNTS = {
    "advanced-v7.2.5.wsp": ("advanced-v7.2.5", 168),
    "advanced-v7.6.3.wsp": ("advanced-v7.6.3", 168),
    "advanced-v7.6.5.wsp": ("advanced-v7.6.5", 168),
    # 8.5.3 rounds coordinates to 4 decimals; snapped back onto the display grid it gives
    # exactly 9.6.4's counts
    "advanced-v8.5.3.xml": ("advanced-v8.5.3", 164),
    "advanced-v9.6.4.xml": ("advanced-v9.6.4", 164),
    # damaged (ISO-8859-1 declared, Mac Roman names; nodeName, <Samples>): read, and compared
    # with 9.6.4's counts, the same analysis
    "advanced-v9.7.2.xml": ("advanced-v9.6.4", 164),
}
TEN = ["advanced-v10.0.5.wsp", "advanced-v10.0.6.wsp", "advanced-v10.0.7.wsp",
       "advanced-v10.0.8.wsp", "advanced-v10.2.wsp", "advanced-v10.4.wsp", "advanced-v10.8.wsp"]
# 10.x stored counts are stale and FlowJo 10's ellipse rule is unmeasured (no compatibility
# rule: exact ellipses): against 7.6.5's counts, ellipse populations are held to 5 %.
TEN_ELLIPSE_LIMIT = 0.05


@pytest.fixture(scope="module")
def versions_dir(reference_dir: Path) -> Path:
    d = reference_dir / "flow" / "flowjo_versions"
    if not d.is_dir():
        pytest.skip("reference folder flow/flowjo_versions is absent")
    return d


@cache
def _fcs(path: str) -> FCSData:
    return read_fcs(path)


def _counts(d: Path, name: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with open(d / "counts" / f"{name}.tsv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            out.setdefault(row["fil"], {})[row["path"]] = int(row["count"])
    return out


def _ellipse_dependent(strategy: Strategy) -> set[str]:
    """Populations whose gate, parent chain or boolean operands include an ellipse."""
    memo: dict[str, bool] = {}

    def dep(gid: str | None) -> bool:
        if gid is None:
            return False
        if gid not in memo:
            memo[gid] = False
            g = strategy.gates[gid]
            memo[gid] = (isinstance(g, EllipseGate) or dep(g.parent) or
                         (isinstance(g, BooleanGate) and any(dep(o) for o, _ in g.operands)))
        return memo[gid]

    return {strategy.path_of(g) for g in strategy.gates if dep(g)}


def _gate_all(d: Path, wsp: str) -> dict[str, tuple[dict[str, int], set[str], str]]:
    """fil -> (our counts by path, ellipse-dependent paths, workspace sample name)."""
    strategy = load_strategy(d / "workspaces" / wsp)
    assert isinstance(strategy, FlowJoStrategy)
    out = {}
    for fcs_path in sorted((d / "fcs").glob("*.fcs")):
        fcs = _fcs(str(fcs_path))
        own, sample = strategy.for_file(fcs_path, fcs.text)
        res = evaluate(own, fcs)
        out[fcs_path.name] = ({res.paths[p]: res.counts[p] for p in res.paths},
                              _ellipse_dependent(own), sample)
    return out


def _compare(ours: dict, expected: dict[str, dict[str, int]], label: str,
             skip: set[tuple[str, str]] = frozenset()) -> tuple[int, int, list[str]]:
    n = within = 0
    misses = []
    for fil, pops in expected.items():
        got, ellipse, _ = ours[fil]
        for path, count in pops.items():
            assert path in got, f"{label}: {fil} {path} was not gated"
            if (fil, path) in skip:
                continue
            n += 1
            diff = abs(got[path] - count)
            if diff <= max(15, 0.01 * count):
                within += 1
                continue
            rel = diff / max(count, 1)
            misses.append(f"{fil} {path}: ours {got[path]}, FlowJo {count} ({rel:.1%})")
            if label in TEN:
                limit = TEN_ELLIPSE_LIMIT if path in ellipse else 0.0
            else:
                limit = 0.0
            assert rel <= limit, f"{label}: {misses[-1]} outside max(15, 1 %)"
    print(f"{label}: {within}/{n} within max(15, 1 %)" + "".join(f"\n  {m}" for m in misses))
    return n, within, misses


@pytest.mark.parametrize("wsp", sorted(OWN_COUNTS))
def test_pre10_workspace_reproduces_its_own_counts(versions_dir: Path, wsp: str) -> None:
    counts_name, floor = OWN_COUNTS[wsp]
    expected = _counts(versions_dir, counts_name)
    ours = _gate_all(versions_dir, wsp)
    assert sorted(ours) == sorted(expected)  # all 16 files matched to their own sample
    assert all(sample == fil for fil, (_, _, sample) in ours.items())
    n, within, misses = _compare(ours, expected, wsp)
    assert n == sum(len(v) for v in expected.values()) and n in (164, 168)
    assert within >= floor


def test_mac_coordinates_sit_on_the_display_grid(versions_dir: Path) -> None:
    """9.6.4 stores float32 coordinates within 1e-5 bin of whole 256-bin display bins; 8.5.3
    the same values to 4 decimals, which snap back to the same gates."""
    a = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v8.5.3.xml")
    b = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v9.6.4.xml")
    fil = "931115-C08- Sample 02.fcs"
    ga, gb = a.strategy(sample=fil).gates, b.strategy(sample=fil).gates
    m3 = "Lymphocytes::CD8 T::M3"
    assert isinstance(ga[m3], RectangleGate)
    np.testing.assert_allclose(ga[m3].mins, gb[m3].mins, rtol=1e-6)
    np.testing.assert_allclose(ga[m3].maxs, gb[m3].maxs, rtol=1e-6)
    cd8 = next(p for p in b.find_sample(fil).populations[0].children if p.name == "CD8 T")
    raw = next(p for p in cd8.children if p.name == "M3")
    d = 256 * np.log10(np.asarray(raw.params["maxs"]) / 0.2) / 3.84
    assert np.allclose(d, np.round(d), atol=1e-4)


@pytest.mark.parametrize("wsp", TEN)
def test_10x_workspace_gives_the_populations_of_765(versions_dir: Path, wsp: str) -> None:
    """10.x counts are stale (saved without recomputing): compare with 7.6.5's instead.

    From 10.0.6 on, the Lymphocytes and Monocytes polygons were redrawn (their vertices differ
    from 10.0.5's, which equal 7.6.5's): their subtrees are structure checks only.
    """
    expected = _counts(versions_dir, "advanced-v7.6.5")
    ours = _gate_all(versions_dir, wsp)
    base = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v10.0.5.wsp")
    this = read_flowjo_workspace(versions_dir / "workspaces" / wsp)
    skip = set()
    for fil in expected:
        a, b = base.find_sample(fil), this.find_sample(fil)
        edited = {p.name for p in b.populations
                  if p.kind == "polygon" and p.params != next(q.params for q in a.populations
                                                              if q.name == p.name)}
        skip |= {(fil, path) for path in expected[fil] if path.split("/")[1] in edited}
    if wsp == "advanced-v10.0.5.wsp":
        assert not skip
    n, within, misses = _compare(ours, expected, wsp, skip)
    assert n + len(skip) == 168
    assert all("ellipse" in m for m in misses)


@pytest.mark.parametrize("wsp, message", [
    ("advanced-v7.5.5.wsp", r"advanced-v7\.5\.5\.wsp: not well-formed XML \(unbound prefix"),
])
def test_damaged_workspace_refused_in_one_line(versions_dir: Path, wsp: str,
                                               message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        load_strategy(versions_dir / "workspaces" / wsp)
    assert "\n" not in str(info.value)


def test_inverted_and_boolean_semantics(versions_dir: Path) -> None:
    """7.6.5: an inverted ellipse is the parent's events outside it; booleans by name."""
    ws = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v7.6.5.wsp")
    fil = "931115-E02- Sample 04.fcs"
    strategy = ws.strategy(sample=fil)
    res = evaluate(strategy, _fcs(str(versions_dir / "fcs" / fil)))
    by_path = {res.paths[p]: p for p in res.paths}
    inv = strategy.gates[by_path["/inverted ellipse"]]
    # FlowJo 7.6 compatibility: the ellipse is its circumscribed 11-gon
    assert isinstance(inv, PolygonGate) and inv.inverted and len(inv.vertices) == 11
    flipped = dataclasses.replace(inv, id="x", name="x", inverted=False)
    plain = evaluate(Strategy(gates={"x": flipped}, transforms=strategy.transforms),
                     _fcs(str(versions_dir / "fcs" / fil)))
    np.testing.assert_array_equal(res.masks[by_path["/inverted ellipse"]], ~plain.masks["x"])
    a, b = res.masks[by_path["/A"]], res.masks[by_path["/B"]]
    np.testing.assert_array_equal(res.masks[by_path["/A and not B"]], a & ~b)
    np.testing.assert_array_equal(res.masks[by_path["/A or B"]], a | b)
    np.testing.assert_array_equal(res.masks[by_path["/not A"]], ~a)


def test_compat_rules_by_version() -> None:
    """Rules only for the versions whose counts were reproduced; exact shapes otherwise."""
    r72 = flowjo_compat_rules("Version 7.2.5")
    assert r72 is not None and r72.display_bins == 256 and r72.ellipse_vertices is None
    assert r72.ellipse_from_edges and r72.ellipse_shift_bins == (0.5, 0.0)
    r76 = flowjo_compat_rules("7.6.5")
    assert r76 is not None and r76.display_bins is None and r76.ellipse_circumscribed
    for mac in ("8.5.3", "9.6.4", "9.7.2"):
        rm = flowjo_compat_rules(mac)
        assert rm is not None and rm.display_bins is None
        assert (rm.ellipse_vertices, rm.ellipse_circumscribed) == (11, False)
    for other in ("7.5.5", "10.0.5", "10.8.0", "", "unknown"):
        assert flowjo_compat_rules(other) is None


def test_ellipse_polygon_geometry() -> None:
    """Inscribed: vertices on the ellipse; circumscribed: every edge touches it (midpoint)."""
    mean, cov = (0.3, 0.6), ((0.02, 0.006), (0.006, 0.005))
    inv = np.linalg.inv(np.asarray(cov))

    def q(p: np.ndarray) -> float:
        d = p - np.asarray(mean)
        return float(d @ inv @ d)

    inscribed = np.asarray(_ellipse_polygon(mean, cov, 11, False))
    assert len(inscribed) == 11 and all(math.isclose(q(p), 1.0) for p in inscribed)
    # the first vertex is an end of the major axis (largest distance from the centre)
    dist = np.linalg.norm(inscribed - np.asarray(mean), axis=1)
    assert math.isclose(dist[0], math.sqrt(max(np.linalg.eigvalsh(np.asarray(cov)))))
    outer = np.asarray(_ellipse_polygon(mean, cov, 11, True))
    mids = (outer + np.roll(outer, -1, axis=0)) / 2
    assert all(math.isclose(q(p), 1.0) for p in mids)


def test_ellipse_from_edge_diameters_geometry() -> None:
    """7.2's ellipse: through the major-axis edge points, centred between them, with the
    minor axis' stored length perpendicular to it (7.2.5's "inverted ellipse")."""
    edge = ((150.0, 75.0), (159.0, 17.0), (140.0, 44.0), (168.0, 48.0))
    mean, cov = _ellipse_from_edges(None, "/x", edge)  # type: ignore[arg-type]
    assert np.allclose(mean, (154.5 / 256, 46.0 / 256))
    inv = np.linalg.inv(np.asarray(cov))
    for p in edge[:2]:
        d = np.asarray(p) / 256 - np.asarray(mean)
        assert math.isclose(float(d @ inv @ d), 1.0)
    semi = np.sqrt(np.linalg.eigvalsh(np.asarray(cov))) * 256
    assert np.allclose(semi, (math.dist(edge[2], edge[3]) / 2, math.dist(edge[0], edge[1]) / 2))


def test_72_ellipse_rule_against_the_alternatives(versions_dir: Path) -> None:
    """7.2.5's 8 ellipse counts (2 ellipses x 4 files): the 7.2 rule holds every one within
    15 events; without the edge diameters, without the half-bin shift, or as the 11-gon of the
    7.6 rule, some count falls outside max(15, 1 %)."""
    expected = _counts(versions_dir, "advanced-v7.2.5")
    rules = flowjo_compat_rules("7.2.5")
    assert rules is not None
    variants = {
        "rule": rules,
        "foci": dataclasses.replace(rules, ellipse_from_edges=False),
        "unshifted": dataclasses.replace(rules, ellipse_shift_bins=(0.0, 0.0)),
        "11-gon": dataclasses.replace(rules, ellipse_from_edges=False,
                                      ellipse_shift_bins=(0.0, 0.0), ellipse_vertices=11,
                                      ellipse_circumscribed=True),
    }
    outside: dict[str, list[str]] = {}
    for label, variant in variants.items():
        ws = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v7.2.5.wsp",
                                   flowjo_compat=variant)
        n = 0
        outside[label] = []
        for fil, pops in expected.items():
            if "/inverted ellipse" not in pops:
                continue
            res = evaluate(ws.strategy(sample=fil), _fcs(str(versions_dir / "fcs" / fil)))
            got = {res.paths[p]: res.counts[p] for p in res.paths}
            for path in ("/inverted ellipse", "/CD4, CD8 ellipse"):
                n += 1
                diff = got[path] - pops[path]
                limit = 15 if label == "rule" else max(15, 0.01 * pops[path])
                if abs(diff) > limit:
                    outside[label].append(f"{fil} {path} {diff:+d}")
        assert n == 8
    assert outside["rule"] == []
    for label in ("foci", "unshifted", "11-gon"):
        assert outside[label], label


def test_ellipse_on_a_linear_axis_uses_flowjos_display_scale(versions_dir: Path,
                                                              tmp_path: Path) -> None:
    """Pre-10 workspaces store ellipses in the 256-bin display and no transform: on a linear
    axis ($PnE 0,0) the display runs 0 .. $PnR/$PnG. 7.6.5's two ellipses moved onto Cy5PE
    (log, 3.84 decades from 0.2) x ForSc (linear) keep exactly the events whose display point
    has a focal sum within the ellipse's, computed here from the keywords alone."""
    import re

    text = (versions_dir / "workspaces" / "advanced-v7.6.5.wsp").read_text(encoding="utf-8")

    def moved(block: re.Match[str]) -> str:
        return block.group(0).replace('data-type:name="PhyEry"', 'data-type:name="ForSc"')

    edited, n = re.subn(r"<gating:EllipsoidGate.*?</gating:EllipsoidGate >", moved, text,
                        flags=re.S)
    assert n > 0
    wsp = tmp_path / "linear-ellipse.wsp"
    wsp.write_text(edited, encoding="utf-8")
    fil = "931115-E02- Sample 04.fcs"
    fcs = _fcs(str(versions_dir / "fcs" / fil))
    assert (fcs.text["$P1E"], fcs.text["$P1R"], fcs.text["$P5E"]) == ("0, 0", "512", "3.84, 0.2")
    gain = float(fcs.text["$P1G"])  # events are gain-applied: the display ends at $PnR/$PnG
    ws = read_flowjo_workspace(wsp, flowjo_compat=False)
    strategy = ws.strategy(sample=fil)
    res = evaluate(strategy, fcs)
    by_path = {res.paths[p]: p for p in res.paths}
    x = 256 * np.log10(fcs.events[:, fcs.channel_index("Cy5PE")] / 0.2) / 3.84
    y = fcs.events[:, fcs.channel_index("ForSc")] * 256 / (512 / gain)
    point = np.column_stack([x, y])
    shapes = {"/CD4, CD8 ellipse": ((47, 47), (52, 54), ((26, 15), (74, 87)), False),
              "/inverted ellipse": ((150, 71), (158, 20), ((150, 75), (159, 17)), True)}
    for path, (f1, f2, major, inverted) in shapes.items():
        gate = strategy.gates[by_path[path]]
        assert [d.channel for d in gate.dims] == ["Cy5PE", "ForSc"]
        width = np.mean([math.dist(p, f1) + math.dist(p, f2) for p in major])
        focal = (np.linalg.norm(point - f1, axis=1) + np.linalg.norm(point - f2, axis=1))
        expected = (focal <= width) != inverted
        mask = res.masks[by_path[path]]
        # events within 1e-9 display units of the boundary may go either way
        undecided = np.abs(focal - width) < 1e-9
        np.testing.assert_array_equal(mask[~undecided], expected[~undecided])
        assert 50 < int(expected.sum()) < fcs.n_events - 50, path  # the gate cuts the data


def test_72_binned_display_rule(versions_dir: Path) -> None:
    """The 7.2 rule's derivation: B01 Monocytes is 2,389 in FlowJo 7.2.5 (2,402 in 7.6.5);
    the polygon on the binned display gives 2,385 (events on its edges decide the rest), on
    exact values 7.6.5's 2,402. Without the compatibility rules the stored shapes are exact
    (ellipses stay ellipses)."""
    fil = "931115-B01- Sample 01.fcs"
    fcs = _fcs(str(versions_dir / "fcs" / fil))
    counts = {}
    for compat in (True, False):
        ws = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v7.2.5.wsp",
                                   flowjo_compat=compat)
        res = evaluate(ws.strategy(sample=fil), fcs)
        counts[compat] = {res.paths[p]: res.counts[p] for p in res.paths}["/Monocytes"]
    assert counts[False] == 2402 and abs(counts[True] - 2389) <= 5
    exact = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v9.6.4.xml",
                                  flowjo_compat=False)
    s = exact.strategy(sample="931115-B02- Sample 01.fcs")
    assert isinstance(s.gates["CD4, CD8 ellipse"], EllipseGate)
    assert s.meta["flowjo_compat"] is None
    compat = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v9.6.4.xml")
    meta = compat.strategy(sample="931115-B02- Sample 01.fcs").meta["flowjo_compat"]
    assert meta.startswith("FlowJo 8.x/9.x (Mac) compatibility: ellipses as the inscribed 11-gon")


@pytest.mark.parametrize("wsp", ["advanced-v7.6.5.wsp", "advanced-v9.6.4.xml"])
def test_ellipse_rule_holds_on_the_held_out_ellipse(versions_dir: Path, wsp: str) -> None:
    """The 11-gon's N was chosen on "CD4, CD8 ellipse" only; "inverted ellipse" (29 x 14 bins
    instead of a radius-43 near-circle, elsewhere on the plot) is the held-out check. Judged
    on the events inside it (7.x stores the outside count, whose 1 % is ~4x looser)."""
    ours = _gate_all(versions_dir, wsp)
    expected = _counts(versions_dir, OWN_COUNTS[wsp][0])
    n = 0
    for fil, pops in expected.items():
        if "/inverted ellipse" not in pops:
            continue
        got = ours[fil][0]["/inverted ellipse"]
        mine, theirs = (got, pops["/inverted ellipse"])
        if wsp.endswith(".wsp"):  # eventsInside="0" of all 10,000 events
            mine, theirs = 10_000 - mine, 10_000 - theirs
        assert abs(mine - theirs) <= max(15, 0.01 * theirs), (fil, mine, theirs)
        n += 1
    assert n == 4


def test_binned_strategy_has_no_gatingml_form(versions_dir: Path, tmp_path: Path) -> None:
    ws = read_flowjo_workspace(versions_dir / "workspaces" / "advanced-v7.2.5.wsp")
    strategy = ws.strategy(sample="931115-B01- Sample 01.fcs")
    with pytest.raises(InputError, match=r"DisplayBinTransform\) has no Gating-ML 2\.0 "
                                         r"equivalent") as info:
        write_gatingml(strategy, tmp_path / "out.xml")
    assert "\n" not in str(info.value)


def test_unmatched_file_is_refused(versions_dir: Path, reference_dir: Path) -> None:
    strategy = load_strategy(versions_dir / "workspaces" / "advanced-v9.6.4.xml")
    other = reference_dir / "flow" / "gatingml2" / "data1.fcs"
    with pytest.raises(InputError, match=r"data1\.fcs: matches no sample of workspace "
                                         r"advanced-v9\.6\.4\.xml"):
        strategy.for_file(other, _fcs(str(other)).text)
