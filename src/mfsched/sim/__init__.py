"""Flow-level cluster simulator: one event queue for compute and network events.

* :mod:`.allocation` — pure bandwidth allocation (strict priority, max-min inside a level).
* :mod:`.topology` — ``testbed`` and ``fattree`` clusters: links, capacities, paths.
* :mod:`.network` — fluid flows on a topology, advanced between events.
* :mod:`.engine` — the event loop; calls the policy and applies its decisions.
* :mod:`.serving` — prefill instances, batching, layer execution, requests' TTFT.
"""
