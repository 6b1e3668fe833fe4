"""The edge guard: the runbook's security switches (23.8), an IP deny list and an emergency rate
limit, kept in the store so that every replica applies the same ones."""
