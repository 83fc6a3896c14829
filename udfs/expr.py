"""Rule conditions: a small, safe expression language.

Rule conditions such as ``amount > 3 * c_mean_30d and currency in ["EUR", "USD"]``
arrive as text from YAML files and from the rule command stream, so they are
untrusted. This module parses them with its own tokenizer and recursive-descent
parser into a tree of small frozen dataclasses, checks the tree against fixed
limits and a whitelist of field and function names, and compiles it to a flat
list of stack-machine instructions that :meth:`Expression.evaluate` runs in a
loop. Nothing from the text ever reaches Python's own evaluator or attribute
lookup: field names are only used as keys of the event mapping and function names
only as keys of :data:`FUNCTIONS`.

Grammar, loosest binding first::

    expression  := or_expr
    or_expr     := and_expr ("or" and_expr)*
    and_expr    := not_expr ("and" not_expr)*
    not_expr    := "not" not_expr | comparison
    comparison  := additive [cmp_op additive | ["not"] "in" list]
    cmp_op      := "<" | "<=" | ">" | ">=" | "==" | "!="
    additive    := term (("+" | "-") term)*
    term        := unary (("*" | "/" | "%") unary)*
    unary       := "-" unary | primary
    primary     := NUMBER | STRING | "true" | "false" | "null"
                 | NAME | NAME "(" [expression ("," expression)*] ")"
                 | "(" expression ")"
    list        := "[" [literal ("," literal)* [","]] "]"
    literal     := ["-"] NUMBER | STRING | "true" | "false" | "null"

Numbers are decimal (``12``, ``2.50``); strings use single or double quotes with
the escapes ``\\\\``, ``\\'``, ``\\"``, ``\\n`` and ``\\t``; names are ASCII letters,
digits and underscores. Comparisons do not chain: write ``1 < x and x < 3``.

Values and missing data
-----------------------
Evaluation never raises. Arithmetic works on numbers only; a division or
remainder by zero, ``log`` of a non-positive number, ``sqrt`` of a negative one,
an overflow or any type mismatch gives None. A name absent from the event gives
None. Comparisons and ``in`` involving None give None, and the logical operators
follow three-valued logic (``false and null`` is false, ``true or null`` is true,
``not null`` is null). A condition holds only when the result is exactly true
(:meth:`Expression.holds`), so missing or broken data never makes a rule fire:
both ``x > 1`` and ``not (x > 1)`` fail to hold when ``x`` is missing. Use
``coalesce(x, default)`` to give missing values a meaning.

Limitations
-----------
Types are only partly checked when compiling (a string literal added to a number
is rejected; a field holding a string is not, and evaluates to None). There are
no variables, attribute access, indexing or user-defined functions, by design.

Example
-------
>>> expr = compile_expression("amount > 3 * c_mean_30d", frozenset({"amount",
...     "c_mean_30d"}))
>>> expr.holds({"amount": 400.0, "c_mean_30d": 50.0})
True
>>> expr.evaluate({"amount": 400.0}) is None
True
"""

from __future__ import annotations

import difflib
import keyword
import math
import numbers
import operator
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from udfs.errors import RuleError

MAX_TEXT_LENGTH = 2_000
"""Longest accepted expression text, in characters."""

MAX_NODES = 200
"""Most tree nodes (values, names, operators, calls, list items) in one expression.

Evaluation runs each node's instruction at most once, so this bounds its cost.
"""

MAX_DEPTH = 32
"""Deepest nesting of parentheses, calls and unary operators."""

MAX_LIST_ITEMS = 100
"""Most items in one ``in [...]`` list."""

MAX_NUMBER_LENGTH = 32
"""Longest number literal, in characters."""

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})


# ---------------------------------------------------------------------------
# Tree


@dataclass(frozen=True, slots=True)
class Literal:
    """A number, string, boolean or null written in the expression."""

    value: object


@dataclass(frozen=True, slots=True)
class Name:
    """A field of the event, looked up by name at evaluation time."""

    name: str


@dataclass(frozen=True, slots=True)
class Unary:
    """Negation (``-``) or logical ``not`` of one operand."""

    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    """Arithmetic: ``+``, ``-``, ``*``, ``/`` or ``%``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Compare:
    """One of ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Membership:
    """``operand in [items]``, or ``not in`` when negated."""

    operand: Node
    items: tuple[object, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class Logical:
    """``and`` or ``or``, short-circuiting, with three-valued logic."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Call:
    """A call of one of the whitelisted :data:`FUNCTIONS`."""

    function: str
    args: tuple[Node, ...]


Node = Literal | Name | Unary | Binary | Compare | Membership | Logical | Call


# ---------------------------------------------------------------------------
# Run-time semantics


def _is_number(value: object) -> bool:
    if type(value) is int or type(value) is float:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _truth(value: object) -> bool | None:
    """True, False, or None for null and for anything that is not a boolean."""
    if value is True or value is False:
        return value
    return None


def _arith(op: str, left: object, right: object) -> object:
    if not (_is_number(left) and _is_number(right)):
        return None
    try:
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if right == 0:
            return None
        if op == "/":
            return left / right
        return left % right
    except (ArithmeticError, ValueError):
        return None


_ORDERINGS: dict[str, Callable[[object, object], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _compare(op: str, left: object, right: object) -> bool | None:
    if left is None or right is None:
        return None
    if _is_number(left) and _is_number(right):
        pass
    elif type(left) is str and type(right) is str:
        pass
    elif isinstance(left, bool) and isinstance(right, bool) and op in ("==", "!="):
        pass
    else:
        return None
    return bool(_ORDERINGS[op](left, right))


def _numbers_only(args: Sequence[object]) -> bool:
    return all(_is_number(arg) for arg in args)


def _abs(args: Sequence[object]) -> object:
    return abs(args[0]) if _numbers_only(args) else None


def _min(args: Sequence[object]) -> object:
    return min(args) if _numbers_only(args) else None


def _max(args: Sequence[object]) -> object:
    return max(args) if _numbers_only(args) else None


def _log(args: Sequence[object]) -> object:
    if not _numbers_only(args) or not args[0] > 0:
        return None
    try:
        return math.log(args[0])
    except (ArithmeticError, ValueError):
        return None


def _sqrt(args: Sequence[object]) -> object:
    if not _numbers_only(args) or not args[0] >= 0:
        return None
    try:
        return math.sqrt(args[0])
    except (ArithmeticError, ValueError):
        return None


def _coalesce(args: Sequence[object]) -> object:
    for arg in args:
        if arg is not None:
            return arg
    return None


@dataclass(frozen=True)
class Function:
    """A whitelisted function: its implementation and how many arguments it takes.

    ``max_args`` None means any number from ``min_args`` up (within
    :data:`MAX_NODES`). ``numeric`` says every argument must be a number.
    """

    impl: Callable[[Sequence[object]], object]
    min_args: int
    max_args: int | None
    numeric: bool
    summary: str


FUNCTIONS: Mapping[str, Function] = MappingProxyType(
    {
        "abs": Function(_abs, 1, 1, True, "abs(x): absolute value"),
        "min": Function(_min, 2, None, True, "min(a, b, ...): smallest"),
        "max": Function(_max, 2, None, True, "max(a, b, ...): largest"),
        "log": Function(_log, 1, 1, True, "log(x): natural logarithm, x > 0"),
        "sqrt": Function(_sqrt, 1, 1, True, "sqrt(x): square root, x >= 0"),
        "coalesce": Function(
            _coalesce, 2, None, False, "coalesce(a, b, ...): first non-null"
        ),
    }
)
"""The only functions an expression may call."""


# ---------------------------------------------------------------------------
# Compiled form

# Opcodes of the stack machine. Each instruction is a pair (opcode, argument).
_CONST, _LOAD, _NEG, _NOT, _ARITH, _COMPARE, _MEMBER, _CALL = range(8)
_JUMP_IF_FALSE, _JUMP_IF_TRUE, _AND, _OR = range(8, 12)


class Expression:
    """A compiled, checked condition; build it with :func:`compile_expression`.

    Attributes
    ----------
    text
        The expression as written.
    tree
        The parsed tree (:data:`Node`).
    names
        The field names the expression reads.

    Evaluation is a loop over at most :data:`MAX_NODES` instructions and never
    raises; see the module docstring for how errors and missing values behave.
    Instances are immutable and picklable.
    """

    __slots__ = ("_text", "_tree", "_names", "_code")

    def __init__(
        self,
        text: str,
        tree: Node,
        names: frozenset[str],
        code: tuple[tuple[int, object], ...],
    ) -> None:
        self._text = text
        self._tree = tree
        self._names = names
        self._code = code

    @property
    def text(self) -> str:
        return self._text

    @property
    def tree(self) -> Node:
        return self._tree

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def __repr__(self) -> str:
        return f"Expression({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expression):
            return NotImplemented
        return self._text == other._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __getstate__(self) -> tuple:
        return (self._text, self._tree, self._names, self._code)

    def __setstate__(self, state: tuple) -> None:
        self._text, self._tree, self._names, self._code = state

    def holds(self, env: Mapping[str, object]) -> bool:
        """Whether the expression evaluates to exactly true for ``env``."""
        return self.evaluate(env) is True

    def evaluate(self, env: Mapping[str, object]) -> object:
        """Evaluate against ``env`` (field name to value); never raises.

        Returns a number, string, boolean or None (missing data, type mismatch,
        division by zero, and the like).
        """
        code = self._code
        stack: list[object] = []
        push = stack.append
        pop = stack.pop
        pc = 0
        end = len(code)
        while pc < end:
            opcode, arg = code[pc]
            pc += 1
            if opcode == _CONST:
                push(arg)
            elif opcode == _LOAD:
                push(env.get(arg))
            elif opcode == _COMPARE:
                right = pop()
                push(_compare(arg, pop(), right))
            elif opcode == _ARITH:
                right = pop()
                push(_arith(arg, pop(), right))
            elif opcode == _JUMP_IF_FALSE:
                stack[-1] = _truth(stack[-1])
                if stack[-1] is False:
                    pc = arg
            elif opcode == _JUMP_IF_TRUE:
                stack[-1] = _truth(stack[-1])
                if stack[-1] is True:
                    pc = arg
            elif opcode == _AND:
                right = _truth(pop())
                left = pop()
                if right is False:
                    push(False)
                else:
                    push(None if left is None or right is None else True)
            elif opcode == _OR:
                right = _truth(pop())
                left = pop()
                if right is True:
                    push(True)
                else:
                    push(None if left is None or right is None else False)
            elif opcode == _NOT:
                value = _truth(pop())
                push(None if value is None else not value)
            elif opcode == _NEG:
                value = pop()
                push(-value if _is_number(value) else None)
            elif opcode == _MEMBER:
                push(_member(arg, pop()))
            else:  # _CALL
                name, count = arg
                args = stack[len(stack) - count :]
                del stack[len(stack) - count :]
                push(FUNCTIONS[name].impl(args))
        return stack[-1]


def _member(arg: tuple, value: object) -> bool | None:
    numbers_, strings, booleans, negated = arg
    if value is None:
        return None
    if value is True or value is False:
        found = value in booleans
    elif _is_number(value):
        found = value in numbers_
    elif type(value) is str:
        found = value in strings
    else:
        return None
    return found != negated


def _emit(node: Node, code: list[tuple[int, object]]) -> None:
    """Append the instructions of ``node``; recursion depth is the tree depth."""
    if isinstance(node, Literal):
        code.append((_CONST, node.value))
    elif isinstance(node, Name):
        code.append((_LOAD, node.name))
    elif isinstance(node, Unary):
        _emit(node.operand, code)
        code.append((_NEG if node.op == "-" else _NOT, None))
    elif isinstance(node, Binary):
        _emit(node.left, code)
        _emit(node.right, code)
        code.append((_ARITH, node.op))
    elif isinstance(node, Compare):
        _emit(node.left, code)
        _emit(node.right, code)
        code.append((_COMPARE, node.op))
    elif isinstance(node, Membership):
        _emit(node.operand, code)
        items = [item for item in node.items if item is not None]
        booleans = frozenset(item for item in items if isinstance(item, bool))
        strings = frozenset(item for item in items if isinstance(item, str))
        numbers_ = frozenset(
            item for item in items if _is_number(item) and not math.isnan(item)
        )
        code.append((_MEMBER, (numbers_, strings, booleans, node.negated)))
    elif isinstance(node, Logical):
        _emit(node.left, code)
        jump_at = len(code)
        code.append((_JUMP_IF_FALSE if node.op == "and" else _JUMP_IF_TRUE, None))
        _emit(node.right, code)
        code.append((_AND if node.op == "and" else _OR, None))
        code[jump_at] = (code[jump_at][0], len(code))
    else:
        for arg in node.args:
            _emit(arg, code)
        code.append((_CALL, (node.function, len(node.args))))


# ---------------------------------------------------------------------------
# Tokenizer

_IDENT_START = frozenset(string.ascii_letters + "_")
_IDENT_PART = _IDENT_START | frozenset(string.digits)
_DIGITS = frozenset(string.digits)
_SPACE = frozenset(" \t\r\n")
_TWO_CHAR_OPS = frozenset({"<=", ">=", "==", "!="})
_ONE_CHAR_OPS = frozenset("<>+-*/%()[],")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_CHAR_HINTS = {
    ".": "attribute access and methods are not supported; refer to fields by name",
    "=": "use == to test equality",
    "!": "use not, or != to test inequality",
    "&": "use and",
    "|": "use or",
    ":": "lambdas, slices and dictionaries are not supported",
    "{": "dictionaries and sets are not supported; use in [...] for a list",
    "*": "powers are not supported; multiply instead",
}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "name", "op" or "end"
    value: object
    pos: int
    text: str


def _error(text: str, pos: int, problem: str, remedy: str) -> RuleError:
    near = text[pos : pos + 16]
    where = f"near {near!r}" if near else "at the end of the expression"
    return RuleError(f"{problem} at offset {pos} ({where}); {remedy}")


class _Lexer:
    """Produces tokens one at a time so errors come out in reading order."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def next(self) -> _Token:
        text = self.text
        pos = self.pos
        while pos < len(text) and text[pos] in _SPACE:
            pos += 1
        if pos >= len(text):
            self.pos = pos
            return _Token("end", None, pos, "")

        char = text[pos]
        if char in _IDENT_START:
            end = pos + 1
            while end < len(text) and text[end] in _IDENT_PART:
                end += 1
            token = _Token("name", text[pos:end], pos, text[pos:end])
        elif char in _DIGITS:
            token = self._number(pos)
        elif char in "'\"":
            token = self._string(pos)
        elif text[pos : pos + 2] in _TWO_CHAR_OPS:
            token = _Token("op", text[pos : pos + 2], pos, text[pos : pos + 2])
        elif text[pos : pos + 2] == "**":
            raise _error(text, pos, "unexpected '**'", _CHAR_HINTS["*"])
        elif char in _ONE_CHAR_OPS:
            token = _Token("op", char, pos, char)
        else:
            hint = _CHAR_HINTS.get(
                char, "use only names, numbers, quoted strings and operators"
            )
            raise _error(text, pos, f"unexpected character {char!r}", hint)
        self.pos = pos + len(token.text)
        return token

    def _number(self, start: int) -> _Token:
        text = self.text
        end = start
        while end < len(text) and text[end] in _DIGITS:
            end += 1
        is_float = False
        if end < len(text) and text[end] == ".":
            end += 1
            if end >= len(text) or text[end] not in _DIGITS:
                raise _error(
                    text,
                    start,
                    "number has no digits after its decimal point",
                    "write 2.0 or 2, not 2.",
                )
            while end < len(text) and text[end] in _DIGITS:
                end += 1
            is_float = True
        literal = text[start:end]
        if len(literal) > MAX_NUMBER_LENGTH:
            raise _error(
                text,
                start,
                f"number literal has {len(literal)} characters",
                f"use at most {MAX_NUMBER_LENGTH}",
            )
        if end < len(text) and text[end] in _IDENT_PART:
            raise _error(
                text,
                start,
                "number runs into a name",
                "put an operator between them; exponents like 1e3 are not supported",
            )
        value = float(literal) if is_float else int(literal)
        return _Token("number", value, start, literal)

    def _string(self, start: int) -> _Token:
        text = self.text
        quote = text[start]
        chars: list[str] = []
        pos = start + 1
        while True:
            if pos >= len(text):
                raise _error(
                    text, start, "unterminated string", f"close it with {quote}"
                )
            char = text[pos]
            if char == quote:
                break
            if char == "\\":
                escaped = text[pos + 1 : pos + 2]
                if escaped not in _ESCAPES:
                    raise _error(
                        text,
                        pos,
                        f"unknown escape \\{escaped}",
                        "use one of \\\\ \\' \\\" \\n \\t",
                    )
                chars.append(_ESCAPES[escaped])
                pos += 2
            else:
                chars.append(char)
                pos += 1
        return _Token("string", "".join(chars), start, text[start : pos + 1])


# ---------------------------------------------------------------------------
# Parser

# Static kinds of nodes: what a node is known to evaluate to, "any" if unknown.
_BOOL, _NUMBER, _STRING, _NULL, _ANY = "boolean", "number", "string", "null", "any"
_COMPARISONS = frozenset({"<", "<=", ">", ">=", "==", "!="})


def _kind_of_value(value: object) -> str:
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, str):
        return _STRING
    return _NUMBER


class _Parser:
    def __init__(self, text: str, allowed_names: frozenset[str]) -> None:
        self.text = text
        self.allowed_names = allowed_names
        self.lexer = _Lexer(text)
        self.token = self.lexer.next()
        self.nodes = 0
        self.depth = 0
        self.names: set[str] = set()
        # Known static kind of each node built, keyed by identity.
        self.kinds: dict[int, str] = {}

    # -- helpers ----------------------------------------------------------

    def fail(self, token: _Token, problem: str, remedy: str) -> RuleError:
        return _error(self.text, token.pos, problem, remedy)

    def advance(self) -> _Token:
        token = self.token
        self.token = self.lexer.next()
        return token

    def at(self, kind: str, value: object = None) -> bool:
        token = self.token
        return token.kind == kind and (value is None or token.value == value)

    def at_keyword(self, word: str) -> bool:
        return self.token.kind == "name" and self.token.value == word

    def expect_op(self, value: str, context: str) -> _Token:
        if not self.at("op", value):
            raise self.fail(
                self.token,
                f"expected {value!r} {context} but found {_describe(self.token)}",
                f"add the missing {value!r}",
            )
        return self.advance()

    def count_node(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(
                self.token,
                f"expression has more than {MAX_NODES} nodes",
                "split the condition into several rules or simplify it",
            )

    def node(self, node: Node, kind: str) -> Node:
        self.count_node()
        self.kinds[id(node)] = kind
        return node

    def kind(self, node: Node) -> str:
        return self.kinds[id(node)]

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(
                token,
                f"expression is nested more than {MAX_DEPTH} levels deep",
                "remove redundant parentheses or simplify the condition",
            )

    def leave(self) -> None:
        self.depth -= 1

    def require_boolean(self, node: Node, token: _Token, role: str) -> None:
        kind = self.kind(node)
        if isinstance(node, Name):
            raise self.fail(
                token,
                f"field {node.name!r} is used as {role}",
                f"compare it explicitly, for example {node.name} == 1",
            )
        if kind not in (_BOOL, _ANY):
            raise self.fail(
                token,
                f"{role} must be true or false but this is a {kind}",
                "use a comparison such as amount > 100",
            )

    def require_number(self, node: Node, token: _Token, role: str) -> None:
        kind = self.kind(node)
        if kind not in (_NUMBER, _ANY):
            raise self.fail(
                token,
                f"{role} must be a number but is a {kind}",
                "use numbers or numeric fields here",
            )

    # -- grammar ----------------------------------------------------------

    def parse(self) -> Node:
        if self.at("end"):
            raise self.fail(self.token, "expression is empty", "write a condition")
        tree = self.or_expr()
        if not self.at("end"):
            raise self.fail(
                self.token,
                f"unexpected {_describe(self.token)} after a complete expression",
                "join conditions with and/or, or remove the extra text",
            )
        return tree

    def or_expr(self) -> Node:
        start = self.token
        left = self.and_expr()
        while self.at_keyword("or"):
            op_token = self.advance()
            self.require_boolean(left, start, "the left side of 'or'")
            right_start = self.token
            right = self.and_expr()
            self.require_boolean(right, right_start, "the right side of 'or'")
            left = self.node(Logical("or", left, right), _BOOL)
            start = op_token
        return left

    def and_expr(self) -> Node:
        start = self.token
        left = self.not_expr()
        while self.at_keyword("and"):
            op_token = self.advance()
            self.require_boolean(left, start, "the left side of 'and'")
            right_start = self.token
            right = self.not_expr()
            self.require_boolean(right, right_start, "the right side of 'and'")
            left = self.node(Logical("and", left, right), _BOOL)
            start = op_token
        return left

    def not_expr(self) -> Node:
        if not self.at_keyword("not"):
            return self.comparison()
        token = self.advance()
        self.enter(token)
        operand_start = self.token
        operand = self.not_expr()
        self.leave()
        self.require_boolean(operand, operand_start, "the operand of 'not'")
        return self.node(Unary("not", operand), _BOOL)

    def comparison(self) -> Node:
        start = self.token
        left = self.additive()
        if self.at_keyword("in") or self.at_keyword("not"):
            return self.membership(left, start)
        if not (self.token.kind == "op" and self.token.value in _COMPARISONS):
            return left
        op_token = self.advance()
        right = self.additive()
        self.check_comparison(op_token, left, right)
        node = self.node(Compare(op_token.value, left, right), _BOOL)
        if self.token.kind == "op" and self.token.value in _COMPARISONS:
            raise self.fail(
                self.token,
                "comparisons cannot be chained",
                "write 1 < x and x < 3 instead of 1 < x < 3",
            )
        return node

    def check_comparison(self, op_token: _Token, left: Node, right: Node) -> None:
        op = op_token.value
        kinds = (self.kind(left), self.kind(right))
        if _NULL in kinds:
            raise self.fail(
                op_token,
                f"comparing with null using {op!r} is never true",
                "use coalesce(field, default) to handle missing values",
            )
        if op not in ("==", "!=") and _BOOL in kinds:
            raise self.fail(
                op_token,
                f"{op!r} cannot order true/false values",
                "compare numbers or strings, or use == and !=",
            )
        if _ANY not in kinds and kinds[0] != kinds[1]:
            raise self.fail(
                op_token,
                f"{op!r} compares a {kinds[0]} with a {kinds[1]} and is never true",
                "compare values of the same type",
            )

    def membership(self, operand: Node, start: _Token) -> Node:
        negated = False
        if self.at_keyword("not"):
            self.advance()
            negated = True
            if not self.at_keyword("in"):
                raise self.fail(
                    self.token,
                    f"expected 'in' after 'not' but found {_describe(self.token)}",
                    "write x not in [...]",
                )
        self.advance()
        if self.kind(operand) == _NULL:
            raise self.fail(
                start,
                "null is never in a list",
                "use coalesce(field, default) to handle missing values",
            )
        self.expect_op("[", "after 'in'")
        items: list[object] = []
        while not self.at("op", "]"):
            if len(items) >= MAX_LIST_ITEMS:
                raise self.fail(
                    self.token,
                    f"list has more than {MAX_LIST_ITEMS} items",
                    "shorten the list or use a feature that encodes the set",
                )
            items.append(self.list_item())
            self.count_node()
            if not self.at("op", ","):
                break
            self.advance()
        self.expect_op("]", "to close the list")
        return self.node(Membership(operand, tuple(items), negated), _BOOL)

    def list_item(self) -> object:
        token = self.token
        if self.at("op", "-"):
            self.advance()
            if not self.at("number"):
                raise self.fail(
                    token,
                    "list items must be literal values",
                    "use numbers, quoted strings, true, false or null",
                )
            return -self.advance().value
        if token.kind in ("number", "string"):
            return self.advance().value
        if token.kind == "name" and token.value in ("true", "false", "null"):
            self.advance()
            return {"true": True, "false": False, "null": None}[token.value]
        raise self.fail(
            token,
            f"list items must be literal values, found {_describe(token)}",
            "use numbers, quoted strings, true, false or null",
        )

    def additive(self) -> Node:
        start = self.token
        left = self.term()
        while self.token.kind == "op" and self.token.value in ("+", "-"):
            op_token = self.advance()
            self.require_number(left, start, f"the left side of {op_token.value!r}")
            right_start = self.token
            right = self.term()
            self.require_number(
                right, right_start, f"the right side of {op_token.value!r}"
            )
            left = self.node(Binary(op_token.value, left, right), _NUMBER)
            start = op_token
        return left

    def term(self) -> Node:
        start = self.token
        left = self.unary()
        while self.token.kind == "op" and self.token.value in ("*", "/", "%"):
            op_token = self.advance()
            self.require_number(left, start, f"the left side of {op_token.value!r}")
            right_start = self.token
            right = self.unary()
            self.require_number(
                right, right_start, f"the right side of {op_token.value!r}"
            )
            left = self.node(Binary(op_token.value, left, right), _NUMBER)
            start = op_token
        return left

    def unary(self) -> Node:
        if not self.at("op", "-"):
            return self.primary()
        token = self.advance()
        self.enter(token)
        operand_start = self.token
        operand = self.unary()
        self.leave()
        self.require_number(operand, operand_start, "the operand of '-'")
        return self.node(Unary("-", operand), _NUMBER)

    def primary(self) -> Node:
        token = self.token
        if token.kind in ("number", "string"):
            self.advance()
            return self.node(Literal(token.value), _kind_of_value(token.value))
        if token.kind == "op" and token.value == "(":
            self.advance()
            self.enter(token)
            inner = self.or_expr()
            self.leave()
            self.expect_op(")", f"to close the '(' at offset {token.pos}")
            return inner
        if token.kind != "name":
            raise self.fail(
                token,
                f"expected a value but found {_describe(token)}",
                "write a number, a quoted string, a field name or a function call",
            )

        self.advance()
        word = token.value
        if word in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[word]
            return self.node(Literal(value), _kind_of_value(value))
        if word in KEYWORDS:
            raise self.fail(
                token,
                f"expected a value but found the keyword {word!r}",
                "check the order of operands and operators",
            )
        if self.at("op", "("):
            return self.call(token)
        return self.name(token)

    def name(self, token: _Token) -> Node:
        word = token.value
        if word not in self.allowed_names:
            raise self.fail(token, f"unknown field {word!r}", _name_hint(word, self))
        self.names.add(word)
        return self.node(Name(word), _ANY)

    def call(self, name_token: _Token) -> Node:
        word = name_token.value
        function = FUNCTIONS.get(word)
        if function is None:
            available = ", ".join(sorted(FUNCTIONS))
            raise self.fail(
                name_token,
                f"unknown function {word!r}",
                f"use one of: {available}",
            )
        open_token = self.advance()
        self.enter(open_token)
        args: list[Node] = []
        while not self.at("op", ")"):
            arg_start = self.token
            arg = self.or_expr()
            if function.numeric:
                self.require_number(arg, arg_start, f"an argument of {word}()")
            args.append(arg)
            if not self.at("op", ","):
                break
            self.advance()
        self.expect_op(")", f"to close the call of {word}()")
        self.leave()

        too_few = len(args) < function.min_args
        too_many = function.max_args is not None and len(args) > function.max_args
        if too_few or too_many:
            if function.max_args == function.min_args:
                wanted = f"exactly {function.min_args}"
            elif function.max_args is None:
                wanted = f"at least {function.min_args}"
            else:
                wanted = f"{function.min_args} to {function.max_args}"
            raise self.fail(
                name_token,
                f"{word}() takes {wanted} argument(s) but got {len(args)}",
                f"call it as {function.summary}",
            )
        kind = _ANY if word == "coalesce" else _NUMBER
        return self.node(Call(word, tuple(args)), kind)


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the expression"
    return repr(token.text)


def _name_hint(word: str, parser: _Parser) -> str:
    if word in ("True", "False", "None"):
        return "write true, false and null in lower case"
    if keyword.iskeyword(word) or word in ("exec", "eval", "import", "lambda"):
        return f"{word!r} is not part of the rule language; use fields and operators"
    close = difflib.get_close_matches(word, parser.allowed_names, n=1)
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    allowed = sorted(parser.allowed_names)
    shown = ", ".join(allowed[:40]) + (", ..." if len(allowed) > 40 else "")
    return (
        f"{suggestion}use one of the fields this job provides ({shown}), or add "
        "the feature to the job's feature set first"
    )


def compile_expression(
    text: str,
    allowed_names: frozenset[str],
    *,
    boolean: bool = False,
) -> Expression:
    """Parse and check ``text``; return an :class:`Expression` ready to evaluate.

    Parameters
    ----------
    text
        The expression, at most :data:`MAX_TEXT_LENGTH` characters.
    allowed_names
        The field names the expression may read. Any other name is rejected.
    boolean
        Require the whole expression to be a condition (a comparison, ``in``,
        ``and``/``or``/``not``, ``true``/``false`` or ``coalesce``), as rule
        conditions must be.

    Raises
    ------
    RuleError
        With ``rule_id`` None and a ``reason`` naming the problem, its offset in
        the text and what to do: bad syntax, unknown field or function, wrong
        argument count, more than :data:`MAX_NODES` nodes, nesting deeper than
        :data:`MAX_DEPTH`, a list longer than :data:`MAX_LIST_ITEMS`, or operand
        types that can never work (``"EUR" * 2``, ``x == null``).
    """
    if not isinstance(text, str):
        raise RuleError(
            f"expression must be a string, got {type(text).__name__}; "
            "quote the condition in YAML if it starts with a special character"
        )
    if len(text) > MAX_TEXT_LENGTH:
        raise RuleError(
            f"expression has {len(text)} characters, more than the limit of "
            f"{MAX_TEXT_LENGTH}; split it into several rules or simplify it"
        )

    parser = _Parser(text, frozenset(allowed_names))
    tree = parser.parse()
    if boolean:
        parser.require_boolean(tree, _Token("end", None, 0, ""), "a condition")

    code: list[tuple[int, object]] = []
    _emit(tree, code)
    return Expression(text, tree, frozenset(parser.names), tuple(code))
