"""Who is calling: API-key secrets and JWTs (`credentials`), resolved to a Principal
(`authenticator`)."""
