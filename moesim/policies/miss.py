"""Miss handling (registry ``MISS``): what to do with a demanded expert that is not on the GPU.

* ``fetch``: copy it to the GPU (host->GPU link), then run it there (mixtral-offloading, MoE-Infinity).
* ``cpu``: run it on the CPU where its weights are; send the activations over and the result back
  (Fiddler's CPU path, llama.cpp's partial offload).
* ``best``: per expert, whichever of the two is estimated to finish first given the work already
  committed to each resource (Fiddler's choice). The estimate (identical in both engines):
  each resource keeps a *horizon*, the time its committed demand work ends (prefetches ignored);
  ``fetch`` finishes at ``max(now, h2d) + transfer + GPU kernel``; ``cpu`` at
  ``max(max(max(now, d2h) + act, cpu) + cpu_kernel, h2d) + act``, both after any SSD read
  ``max(now, ssd) + read`` when CPU memory lacks the expert. Ties go to ``fetch``.
"""

from __future__ import annotations

from moesim.policies.registry import Registry

FETCH, CPU = "fetch", "cpu"

MISS: Registry[str] = Registry("miss policy")
for _name in ("fetch", "cpu", "best"):
    MISS.register(_name)(_name)


def choose(policy: str, fetch_done_s: float, cpu_done_s: float) -> str:
    """The route for one miss under ``policy`` given the two completion estimates."""
    if policy == "best":
        return CPU if cpu_done_s < fetch_done_s else FETCH
    return policy
