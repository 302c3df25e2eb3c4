"""Router config: the schema, and YAML errors that name the line and the field.
(The config built from provider keys: test_defaults.py; the loader alone:
tests/core/test_yaml_models.py.)"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.llm.config import (
    ProviderConfig,
    RouterConfig,
    RouterConfigError,
    load_router_config,
)

FULL = """\
routing:
  strategy: latency
retry:
  attempts: 3
  backoff_seconds: 0.5
  max_backoff_seconds: 8
  honour_retry_after: false
  max_retry_after_seconds: 20
cooldown:
  failures: 5
  seconds: 12.5
providers:
  local-vllm:
    kind: openai_compatible
    api_base: http://127.0.0.1:8001/v1
    api_key_env: VLLM_API_KEY
model_groups:
  - name: gpt-4o-mini
    aliases: [default, fast]
    description: "Cheap and quick"
    deployments:
      - provider: openai
        model: gpt-4o-mini
        weight: 3
        rpm: 500
        tpm: 200000
        timeout_seconds: 30
        max_tokens: 4096
      - provider: local-vllm
        model: meta-llama/Llama-3.1-8B-Instruct
  - name: claude
    deployments:
      - provider: anthropic
        model: claude-3-5-haiku-latest
  - name: gemini
    deployments:
      - provider: google
        model: gemini-2.0-flash
fallbacks:
  gpt-4o-mini: [claude, gemini]
  claude: [gemini, gpt-4o-mini]
"""

# One group, used as the base of the rule-violation cases below.
GROUPS = """\
model_groups:
  - name: alpha
    aliases: [a]
    deployments:
      - provider: openai
        model: gpt-4o-mini
  - name: beta
    deployments:
      - provider: anthropic
        model: claude-3-5-haiku-latest
"""


def write(tmp_path: Path, text: str, name: str = "router.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(RouterConfigError) as caught:
        load_router_config(path)
    prefix = f"{path}:"
    assert all(p.startswith(prefix) for p in caught.value.problems), caught.value.problems
    assert str(caught.value) == "\n".join(caught.value.problems)
    return [p.removeprefix(prefix) for p in caught.value.problems]


def only_problem(tmp_path: Path, text: str) -> str:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    return problems[0]


# -- a valid file ----------------------------------------------------------------
def test_full_example_loads(tmp_path: Path) -> None:
    config = load_router_config(write(tmp_path, FULL))

    assert config.routing.strategy == "latency"
    assert (config.retry.attempts, config.retry.backoff_seconds) == (3, 0.5)
    assert config.retry.max_backoff_seconds == 8
    assert config.retry.honour_retry_after is False
    assert config.retry.max_retry_after_seconds == 20
    assert (config.cooldown.failures, config.cooldown.seconds) == (5, 12.5)
    vllm = config.providers["local-vllm"]
    assert vllm == ProviderConfig(
        kind="openai_compatible", api_base="http://127.0.0.1:8001/v1", api_key_env="VLLM_API_KEY"
    )

    group = config.model_groups[0]
    assert group.name == "gpt-4o-mini"
    assert group.aliases == ("default", "fast")
    assert group.description == "Cheap and quick"
    first, second = group.deployments
    assert (first.provider, first.model, first.weight) == ("openai", "gpt-4o-mini", 3)
    assert (first.rpm, first.tpm, first.timeout_seconds, first.max_tokens) == (
        500,
        200000,
        30,
        4096,
    )
    assert (second.weight, second.rpm, second.tpm) == (1, None, None)
    assert (second.timeout_seconds, second.max_tokens) == (60, None)


def test_lookups(tmp_path: Path) -> None:
    config = load_router_config(write(tmp_path, FULL))

    assert config.public_names() == ["gpt-4o-mini", "claude", "gemini"]
    assert config.resolve("gpt-4o-mini") is config.model_groups[0]
    assert config.resolve("fast") is config.model_groups[0]
    assert config.resolve("default") is config.model_groups[0]
    assert config.resolve("claude") is config.model_groups[1]
    assert config.resolve("Claude") is None  # case-sensitive
    assert config.resolve("nope") is None

    assert config.fallback_chain("gpt-4o-mini") == ["gpt-4o-mini", "claude", "gemini"]
    assert config.fallback_chain("fast") == ["gpt-4o-mini", "claude", "gemini"]
    # Breadth-first, and the cycle back to gpt-4o-mini does not repeat claude.
    assert config.fallback_chain("claude") == ["claude", "gemini", "gpt-4o-mini"]
    assert config.fallback_chain("gemini") == ["gemini"]
    assert config.fallback_chain("nope") == []


def test_fallback_chain_is_breadth_first(tmp_path: Path) -> None:
    groups = "".join(
        f"  - name: {n}\n    deployments: [{{provider: openai, model: {n}}}]\n"
        for n in ("a", "b", "c", "d", "e")
    )
    text = f"model_groups:\n{groups}fallbacks:\n  a: [b, c]\n  b: [d, a]\n  c: [e, d]\n"
    config = load_router_config(write(tmp_path, text))
    assert config.fallback_chain("a") == ["a", "b", "c", "d", "e"]
    assert config.fallback_chain("b") == ["b", "d", "a", "c", "e"]


def test_provider_for(tmp_path: Path) -> None:
    config = load_router_config(write(tmp_path, FULL))
    assert config.provider_for("local-vllm") == config.providers["local-vllm"]
    assert config.provider_for("anthropic") == ProviderConfig(kind="anthropic")
    assert config.provider_for("openai_compatible") is None
    assert config.provider_for("nope") is None


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = load_router_config(write(tmp_path, GROUPS + "providers:\nfallbacks:\n"))
    assert config.routing.strategy == "weighted"
    assert (config.retry.attempts, config.retry.backoff_seconds) == (2, 0.25)
    assert (config.retry.max_backoff_seconds, config.retry.max_retry_after_seconds) == (4, 10)
    assert config.retry.honour_retry_after is True
    assert (config.cooldown.failures, config.cooldown.seconds) == (3, 30)
    assert config.providers == {}
    assert config.fallbacks == {}


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_router_config(write(tmp_path, GROUPS))
    with pytest.raises(ValidationError):
        config.model_groups[0].name = "changed"  # type: ignore[misc]


def test_path_may_be_a_string(tmp_path: Path) -> None:
    config = load_router_config(str(write(tmp_path, GROUPS)))
    assert config.public_names() == ["alpha", "beta"]


# -- field errors: line and dotted path ------------------------------------------
def test_field_error_names_line_and_field(tmp_path: Path) -> None:
    text = GROUPS.replace(
        "        model: gpt-4o-mini\n", "        model: gpt-4o-mini\n        weight: 0\n"
    )
    assert only_problem(tmp_path, text) == (
        "7: model_groups.0.deployments.0.weight: Input should be greater than 0"
    )


def test_several_errors_are_all_listed_in_line_order(tmp_path: Path) -> None:
    text = """\
    retry:
      attempts: 11
    model_groups:
      - name: alpha
        deployments:
          - provider: openai
            model: gpt-4o-mini
            timeout_seconds: 601
            rpm: -1
    cooldown:
      failures: 0
    """
    assert problems_of(tmp_path, text) == [
        "2: retry.attempts: Input should be less than or equal to 10",
        "8: model_groups.0.deployments.0.timeout_seconds: "
        "Input should be less than or equal to 600",
        "9: model_groups.0.deployments.0.rpm: Input should be greater than 0",
        "11: cooldown.failures: Input should be greater than or equal to 1",
    ]


def test_unknown_top_level_key_names_its_line(tmp_path: Path) -> None:
    text = GROUPS + "fallback:\n  alpha: [beta]\n"
    assert only_problem(tmp_path, text) == "11: fallback: unknown field (check the spelling)"


def test_unknown_nested_key_names_its_line(tmp_path: Path) -> None:
    text = GROUPS.replace(
        "        model: gpt-4o-mini\n", "        model: gpt-4o-mini\n        wieght: 2\n"
    )
    assert only_problem(tmp_path, text) == (
        "7: model_groups.0.deployments.0.wieght: unknown field (check the spelling)"
    )


def test_missing_field_names_the_parent_mapping(tmp_path: Path) -> None:
    text = """\
    model_groups:
      - name: alpha
        deployments:
          - provider: openai
            weight: 2
    """
    assert only_problem(tmp_path, text) == "4: model_groups.0.deployments.0.model: Field required"


def test_missing_model_groups(tmp_path: Path) -> None:
    text = """\
    routing:
      strategy: weighted
    """
    assert only_problem(tmp_path, text) == "1: model_groups: Field required"


def test_empty_model_groups(tmp_path: Path) -> None:
    text = """\
    routing:
      strategy: weighted
    model_groups: []
    """
    assert only_problem(tmp_path, text) == (
        "3: model_groups: List should have at least 1 item after validation, not 0"
    )


def test_group_without_deployments(tmp_path: Path) -> None:
    text = """\
    model_groups:
      - name: alpha
        deployments: []
    """
    assert only_problem(tmp_path, text).startswith(
        "3: model_groups.0.deployments: List should have at least 1 item"
    )


def test_scalar_where_a_list_belongs(tmp_path: Path) -> None:
    text = GROUPS.replace("aliases: [a]", "aliases: a")
    assert only_problem(tmp_path, text) == "3: model_groups.0.aliases: Input should be a list"


def test_bad_strategy(tmp_path: Path) -> None:
    text = GROUPS + "routing:\n  strategy: random\n"
    assert only_problem(tmp_path, text) == (
        "12: routing.strategy: Input should be 'weighted' or 'latency'"
    )


def test_backoff_cap_below_base(tmp_path: Path) -> None:
    text = GROUPS + "retry:\n  backoff_seconds: 2\n  max_backoff_seconds: 1\n"
    assert only_problem(tmp_path, text) == (
        "13: retry.max_backoff_seconds: must be >= backoff_seconds (2)"
    )


def test_backoff_base_above_default_cap_points_at_retry(tmp_path: Path) -> None:
    text = GROUPS + "retry:\n  backoff_seconds: 5\n"
    assert only_problem(tmp_path, text) == (
        "12: retry.max_backoff_seconds: must be >= backoff_seconds (5)"
    )


@pytest.mark.parametrize(
    "name", ["-leading-dash", "has space", "", "x" * 129, "ünïcode", "trailing!"]
)
def test_bad_group_name(tmp_path: Path, name: str) -> None:
    text = GROUPS.replace("name: beta", f"name: {name!r}")
    assert only_problem(tmp_path, text).startswith(
        "7: model_groups.1.name: String should match pattern"
    )


def test_good_group_names(tmp_path: Path) -> None:
    text = GROUPS.replace("name: beta", "name: org/model-v1.5:latest_x")
    config = load_router_config(write(tmp_path, text))
    assert config.public_names() == ["alpha", "org/model-v1.5:latest_x"]


def test_bad_alias_name(tmp_path: Path) -> None:
    text = GROUPS.replace("aliases: [a]", "aliases:\n      - ok\n      - 'not ok'")
    assert only_problem(tmp_path, text).startswith(
        "5: model_groups.0.aliases.1: String should match pattern"
    )


# -- cross-reference errors ------------------------------------------------------
def test_duplicate_group_name(tmp_path: Path) -> None:
    text = GROUPS.replace("name: beta", "name: alpha")
    assert only_problem(tmp_path, text) == (
        "7: model_groups.1.name: 'alpha' is already used by model_groups.0.name"
    )


def test_alias_clashing_with_a_group_name(tmp_path: Path) -> None:
    text = GROUPS.replace("  - name: beta\n", "  - name: beta\n    aliases: [x, alpha]\n")
    assert only_problem(tmp_path, text) == (
        "8: model_groups.1.aliases.1: 'alpha' is already used by model_groups.0.name"
    )


def test_duplicate_alias(tmp_path: Path) -> None:
    text = GROUPS.replace(
        "  - name: beta\n", "  - name: beta\n    aliases:\n      - b\n      - a\n"
    )
    assert only_problem(tmp_path, text) == (
        "10: model_groups.1.aliases.1: 'a' is already used by model_groups.0.aliases.0"
    )


def test_names_are_case_sensitive(tmp_path: Path) -> None:
    text = GROUPS.replace("name: beta", "name: Alpha")
    assert load_router_config(write(tmp_path, text)).public_names() == ["alpha", "Alpha"]


def test_unknown_provider(tmp_path: Path) -> None:
    text = GROUPS.replace("provider: anthropic", "provider: antropic")
    problem = only_problem(tmp_path, text)
    assert problem.startswith(
        "9: model_groups.1.deployments.0.provider: unknown provider 'antropic'"
    )
    assert "openai, anthropic, google, groq, mistral, cohere" in problem


def test_openai_compatible_is_not_a_provider_by_itself(tmp_path: Path) -> None:
    text = GROUPS.replace("provider: anthropic", "provider: openai_compatible")
    assert only_problem(tmp_path, text).startswith(
        "9: model_groups.1.deployments.0.provider: unknown provider 'openai_compatible'"
    )


def test_declared_provider_may_override_a_kind(tmp_path: Path) -> None:
    text = (
        GROUPS + "providers:\n  openai:\n    kind: openai\n    api_base: https://proxy.example/v1\n"
    )
    config = load_router_config(write(tmp_path, text))
    assert config.provider_for("openai") == ProviderConfig(
        kind="openai", api_base="https://proxy.example/v1"
    )


def test_unknown_fallback_source(tmp_path: Path) -> None:
    text = GROUPS + "fallbacks:\n  alpha: [beta]\n  gamma: [alpha]\n"
    assert only_problem(tmp_path, text) == "13: fallbacks.gamma: unknown model group 'gamma'"


def test_unknown_fallback_target(tmp_path: Path) -> None:
    text = GROUPS + "fallbacks:\n  alpha:\n    - beta\n    - gamma\n"
    assert only_problem(tmp_path, text) == "14: fallbacks.alpha.1: unknown model group 'gamma'"


def test_fallback_by_alias_is_rejected(tmp_path: Path) -> None:
    text = GROUPS + "fallbacks:\n  beta: [a]\n  a: [beta]\n"
    assert problems_of(tmp_path, text) == [
        "12: fallbacks.beta.0: 'a' is an alias; fallbacks use group names ('alpha')",
        "13: fallbacks.a: 'a' is an alias; fallbacks use group names ('alpha')",
    ]


def test_fallback_to_itself(tmp_path: Path) -> None:
    text = GROUPS + "fallbacks:\n  alpha: [beta, alpha]\n"
    assert only_problem(tmp_path, text) == (
        "12: fallbacks.alpha.1: a group cannot fall back to itself"
    )


# -- providers section -------------------------------------------------------------
PROVIDER = GROUPS.replace("provider: anthropic", "provider: local") + (
    "providers:\n  local:\n    kind: openai_compatible\n    api_base: http://10.0.0.5:8000/v1\n"
)


def test_declared_provider_is_usable(tmp_path: Path) -> None:
    config = load_router_config(write(tmp_path, PROVIDER))
    assert config.model_groups[1].deployments[0].provider == "local"
    assert config.providers["local"].api_base == "http://10.0.0.5:8000/v1"


@pytest.mark.parametrize(
    "base", ["ftp://host/v1", "127.0.0.1:8000", "http://", "https:///v1", "http://[::1/v1"]
)
def test_api_base_must_be_http_with_a_host(tmp_path: Path, base: str) -> None:
    text = PROVIDER.replace("http://10.0.0.5:8000/v1", f"'{base}'")
    assert only_problem(tmp_path, text).startswith(
        "14: providers.local.api_base: must be an http:// or https:// URL with a host"
    )


def test_openai_compatible_needs_api_base(tmp_path: Path) -> None:
    text = PROVIDER.replace("    api_base: http://10.0.0.5:8000/v1\n", "")
    assert only_problem(tmp_path, text) == (
        "13: providers.local.api_base: required for kind openai_compatible"
    )


@pytest.mark.parametrize("name", ["vllm_key", "1KEY", "MY-KEY", "sk-abc123"])
def test_api_key_env_must_be_an_env_var_name(tmp_path: Path, name: str) -> None:
    text = PROVIDER + f"    api_key_env: {name}\n"
    assert only_problem(tmp_path, text).startswith(
        "15: providers.local.api_key_env: String should match pattern"
    )


def test_unknown_provider_kind(tmp_path: Path) -> None:
    text = PROVIDER.replace("kind: openai_compatible", "kind: ollama")
    assert only_problem(tmp_path, text).startswith("13: providers.local.kind: Input should be")


def test_bad_provider_name(tmp_path: Path) -> None:
    text = GROUPS + "providers:\n  'bad name':\n    kind: openai\n"
    assert only_problem(tmp_path, text).startswith(
        "12: providers.bad name.[key]: String should match pattern"
    )


# -- YAML and file errors ----------------------------------------------------------
def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = """\
    model_groups:
      - name: alpha
        deployments:
          - provider: openai: x
    """
    assert only_problem(tmp_path, text) == "4: invalid YAML: mapping values are not allowed here"


def test_yaml_unclosed_bracket_names_the_line_and_context(tmp_path: Path) -> None:
    text = """\
    model_groups:
      - name: alpha
        deployments: [
    """
    problem = only_problem(tmp_path, text)
    assert problem.startswith("4: invalid YAML: ")
    assert "(while parsing a flow node at line 4)" in problem


def test_yaml_bad_indentation_names_the_line(tmp_path: Path) -> None:
    text = """\
    model_groups:
      - name: alpha
       deployments: []
    """
    assert only_problem(tmp_path, text).startswith("3: invalid YAML: ")


def test_duplicate_key(tmp_path: Path) -> None:
    text = GROUPS.replace(
        "        model: gpt-4o-mini\n", "        model: gpt-4o-mini\n        model: gpt-4o\n"
    )
    assert only_problem(tmp_path, text) == (
        "7: model_groups.0.deployments.0.model: duplicate key (first at line 6)"
    )


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert only_problem(tmp_path, "- a\n- b\n") == (
        "1: top level must be a mapping with model_groups, not a list"
    )


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing here\n")
    with pytest.raises(RouterConfigError, match="file is empty"):
        load_router_config(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(RouterConfigError) as caught:
        load_router_config(path)
    assert str(caught.value) == f"{path}: router config file not found"


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(RouterConfigError, match="cannot read router config"):
        load_router_config(tmp_path)


def test_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_router_config(tmp_path / "absent.yaml")


def test_relative_path_is_shown_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, GROUPS.replace("name: beta", "name: alpha"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RouterConfigError) as caught:
        load_router_config("router.yaml")
    assert str(caught.value).startswith("router.yaml:7: model_groups.1.name: ")


def test_direct_validation_also_checks_cross_references() -> None:
    with pytest.raises(ValidationError) as caught:
        RouterConfig.model_validate(
            {
                "model_groups": [
                    {"name": "a", "deployments": [{"provider": "nope", "model": "m"}]}
                ],
                "fallbacks": {"a": ["b"]},
            }
        )
    locs = [error["loc"] for error in caught.value.errors()]
    assert locs == [("model_groups", 0, "deployments", 0, "provider"), ("fallbacks", "a", 0)]


def test_litellm_translation_is_for_the_kinds_it_translates(tmp_path: Path) -> None:
    """`translation: litellm` swaps Skygate's own translation for litellm's, for the
    kinds whose litellm path is tested; elsewhere it is a line-numbered error."""
    text = GROUPS + (
        "providers:\n"
        "  claude-via-litellm: {kind: anthropic, translation: litellm}\n"
        "  gemini-via-litellm: {kind: google, translation: litellm}\n"
        "  cohere-via-litellm: {kind: cohere, translation: litellm}\n"
    )
    assert only_problem(tmp_path, text) == (
        "14: providers.cohere-via-litellm.translation: litellm translates only kinds "
        "anthropic, google, not cohere"
    )
    config = load_router_config(
        write(tmp_path, GROUPS + text[len(GROUPS) :].rsplit("  cohere", 1)[0])
    )
    assert {name: p.transport for name, p in config.providers.items()} == {
        "claude-via-litellm": "litellm",
        "gemini-via-litellm": "litellm",
    }
    native = load_router_config(write(tmp_path, GROUPS + "providers:\n  c: {kind: anthropic}\n"))
    assert native.providers["c"].transport == "anthropic"
