"""The `calculator` built-in: arithmetic read from Python's AST, never `eval`.

A model's expression is hostile input. Only numbers, `+ - * / // % **`, unary signs,
parentheses, a few math functions and `pi`/`e` are understood; anything else (names,
attributes, strings, calls to anything not listed) is refused. Cost is bounded before
it is spent: the text length and node count are capped, and every integer result is
kept under `MAX_INT_BITS`, with `**` checked from the operands' sizes before it runs,
so `9**9**9` or `10**100000` is refused at once instead of hanging or exhausting memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from agents.tools.base import ToolContext, ToolError

MAX_CHARS = 500
MAX_NODES = 200
MAX_INT_BITS = 4096  # about 1233 decimal digits
MAX_ROUND_DIGITS = 100

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _round(value: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise ToolError(f"round's digits must be an integer within ±{MAX_ROUND_DIGITS}")
    return round(value, digits) if digits else round(value)


_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {  # function, min and max args
    "sqrt": (math.sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (min, 1, 20),
    "max": (max, 1, 20),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "log": (math.log, 1, 2),
    "exp": (math.exp, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
}


def evaluate(expression: str) -> Number:
    """The value of `expression`, or a ToolError saying why it has none."""
    if len(expression) > MAX_CHARS:
        raise ToolError(f"expression is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError("not an arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"expression has more than {MAX_NODES} parts")
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("result is too large") from None
    except (ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("result is not a finite number")
    return value


def format_number(value: Number) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        if type(node.value) in (int, float):  # not bool, complex or str
            return _checked(node.value)
        raise ToolError(f"{node.value!r} is not a number")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r} (constants: pi, e)")
    if isinstance(node, ast.Call):
        return _call(node)
    raise ToolError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        shown = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
        known = ", ".join(_FUNCTIONS)
        raise ToolError(f"unknown function {shown!r} (functions: {known})")
    if node.keywords:
        raise ToolError(f"{node.func.id} takes no keyword arguments")
    function, least, most = _FUNCTIONS[node.func.id]
    if not least <= len(node.args) <= most:
        raise ToolError(f"{node.func.id} takes {least} to {most} arguments")
    args = [_eval(arg) for arg in node.args]
    if node.func.id in ("min", "max") and len(args) == 1:
        return args[0]
    return _checked(function(*args))


def _check_power(base: Number, exponent: Number) -> None:
    """Refuse an integer power whose result would pass MAX_INT_BITS, before computing
    it (its size is exponent × bits of the base). Float powers overflow on their own."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * math.log2(abs(base)) > MAX_INT_BITS:
            raise ToolError(f"result is too large (over {MAX_INT_BITS} bits)")


def _checked(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"result is too large (over {MAX_INT_BITS} bits)")
    return value


class Calculator:
    name = "calculator"
    description = (
        "Evaluate an arithmetic expression exactly: + - * / // % **, parentheses, "
        "sqrt, abs, round, min, max, floor, ceil, log, exp, sin, cos, tan, pi, e."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "expression": {"type": "string", "description": "e.g. (3 + 4) * 2 / sqrt(16)"}
        },
        "required": ["expression"],
        "additionalProperties": False,
    }
    client = False

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        expression = arguments.get("expression")
        if not isinstance(expression, str):
            raise ToolError("expression must be a string")
        return format_number(evaluate(expression))
