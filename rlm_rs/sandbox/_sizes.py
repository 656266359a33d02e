"""Size bounds of the policy layer: no operation a step can name makes one value too large.

One value (the result of one operation) holds at most MAX_CHARS characters or
bytes (str, bytes), MAX_ITEMS items (list, tuple, dict, set, frozenset) or
MAX_INT_BITS bits (int results of `*`, `**`, `<<`, `pow`). Every public method
of str, bytes, list, tuple, dict, set, frozenset, int and float is listed in
METHOD_RULES with how its result is bounded; the operators, conversions to
text (str, repr, print, f-strings, `%`), displays and builtins are in
OPERATION_RULES. An operation whose result can outgrow its inputs is checked
here *before* it allocates and refused with a MemoryError whose message ends
in SIZE_LIMIT_MARK (the step may catch it); the rest cannot produce more than
their inputs already hold. tests/unit/sandbox/test_size_bounds.py runs every
entry of both tables against the in-process executor. Total memory over many
values is the pool's (RLIMIT_AS, cgroup), not this module's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

MAX_CHARS = 50_000_000  # str/bytes: characters or bytes of one value
MAX_ITEMS = 10_000_000  # list/tuple/dict/set/frozenset: items of one value (8+ bytes each)
MAX_INT_BITS = 100_000  # int results of *, **, <<, pow
MAX_FORMAT_NUMBER = 100_000  # a width or precision in a format spec or a %-format
MAX_POW_MOD_COST = 1 << 27  # pow(b, e, m): bits(e) * bits(m), about 0.1 s of C
SIZE_LIMIT_MARK = "(sandbox size limit)"

SEQUENCE_TYPES = (str, bytes, list, tuple)
Tick = Callable[[], None]

# --- the enumeration -------------------------------------------------------------------------
SHRINKS = "result no larger than the object it is called on"
SCALAR = "returns a number, bool, None, a view or an item that already exists"
ONE_ITEM = "adds at most one item per call (each call is a ticked statement)"
CHECKED = "result size computed from the arguments and checked before it runs"
REFUSED = "refused by the attribute guard"
TICKED = "iterates through the step's ticking iterator (line budget)"

_STR_COMMON = {
    "capitalize": CHECKED, "center": CHECKED, "count": SCALAR, "endswith": SCALAR,
    "expandtabs": CHECKED, "find": SCALAR, "index": SCALAR, "isalnum": SCALAR,
    "isalpha": SCALAR, "isascii": SCALAR, "isdigit": SCALAR, "islower": SCALAR,
    "isspace": SCALAR, "istitle": SCALAR, "isupper": SCALAR, "join": CHECKED,
    "ljust": CHECKED, "lower": CHECKED, "lstrip": SHRINKS, "maketrans": SHRINKS,
    "partition": SHRINKS, "removeprefix": SHRINKS, "removesuffix": SHRINKS,
    "replace": CHECKED, "rfind": SCALAR, "rindex": SCALAR, "rjust": CHECKED,
    "rpartition": SHRINKS, "rsplit": CHECKED, "rstrip": SHRINKS, "split": CHECKED,
    "splitlines": CHECKED, "startswith": SCALAR, "strip": SHRINKS, "swapcase": CHECKED,
    "title": CHECKED, "translate": CHECKED, "upper": CHECKED, "zfill": CHECKED,
}  # fmt: skip
METHOD_RULES: dict[type, dict[str, str]] = {
    str: {
        **_STR_COMMON, "casefold": CHECKED, "encode": CHECKED, "format": REFUSED,
        "format_map": REFUSED, "isdecimal": SCALAR, "isidentifier": SCALAR,
        "isnumeric": SCALAR, "isprintable": SCALAR,
    },
    bytes: {
        # bytes case changes are ASCII-only (same length); translate takes a
        # 256-byte table and can only keep or delete bytes.
        **_STR_COMMON, "capitalize": SHRINKS, "lower": SHRINKS, "swapcase": SHRINKS,
        "title": SHRINKS, "upper": SHRINKS, "translate": SHRINKS, "decode": CHECKED,
        "fromhex": SHRINKS, "hex": CHECKED,
    },
    list: {
        "append": ONE_ITEM, "clear": SHRINKS, "copy": SHRINKS, "count": SCALAR,
        "extend": CHECKED, "index": SCALAR, "insert": ONE_ITEM, "pop": SCALAR,
        "remove": SHRINKS, "reverse": SHRINKS, "sort": SHRINKS,
    },
    tuple: {"count": SCALAR, "index": SCALAR},
    dict: {
        "clear": SHRINKS, "copy": SHRINKS, "fromkeys": TICKED, "get": SCALAR,
        "items": SCALAR, "keys": SCALAR, "pop": SCALAR, "popitem": SCALAR,
        "setdefault": ONE_ITEM, "update": CHECKED, "values": SCALAR,
    },
    set: {
        "add": ONE_ITEM, "clear": SHRINKS, "copy": SHRINKS, "difference": SHRINKS,
        "difference_update": SHRINKS, "discard": SHRINKS, "intersection": SHRINKS,
        "intersection_update": SHRINKS, "isdisjoint": SCALAR, "issubset": SCALAR,
        "issuperset": SCALAR, "pop": SCALAR, "remove": SHRINKS,
        "symmetric_difference": CHECKED, "symmetric_difference_update": CHECKED,
        "union": CHECKED, "update": CHECKED,
    },
    frozenset: {
        "copy": SHRINKS, "difference": SHRINKS, "intersection": SHRINKS,
        "isdisjoint": SCALAR, "issubset": SCALAR, "issuperset": SCALAR,
        "symmetric_difference": CHECKED, "union": CHECKED,
    },
    int: {
        "as_integer_ratio": SCALAR, "bit_count": SCALAR, "bit_length": SCALAR,
        "conjugate": SCALAR, "denominator": SCALAR, "from_bytes": SHRINKS, "imag": SCALAR,
        "numerator": SCALAR, "real": SCALAR, "to_bytes": CHECKED,
    },
    float: {
        "as_integer_ratio": SCALAR, "conjugate": SCALAR, "fromhex": SCALAR, "hex": SCALAR,
        "imag": SCALAR, "is_integer": SCALAR, "real": SCALAR,
    },
}  # fmt: skip
METHOD_RULES[bool] = METHOD_RULES[int]

OPERATION_RULES: dict[str, str] = {
    "a + b (str, bytes, list, tuple)": CHECKED,
    "a * n, n * a (str, bytes, list, tuple)": CHECKED,
    "a % args (str, bytes printf: widths, precisions, %s/%r of any value, %(key)s)": CHECKED,
    "a | b, a ^ b (dict, set, frozenset)": CHECKED,
    "a & b, a - b (set, frozenset)": SHRINKS,
    "a += b, a *= n, a %= args, a |= b, a ^= b (every in-place form)": CHECKED,
    "int * int, int ** int, int << int, pow(b, e)": CHECKED,
    "pow(b, e, m) (time: bits(e) * bits(m))": CHECKED,
    "x[a:b] = value (list slice assignment)": CHECKED,
    "f-strings (each part's format spec and text, and the joined result)": CHECKED,
    "str(x), repr(x), print(...), hex/bin/oct(n) (text of any value)": CHECKED,
    "{**a, **b} (dict display)": CHECKED,
    "[*a], (*a,), {*a}, f(*a) (unpacking)": TICKED,
    "sum(items, start) (list/tuple concatenation)": CHECKED,
    "list/tuple/set/frozenset/dict(iterable), sorted, zip, map, enumerate, ...": TICKED,
    "dict(mapping, **kw)": CHECKED,
    "state, FINAL answers, tool metadata (canonical JSON)": CHECKED,
}


def too_large(what: str, size: int, limit: int, unit: str) -> MemoryError:
    return MemoryError(
        f"{what} would be {size:,} {unit}; one value holds at most {limit:,} {SIZE_LIMIT_MARK}"
    )


def check_chars(size: int, what: str = "the result") -> None:
    if size > MAX_CHARS:
        raise too_large(what, size, MAX_CHARS, "chars")


def check_items(size: int, what: str = "the result") -> None:
    if size > MAX_ITEMS:
        raise too_large(what, size, MAX_ITEMS, "items")


def check_length(kind: Any, size: int, what: str = "the result") -> None:
    if kind in (str, bytes):
        check_chars(size, what)
    else:
        check_items(size, what)


def check_int_bits(bits: int, what: str = "the int result") -> None:
    if bits > MAX_INT_BITS:
        raise too_large(what, bits, MAX_INT_BITS, "bits")


def check_format_number(number: int) -> None:
    if number > MAX_FORMAT_NUMBER:
        raise ValueError(f"format width/precision above {MAX_FORMAT_NUMBER} {SIZE_LIMIT_MARK}")


# --- operators ---------------------------------------------------------------------------------
def add(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind in SEQUENCE_TYPES and type(right) is kind:
        check_length(kind, len(left) + len(right), "the result of +")
    return left + right


def mul(left: Any, right: Any) -> Any:
    for seq, times in ((left, right), (right, left)):
        if type(seq) in SEQUENCE_TYPES and type(times) in (int, bool):
            check_length(type(seq), len(seq) * max(times, 0), "the result of *")
    if type(left) in (int, bool) and type(right) in (int, bool):
        check_int_bits(abs(left).bit_length() + abs(right).bit_length(), "the result of *")
    return left * right


def power(left: Any, right: Any) -> Any:
    if type(left) in (int, bool) and type(right) in (int, bool) and abs(left) > 1 and right > 0:
        check_int_bits(right * abs(left).bit_length(), "the result of **")
    return left**right


def lshift(left: Any, right: Any) -> Any:
    if type(left) in (int, bool) and type(right) in (int, bool) and left:
        check_int_bits(abs(left).bit_length() + max(right, 0), "the result of <<")
    return left << right


def union(left: Any, right: Any) -> Any:
    if type(left) in (dict, set, frozenset) and type(right) in (dict, set, frozenset):
        check_items(len(left) + len(right), "the result of |")
    return left | right


def symmetric(left: Any, right: Any) -> Any:
    if type(left) in (set, frozenset) and type(right) in (set, frozenset):
        check_items(len(left) + len(right), "the result of ^")
    return left ^ right


def pow_mod(base: Any, exp: Any, mod: Any) -> Any:
    """pow(b, e, m) costs bits(e) modular multiplications of bits(m)-bit numbers in C."""
    if type(exp) in (int, bool) and type(mod) in (int, bool):
        cost = abs(exp).bit_length() * max(abs(mod).bit_length(), 64)
        if cost > MAX_POW_MOD_COST:
            raise ValueError(
                "pow(base, exp, mod) with exponent and modulus this large runs too long "
                f"(bits(exp) * bits(mod) above {MAX_POW_MOD_COST:,}) {SIZE_LIMIT_MARK}"
            )
    return pow(base, exp, mod)


def text_of_int_size(value: int) -> int:
    return abs(value).bit_length() // 3 + 3  # decimal digits + sign, an upper bound


# --- text of any value ---------------------------------------------------------------------------
class TextSizer:
    """Upper bounds of len(repr(v)) and len(str(v)) without building the text.

    Containers are walked (`tick` per item visited) with their sizes memoised
    per object, so a shared-reference DAG (`a = [a, a]` thirty times) costs
    its distinct nodes while its size counts every repetition, and the walk
    stops at `limit`."""

    def __init__(self, tick: Tick, limit: int | None = None) -> None:
        self.tick = tick
        self.limit = MAX_CHARS if limit is None else limit

    def repr_size(self, value: Any) -> int:
        return self._size(value, top_str=False)

    def str_size(self, value: Any) -> int:
        return self._size(value, top_str=True)

    def _size(self, value: Any, top_str: bool) -> int:
        kind = type(value)
        if kind is str:
            return len(value) if top_str else _str_repr_size(value)
        if kind is bytes:
            return _bytes_repr_size(value)
        scalar = _scalar_size(value)
        if scalar is not None:
            return scalar
        memo: dict[int, int] = {}
        size = self._walk(value, memo)
        return size

    def _walk(self, root: Any, memo: dict[int, int]) -> int:
        """Iterative post-order over (node, its children, size so far)."""
        on_path: set[int] = set()
        first = _known_size(root, memo, on_path)
        if first is not None:
            return first
        stack: list[tuple[Any, Iterator[Any], int]] = [(root, _children(root), _overhead(root))]
        on_path.add(id(root))
        while True:
            node, children, running = stack[-1]
            child = next(children, _DONE)
            if child is _DONE:  # node complete: memoise, add to its parent
                stack.pop()
                on_path.discard(id(node))
                memo[id(node)] = running
                if not stack:
                    return running
                node, children, size = stack[-1]
                stack[-1] = (node, children, self._add(size, running))
                continue
            self.tick()
            known = _known_size(child, memo, on_path)
            if known is None:
                stack.append((child, _children(child), _overhead(child)))
                on_path.add(id(child))
            else:
                stack[-1] = (node, children, self._add(running, known))

    def _add(self, running: int, item: int) -> int:
        total = running + item + 2  # ", " between items
        if total > self.limit:
            raise too_large("the text of that value", total, self.limit, "chars")
        return total


def _known_size(node: Any, memo: dict[int, int], on_path: set[int]) -> int | None:
    """Size of a leaf or an already measured node; None if it must be walked."""
    known = memo.get(id(node))
    if known is not None:
        return known
    kind = type(node)
    if kind is str:
        return _str_repr_size(node)
    if kind is bytes:
        return _bytes_repr_size(node)
    scalar = _scalar_size(node)
    if scalar is not None:
        return scalar
    if id(node) in on_path:
        return 5  # a cycle prints as [...]
    return None


_DONE = object()


def _str_repr_size(value: str) -> int:
    if value.isascii() and value.isprintable():
        return len(value) + 2 + value.count("\\") + value.count("'")
    if len(value) <= 100_000:
        return len(repr(value))
    return len(value) * 10 + 2  # \U0010ffff per character at worst


def _bytes_repr_size(value: bytes) -> int:
    return len(value) * 4 + 3


def _scalar_size(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        return text_of_int_size(value)
    if value is None or kind is bool:
        return 5
    if kind is float:
        return 25
    if kind is complex:
        return 52
    if kind in _CONTAINER_TYPES or isinstance(value, BaseException):
        return None
    if kind is slice:
        return None
    return len(repr(value))  # functions, views of the sandbox, iterators: fixed-size text


_DICT_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_CONTAINER_TYPES: tuple[type, ...] = (list, tuple, dict, set, frozenset, *_DICT_VIEWS)


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, item in node.items():
            yield key
            yield item
    elif type(node) is type({}.items()):
        for key, item in node:
            yield key
            yield item
    elif isinstance(node, BaseException):
        yield from node.args
    elif type(node) is slice:
        yield from (node.start, node.stop, node.step)
    else:
        yield from node


def _overhead(node: Any) -> int:
    if isinstance(node, BaseException):
        return len(type(node).__name__) + 2
    if type(node) in (frozenset, type({}.keys()), type({}.values()), type({}.items())):
        return 20
    return 8  # brackets, "set()", "slice()", a 1-tuple's comma


# --- %-formatting --------------------------------------------------------------------------------
def printf(template: Any, args: Any, sizer: TextSizer) -> Any:
    """`template % args` for str or bytes, with every width, precision and
    converted value sized first (mapping keys, `*` widths and `%s` of any
    value included), then the whole result checked."""
    if type(template) not in (str, bytes):
        return template % args
    text = template.decode("latin-1") if type(template) is bytes else template
    total = 0
    position = 0
    values = args if type(args) is tuple else (args,)
    index = 0
    i = text.find("%")
    literal_start = 0
    while i >= 0:
        total += i - literal_start
        j = i + 1
        if j < len(text) and text[j] == "%":
            total += 1
            literal_start = j + 1
            i = text.find("%", j + 1)
            continue
        key = None
        if j < len(text) and text[j] == "(":
            depth, k = 1, j + 1
            while k < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[k], 0)
                k += 1
            key = text[j + 1 : k - 1]
            j = k
        while j < len(text) and text[j] in "#0- +":
            j += 1
        width, j, index = _printf_number(text, j, values, index)
        precision = 0
        if j < len(text) and text[j] == ".":
            precision, j, index = _printf_number(text, j + 1, values, index)
        while j < len(text) and text[j] in "hlL":
            j += 1
        conversion = text[j] if j < len(text) else ""
        value: Any = None
        if key is not None:
            try:
                value = args[key] if type(template) is str else args[key.encode("latin-1")]
            except (KeyError, TypeError, IndexError):
                value = None
        elif index < len(values):
            value = values[index]
            index += 1
        total += max(width, _converted_size(conversion, value, precision, sizer))
        literal_start = j + 1
        position = j + 1
        i = text.find("%", position)
    total += len(text) - literal_start
    check_chars(total, "the result of %")
    return template % args


def _printf_number(text: str, j: int, values: tuple[Any, ...], index: int) -> tuple[int, int, int]:
    if j < len(text) and text[j] == "*":
        number = values[index] if index < len(values) else 0
        number = abs(number) if type(number) is int else 0
        check_format_number(number)
        return number, j + 1, index + 1
    k = j
    while k < len(text) and text[k].isdigit():
        k += 1
    if k > j:
        digits = text[j:k]
        if len(digits) > 6:
            check_format_number(MAX_FORMAT_NUMBER + 1)
        number = int(digits)
        check_format_number(number)
        return number, k, index
    return 0, k, index


def _converted_size(conversion: str, value: Any, precision: int, sizer: TextSizer) -> int:
    if conversion in "sra":
        if type(value) is bytes:
            return len(value) if conversion == "s" else _bytes_repr_size(value)
        return sizer.str_size(value) if conversion == "s" else sizer.repr_size(value) * 3
    if conversion in "diuxXo" and type(value) in (int, bool):
        return text_of_int_size(value) + 4
    return 400 + precision  # floats (1e308 prints 309 digits), %c


def format_value(value: Any, conversion: int, spec: str, sizer: TextSizer) -> str:
    """One f-string placeholder: widths/precisions in the spec and the value's
    text are checked first."""
    for number in _spec_numbers(spec):
        check_format_number(number)
    if conversion == ord("r"):
        sizer.repr_size(value)
        return format(repr(value), spec)
    if conversion == ord("a"):
        check_chars(sizer.repr_size(value) * 3, "the text of that value")
        return format(ascii(value), spec)
    if type(value) not in (str, int, float, bool):
        check_chars(sizer.str_size(value), "the text of that value")
        if conversion == ord("s"):
            value = str(value)
    elif conversion == ord("s"):
        value = str(value)
    return format(value, spec)


def _spec_numbers(spec: str) -> Iterator[int]:
    digits = ""
    for char in spec + " ":
        if char.isdigit():
            digits += char
            if len(digits) > 6:
                yield MAX_FORMAT_NUMBER + 1
                return
        elif digits:
            yield int(digits)
            digits = ""


def join_fstring(*parts: str) -> str:
    check_chars(sum(len(p) for p in parts), "the f-string")
    return "".join(parts)


# --- str and bytes methods ---------------------------------------------------------------------
_ENCODE_FACTORS = {"utf-8": 4, "utf8": 4, "utf_8": 4, "ascii": 1, "latin-1": 1, "latin1": 1,
                   "iso-8859-1": 1, "utf-16": 4, "utf-32": 4, "utf16": 4, "utf32": 4}  # fmt: skip
_PLAIN_ERRORS = ("strict", "ignore", "replace", "surrogateescape", "surrogatepass")


def _width(text: Any, method: Any) -> Callable[..., Any]:
    def call(width: Any, *args: Any) -> Any:
        if type(width) in (int, bool):
            check_length(type(text), max(len(text), width), "the padded text")
        return method(width, *args)

    return call


def _expandtabs(text: Any, method: Any) -> Callable[..., Any]:
    tab: Any = "\t" if type(text) is str else b"\t"

    def call(tabsize: Any = 8) -> Any:
        if type(tabsize) in (int, bool):
            check_length(type(text), len(text) + text.count(tab) * max(tabsize, 0), "the expanded text")
        return method(tabsize)

    return call


def _replace(text: Any, method: Any) -> Callable[..., Any]:
    def call(old: Any, new: Any, count: Any = -1) -> Any:
        if type(old) is type(text) and type(new) is type(text) and len(new) > len(old):
            hits = text.count(old) if old else len(text) + 1
            if type(count) is int and count >= 0:
                hits = min(hits, count)
            check_length(type(text), len(text) + hits * (len(new) - len(old)), "the result of replace")
        return method(old, new, count)

    return call


def _case(text: Any, method: Any) -> Callable[..., Any]:
    def call() -> Any:
        if not text.isascii():  # special casing: 'ß'.upper() is 'SS', up to 3 chars per char
            check_chars(len(text) * 3, "the case-changed text")
        return method()

    return call


def _encode(text: Any, method: Any) -> Callable[..., Any]:
    def call(encoding: Any = "utf-8", errors: Any = "strict") -> Any:
        factor = _ENCODE_FACTORS.get(str(encoding).lower(), 100) if type(encoding) is str else 100
        if errors not in _PLAIN_ERRORS:
            factor = max(factor, 100)  # namereplace: \N{...} per character
        check_chars(len(text) * factor + 8, "the encoded bytes")
        return method(encoding, errors)

    return call


def _decode(data: Any, method: Any) -> Callable[..., Any]:
    def call(encoding: Any = "utf-8", errors: Any = "strict") -> Any:
        factor = 1 if errors in _PLAIN_ERRORS else 4  # backslashreplace: \xff per byte
        check_chars(len(data) * factor, "the decoded text")
        return method(encoding, errors)

    return call


def _hex(data: Any, method: Any) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        group = args[1] if len(args) > 1 and type(args[1]) is int else 1
        separators = len(data) // max(abs(group), 1) if args else 0
        check_chars(len(data) * 2 + separators, "the hex text")
        return method(*args)

    return call


def _split(text: Any, method: Any) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        limit = kwargs.get("maxsplit", args[1] if len(args) > 1 else -1)
        pieces = len(text) + 1
        if type(limit) is int and limit >= 0:
            pieces = min(pieces, limit + 1)
        if pieces > MAX_ITEMS:
            sep: Any = kwargs.get("sep", args[0] if args else None)
            if sep is None:  # n pieces of non-space need 2n - 1 characters
                pieces = min(pieces, (len(text) + 1) // 2)
            elif type(sep) is type(text) and sep:
                pieces = min(pieces, text.count(sep) + 1)
            check_items(pieces, "the list of pieces")
        return method(*args, **kwargs)

    return call


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _splitlines(text: Any, method: Any) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if len(text) >= MAX_ITEMS:
            breaks: Any = _LINE_BREAKS if type(text) is str else (b"\n", b"\r")
            check_items(sum(text.count(b) for b in breaks) + 1, "the list of lines")
        return method(*args, **kwargs)

    return call


def _join(tick: Tick) -> Callable[[Any, Any], Callable[..., Any]]:
    def wrap(text: Any, method: Any) -> Callable[..., Any]:
        def call(iterable: Any) -> Any:
            items = []
            for item in iter(iterable):
                tick()
                items.append(item)
            size = len(text) * max(len(items) - 1, 0)
            size += sum(len(i) for i in items if type(i) in (str, bytes))
            check_length(type(text), size, "the joined text")
            return method(items)

        return call

    return wrap


def _translate(text: Any, method: Any) -> Callable[..., Any]:
    def call(table: Any) -> Any:
        if type(text) is str:
            if type(table) is dict:
                values: Iterable[Any] = table.values()
            elif type(table) in (list, tuple):
                values = table
            else:  # str, bytes, range, a document: one character per index at most
                values = ()
            longest = max((len(v) for v in values if type(v) is str), default=1)
            check_chars(len(text) * max(longest, 1), "the translated text")
        return method(table)

    return call


def _to_bytes(value: Any, method: Any) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        length = kwargs.get("length", args[0] if args else 1)
        if type(length) is int:
            check_chars(length, "the bytes")
        return method(*args, **kwargs)

    return call


# --- container methods ---------------------------------------------------------------------------
def _is_lazy(value: Any) -> bool:
    """A range or an iterator: its length is not already paid for in memory."""
    from rlm_rs.sandbox._range import StepRange

    return type(value) in (range, StepRange) or isinstance(value, Iterator)


def _consuming(tick: Tick, sized: bool) -> Callable[[Any, Any], Callable[..., Any]]:
    """Methods that consume iterables in C: lazy arguments (ranges, iterators)
    go through the ticking iterator. `sized` (extend, update, union,
    symmetric_difference): the object plus every sized argument must fit."""

    def ticking(iterable: Any) -> Iterator[Any]:
        for item in iter(iterable):
            tick()
            yield item

    def wrap(target: Any, method: Any) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if sized:
                size = len(target) + len(kwargs)
                for arg in args:
                    if hasattr(arg, "__len__"):  # ranges too; iterators tick
                        size += len(arg)
                check_items(size)
            return method(*(ticking(a) if _is_lazy(a) else a for a in args), **kwargs)

        return call

    return wrap


Wrapper = Callable[[Any, Any], Callable[..., Any]]


def _check_table() -> dict[tuple[type, str], Wrapper | str]:
    """(type, name) -> wrapper(obj, bound method) for every CHECKED method;
    a str names a wrapper that needs the step's tick (made per step)."""
    checks: dict[tuple[type, str], Wrapper | str] = {}
    for kind in (str, bytes):
        for name in ("center", "ljust", "rjust", "zfill"):
            checks[kind, name] = _width
        checks[kind, "expandtabs"] = _expandtabs
        checks[kind, "replace"] = _replace
        checks[kind, "join"] = "join"
        for name in ("split", "rsplit"):
            checks[kind, name] = _split
        checks[kind, "splitlines"] = _splitlines
    for name in ("capitalize", "casefold", "lower", "swapcase", "title", "upper"):
        checks[str, name] = _case
    checks[str, "translate"] = _translate
    checks[str, "encode"] = _encode
    checks[bytes, "decode"] = _decode
    checks[bytes, "hex"] = _hex
    checks[list, "extend"] = "growing"
    checks[dict, "update"] = "growing"
    checks[dict, "fromkeys"] = "consuming"  # no larger than its argument
    for set_kind in (set, frozenset):
        for name in ("union", "symmetric_difference"):
            checks[set_kind, name] = "growing"
    checks[set, "update"] = "growing"
    checks[set, "symmetric_difference_update"] = "growing"
    # Consuming an iterator is ticked even where the result cannot grow.
    for set_kind in (set, frozenset):
        for name in ("intersection", "difference", "issubset", "issuperset", "isdisjoint"):
            checks[set_kind, name] = "consuming"
    for name in ("intersection_update", "difference_update"):
        checks[set, name] = "consuming"
    checks[int, "to_bytes"] = checks[bool, "to_bytes"] = _to_bytes
    return checks


_CHECKS = _check_table()


def method_checks(tick: Tick) -> Callable[[tuple[type, str]], Wrapper | None]:
    """The step's look-up (type, name) -> wrapper, or None for an unchecked method."""
    ticked: dict[str, Wrapper] = {
        "join": _join(tick),
        "growing": _consuming(tick, sized=True),
        "consuming": _consuming(tick, sized=False),
    }

    def lookup(key: tuple[type, str]) -> Wrapper | None:
        check = _CHECKS.get(key)
        return ticked[check] if type(check) is str else check  # type: ignore[return-value]

    return lookup
