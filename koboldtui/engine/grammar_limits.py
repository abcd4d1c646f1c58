"""The checks every GBNF grammar passes before llama.cpp's C++ parser builds it.

A grammar is code a client sends to a C++ parser in the serving process, and that parser
trusts it: it recurses once per nested group (20,000 nested parentheses overflow the
stack: SIGSEGV), copies a repeated item ``{m}`` times (a long literal ``{2000}`` is
gigabytes), walks rule references recursively (left-recursion check) without memo, reads
the text as a C string (a NUL cuts it), and aborts the whole process when a grammar wants a
character no token can give (NUL). ``check_grammar`` is a Python port of that parser
(llama-grammar.cpp as bundled with llama-cpp-python 0.3.x: same syntax, same symbol
numbering, same repetition rewrite and its MAX_REPETITION_THRESHOLD) that refuses what the
C++ code would refuse, and also what it would crash or hang on, before it runs. It is the
one choke point: ``SamplerChain`` builds no grammar sampler without it, so every route that
carries a grammar (KoboldAI ``grammar``, OpenAI ``response_format``, any added later) is
covered. Errors name the limit and what the grammar holds, never echo the whole grammar.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from koboldtui.engine.types import EngineError

MAX_REPETITION_THRESHOLD = 2000  # llama.cpp's own cap on {m,n} and on rules × repetitions


class GrammarError(EngineError):
    """The GBNF grammar is refused (400: the client sent it); the message says why."""


@dataclass(frozen=True)
class GrammarLimits:
    """What a grammar may hold. Measured in bench/fuzz_grammar.py and README (Reliability):
    llama.cpp's parser overflows an 8 MiB thread stack at ~20,000 nested groups (~2 MiB
    stacks, as with ``ulimit -s unlimited``, at ~5,000), so 256 leaves a wide margin."""

    max_chars: int = 262_144  # the grammar text (a schema's grammar included)
    max_depth: int = 256  # nested ( ) groups
    max_rules: int = 50_000  # rules, the ones llama.cpp generates for groups and repeats included
    max_elements: int = 500_000  # llama.cpp grammar elements (8 bytes each) after repeats are expanded
    max_left_chain: int = 2_000  # rules reached through leftmost references one after another
    max_left_work: int = 2_000_000  # elements llama.cpp's left-recursion check would scan
    # stacks a rule opens when entered: loading 2^14 of them took 0.17 s, 2^16 10 s, and every
    # step that filters the vocabulary checks each token against each stack (512: ~1 s)
    max_fanout: int = 512


DEFAULT_LIMITS = GrammarLimits()

# element types, as llama.cpp numbers them
END, ALT, RULE_REF, CHAR, CHAR_NOT, CHAR_RNG_UPPER, CHAR_ALT, CHAR_ANY, TOKEN, TOKEN_NOT = range(10)
_TYPE_SHIFT = 32


def _el(kind: int, value: int) -> int:
    return (kind << _TYPE_SHIFT) | (value & 0xFFFFFFFF)


def _is_word_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or c == "-" or ("0" <= c <= "9")


def _count(digits: str) -> int:
    """A decimal count; a huge one (thousands of digits) is just "too big", never parsed."""
    return int(digits) if len(digits) <= 12 else 10**12


def _where(text: str, pos: int) -> str:
    """'line L column C, near "…"' for an error message (a short excerpt, never the grammar)."""
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    excerpt = text[pos:pos + 24].split("\n", 1)[0]
    return f"line {line} column {column}" + (f", near {excerpt!r}" if excerpt else " (the end)")


class _Parser:
    """llama_grammar_parser::parse, step for step, with the limits checked as it goes."""

    def __init__(self, text: str, limits: GrammarLimits) -> None:
        self.text = text + "\0"  # the C string's terminator: the C++ code reads up to it
        self.src = text
        self.limits = limits
        self.symbol_ids: dict[str, int] = {}
        self.rules: dict[int, array[int]] = {}
        self.elements = 0
        self.depth = 0

    def fail(self, message: str, pos: int | None = None) -> GrammarError:
        return GrammarError(f"the grammar {message}" + (f" at {_where(self.src, pos)}" if pos is not None else ""))

    # ---------------------------------------------------------------- lexing
    def space(self, pos: int, newline_ok: bool) -> int:
        t = self.text
        while t[pos] in " \t#" or (newline_ok and t[pos] in "\r\n"):
            if t[pos] == "#":
                while t[pos] not in "\0\r\n":
                    pos += 1
            else:
                pos += 1
        return pos

    def name(self, pos: int) -> int:
        end = pos
        while _is_word_char(self.text[end]):
            end += 1
        if end == pos:
            raise self.fail("expects a rule name", pos)
        return end

    def int_end(self, pos: int) -> int:
        end = pos
        while "0" <= self.text[end] <= "9":
            end += 1
        if end == pos:
            raise self.fail("expects an integer", pos)
        return end

    def hex(self, pos: int, size: int) -> tuple[int, int]:
        digits = self.text[pos:pos + size]
        if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise self.fail(f"expects {size} hex digits", pos)
        return int(digits, 16), pos + size

    def char(self, pos: int) -> tuple[int, int]:
        t = self.text
        if t[pos] == "\\":
            esc = t[pos + 1]
            if esc == "x":
                return self.hex(pos + 2, 2)
            if esc == "u":
                return self.hex(pos + 2, 4)
            if esc == "U":
                return self.hex(pos + 2, 8)
            simple = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
            if esc in simple:
                return simple[esc], pos + 2
            raise self.fail(f"has an unknown escape '\\{esc if esc != chr(0) else ''}'", pos)
        if t[pos] != "\0":
            return ord(t[pos]), pos + 1
        raise self.fail("ends inside a string or character class (a closing \" or ] is missing)")

    def token(self, pos: int) -> int:
        t = self.text
        if t[pos + 1] == "[":
            end = self.int_end(pos + 2)
            if _count(t[pos + 2:end]) > 0xFFFFFFFF:
                raise self.fail("names a token id that is too big", pos)
            if t[end] != "]" or t[end + 1] != ">":
                raise self.fail("expects ']>' after a token id", end)
            return end + 2
        end = t.find(">", pos)
        if end < 0 or end >= len(self.src):
            raise self.fail("expects '>' to close a token", pos)
        return end + 1  # whether it is one token of the vocabulary, llama.cpp checks

    # ---------------------------------------------------------------- symbols and rules
    def symbol(self, name: str) -> int:
        return self.symbol_ids.setdefault(name, len(self.symbol_ids))

    def generate_symbol(self, base: str) -> int:
        next_id = len(self.symbol_ids)
        self.symbol_ids[f"{base}_{next_id}"] = next_id
        if next_id >= self.limits.max_rules:
            raise self.fail(f"makes more than {self.limits.max_rules} rules (groups and repetitions each "
                            "make some): simplify it")
        return next_id

    def grow(self, n: int, pos: int) -> None:
        self.elements += n
        if self.elements > self.limits.max_elements:
            raise self.fail(f"expands to more than {self.limits.max_elements} elements once its repetitions are "
                            "written out: repeat shorter items or fewer times", pos)

    def add_rule(self, rule_id: int, rule: array[int]) -> None:
        self.rules[rule_id] = rule

    # ---------------------------------------------------------------- grammar
    def parse(self) -> None:
        pos = self.space(0, True)
        while self.text[pos] != "\0":
            pos = self.parse_rule(pos)
        if len(self.symbol_ids) > self.limits.max_rules:
            raise self.fail(f"has {len(self.symbol_ids)} rules; at most {self.limits.max_rules} are allowed")
        names = {v: k for k, v in self.symbol_ids.items()}
        for rule_id in sorted(self.symbol_ids.values()):
            if rule_id not in self.rules:
                raise self.fail(f"uses rule '{names[rule_id]}' but never defines it")
        if "root" not in self.symbol_ids:
            raise self.fail("has no 'root' rule: the output must match 'root ::= ...'")

    def parse_rule(self, pos: int) -> int:
        name_end = self.name(pos)
        name = self.text[pos:name_end]
        after = self.space(name_end, False)
        rule_id = self.symbol(name)
        if self.text[after:after + 3] != "::=":
            raise self.fail("expects '::=' after a rule name", after)
        pos = self.parse_alternates(self.space(after + 3, True), name, rule_id, False)
        t = self.text
        if t[pos] == "\r":
            pos += 2 if t[pos + 1] == "\n" else 1
        elif t[pos] == "\n":
            pos += 1
        elif t[pos] != "\0":
            raise self.fail("expects a new line or the end", pos)
        return self.space(pos, True)

    def parse_alternates(self, pos: int, rule_name: str, rule_id: int, nested: bool) -> int:
        rule: array[int] = array("Q")
        pos = self.parse_sequence(pos, rule_name, rule, nested)
        while self.text[pos] == "|":
            rule.append(_el(ALT, 0))
            pos = self.parse_sequence(self.space(pos + 1, True), rule_name, rule, nested)
        rule.append(_el(END, 0))
        self.grow(len(rule), pos)
        self.add_rule(rule_id, rule)
        return pos

    def parse_sequence(self, pos: int, rule_name: str, rule: array[int], nested: bool) -> int:
        t = self.text
        last_sym_start = len(rule)
        n_prev_rules = 1

        def repeat(min_times: int, max_times: int | None, at: int) -> None:
            nonlocal n_prev_rules
            if last_sym_start == len(rule):
                raise self.fail("has */+/?/{ with nothing before it", at)
            prev = rule[last_sym_start:]
            total_rules = max_times if max_times else (min_times if min_times > 0 else 1)
            if n_prev_rules * total_rules > MAX_REPETITION_THRESHOLD:
                raise self.fail(f"repeats {n_prev_rules} rules {total_rules} times; llama.cpp allows at most "
                                f"{MAX_REPETITION_THRESHOLD} (rules × repetitions): repeat less", at)
            n_opt = 1 if max_times is None else max_times - min_times
            self.grow(len(prev) * max(min_times - 1, 0) + n_opt * (len(prev) + 3), at)
            if min_times == 0:
                del rule[last_sym_start:]
            else:
                for _ in range(1, min_times):
                    rule.extend(prev)
            last_rec = 0
            for i in range(n_opt):
                rec_id = self.generate_symbol(rule_name)
                rec = array("Q", prev)
                if i > 0 or max_times is None:
                    rec.append(_el(RULE_REF, rec_id if max_times is None else last_rec))
                rec.extend((_el(ALT, 0), _el(END, 0)))
                self.add_rule(rec_id, rec)
                last_rec = rec_id
            if n_opt > 0:
                rule.append(_el(RULE_REF, last_rec))
            n_prev_rules *= total_rules

        while t[pos] != "\0":
            c = t[pos]
            if c == '"':
                pos += 1
                last_sym_start, n_prev_rules = len(rule), 1
                while t[pos] != '"':
                    value, pos = self.char(pos)
                    if value == 0:
                        raise self.fail("asks for the character NUL (\\x00), which no token can give", pos - 1)
                    rule.append(_el(CHAR, value))
                pos = self.space(pos + 1, nested)
            elif c == "[":
                start = pos
                pos += 1
                start_type = CHAR
                if t[pos] == "^":
                    pos += 1
                    start_type = CHAR_NOT
                last_sym_start, n_prev_rules = len(rule), 1
                chars: list[tuple[int, int]] = []
                while t[pos] != "]":
                    lo, pos = self.char(pos)
                    hi = lo
                    rule.append(_el(CHAR_ALT if last_sym_start < len(rule) else start_type, lo))
                    if t[pos] == "-" and t[pos + 1] != "]":
                        if t[pos + 1] == "\0":
                            raise self.fail("ends inside a character class", pos)
                        hi, pos = self.char(pos + 1)
                        rule.append(_el(CHAR_RNG_UPPER, hi))
                    chars.append((lo, hi))
                if start_type == CHAR and chars and all(hi == 0 for _lo, hi in chars):
                    raise self.fail("has a character class that matches only NUL (\\x00), which no token can give",
                                    start)
                pos = self.space(pos + 1, nested)
            elif c in "<!":
                if c == "!":
                    pos += 1
                if t[pos] != "<":
                    raise self.fail("expects '<' after '!'", pos)
                end = self.token(pos)
                last_sym_start, n_prev_rules = len(rule), 1
                rule.append(_el(TOKEN if c == "<" else TOKEN_NOT, 0))
                pos = self.space(end, nested)
            elif _is_word_char(c):
                end = self.name(pos)
                ref = self.symbol(t[pos:end])
                pos = self.space(end, nested)
                last_sym_start, n_prev_rules = len(rule), 1
                rule.append(_el(RULE_REF, ref))
            elif c == "(":
                self.depth += 1
                if self.depth > self.limits.max_depth:
                    raise self.fail(f"nests groups more than {self.limits.max_depth} deep", pos)
                open_at = pos
                pos = self.space(pos + 1, True)
                n_rules_before = len(self.symbol_ids)
                sub_id = self.generate_symbol(rule_name)
                pos = self.parse_alternates(pos, rule_name, sub_id, True)
                n_prev_rules = max(1, len(self.symbol_ids) - n_rules_before)
                last_sym_start = len(rule)
                rule.append(_el(RULE_REF, sub_id))
                if t[pos] != ")":
                    raise self.fail("expects ')' to close the group opened", open_at)
                self.depth -= 1
                pos = self.space(pos + 1, nested)
            elif c == ".":
                last_sym_start, n_prev_rules = len(rule), 1
                rule.append(_el(CHAR_ANY, 0))
                pos = self.space(pos + 1, nested)
            elif c in "*+?":
                at = pos
                pos = self.space(pos + 1, nested)
                repeat(*{"*": (0, None), "+": (1, None), "?": (0, 1)}[c], at)
            elif c == "{":
                at = pos
                pos = self.space(pos + 1, nested)
                if not "0" <= t[pos] <= "9":
                    raise self.fail("expects a number after '{'", pos)
                end = self.int_end(pos)
                min_times = _count(t[pos:end])
                pos = self.space(end, nested)
                max_times: int | None
                if t[pos] == "}":
                    max_times = min_times
                    pos = self.space(pos + 1, nested)
                elif t[pos] == ",":
                    pos = self.space(pos + 1, nested)
                    max_times = None
                    if "0" <= t[pos] <= "9":
                        end = self.int_end(pos)
                        max_times = _count(t[pos:end])
                        pos = self.space(end, nested)
                    if t[pos] != "}":
                        raise self.fail("expects '}' to close a repetition", pos)
                    pos = self.space(pos + 1, nested)
                else:
                    raise self.fail("expects ',' or '}' in a repetition", pos)
                if min_times > MAX_REPETITION_THRESHOLD or (max_times or 0) > MAX_REPETITION_THRESHOLD:
                    raise self.fail(f"repeats an item {max(min_times, max_times or 0)} times; at most "
                                    f"{MAX_REPETITION_THRESHOLD} are allowed (use * or + for 'any number')", at)
                if max_times is not None and max_times < min_times:
                    raise self.fail(f"has a repetition {{{min_times},{max_times}}} whose maximum is below its minimum",
                                    at)
                repeat(min_times, max_times, at)
            else:
                break
        return pos


def _left_recursion(parser: _Parser) -> None:
    """llama_grammar_detect_left_recursion's verdict, and its cost, without its recursion.

    The C++ check recurses into each rule's leftmost references (the next one too while the
    one before may be empty), scanning the whole rule at each call, with no memo: its depth
    is the longest such chain and its work multiplies along it (17 rules of two leftmost
    alternatives each: 10 s; 20: over a minute). Both are bounded here (the work counted as
    llama.cpp would do it); a cycle is left recursion, which llama.cpp refuses."""
    limits = parser.limits
    names = {v: k for k, v in parser.symbol_ids.items()}
    may_be_empty: dict[int, bool] = {}
    for rule_id, rule in parser.rules.items():
        at_start, empty = True, False
        for element in rule:
            if element >> _TYPE_SHIFT in (END, ALT):
                if at_start:
                    empty = True
                    break
                at_start = True
            else:
                at_start = False
        may_be_empty[rule_id] = empty
    children: dict[int, list[int]] = {}
    for rule_id, rule in parser.rules.items():
        refs: list[int] = []
        recurse = True
        for element in rule:
            kind = element >> _TYPE_SHIFT
            if kind == RULE_REF and recurse:
                refs.append(element & 0xFFFFFFFF)
                recurse = may_be_empty[element & 0xFFFFFFFF]
            else:
                recurse = kind in (END, ALT)
        children[rule_id] = refs
    cap = limits.max_left_work + 1
    work: dict[int, int] = {}
    ways: dict[int, int] = {}
    in_progress: set[int] = set()
    reached: set[int] = set()
    total = 0
    for root in sorted(parser.rules):
        if root in reached:
            continue
        if root not in work:
            stack = [(root, iter(children[root]))]
            in_progress.add(root)
            while stack:
                rule_id, kids = stack[-1]
                kid = next(kids, None)
                if kid is None:
                    stack.pop()
                    in_progress.discard(rule_id)
                    work[rule_id] = min(cap, len(parser.rules[rule_id]) + sum(work[k] for k in children[rule_id]))
                    ways[rule_id] = _ways_to_begin(parser.rules[rule_id], ways, may_be_empty, limits.max_fanout + 1)
                    if ways[rule_id] > limits.max_fanout:
                        raise parser.fail(f"has a rule ('{names[rule_id]}') that can begin in more than "
                                          f"{limits.max_fanout} ways (its alternatives and theirs): llama.cpp "
                                          "tracks each one at every step; merge alternatives")
                elif kid in in_progress:
                    raise parser.fail(f"is left-recursive (rule '{names[kid]}' can begin with itself), which "
                                      "llama.cpp refuses: put something before the recursion")
                elif kid not in work:
                    in_progress.add(kid)
                    stack.append((kid, iter(children[kid])))
                    if len(stack) > limits.max_left_chain:
                        raise parser.fail(f"chains more than {limits.max_left_chain} rules, each beginning with "
                                          "the next: shorten the chain")
        total += work[root]
        if total > limits.max_left_work:
            raise parser.fail("has rules that begin with other rules in too many ways (llama.cpp's check for left "
                              f"recursion would take over {limits.max_left_work} steps): factor the alternatives")
        todo = [root]
        while todo:
            rule_id = todo.pop()
            if rule_id not in reached:
                reached.add(rule_id)
                todo.extend(children[rule_id])


def _ways_to_begin(rule: array[int], ways: dict[int, int], may_be_empty: dict[int, bool], cap: int) -> int:
    """How many grammar stacks llama.cpp makes when it enters this rule (one per leftmost path
    to a character or token): the cost of every step that rule is in grows with it."""
    total, leading = 0, True
    for element in rule:
        kind = element >> _TYPE_SHIFT
        if kind in (END, ALT):
            total += 1 if leading else 0
            leading = True
        elif leading:
            if kind == RULE_REF:
                total += ways[element & 0xFFFFFFFF]
                leading = may_be_empty[element & 0xFFFFFFFF]
            else:
                total += 1
                leading = False
        if total >= cap:
            return cap
    return total


def check_grammar(grammar: str, limits: GrammarLimits = DEFAULT_LIMITS) -> None:
    """Raise GrammarError unless llama.cpp can parse ``grammar`` within ``limits`` and without
    harm; says what the grammar holds and which limit it passes."""
    if len(grammar) > limits.max_chars:
        raise GrammarError(f"the grammar is {len(grammar)} characters; at most {limits.max_chars} are allowed")
    for i, ch in enumerate(grammar):
        if ch < " " and ch not in "\t\r\n":
            raise GrammarError(f"the grammar holds the control character U+{ord(ch):04X} at {_where(grammar, i)}: "
                               "write characters below U+0020 as escapes (\\x01), and never NUL")
        if "\ud800" <= ch <= "\udfff":
            raise GrammarError(f"the grammar holds a lone UTF-16 surrogate at {_where(grammar, i)}: send valid "
                               "Unicode text")
    if not grammar.strip():
        raise GrammarError("the grammar is empty: send GBNF with a 'root' rule, e.g. root ::= \"yes\" | \"no\"")
    depth = _group_depth(grammar)
    if depth > limits.max_depth:
        raise GrammarError(f"the grammar nests groups {depth} deep; at most {limits.max_depth} are allowed")
    parser = _Parser(grammar, limits)
    parser.parse()
    _left_recursion(parser)


def _group_depth(grammar: str) -> int:
    """How deep ( ) groups nest, outside strings, classes and comments (a pre-scan, so the
    parser's own recursion is bounded before it starts)."""
    depth = deepest = 0
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in "\"[":
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        elif c == "#":
            while i < n and grammar[i] not in "\r\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth = max(0, depth - 1)
        i += 1
    return deepest
