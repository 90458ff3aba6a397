"""A context-free approximation of Python 3 in llguidance's Lark dialect.

What it is: the grammar text the ``grammar`` processor compiles once per tokenizer. It is *line
based*: the language is a sequence of logical lines, each a simple statement list, a compound
statement's header (``if x:``, ``def f(a):``, with or without a same-line body), a decorator, or
blank. Python's INDENT/DEDENT is not context-free, so leading whitespace is ignored here and the
indentation is checked by ``grammar.IndentTracker`` instead.

Newlines are significant at bracket depth 0 and not inside brackets. llguidance keeps a stack of
lexeme classes (each subgrammar has its own ``%ignore``), so bracket contents are a second grammar,
``inner``, that ignores newlines and comments too; the statement grammar refers to it as
``@inner`` between every bracket pair, and ``inner`` nests brackets within itself.

Approximations (accepted though CPython would not, or the reverse): one permissive rule for every
bracket's contents (call arguments, parameters, subscripts, displays; a comprehension only as the
sole item), so ``f(a: 1)`` passes; ``else:`` / ``except:`` are accepted without checking the statement they
continue; f-strings are plain strings (their ``{...}`` is not parsed); ``match`` statements are
not covered (a cursor inside one makes the processor fall back to no constraint).

What it is not: a parser for tools. It decides which next tokens keep the text a prefix of some
line-structured Python program.
"""

from __future__ import annotations

import json
import keyword

_KEYWORDS = "|".join(sorted(keyword.kwlist, key=len, reverse=True))

# Shared by both grammars: lexemes. Leading whitespace and comments are %ignore'd per grammar.
_SQ = "'([^'\\\\\\r\\n]|\\\\(.|\\r?\\n))*'"
_TRIPLE = "{q}{q}{q}(({q}|{q}{q})?([^{q}\\\\]|\\\\(.|\\n)))*({q}|{q}{q})?{q}{q}{q}"
_STRING_RE = "([rRbBuUfF]|[rR][bBfF]|[bBfF][rR])?({sq}|{dq}|{t1}|{t2})".format(
    sq=_SQ, dq=_SQ.replace("'", '"'), t1=_TRIPLE.format(q="'"), t2=_TRIPLE.format(q='"')
)
_LEXEMES = (
    r"""
NAME: /[\p{L}\p{Nl}_][\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]*/ & ~/(KEYWORDS)/
NUMBER: /(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|([0-9][0-9_]*(\.[0-9_]*)?|\.[0-9][0-9_]*)([eE][+-]?[0-9_]+)?[jJ]?)/
""".replace("KEYWORDS", _KEYWORDS)
    + "STRING: /" + _STRING_RE + "/\n"
)

# Expressions, with BR_OPEN/BR_BODY placeholders for what sits between brackets.
_EXPRESSIONS = r"""
expr: or_test ("if" or_test "else" expr)? | lambdef
expr_nocond: or_test | lambdef_nocond
lambdef: "lambda" lparams? ":" expr
lambdef_nocond: "lambda" lparams? ":" expr_nocond
lparams: lparam ("," lparam)* ","?
lparam: NAME ("=" expr)? | "*" NAME? | "**" NAME | "/"
named: (NAME ":=")? expr
star_expr: "*" bor
or_test: and_test ("or" and_test)*
and_test: not_test ("and" not_test)*
not_test: "not" not_test | comparison
comparison: bor (comp_op bor)*
comp_op: "<" | ">" | "==" | ">=" | "<=" | "!=" | "in" | "not" "in" | "is" | "is" "not"
bor: bxor ("|" bxor)*
bxor: band ("^" band)*
band: shift ("&" shift)*
shift: arith (("<<" | ">>") arith)*
arith: term (("+" | "-") term)*
term: factor (("*" | "/" | "//" | "%" | "@") factor)*
factor: ("+" | "-" | "~") factor | power
power: "await"? primary ("**" factor)?
primary: atom trailer*
trailer: "(" BR_BODY ")" | "[" BR_BODY "]" | "." NAME
atom: NAME | NUMBER | STRING+ | "None" | "True" | "False" | "..."
    | "(" BR_BODY ")" | "[" BR_BODY "]" | "{" BR_BODY "}"
yield_expr: "yield" ("from" expr | exprlist_star)?
exprlist: expr ("," expr)* ","?
exprlist_star: (expr | star_expr) ("," (expr | star_expr))* ","?
target: primary | star_expr
targets: target ("," target)* ","?
"""

# The statement grammar (depth 0): newline-terminated logical lines.
_STATEMENTS = r"""
%ignore /[ \t\f]+|\\\r?\n|#[^\r\n]*/
start: _LEAD? (line | _NL)*
line: simple_stmts _NL | header ":" simple_stmts? _NL | "@" named _NL
simple_stmts: small (";" small)* ";"?
small: expr_stmt | "pass" | "break" | "continue" | "return" exprlist_star? | yield_expr
     | "raise" (expr ("from" expr)?)? | "global" names | "nonlocal" names | "del" exprlist
     | "assert" expr ("," expr)? | import_stmt | "type" NAME ("[" BR_BODY "]")? "=" expr
expr_stmt: exprlist_star | (targets "=")+ (yield_expr | exprlist_star)
         | primary ":" expr ("=" (yield_expr | exprlist_star))?
         | primary augassign (yield_expr | exprlist)
augassign: "+=" | "-=" | "*=" | "@=" | "/=" | "%=" | "&=" | "|=" | "^=" | "<<=" | ">>=" | "**=" | "//="
names: NAME ("," NAME)*
import_stmt: "import" dotted_as ("," dotted_as)*
           | "from" (dots? dotted | dots) "import" ("*" | "(" BR_BODY ")" | import_as ("," import_as)* ","?)
dots: ("." | "...")+
dotted: NAME ("." NAME)*
dotted_as: dotted ("as" NAME)?
import_as: NAME ("as" NAME)?
header: "if" named | "elif" named | "else" | "while" named
      | "async"? "for" targets "in" exprlist_star | "try" | "finally"
      | "except" "*"? (expr (("as" NAME) | ("," expr)*))?
      | "async"? "with" (with_item ("," with_item)* | "(" BR_BODY ")")
      | "async"? "def" NAME ("[" BR_BODY "]")? "(" BR_BODY ")" ("->" expr)?
      | "class" NAME ("[" BR_BODY "]")? ("(" BR_BODY ")")?
with_item: expr ("as" target)?
_NL: /\r?\n/
_LEAD: /([ \t\f]|#[^\r\n]*|\\\r?\n)+/
"""

# Inside brackets: one permissive comma list, newlines and comments ignored.
_INNER = r"""
%ignore /[ \t\f\r\n]+|\\\r?\n|#[^\r\n]*/
start: body
body: (item ("," item)* ","?)? | comprehension
comprehension: (named | star_expr | expr ":" expr) comp_for
item: named | star_expr
    | "**" expr | ("*" | "**") NAME ":" expr | "*" | "/"
    | NAME "=" expr
    | NAME ":" expr ("=" expr)?
    | expr ":" expr
    | slice
    | yield_expr
    | expr "as" target
slice: expr? ":" expr? (":" expr?)?
comp_for: ("async"? "for" targets "in" or_test ("if" expr_nocond)*)+
"""


# At depth 0 an opening bracket is one lexeme with the blanks after it: llguidance 1.9 panics
# when a subgrammar starts with an ignored span ("grammar stack empty for non-root grammar").
_OPENERS = r"""
LPAR: /\((\s|#[^\r\n]*|\\\r?\n)*/
LSQB: /\[(\s|#[^\r\n]*|\\\r?\n)*/
LBRACE: /\{(\s|#[^\r\n]*|\\\r?\n)*/
"""


def lark_grammars() -> tuple[str, str]:
    """(statement grammar, inner grammar) as Lark text."""
    top = _STATEMENTS + _EXPRESSIONS + _LEXEMES + _OPENERS
    for opener, name in (('"("', "LPAR"), ('"["', "LSQB"), ('"{"', "LBRACE")):
        top = top.replace(f"{opener} BR_BODY", f"{name} @inner")
    inner = _INNER + _EXPRESSIONS.replace("BR_BODY", "body") + _LEXEMES
    return top, inner


def grammar_json() -> str:
    """The llguidance grammar (both Lark grammars in one request), ready for ``LLMatcher``."""
    top, inner = lark_grammars()
    return json.dumps({"grammars": [{"lark_grammar": top}, {"name": "inner", "lark_grammar": inner}]})
