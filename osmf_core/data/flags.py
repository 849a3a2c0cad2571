"""Command lines built from the config dataclasses: a field is declared once, with its default and its
comment, and every job's flags come from it (as transformers' HfArgumentParser and trl's TrlParser do).

    ap = job_parser(__doc__)
    add_config_args(ap, TrainConfig)            # --epochs, --batch-size (also --batch_size), --progress/--no-progress
    cfg = config_from_args(TrainConfig, ap.parse_args(argv))

Field types: int, float, str, bool (--x / --no-x), `X | None` (None until given), tuple or list of int,
float or str (comma-separated), a nested config dataclass (its fields become flags too). A field's help is
its trailing comment, else the comment lines above it; a one- or two-word comment line above a run of
fields ("# data", "# optimisation") names the argument group they are listed under. `field(metadata=
{"choices": (...)})` restricts a value; `{"flag": "group"}` adds a shorter name (use_group: --group and
--no-group).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import tokenize
import types
import typing
from functools import lru_cache

SKIPPED_TYPES = (dict,)  # set through YAML or code, never a flag


def job_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser whose description is the job's docstring, kept as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


@lru_cache(maxsize=None)
def field_comments(cls) -> dict[str, tuple[str, str]]:
    """{field name: (help text, group title)} read from the class's source comments."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, tuple[str, str]] = {}
    above: list[str] = []
    group = ""
    trailing: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.line.strip() != tok.string.strip():
            trailing[tok.start[0]] = tok.string.lstrip("#").strip()
    for no, line in enumerate(source.splitlines(), start=1):
        text = line.strip()
        if text.startswith("#"):
            words = text.lstrip("#").strip()
            header = re.fullmatch(r"(\w+(?: \w+)?)(?: \(.*\))?", words)
            if not above and header:
                group = header.group(1)
            else:
                above.append(words)
            continue
        m = re.match(r"(\w+)\s*:", text)
        if m and not text.startswith(("def ", "class ", "@", "return")) and line.startswith("    ") \
                and not line.startswith("        "):
            out[m.group(1)] = (trailing.get(no) or " ".join(above), group)
        if text.startswith("def "):
            break
        above = []
    return out


def _base_type(tp):
    """(scalar type, is_sequence, optional) of a field annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
        origin = typing.get_origin(tp)
    if origin in (tuple, list):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (inner[0] if inner else str), True, optional
    return tp, False, optional


def _sequence(scalar):
    def parse(text: str):
        return tuple(scalar(v) for v in str(text).split(",") if v.strip() != "")
    parse.__name__ = f"comma-separated {scalar.__name__}"
    return parse


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_config_args(ap: argparse.ArgumentParser, cls, skip=(), defaults: dict | None = None,
                    group: str = "") -> None:
    """One flag per field of dataclass `cls` (and of its nested config dataclasses), except `skip`.
    `defaults` replaces a field's default on this command line (a job whose purpose fixes one); `group`
    titles the fields whose comments name no group."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp, seq, optional = _base_type(hints[f.name])
        help_text, title = comments.get(f.name, ("", ""))
        if dataclasses.is_dataclass(tp):  # its fields are flags too, listed under this field's group
            add_config_args(ap, tp, skip, defaults, group=title or group or f.name)
            continue
        if tp in SKIPPED_TYPES or typing.get_origin(tp) in SKIPPED_TYPES:
            continue
        title = title or group
        default = (defaults or {}).get(f.name, _default(f))
        groups = {g.title: g for g in ap._action_groups}
        target = (groups.get(title) or ap.add_argument_group(title)) if title else ap
        names = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        if "flag" in f.metadata:  # the name people type (a bool's --x gives --no-x too)
            names.insert(0, f"--{f.metadata['flag']}")
        kw: dict = {"dest": f.name, "default": default, "help": (help_text + " " if help_text else "") +
                    "(default: %(default)s)"}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kw["required"] = True
            del kw["default"]
            kw["help"] = help_text
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if tp is bool and not seq:
            kw["action"] = argparse.BooleanOptionalAction
        elif seq:
            kw["type"], kw["metavar"] = _sequence(tp), "A,B,..."
        else:
            kw["type"] = tp
        if optional and not seq and tp is not bool:
            kw["metavar"] = tp.__name__.upper()
        target.add_argument(*names, **kw)


def config_from_args(cls, args: argparse.Namespace, **overrides):
    """An instance of `cls` from the parsed flags (nested config dataclasses too), `overrides` on top."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in overrides:
            values[f.name] = overrides[f.name]
            continue
        tp = _base_type(hints[f.name])[0]
        if dataclasses.is_dataclass(tp):
            values[f.name] = config_from_args(tp, args)
        elif hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return cls(**values)
