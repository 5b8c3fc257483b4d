"""The ``compress`` command's options, derived: nothing here names a codec or a parameter.

- one ``--name`` per codec parameter name in the registry (``compressors.CODECS``): its
  kind when every codec that takes it agrees (else text, coerced by the codec), its help
  listing which codecs take it with their bounds and defaults;
- one ``--name`` per run-level field of :class:`flows.params.CompressRequest` (shard size,
  limits, and whatever run-level option a later issue adds there), with that field's
  type, default and description.

The values go back into a ``CompressRequest`` (the chosen codec's section), which the form
of the Prefect UI is built from too, so the CLI, the form and the registry cannot drift.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections import defaultdict
from typing import Any, Literal, Optional, get_args, get_origin

import click
import typer

from compressors import CODECS, Param


def _bounds(p: Param) -> str:
    if p.choices:
        return "|".join(map(str, p.choices))
    words = "".join(f"|{w}" for w in p.keywords)
    if p.lo is None and p.hi is None:
        return p.kind.__name__ + words
    return f"{_num(p.lo)}..{_num(p.hi)}{words}"


def _num(v) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def codec_param_names() -> dict[str, dict[str, Param]]:
    """``{param name: {codec name: Param}}`` over the whole registry."""
    out: dict[str, dict[str, Param]] = defaultdict(dict)
    for codec in CODECS.values():
        for name, p in codec.params.items():
            out[name][codec.name] = p
    return dict(out)


def codec_param_help(by_codec: dict[str, Param]) -> str:
    """``jpeg, webp: 1..100 (75), quality: ...; autoencoder: 1..6 (4), rate level ...``."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for codec, p in by_codec.items():
        groups[(_bounds(p), p.default, p.help)].append(codec)
    parts = []
    for (bounds, default, text), codecs in groups.items():
        shown = "codec decides" if default is None else default
        parts.append(f"{', '.join(codecs)}: {bounds} (default {shown}){': ' + text if text else ''}")
    return "; ".join(parts)


def codec_param_type(by_codec: dict[str, Param]) -> Any:
    kinds = {p.kind for p in by_codec.values()}
    choices = {p.choices for p in by_codec.values()}
    if any(p.keywords for p in by_codec.values()):
        return str  # a number or a word (kmeans --colors elbow): the chosen codec coerces the text
    if len(kinds) == 1 and len(choices) == 1:
        kind = kinds.pop()
        options = choices.pop()
        return Literal[tuple(options)] if options else kind
    return str  # kinds differ between codecs: the chosen codec coerces the text


CODEC_PANEL = "Codec options (from the codec registry)"
RUN_PANEL = "Run options (the Prefect form's fields)"


def _option(name: str, annotation: Any, default: Any, help: str, panel: str) -> inspect.Parameter:
    flag = "--" + name.replace("_", "-")
    base = _base(annotation)
    decls = [f"{flag}/--no-{flag[2:]}"] if base is bool else [flag]
    extra = {}
    if get_origin(base) is Literal:  # a choice: click shows and checks the values
        extra["click_type"] = click.Choice([str(v) for v in get_args(base)])
        annotation = Optional[str]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
        default=typer.Option(default, *decls, help=help, show_default=default is not None, rich_help_panel=panel,
                             **extra),
    )


def _base(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def codec_parameters() -> list[inspect.Parameter]:
    """One keyword option per codec parameter name, default None (the codec decides)."""
    return [
        _option(name, Optional[codec_param_type(by_codec)], None, codec_param_help(by_codec), CODEC_PANEL)
        for name, by_codec in sorted(codec_param_names().items())
    ]


def run_parameters(request_model, names: tuple[str, ...]) -> list[inspect.Parameter]:
    """One option per run-level field of ``request_model`` (type, default and help from the field)."""
    out = []
    for name in names:
        field = request_model.model_fields[name]
        annotation = field.annotation
        if _base(annotation) not in (str, int, float, bool) and get_origin(_base(annotation)) is not Literal:
            raise TypeError(f"run option {name}: the CLI takes str, int, float, bool or Literal, not {annotation}")
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        out.append(_option(name, annotation, default, field.description or "", RUN_PANEL))
    return out


def with_options(func, extra: list[inspect.Parameter]):
    """``func`` (which takes ``**options``) with ``extra`` keyword options in its signature.

    typer reads the signature to build the command, then calls ``func`` with every option
    by name: the derived ones arrive in ``**options``.
    """
    sig = inspect.signature(func)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in params}
    clash = sorted(taken & {p.name for p in extra})
    if clash:
        raise ValueError(f"options {clash} are defined twice (the command and the registry or request)")
    func.__signature__ = sig.replace(parameters=params + extra)
    return func
