"""Command-line flags derived from the options dataclasses (``evoforge.options``), and the
flags every command shares: ``-q/--quiet``, ``--json``, ``--no-report``.

A typer command is a function whose parameters are its flags; these decorators add
parameters to a command's signature and turn what typer parses back into the options
the command function takes, so a default or a help text is never written here.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import Field
from pathlib import Path
from typing import Annotated, Any

import typer

from evoforge.errors import ConfigError, EvoforgeError, redact
from evoforge.io.disk import NO_ROOM, WriteFailed, describe
from evoforge.options import ENGINE_API_ONLY, EngineOptions, default_of, option_fields


def flag_name(item: Field[Any]) -> str:
    """The Python parameter name of a field's flag (``judge`` -> ``no_judge``)."""
    flag = item.metadata.get("flag")
    if item.metadata.get("negate"):
        return str(flag).lstrip("-").replace("-", "_")
    return item.name


def cli_default(item: Field[Any]) -> Any:
    """The flag's default: the field's (inverted for ``--no-x``), or its ``cli_default``."""
    if item.metadata.get("required"):
        return inspect.Parameter.empty
    if "cli_default" in item.metadata:
        return item.metadata["cli_default"]
    default = default_of(item)
    if item.metadata.get("negate"):
        return not default
    if isinstance(default, dict) and not default:
        return None  # repeated key=value flags: none given
    return default


def _cli_type(item: Field[Any], hint: Any) -> Any:
    """What typer parses: ``key=value`` pairs for a dict, a ``Path`` for a path."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is dict or any(typing.get_origin(a) is dict for a in args):
        return list[str] | None
    if item.metadata.get("path"):
        return Path | None
    if "cli_default" in item.metadata and type(None) in args:
        return next(a for a in args if a is not type(None))
    return hint


def parameter(item: Field[Any], hint: Any, *, name: str | None = None, **override: Any) -> Any:
    """The typer parameter of one options field (``override``: ``default``, ``decls`` or
    other typer.Option settings)."""
    meta = item.metadata
    flag = meta.get("flag")
    settings: dict[str, Any] = {"help": meta.get("help") or None}
    if meta.get("panel"):
        settings["rich_help_panel"] = meta["panel"]
    if "dict[" in str(item.type):  # repeated key=value flags
        settings["metavar"] = "KEY=VALUE" if item.name == "llm_args" else "OP=N"
    elif "list[" in str(item.type):  # a repeated flag, one value each: --fields FIELD
        settings["metavar"] = item.name.removesuffix("s").upper()
    if "min" in meta:
        settings["min"] = meta["min"]
    settings.update(override)
    default = settings.pop("default") if "default" in settings else cli_default(item)
    decls = settings.pop("decls", [flag] if isinstance(flag, str) else list(flag or ()))
    annotation = Annotated[_cli_type(item, hint), typer.Option(*decls, **settings)]
    return inspect.Parameter(
        name or flag_name(item), inspect.Parameter.KEYWORD_ONLY, default=default,
        annotation=annotation,
    )  # fmt: skip


def parameters(cls: type) -> list[Any]:
    """The typer parameters of an options dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    return [parameter(item, hints[item.name]) for item in option_fields(cls)]


def to_value(item: Field[Any], value: Any) -> Any:
    """What typer parsed -> the field's value (``--no-x`` inverted, pairs, paths)."""
    if item.metadata.get("negate"):
        return not value
    if item.name == "llm_args":
        from evoforge.llm.spec import parse_llm_args

        return parse_llm_args(value)
    if "dict[" in str(item.type):
        return int_pairs(value, str(item.metadata.get("flag") or f"--{item.name}"))
    if item.metadata.get("path") and value is not None:
        return str(value)
    return value


def int_pairs(pairs: list[str] | None, flag: str) -> dict[str, int] | None:
    """``["reasoning=20,conditional=30"]`` -> ``{"reasoning": 20, "conditional": 30}``."""
    if not pairs:
        return None
    result = {}
    for pair in pairs:
        for part in pair.split(","):
            name, sep, value = part.partition("=")
            if not sep or not value.strip().isdigit():
                raise ConfigError(f"{flag} {part!r}: expected op=N, e.g. reasoning=20")
            result[name.strip()] = int(value)
    return result


def build(cls: type, values: dict[str, Any]) -> Any:
    """The options dataclass from the parsed flags (popped from ``values``)."""
    kwargs = {}
    for item in option_fields(cls):
        name = flag_name(item)
        if name in values:
            kwargs[item.name] = to_value(item, values.pop(name))
    return cls(**kwargs)


def typer_parameters(fn: Any) -> list[inspect.Parameter]:
    """``fn``'s parameters with their annotations resolved (strings -> ``Annotated[...]``),
    so that typer reads the options through a wrapper."""
    hints = typing.get_type_hints(fn, include_extras=True)
    return [
        p.replace(
            annotation=_no_implicit_optional(hints.get(name, p.annotation)),
            kind=inspect.Parameter.KEYWORD_ONLY,
        )
        for name, p in inspect.signature(fn).parameters.items()
    ]


def _no_implicit_optional(hint: Any) -> Any:
    """Python 3.10's get_type_hints wraps the hint of a parameter whose default is None in
    Optional[...], which hides an Annotated[...] (its typer.Option: flag name, metavar, help)
    from typer; 3.11 stopped doing so."""
    if typing.get_origin(hint) is typing.Union:
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) == 1 and typing.get_origin(rest[0]) is typing.Annotated:
            return rest[0]
    return hint


def with_parameters(wrapper: Any, params: list[inspect.Parameter]) -> Any:
    """Show typer ``params`` as the wrapper's own (a decorator that adds or takes options)."""
    wrapper.__signature__ = inspect.signature(wrapper).replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def with_options(cls: type, *, into: str) -> Any:
    """Give a command a flag per field of ``cls``; hand it the parsed options as ``into``."""

    def decorate(fn: Any) -> Any:
        own = [p for p in typer_parameters(fn) if p.name != into]
        added = parameters(cls)
        names = {p.name for p in added}

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return fn(**{into: build(cls, values)}, **kwargs)

        return with_parameters(wrapper, own + added)

    return decorate


def with_engine_options(
    *, max_tokens_flag: str = "--max-tokens", fixed: dict[str, Any] | None = None, **defaults: Any
) -> Any:
    """Give a command every engine flag (model, limits, budgets, cache, seed) once,
    and hand it the parsed ``EngineOptions`` as ``options``.

    ``max_tokens_flag`` renames the token budget where a command's own
    ``--max-tokens`` means something else (``in2``: the longest context);
    ``defaults`` are a command's own flag defaults and ``fixed`` its settings with no
    flag (the demo's, from ``evoforge.options.DEMO_ENGINE``).
    """
    fixed = fixed or {}
    hints = typing.get_type_hints(EngineOptions)
    engine: list[inspect.Parameter] = []
    fields_by_param: dict[str, Field[Any]] = {}
    for item in option_fields(EngineOptions):
        if item.name in ENGINE_API_ONLY or item.name in fixed:
            continue
        settings: dict[str, Any] = {"rich_help_panel": item.metadata.get("panel") or RUN}
        if item.name == "quiet":
            settings["rich_help_panel"] = GENERAL
        if item.name in defaults:
            settings["default"] = defaults[item.name]
        name = None
        if item.name == "max_tokens" and max_tokens_flag != "--max-tokens":
            name, settings["decls"] = "total_tokens_budget", [max_tokens_flag]
        param = parameter(item, hints[item.name], name=name, **settings)
        engine.append(param)
        fields_by_param[param.name] = item

    def decorate(fn: Any) -> Any:
        own = [p for p in typer_parameters(fn) if p.name != "options"]

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            values = {
                item.name: to_value(item, kwargs.pop(name))
                for name, item in fields_by_param.items()
            }
            return fn(options=EngineOptions(**values, **fixed), **kwargs)

        return with_parameters(wrapper, own + engine)

    return decorate


def errors_as_messages(fn: Any) -> Any:
    """Known errors print one line naming the fix, not a traceback: exit 2, or the
    error's own ``exit_code`` (3 for a write that failed, :mod:`evoforge.io.disk`); a
    full disk met anywhere else is a failed write too."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EvoforgeError as exc:
            typer.echo(f"evoforge: error: {redact(str(exc))}", err=True)
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None
        except OSError as exc:
            if exc.errno not in NO_ROOM:
                raise
            path = Path(exc.filename or ".")
            failed = WriteFailed(path, describe(path), exc)
            typer.echo(f"evoforge: error: {redact(str(failed))}", err=True)
            raise typer.Exit(3) from None

    return wrapper


# The help sections (evoforge.cli.helptext) of the flags every command shares.
RUN, GENERAL = "Run", "General"
Json = Annotated[
    bool,
    typer.Option("--json", help="Print the summary as JSON on stdout.", rich_help_panel=GENERAL),
]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel=GENERAL),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Run on a counting model instead: print the calls and tokens per operator; "
        "no model is called and nothing is written.",
        rich_help_panel=RUN,
    ),
]
# --wait where a command writes but takes no engine flags (dedup, probe build, run):
# the engine flag's own help and default.
_WAIT = next(item for item in option_fields(EngineOptions) if item.name == "wait")
Wait = Annotated[
    bool,
    typer.Option("--wait", help=_WAIT.metadata["help"], rich_help_panel=RUN),
]
NoReport = Annotated[
    bool,
    typer.Option(
        "--no-report", help="Do not refresh report.html and summary.md.", rich_help_panel=GENERAL
    ),
]


def shared_flags(
    *,
    report: bool = True,
    quiet: bool = True,
    dry_run: bool = False,
    folder: Callable[[Any], Path] | None = None,
) -> Any:
    """Give a command ``--json`` (handed to it as ``as_json``), ``-q/--quiet`` (unless the
    engine flags bring it), ``--dry-run`` where it calls a model, and ``--no-report``: when
    it finishes (done or stopped), the report of its outputs' folder (``folder(out)``: by
    default the folder of ``--out``) is refreshed (see ``evoforge report``); a dry run
    writes nothing, so it refreshes nothing."""
    where = folder or (lambda out: Path(out).parent)

    def decorate(fn: Any) -> Any:
        params = typer_parameters(fn)
        own = {p.name for p in params}
        # as_json is filled in from --json; a plain dry_run from the shared --dry-run (a
        # command may word its own, as an Annotated typer option)
        worded = any(
            p.name == "dry_run" and typing.get_origin(p.annotation) is Annotated for p in params
        )
        params = [p for p in params if p.name != "as_json" and (p.name != "dry_run" or worded)]
        added = [inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY,
                                   default=False, annotation=Json)]  # fmt: skip
        if quiet and "quiet" not in own:
            added.append(
                inspect.Parameter(
                    "quiet", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Quiet
                )  # fmt: skip
            )
        if dry_run and not worded:
            added.append(
                inspect.Parameter(
                    "dry_run", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=DryRun
                )  # fmt: skip
            )
        if report:
            added.append(
                inspect.Parameter(
                    "no_report", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=NoReport
                )  # fmt: skip
            )

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            kwargs["as_json"] = kwargs.pop("json_output")
            if "quiet" not in own:
                kwargs.pop("quiet", None)
            # validate writes nothing without --out, so it has no folder to report on
            refresh = report and not kwargs.pop("no_report") and kwargs.get("out") is not None
            refresh = refresh and not kwargs.get("dry_run")
            try:
                result = fn(**kwargs)
            except typer.Exit:  # the commands end this way, with the run's exit code
                if refresh:
                    refresh_report(where(kwargs["out"]))
                raise
            if refresh:
                refresh_report(where(kwargs["out"]))
            return result

        return with_parameters(wrapper, [*params, *added])

    return decorate


def refresh_report(folder: Path) -> None:
    """Write the folder's report; a report that fails is a warning, never a failed run."""
    from evoforge.report import write_report

    try:
        paths = write_report(folder)
    except Exception as exc:  # the run's outputs are written; say why and keep its exit code
        typer.echo(f"evoforge: report not written: {type(exc).__name__}: {exc}", err=True)
        return
    typer.echo(f"report: {paths['html']} (summary: {paths['summary']})", err=True)
