"""The LLM router: providers, model groups, fallbacks, retries, cooldowns.
The only package that imports litellm."""
