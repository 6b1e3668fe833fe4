"""``secureconnect oncall diagnose``: the runbook's checks (23.5 to 23.9) as code.

Two layers, both pure and tested on recorded data: a target turns what it can see (Kubernetes API
objects, or local processes and endpoints) into :class:`~.facts.Facts`; :mod:`.rules` turns facts
into findings with the runbook's prescribed mitigation and the exact command. Only
:mod:`.kube` and :mod:`.local` talk to the world.
"""
