"""Rate limits, budgets and admission: what a tenant may spend before a call goes upstream."""
