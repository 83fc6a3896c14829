"""Tests of the rule expression language: parsing, evaluation and every refusal."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.errors import RuleError
from udfs.expr import (
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    MAX_NODES,
    MAX_TEXT_LENGTH,
    Binary,
    Compare,
    Literal,
    Logical,
    Name,
    compile_expression,
)

NAMES = frozenset(
    {"amount", "currency", "hour", "c_count_1h", "c_mean_30d", "c_amount_ratio_30d"}
)
EVENT = {
    "amount": 250.0,
    "currency": "EUR",
    "hour": 3,
    "c_count_1h": 4.0,
    "c_mean_30d": 50.0,
}


def evaluate(text: str, env: dict | None = None) -> object:
    return compile_expression(text, NAMES).evaluate(EVENT if env is None else env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 - 3 - 4", -5),
        ("8 / 2 / 2", 2.0),
        ("10 % 4 + 1", 3),
        ("-2 * 3", -6),
        ("- -2", 2),
        ("1 + 2 > 2 * 1", True),
        ("not 1 > 2", True),
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("not true or true", True),
        ("not (true or true)", False),
        ("1 < 2 and 2 <= 2 and 3 > 2 and 3 >= 3 and 1 == 1.0 and 1 != 2", True),
        ("'a' < 'b' and \"EUR\" == 'EUR'", True),
    ],
)
def test_operators_follow_the_documented_precedence(text, expected):
    result = evaluate(text)

    assert result == expected
    assert type(result) is type(expected)


def test_arithmetic_is_left_associative_in_the_tree():
    tree = compile_expression("a - b - c", frozenset({"a", "b", "c"})).tree

    assert tree == Binary("-", Binary("-", Name("a"), Name("b")), Name("c"))


def test_and_binds_tighter_than_or_in_the_tree():
    tree = compile_expression("x > 1 or x < 0 and true", frozenset({"x"})).tree

    assert isinstance(tree, Logical) and tree.op == "or"
    assert isinstance(tree.left, Compare)
    assert tree.right == Logical(
        "and", Compare("<", Name("x"), Literal(0)), Literal(True)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amount > 3 * c_mean_30d", True),
        ("amount / c_mean_30d", 5.0),
        ("currency in ['EUR', 'USD']", True),
        ("currency not in ['EUR', 'USD']", False),
        ("hour in [0, 1, 2, 3, 4]", True),
        ("amount in [-1, 250]", True),
        ("c_count_1h in [true, 'x']", False),
        ("abs(-2.5)", 2.5),
        ("min(amount, 100, c_mean_30d)", 50.0),
        ("max(1, 2.5)", 2.5),
        ("sqrt(16)", 4.0),
        ("coalesce(c_amount_ratio_30d, 1.5)", 1.5),
        ("coalesce(amount, 0)", 250.0),
    ],
)
def test_fields_functions_and_lists_evaluate_against_the_event(text, expected):
    assert evaluate(text) == expected


def test_log_is_the_natural_logarithm():
    assert evaluate("log(amount)") == pytest.approx(math.log(250.0))


@pytest.mark.parametrize(
    "text",
    [
        "amount / 0",
        "amount % 0",
        "log(0)",
        "log(-1)",
        "sqrt(-1)",
        "currency + 1",
        "-currency",
        "abs(currency)",
        "max(currency, 1)",
        "c_amount_ratio_30d",
        "c_amount_ratio_30d * 2",
        "c_amount_ratio_30d > 1",
        "c_amount_ratio_30d == 1",
        "c_amount_ratio_30d != 1",
        "c_amount_ratio_30d in [1, 2]",
        "not (c_amount_ratio_30d > 1)",
        "currency > 1",
        "currency == 1",
    ],
)
def test_errors_type_mismatches_and_missing_fields_give_null(text):
    assert evaluate(text) is None
    assert not compile_expression(text, NAMES).holds(EVENT)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("c_amount_ratio_30d > 1 and false", False),
        ("false and c_amount_ratio_30d > 1", False),
        ("c_amount_ratio_30d > 1 and true", None),
        ("c_amount_ratio_30d > 1 or true", True),
        ("true or c_amount_ratio_30d > 1", True),
        ("c_amount_ratio_30d > 1 or false", None),
        ("not (c_amount_ratio_30d > 1) or amount > 1", True),
    ],
)
def test_logical_operators_use_three_valued_logic(text, expected):
    assert evaluate(text) is expected


def test_a_missing_name_evaluates_to_null():
    assert evaluate("c_amount_ratio_30d", {}) is None


def test_a_compiled_expression_pickles_and_still_evaluates():
    expression = compile_expression("amount > 3 * c_mean_30d", NAMES)

    restored = pickle.loads(pickle.dumps(expression))

    assert restored == expression
    assert restored.holds(EVENT)
    assert restored.names == frozenset({"amount", "c_mean_30d"})


def test_a_condition_at_the_size_limits_compiles_and_evaluates():
    nested = "(" * MAX_DEPTH + "amount" + ")" * MAX_DEPTH + " > 1"
    items = ", ".join(str(i) for i in range(MAX_LIST_ITEMS))

    assert compile_expression(nested, NAMES, boolean=True).holds(EVENT)
    assert compile_expression(f"hour in [{items}]", NAMES).holds(EVENT)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("amount > limit", "unknown field 'limit' at offset 9"),
        ("ammount > 1", "did you mean 'amount'"),
        ("True", "lower case"),
        ("__import__('os')", "unknown function '__import__'"),
        ("eval('1')", "unknown function 'eval'"),
        ("getattr(amount, 'real')", "unknown function 'getattr'"),
        ("amount.__class__", "attribute access"),
        ("().__class__", "expected a value but found ')'"),
        ("''.join", "attribute access"),
        ("lambda x: x", "'lambda' is not part of the rule language"),
        ("[x for x in amount]", "expected a value but found '['"),
        ("amount[0]", "unexpected '['"),
        ("{'a': 1}", "dictionaries"),
        ("amount ** 2", "powers are not supported"),
        ("amount = 5", "use == to test equality"),
        ("amount > 1 && true", "use and"),
        ("amount >", "at the end of the expression"),
        ("amount > 1 amount", "after a complete expression"),
        ("(amount > 1", "expected ')'"),
        ("'unterminated", "unterminated string"),
        ("'bad \\x escape'", "unknown escape"),
        ("2.", "no digits after its decimal point"),
        ("1e3", "exponents"),
        ("1" * 40, "number literal has 40 characters"),
        ("", "expression is empty"),
        ("   ", "expression is empty"),
        ("abs(1, 2)", "abs() takes exactly 1 argument(s) but got 2"),
        ("min(1)", "min() takes at least 2 argument(s) but got 1"),
        ("log()", "log() takes exactly 1 argument(s) but got 0"),
        ("coalesce(amount)", "coalesce() takes at least 2"),
        ("1 < amount < 3", "comparisons cannot be chained"),
        ("amount == null", "use coalesce"),
        ("null in [1]", "null is never in a list"),
        ("amount in [amount]", "list items must be literal values"),
        ("amount in 5", "expected '['"),
        ("amount not 5", "expected 'in' after 'not'"),
        ("'EUR' * 2", "must be a number but is a string"),
        ("true + 1", "must be a number but is a boolean"),
        ("abs('x')", "an argument of abs() must be a number"),
        ("'a' == 1", "compares a string with a number"),
        ("true < false", "cannot order true/false"),
        ("amount and true", "compare it explicitly"),
        ("not 5", "must be true or false but this is a number"),
        ("amount > 1 or", "at the end of the expression"),
        ("and", "keyword 'and'"),
        ("amount \u00e9", "unexpected character"),
    ],
)
def test_invalid_expressions_are_rejected_with_a_pointed_reason(text, fragment):
    with pytest.raises(RuleError) as raised:
        compile_expression(text, NAMES)

    assert fragment in raised.value.reason
    assert raised.value.rule_id is None


def test_a_condition_must_be_boolean_when_asked():
    with pytest.raises(RuleError, match="a condition must be true or false"):
        compile_expression("amount * 2", NAMES, boolean=True)
    with pytest.raises(RuleError, match="compare it explicitly"):
        compile_expression("amount", NAMES, boolean=True)


def test_text_longer_than_the_limit_is_rejected_before_parsing():
    text = "amount > 1 and " * (MAX_TEXT_LENGTH // 15 + 1) + "true"

    with pytest.raises(RuleError, match=f"limit of {MAX_TEXT_LENGTH}"):
        compile_expression(text, NAMES)


def test_nesting_deeper_than_the_limit_is_rejected():
    parentheses = "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1)
    negations = "not " * (MAX_DEPTH + 1) + "true"
    minuses = "-" * (MAX_DEPTH + 1) + "1"

    for text in (parentheses, negations, minuses, "(" * 1_000):
        with pytest.raises(RuleError, match="nested more than"):
            compile_expression(text, NAMES)


def test_more_nodes_than_the_limit_are_rejected():
    text = " + ".join(["amount"] * (MAX_NODES // 2 + 1))

    with pytest.raises(RuleError, match=f"more than {MAX_NODES} nodes"):
        compile_expression(text, NAMES)


def test_a_list_longer_than_the_limit_is_rejected():
    items = ", ".join("1" for _ in range(MAX_LIST_ITEMS + 1))

    with pytest.raises(RuleError, match=f"more than {MAX_LIST_ITEMS} items"):
        compile_expression(f"hour in [{items}]", NAMES)


def test_a_non_string_expression_is_rejected():
    with pytest.raises(RuleError, match="must be a string, got int"):
        compile_expression(5, NAMES)


GRAMMAR_PIECES = st.sampled_from(
    [
        "amount", "currency", "hour", "x", "abs", "min", "log", "coalesce",
        "__import__", "and", "or", "not", "in", "true", "false", "null",
        "(", ")", "[", "]", ",", ".", "-", "+", "*", "/", "%", "<", "<=", ">",
        ">=", "==", "!=", "=", "0", "1", "2.5", "'EUR'", '"a', "\\", " ",
    ]
)  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_either_compiles_or_raises_rule_error(text):
    try:
        compile_expression(text, NAMES)
    except RuleError:
        pass


@settings(max_examples=500, deadline=None)
@given(
    st.lists(GRAMMAR_PIECES, max_size=60).map("".join),
    st.dictionaries(st.sampled_from(sorted(NAMES)), VALUES),
)
def test_grammar_like_text_compiles_or_raises_and_evaluation_never_raises(text, env):
    try:
        expression = compile_expression(text, NAMES)
    except RuleError:
        return

    result = expression.evaluate(env)

    assert result is None or isinstance(result, (bool, int, float, str))
