"""The stage options, generated from their declarations beside the configs (`isl_cli.config.option`).

`@stage_options(GanConfig)` gives a stage command one option per field of its config and passes the command
`changes`: field -> typed value, None where not typed (what `override` and `given_fields` take).
`@run_options(FeaturesConfig, GanConfig, MineConfig)` does the same for `isl run`, where one flag may set a field of
several stages (`--batch-size`); `changes` is then config class -> field -> value. Typer reads the options from the
command's `__signature__`: the generated parameters take the place of the `changes` parameter.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Any, Callable, Optional

import typer

from isl_cli.config import RUN_SHARED_HELP, CliOption, FeaturesConfig, cli_options

CHANGES = "changes"  # the command's parameter that receives the typed values


@dataclass(frozen=True)
class _Param:
    """One generated option and the config fields it sets."""

    flag: str
    help: str
    kind: type
    default: Any  # a bool field's flag: the field's default; else the option's cli_default
    targets: tuple[tuple[type, str], ...]  # (config class, field name)

    @property
    def name(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def annotation(self) -> Any:
        if self.kind is bool:  # a single flag, never a --x/--no-x pair
            return Annotated[bool, typer.Option(self.flag, help=self.help)]
        if self.default is not None:
            return Annotated[self.kind, typer.Option(self.flag, help=self.help)]
        return Annotated[Optional[self.kind], typer.Option(self.flag, help=self.help, show_default=False)]

    def parameter(self) -> inspect.Parameter:
        default = False if self.kind is bool else self.default
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=self.annotation())

    def value(self, typed: Any) -> Any:
        """The field value of what was typed; None = not typed (a bool flag sets the opposite of its default)."""
        if self.kind is bool:
            return (not self.default) if typed else None
        return typed


def field_option(cls: type, name: str) -> Any:
    """The Annotated type of one field's stage option, for a command that takes it without the config (`--amp`)."""
    return _stage_params(cls, only=name)[0].annotation()


def stage_options(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a stage command an option per field of `cls`; it receives `changes`: field -> value or None."""
    return functools.partial(_extend, params=_stage_params(cls), pick=lambda changes: changes[cls])


def run_options(*classes: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give `isl run` an option per field of every stage; it receives `changes`: class -> field -> value or None.

    Fields share a run flag only when it is listed in RUN_SHARED_HELP: any other clash is a declaration error.
    Stage-specific options come first, in field order, then the shared ones.
    """
    by_flag: dict[str, list[tuple[type, str, CliOption]]] = {}
    for cls in classes:
        for name, opt in cli_options(cls).items():
            by_flag.setdefault(opt.run_flag, []).append((cls, name, opt))
    hints = {cls: typing.get_type_hints(cls) for cls in classes}
    params = []
    for flag, group in by_flag.items():
        if len(group) > 1 and flag not in RUN_SHARED_HELP:
            raise TypeError(f"isl run: {flag} would set {_names(group)}; rename one or list it in RUN_SHARED_HELP")
        kinds = {_base_type(hints[cls][name]) for cls, name, _ in group}
        defaults = {_param_default(cls, name, opt, hints[cls][name]) for cls, name, opt in group}
        if len(kinds) > 1 or len(defaults) > 1:
            raise TypeError(f"isl run: {flag} sets {_names(group)}, whose types or defaults differ")
        params.append(_Param(flag, group[0][2].run_help, kinds.pop(), defaults.pop(),
                             tuple((cls, name) for cls, name, _ in group)))
    params.sort(key=lambda p: len(p.targets) > 1)  # stable: the shared options last
    return functools.partial(_extend, params=params, pick=lambda changes: changes)


def _stage_params(cls: type, only: str | None = None) -> list[_Param]:
    hints = typing.get_type_hints(cls)
    return [_Param(opt.flag, opt.help, _base_type(hints[name]), _param_default(cls, name, opt, hints[name]),
                   ((cls, name),))
            for name, opt in cli_options(cls).items() if only in (None, name)]


def _extend(command: Callable[..., Any], params: list[_Param], pick: Callable[[dict], Any]) -> Callable[..., Any]:
    """`command` with `params` in place of its `changes` parameter, their values collected into `changes`."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != CHANGES]
    if len(own) == len(signature.parameters):
        raise TypeError(f"{command.__name__} takes no `{CHANGES}` parameter")
    _refuse_clashes(command.__name__, own, params)
    at = list(signature.parameters).index(CHANGES)
    generated = [p.parameter() for p in params]
    new_parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[:at]] + generated + [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[at:]]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        changes: dict[type, dict[str, Any]] = {}
        for param in params:
            value = param.value(kwargs.pop(param.name))
            for cls, name in param.targets:
                changes.setdefault(cls, {})[name] = value
        return command(**kwargs, **{CHANGES: pick(changes)})

    wrapper.__signature__ = signature.replace(parameters=new_parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in new_parameters}
    return wrapper


def _refuse_clashes(command: str, own: list[inspect.Parameter], params: list[_Param]) -> None:
    """A generated option may not reuse a parameter name or a flag the command declares by hand."""
    names = {p.name for p in own}
    flags = {decl for p in own for info in typing.get_args(p.annotation)[1:]
             for decl in (getattr(info, "param_decls", None) or ()) + (getattr(info, "default", None),)
             if isinstance(decl, str)}
    for param in params:
        if param.name in names or param.flag in flags:
            raise TypeError(f"{command}: {param.flag} is declared by hand and by a config")


def _base_type(hint: Any) -> type:
    """`int | None` -> int."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _param_default(cls: type, name: str, opt: CliOption, hint: Any) -> Any:
    if _base_type(hint) is bool:
        return {f.name: f.default for f in fields(cls)}[name]
    return opt.cli_default


def _names(group: list[tuple[type, str, CliOption]]) -> str:
    return ", ".join(f"{cls.__name__}.{name}" for cls, name, _ in group)


# train-gan and mine-neighbors run the backbone too: its --amp and --channels-last (GanJob/MineJob, not their configs)
StageAmpOpt = field_option(FeaturesConfig, "amp")
StageChannelsLastOpt = field_option(FeaturesConfig, "channels_last")
