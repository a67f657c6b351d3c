"""Which ErrorInfo reasons the code can raise, read from the source (tests/test_error_catalogue.py).

A reason is an UPPER_SNAKE string literal where an error is built:
- the first argument (or `reason=`) of an error class: services.common.errors' classes and their
  subclasses anywhere, the domain errors (partners' DomainError, settlement's SettlementRuleError);
- the first argument of a helper that hands its own `reason` parameter to one of those (`invalid`,
  `_invalid`, `check_id`, ...), and that parameter's default;
- a module constant named there (`HELD_BY_LEDGER`), a class's `REASON = "..."`, and the first item
  of each tuple in a module-level table of (reason, message, ...) tuples (`_FINAL_STATES`).
Reasons another service sent (a ledger refusal passed on by partners) are not the caller's words:
they are passed as `error.reason`, which the scan skips.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICES = os.path.join(REPO_ROOT, "services")
REASON_PATTERN = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")
# The status code each error class of services/common/errors.py stands for.
CODES = {
    "InvalidArgument": "INVALID_ARGUMENT",
    "NotFound": "NOT_FOUND",
    "AlreadyExists": "ALREADY_EXISTS",
    "FailedPrecondition": "FAILED_PRECONDITION",
    "Unauthenticated": "UNAUTHENTICATED",
    "PermissionDenied": "PERMISSION_DENIED",
    "Unavailable": "UNAVAILABLE",
    "ResourceExhausted": "RESOURCE_EXHAUSTED",
    "Aborted": "ABORTED",
    "DeadlineExceeded": "DEADLINE_EXCEEDED",
}
# Domain errors: turned into a status where a use case catches them (DomainError: INVALID_ARGUMENT,
# or FAILED_PRECONDITION with precondition=True). "" when the scan cannot tell.
DOMAIN_ERRORS = {"DomainError": "INVALID_ARGUMENT", "SettlementRuleError": "", "ServiceError": ""}


@dataclass(frozen=True, slots=True)
class Raised:
    reason: str
    area: str  # "ledger", "partners", "settlement", or "shared" (services/common and services/*.py)
    code: str  # the status code when the scan can tell, else ""
    where: str  # path:line
    metadata_keys: tuple[str, ...]


def _area(path: str) -> str:
    parts = os.path.relpath(path, SERVICES).split(os.sep)
    return parts[0] if len(parts) > 1 and parts[0] != "common" else "shared"


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


@functools.cache
def parsed_services() -> tuple[tuple[str, ast.Module], ...]:
    """(path, syntax tree) of every module under services/ but the migrations, parsed once per run."""
    modules = []
    for directory, _, files in os.walk(SERVICES):
        for file in sorted(files):
            if file.endswith(".py") and "migrations" not in directory:
                path = os.path.join(directory, file)
                with open(path, encoding="utf-8") as source:
                    modules.append((path, ast.parse(source.read(), path)))
    return tuple(modules)


class _Scan:
    def __init__(self) -> None:
        self.modules = parsed_services()
        self.nodes = {path: list(ast.walk(module)) for path, module in self.modules}
        self.constants: dict[str, set[str]] = {}  # module-level NAME = "UPPER_SNAKE", by name
        self.codes: dict[str, str] = dict(CODES) | dict(DOMAIN_ERRORS)  # error class or helper -> code
        for _, module in self.modules:
            for node in module.body:
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                    for target in node.targets:
                        if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                            self.constants.setdefault(target.id, set()).add(node.value.value)
        self._find_error_classes()
        self._find_forwarders()

    def _find_error_classes(self) -> None:
        changed = True
        while changed:
            changed = False
            for path, _ in self.modules:
                for node in self.nodes[path]:
                    if isinstance(node, ast.ClassDef) and node.name not in self.codes:
                        bases = [_name(base) for base in node.bases if _name(base) in self.codes]
                        if bases:
                            code = next((self._class_code(node)), self.codes[bases[0]])
                            self.codes[node.name], changed = code, True

    @staticmethod
    def _class_code(node: ast.ClassDef) -> Iterator[str]:
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign | ast.Assign) and isinstance(statement.value, ast.Attribute):
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                if any(_name(target) == "code" for target in targets) and statement.value.attr in CODES.values():
                    yield statement.value.attr

    def _find_forwarders(self) -> None:
        """Functions that build an error from their own `reason` parameter."""
        self.defaults: list[tuple[str, ast.FunctionDef, str]] = []
        changed = True
        while changed:
            changed = False
            for path, _ in self.modules:
                for function in self.nodes[path]:
                    if not isinstance(function, ast.FunctionDef) or function.name in self.codes:
                        continue
                    if "reason" not in [argument.arg for argument in function.args.args]:
                        continue
                    for call in ast.walk(function):
                        if (
                            isinstance(call, ast.Call)
                            and _name(call.func) in self.codes
                            and call.args
                            and _name(call.args[0]) == "reason"
                        ):
                            self.codes[function.name], changed = self.codes[_name(call.func)], True
                            self.defaults.append((path, function, self.codes[function.name]))
                            break

    def _literals(self, node: ast.AST) -> Iterator[str]:
        for child in ast.walk(node):
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                yield child.value
            elif isinstance(child, ast.Name | ast.Attribute) and _name(child) in self.constants:
                yield from self.constants[_name(child)]

    def raised(self) -> Iterator[Raised]:
        for path, module in self.modules:
            area, relative = _area(path), os.path.relpath(path, REPO_ROOT)
            for node in self.nodes[path]:
                if isinstance(node, ast.ClassDef) and node.name in self.codes:
                    yield from self._class_reasons(node, area, relative)
                    continue
                if not isinstance(node, ast.Call):
                    continue
                callee = _name(node.func)
                if callee == "__init__" or callee not in self.codes:
                    continue
                code = self.codes[callee]
                if any(k.arg == "precondition" and getattr(k.value, "value", False) is True for k in node.keywords):
                    code = "FAILED_PRECONDITION"
                keys = tuple(k.arg for k in node.keywords if k.arg not in (None, "precondition", "reason"))
                sources = [node.args[0]] if node.args else []
                sources += [k.value for k in node.keywords if k.arg == "reason"]
                for source in sources:
                    for text in self._literals(source):
                        if REASON_PATTERN.fullmatch(text):
                            yield Raised(text, area, code, f"{relative}:{node.lineno}", keys)
            for node in module.body:
                yield from self._table_reasons(node, area, relative)
        for path, function, code in self.defaults:
            arguments = function.args
            for argument, default in zip(arguments.args[-len(arguments.defaults) :], arguments.defaults, strict=False):
                if argument.arg == "reason" and isinstance(default, ast.Constant):
                    where = f"{os.path.relpath(path, REPO_ROOT)}:{function.lineno}"
                    yield Raised(default.value, _area(path), code, where, ())

    def _class_reasons(self, node: ast.ClassDef, area: str, relative: str) -> Iterator[Raised]:
        """`REASON = "..."` in an error class, and super().__init__(...) literals (LedgerRefused)."""
        code = self.codes[node.name]
        for statement in node.body:
            if isinstance(statement, ast.Assign) and any(_name(t) == "REASON" for t in statement.targets):
                yield Raised(statement.value.value, area, code, f"{relative}:{statement.lineno}", ())
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and _name(call.func) == "__init__" and call.args:
                for text in self._literals(call.args[0]):
                    if REASON_PATTERN.fullmatch(text):
                        yield Raised(text, area, code, f"{relative}:{call.lineno}", ())

    @staticmethod
    def _table_reasons(node: ast.stmt, area: str, relative: str) -> Iterator[Raised]:
        """A module-level dict of (REASON, "message", ...) tuples."""
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Dict) or not node.value.values:
            return
        rows = node.value.values
        if all(
            isinstance(row, ast.Tuple)
            and len(row.elts) >= 2
            and all(isinstance(item, ast.Constant) and isinstance(item.value, str) for item in row.elts[:2])
            and REASON_PATTERN.fullmatch(row.elts[0].value)
            and " " in row.elts[1].value  # a message, not another name
            for row in rows
        ):
            for row in rows:
                yield Raised(row.elts[0].value, area, "", f"{relative}:{row.lineno}", ())


@functools.cache
def raised_reasons() -> tuple[Raised, ...]:
    """Every (reason, area) the code can raise, with where and, when known, the status code."""
    return tuple(sorted(set(_Scan().raised()), key=lambda r: (r.area, r.reason, r.where)))
