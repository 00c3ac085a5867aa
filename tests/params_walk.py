"""Numeric fields of every registered Params / Budget model with neither a bound nor a stated reason."""
from __future__ import annotations

import typing

from pydantic import BaseModel


def _numeric(ann) -> bool:
    """int / float (not bool), also inside Optional, Annotated and list[...]."""
    if ann in (int, float):
        return True
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _numeric(typing.get_args(ann)[0])
    return any(_numeric(a) for a in typing.get_args(ann) if a is not type(None)) if origin is not None else False


def _bounded(field) -> bool:
    for c in list(field.metadata) + [a for arg in typing.get_args(field.annotation) if typing.get_origin(arg)
                                     is typing.Annotated for a in typing.get_args(arg)[1:]]:
        if any(getattr(c, k, None) is not None for k in ("ge", "gt", "le", "lt")):
            return True
        for m in getattr(c, "metadata", ()) or ():
            if any(getattr(m, k, None) is not None for k in ("ge", "gt", "le", "lt")):
                return True
    return False


def _models(ann):
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        yield ann
    for a in typing.get_args(ann):
        yield from _models(a)


def unbounded(model: type[BaseModel], where: str, seen: set | None = None) -> list[str]:
    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    out = []
    for name, f in model.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if _numeric(f.annotation) and not _bounded(f) and not extra.get("unbounded"):
            out.append(f"{where}.{name}")
        for sub in _models(f.annotation):
            out += unbounded(sub, f"{where}.{name}", seen)
    return out


def all_models():
    from bench import registry

    registry.load_light()
    for name, meta in sorted(registry.ADAPTER_META.items()):
        yield f"adapter {name} Params", meta.Params
        if meta.Budget is not None:
            yield f"adapter {name} Budget", meta.Budget
    for name, cls in sorted(dict(registry.METRICS).items()):
        yield f"metric {name} Params", cls.Params
    for name, cls in sorted(dict(registry.DATASETS).items()):
        if getattr(cls, "Params", None) is not None:
            yield f"dataset {name} Params", cls.Params
    from bench.suite import BASE_MODELS, Suite

    for name, schema in sorted(BASE_MODELS.items()):
        yield f"base_model {name}", schema
    yield "suite", Suite


if __name__ == "__main__":
    seen: set = set()
    for where, m in all_models():
        for line in unbounded(m, where, seen):
            print(line)
