"""Schedules given as SB3 schedules (callables of progress_remaining), numbers, or short strings.

Strings follow the RL Zoo habit, so YAML configs can name them: ``"lin_0.5"`` goes from 0.5 to 0 over the run,
``"lin_0.5_0.02"`` from 0.5 to 0.02 over the run, ``"lin_0.5_0.02_0.25"`` reaches 0.02 after the first quarter
and stays there; ``"const_0.1"`` or ``"0.1"`` is constant.
"""

from __future__ import annotations

from collections.abc import Callable

from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

ScheduleLike = float | int | str | Callable[[float], float]


def parse_schedule(value: ScheduleLike) -> Callable[[float], float]:
    """Turn a number, string or callable into a picklable schedule of ``progress_remaining`` (1 -> 0)."""
    if callable(value):
        return value
    if isinstance(value, bool):
        raise TypeError(f"a schedule cannot be a bool: {value!r}")
    if isinstance(value, (int, float)):
        return ConstantSchedule(float(value))
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            if text.startswith("lin_"):
                parts = [float(p) for p in text[4:].split("_")]
                if len(parts) == 1:
                    return LinearSchedule(parts[0], 0.0, 1.0)
                if len(parts) == 2:
                    return LinearSchedule(parts[0], parts[1], 1.0)
                if len(parts) == 3 and 0 < parts[2] <= 1:
                    return LinearSchedule(parts[0], parts[1], parts[2])
            elif text.startswith("const_"):
                return ConstantSchedule(float(text[6:]))
            else:
                return ConstantSchedule(float(text))
        except ValueError:
            pass
    raise ValueError(f"cannot read schedule {value!r}: use a number, a callable, 'lin_A', 'lin_A_B', 'lin_A_B_F'")
