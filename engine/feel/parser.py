"""Tokens → syntax tree, by recursive descent. Precedence, loosest first:

``if`` · ``or`` · ``and`` · comparison / ``between`` / ``in`` · ``+ -`` · ``* /`` · ``**`` · unary ``-`` ·
postfix (``.name``, ``[filter]``, ``(call)``).
"""

from __future__ import annotations

from decimal import Decimal

from engine.errors import FeelError
from engine.feel import syntax as s
from engine.feel.lexer import END, KEYWORDS, NAME, NUMBER, OP, STRING, TEMPORAL, Token, tokenize
from engine.feel.values import parse_temporal

_COMPARE_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})


class Parser:
    def __init__(self, text: str, names: frozenset[str]) -> None:
        self.text = text
        self.tokens = tokenize(text, names)
        self.i = 0

    # --- cursor ---------------------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def at(self, text: str, kind: str = OP) -> bool:
        t = self.tokens[self.i]
        return t.kind == kind and t.text == text

    def at_word(self, word: str) -> bool:
        return self.at(word, NAME)

    def advance(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def expect(self, text: str, kind: str = OP) -> Token:
        if not self.at(text, kind):
            raise self.error(f"expected '{text}'")
        return self.advance()

    def error(self, what: str, tok: Token | None = None) -> FeelError:
        t = tok or self.tok
        found = "end of input" if t.kind == END else repr(t.text if t.kind != STRING else f'"{t.text}"')
        return FeelError(f"{what}, found {found} at position {t.pos}", source=self.text, position=t.pos)

    def finish(self) -> None:
        if self.tok.kind != END:
            raise self.error("unexpected text after the end of the expression")

    # --- expressions ----------------------------------------------------------------------------------
    def expression(self) -> s.Expr:
        return self.disjunction()

    def disjunction(self) -> s.Expr:
        left = self.conjunction()
        while self.at_word("or"):
            self.advance()
            left = s.Logical("or", left, self.conjunction())
        return left

    def conjunction(self) -> s.Expr:
        left = self.comparison()
        while self.at_word("and"):
            self.advance()
            left = s.Logical("and", left, self.comparison())
        return left

    def comparison(self) -> s.Expr:
        left = self.additive()
        t = self.tok
        if t.kind == OP and t.text in _COMPARE_OPS:
            self.advance()
            return s.Comparison(t.text, left, self.additive())
        if self.at_word("between"):
            self.advance()
            low = self.additive()
            self.expect("and", NAME)
            return s.Between(left, low, self.additive())
        if self.at_word("in"):
            self.advance()
            return s.In(left, self.in_operand())
        return left

    def additive(self) -> s.Expr:
        left = self.multiplicative()
        while self.tok.kind == OP and self.tok.text in ("+", "-"):
            op = self.advance().text
            left = s.Arithmetic(op, left, self.multiplicative())
        return left

    def multiplicative(self) -> s.Expr:
        left = self.exponent()
        while self.tok.kind == OP and self.tok.text in ("*", "/"):
            op = self.advance().text
            left = s.Arithmetic(op, left, self.exponent())
        return left

    def exponent(self) -> s.Expr:
        left = self.unary()
        while self.at("**"):
            self.advance()
            left = s.Arithmetic("**", left, self.unary())
        return left

    def unary(self) -> s.Expr:
        if self.at("-"):
            self.advance()
            operand = self.unary()
            if isinstance(operand, s.Literal) and isinstance(operand.value, Decimal):
                return s.Literal(-operand.value)
            return s.Negate(operand)
        return self.postfix()

    def postfix(self) -> s.Expr:
        node = self.primary()
        while True:
            if self.at("."):
                self.advance()
                if self.tok.kind != NAME:
                    raise self.error("expected a name after '.'")
                first = last = self.advance()
                # `Applicant.member since`: a member name may have spaces; words run on until a keyword,
                # and two plain words in a row could mean nothing else.
                while self.tok.kind == NAME and self.tok.text not in KEYWORDS:
                    last = self.advance()
                node = s.Path(node, self.text[first.pos : last.pos + len(last.text)])
            elif self.at("[") and not self._closes_range():
                self.advance()
                cond = self.expression()
                self.expect("]")
                node = s.Filter(node, cond)
            elif self.at("(") and isinstance(node, s.Name):
                node = s.Call(node.name, self.arguments())
            else:
                return node

    def _closes_range(self) -> bool:
        """In ``]1..10[`` the final ``[`` closes the range rather than opening a filter."""
        after = self.tokens[self.i + 1]
        return after.kind == END or (after.kind == OP and after.text in (",", ")"))

    def arguments(self) -> tuple[s.Expr, ...]:
        self.expect("(")
        args: list[s.Expr] = []
        if not self.at(")"):
            while True:
                if self.tok.kind == NAME and self.tokens[self.i + 1].text == ":":
                    raise self.error("named arguments are not supported")
                args.append(self.expression())
                if not self.at(","):
                    break
                self.advance()
        self.expect(")")
        return tuple(args)

    def primary(self) -> s.Expr:
        t = self.tok
        if t.kind == NUMBER:
            self.advance()
            return s.Literal(Decimal(t.text))
        if t.kind == STRING:
            self.advance()
            return s.Literal(t.text)
        if t.kind == TEMPORAL:
            self.advance()
            value = parse_temporal(t.text)
            if value is None:
                raise FeelError(
                    f'invalid temporal literal @"{t.text}" at position {t.pos}', source=self.text, position=t.pos
                )
            return s.Literal(value)
        if t.kind == NAME:
            return self.word()
        if self.at("("):
            self.advance()
            inner = self.expression()
            self.expect(")")
            return inner
        if self.at("["):
            return s.ListLiteral(self.sequence("[", "]"))
        if self.at("{"):
            return self.context()
        raise self.error("expected a value")

    def word(self) -> s.Expr:
        t = self.advance()
        if t.text == "true" or t.text == "false":
            return s.Literal(t.text == "true")
        if t.text == "null":
            return s.Literal(None)
        if t.text == "if":
            cond = self.expression()
            self.expect("then", NAME)
            then = self.expression()
            self.expect("else", NAME)
            return s.If(cond, then, self.expression())
        if t.text in KEYWORDS:
            raise self.error(
                f"'{t.text}' is not supported here"
                if t.text in ("for", "some", "every", "function")
                else "expected a value",
                t,
            )
        return s.Name(t.text)

    def sequence(self, open_: str, close: str) -> tuple[s.Expr, ...]:
        self.expect(open_)
        items: list[s.Expr] = []
        while not self.at(close):
            items.append(self.expression())
            if not self.at(","):
                break
            self.advance()
        self.expect(close)
        return tuple(items)

    def context(self) -> s.ContextLiteral:
        self.expect("{")
        entries: list[tuple[str, s.Expr]] = []
        while not self.at("}"):
            if self.tok.kind == STRING:
                key = self.advance().text
            elif self.tok.kind == NAME:
                words = [self.advance().text]
                while self.tok.kind == NAME:
                    words.append(self.advance().text)
                key = " ".join(words)
            else:
                raise self.error("expected a context key")
            self.expect(":")
            entries.append((key, self.expression()))
            if not self.at(","):
                break
            self.advance()
        self.expect("}")
        return s.ContextLiteral(tuple(entries))

    # --- unary tests ----------------------------------------------------------------------------------
    def unary_tests(self) -> tuple[s.Test, ...]:
        if self.at("-") and self.tokens[self.i + 1].kind == END:
            self.advance()
            return (s.AnyTest(),)
        if self.at_word("not") and self.tokens[self.i + 1].text == "(":
            start = self.i
            self.advance()
            self.advance()
            inner = self.positive_tests()
            if self.at(")") and self.tokens[self.i + 1].kind == END:
                self.advance()
                return (s.NotTest(inner),)
            self.i = start  # e.g. `not(x) = y`: an ordinary expression that happens to start with not(
        return self.positive_tests()

    def positive_tests(self) -> tuple[s.Test, ...]:
        tests = [self.positive_test()]
        while self.at(","):
            self.advance()
            tests.append(self.positive_test())
        return tuple(tests)

    def positive_test(self) -> s.Test:
        t = self.tok
        if t.kind == OP and t.text in _COMPARE_OPS:
            self.advance()
            return s.CompareTest(t.text, self.additive())
        if t.kind == OP and t.text in ("[", "(", "]"):
            rng = self.try_range()
            if rng is not None:
                return rng
        return s.ExprTest(self.expression())

    def try_range(self) -> s.RangeTest | None:
        start = self.i
        opener = self.advance().text
        try:
            low = self.additive()
        except FeelError:
            if opener == "]":
                raise
            self.i = start
            return None
        if not self.at(".."):
            if opener == "]":
                raise self.error("expected '..' in a range")
            self.i = start
            return None
        self.advance()
        high = self.additive()
        closer = self.tok
        if not (closer.kind == OP and closer.text in ("]", ")", "[")):
            raise self.error("expected ']', ')' or '[' to close the range")
        self.advance()
        return s.RangeTest(low, high, opener == "[", closer.text == "]")

    def in_operand(self) -> tuple[s.Test, ...]:
        if self.at("("):
            rng = self.try_range()
            if rng is not None:
                return (rng,)
            self.advance()
            tests = self.positive_tests()
            self.expect(")")
            return tests
        return (self.positive_test(),)


def parse_expression(text: str, names: frozenset[str]) -> s.Expr:
    p = Parser(text, names)
    if p.tok.kind == END:
        raise FeelError("empty expression", source=text, position=0)
    tree = p.expression()
    p.finish()
    return tree


def parse_unary_tests(text: str, names: frozenset[str]) -> tuple[s.Test, ...]:
    p = Parser(text, names)
    if p.tok.kind == END:
        raise FeelError("empty unary test (use '-' to match anything)", source=text, position=0)
    tests = p.unary_tests()
    p.finish()
    return tests
