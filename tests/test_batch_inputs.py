"""``plan_batch``'s shortcut for a list of bytes gives the plan the item-by-item path
gives (a tuple of the same inputs takes that path)."""

from __future__ import annotations

from typing import Any

import pytest

from fnrun_nb.batch.inputs import plan_batch

KW: dict[str, Any] = dict(
    repeat=1, concurrency=None, rate=None, keep_data=True, progress=False, workers=2
)


@pytest.mark.parametrize("env", [None, {"A": "b"}])
@pytest.mark.parametrize("timing", [False, True])
def test_a_list_of_bytes_plans_as_any_iterable(env: Any, timing: bool) -> None:
    inputs = [b"one", b"", b"three" * 100]
    fast = plan_batch(inputs, env=env, handler_timing=timing, **KW)
    slow = plan_batch(tuple(inputs), env=env, handler_timing=timing, **KW)
    assert fast.datas == slow.datas and fast.datas is not inputs
    assert fast.env_blocks == slow.env_blocks
    assert fast.env_ins == slow.env_ins
    # One env dict shared by every row, as on the item-by-item path.
    assert len({id(e) for e in fast.env_ins}) == 1
    inputs.append(b"late")  # the plan is a copy
    assert len(fast.datas) == 3


def test_a_list_with_anything_else_is_checked_item_by_item() -> None:
    class Sub(bytes):
        pass

    plan = plan_batch([b"a", "é", Sub(b"s"), (b"d", {"K": "v"})], env=None, **KW)
    assert plan.datas == [b"a", "é".encode(), b"s", b"d"]
    assert plan.env_ins[3] == {"K": "v"}
    with pytest.raises(TypeError, match="input 1 is int"):
        plan_batch([b"a", 1], env=None, **KW)
