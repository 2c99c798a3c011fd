"""Executors: same results in task order whatever the executor; failures reported, not raised."""

from __future__ import annotations

import pytest

from immunoprofile.errors import InputError
from immunoprofile.executors import ExecutorSpec, run_tasks


def square_or_fail(x: int) -> int:
    if x == 3:
        raise InputError(f"sample{x}.fcs", "truncated data segment")
    if x == 4:
        raise ZeroDivisionError("boom")
    return x * x


TASKS = [(f"s{i}", (i,)) for i in range(6)]


@pytest.mark.parametrize("spec", [ExecutorSpec("serial"), ExecutorSpec("process", jobs=2)],
                         ids=["serial", "process"])
def test_outcomes_in_task_order_with_errors(spec):
    seen = []
    outcomes = run_tasks(square_or_fail, TASKS, spec=spec, on_done=lambda o: seen.append(o.key))
    assert [o.key for o in outcomes] == [k for k, _ in TASKS]
    assert sorted(seen) == sorted(k for k, _ in TASKS)
    assert [o.value for o in outcomes if o.ok] == [0, 1, 4, 25]
    assert outcomes[3].error == "sample3.fcs: truncated data segment"
    assert outcomes[4].error.startswith("internal error (ZeroDivisionError: boom)")


def test_duplicate_keys_rejected():
    with pytest.raises(ValueError):
        run_tasks(square_or_fail, [("a", (1,)), ("a", (2,))])
