"""The YAML-model loader on its own, with a small model that has nothing to do with
LLMs: every problem comes back as `file:line: dotted.field: message`, in line order,
including the model's own cross-field errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import Field, field_validator, model_validator

from core.yaml_models import (
    StrictModel,
    YamlModelError,
    field_error,
    load_yaml_model,
    none_as,
    raise_field_errors,
    require_items,
)


class Pet(StrictModel):
    name: str = Field(min_length=1)
    legs: int = Field(default=4, ge=0, le=8)


class Household(StrictModel):
    pets: tuple[Pet, ...]
    tags: tuple[str, ...] = ()
    favourite: str | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_none(cls, value: object) -> object:
        return none_as(value, ())

    @field_validator("pets")
    @classmethod
    def _some_pets(cls, value: tuple[Pet, ...]) -> tuple[Pet, ...]:
        require_items(value)
        return value

    @model_validator(mode="after")
    def _favourite_is_a_pet(self) -> Household:
        if self.favourite is not None and self.favourite not in {p.name for p in self.pets}:
            raise_field_errors(
                "Household",
                [
                    field_error(
                        ("favourite",),
                        "unknown_pet",
                        "no pet is called {name}",
                        self.favourite,
                        name=repr(self.favourite),
                    )
                ],
            )
        return self


GOOD = """\
pets:
  - name: rex
    legs: 4
  - name: tweety
    legs: 2
tags:
favourite: tweety
"""


def load(tmp_path: Path, text: str) -> Household:
    path = tmp_path / "house.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_yaml_model(path, Household, what="household", expected="a mapping with pets")


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(YamlModelError) as caught:
        load(tmp_path, text)
    assert str(caught.value) == "\n".join(caught.value.problems)
    prefix = f"{tmp_path / 'house.yaml'}:"
    assert all(p.startswith(prefix) for p in caught.value.problems), caught.value.problems
    return [p.removeprefix(prefix) for p in caught.value.problems]


def test_a_valid_file_gives_the_model(tmp_path: Path) -> None:
    house = load(tmp_path, GOOD)
    assert [(p.name, p.legs) for p in house.pets] == [("rex", 4), ("tweety", 2)]
    assert house.tags == ()  # `tags:` with nothing under it
    assert house.favourite == "tweety"


def test_every_problem_names_its_line_and_field_in_line_order(tmp_path: Path) -> None:
    text = """\
    favourite: felix
    pets:
      - name: rex
        legs: 9
      - name: ''
        colour: brown
      - legs: 2
    tags: solo
    """
    assert problems(tmp_path, text) == [
        "4: pets.0.legs: Input should be less than or equal to 8",
        "5: pets.1.name: String should have at least 1 character",
        "6: pets.1.colour: unknown field (check the spelling)",
        "7: pets.2.name: Field required",
        "8: tags: Input should be a list",
    ]


def test_a_models_own_error_points_at_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("favourite: tweety", "favourite: felix")
    assert problems(tmp_path, text) == ["7: favourite: no pet is called 'felix'"]


def test_an_empty_list_and_a_missing_field(tmp_path: Path) -> None:
    assert problems(tmp_path, "pets: []\n") == [
        "1: pets: List should have at least 1 item after validation, not 0"
    ]
    assert problems(tmp_path, "tags: [a]\n") == ["1: pets: Field required"]


def test_duplicate_keys_are_reported_with_the_first_line(tmp_path: Path) -> None:
    text = GOOD.replace("    legs: 2\n", "    legs: 2\n    legs: 3\n")
    assert problems(tmp_path, text) == ["6: pets.1.legs: duplicate key (first at line 5)"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    assert problems(tmp_path, "pets:\n  - name: rex: x\n") == [
        "2: invalid YAML: mapping values are not allowed here"
    ]


def test_file_level_messages_use_what_and_expected(tmp_path: Path) -> None:
    assert problems(tmp_path, "- rex\n") == ["1: top level must be a mapping with pets, not a list"]
    with pytest.raises(YamlModelError) as caught:
        load(tmp_path, "# nothing\n")
    assert str(caught.value).endswith(": file is empty; expected a mapping with pets")

    absent = tmp_path / "absent.yaml"
    with pytest.raises(YamlModelError) as caught:
        load_yaml_model(absent, Household, what="household", expected="a mapping with pets")
    assert str(caught.value) == f"{absent}: household file not found"
    with pytest.raises(YamlModelError, match="cannot read household"):
        load_yaml_model(tmp_path, Household, what="household", expected="a mapping with pets")
