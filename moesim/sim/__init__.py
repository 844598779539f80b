"""The memory-hierarchy simulator: SimPy reference engine and Numba fast path.

``run(trace, scenario, engine="auto")`` plans the run (batch schedule, costs, memory), then times
it with the chosen engine and returns a :class:`~moesim.sim.result.Result`.
"""

from __future__ import annotations

from moesim.sim.result import Result

__all__ = ["Result", "run", "ENGINES"]

ENGINES = ("auto", "des", "fast")


def run(trace, scenario, engine: str | None = None) -> Result:
    """Simulate ``trace`` on ``scenario``; ``engine`` overrides ``scenario.engine``.

    ``"des"`` is the SimPy reference and supports everything; ``"fast"`` the Numba path (raises a
    ConfigError naming the unsupported feature); ``"auto"`` picks the fast path when it supports the
    scenario. The result's ``scenario`` holds the resolved scenario and the memory plan.
    """
    from moesim.errors import ConfigError
    from moesim.sim.build import build_inputs
    from moesim.sim.des import run_des

    choice = engine or scenario.engine
    if choice not in ENGINES:
        raise ConfigError(f"engine: expected one of {', '.join(ENGINES)}, got {choice!r}")
    inputs, memory = build_inputs(trace, scenario)
    reason = None
    if choice in ("fast", "auto"):
        try:
            from moesim.sim.fast import run_fast, unsupported
        except ImportError:
            run_fast = unsupported = None
        reason = unsupported(inputs) if unsupported else "the fast path is not available"
        if reason is None:
            result = run_fast(inputs)
        elif choice == "fast":
            raise ConfigError(f"engine: the fast path does not support this scenario ({reason}); use engine = \"des\"")
        else:
            result = run_des(inputs)
    else:
        result = run_des(inputs)
    resolved = scenario.to_dict()
    resolved["memory"] = memory.as_dict()
    resolved["engine_used"] = result.engine
    if reason is not None:  # auto fell back to the SimPy engine: say why (it is slower)
        resolved["engine_fallback"] = reason
    return Result(steps=result.steps, layers=result.layers, summary=result.summary, engine=result.engine,
                  scenario=resolved)
