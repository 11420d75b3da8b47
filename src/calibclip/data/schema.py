"""Typed schemas of the official annotation formats: every record's types are checked once, in the reader.

A reader calls ``validate_records(path, records, Model, what)`` on the parsed JSON; a record that does
not fit becomes one ``UserError`` naming the file, the record number and the field (never a
TypeError/KeyError later, never a record dropped or a default filled in). Models are strict: a number
is not silently turned into a file name, ``"12"`` is accepted as an image id only where the official
files may spell ids as decimal strings, and unknown extra keys are ignored (the official files carry
more fields than we read).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError, create_model

from calibclip.errors import UserError

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: "²".isdigit() is True but int("²") fails


def _id(v: Any) -> int:
    """A non-negative integer id, or its ASCII decimal digits as a string (not a bool, not a float)."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and _DIGITS.fullmatch(v):
        return int(v)
    raise ValueError("expected a non-negative integer id")


def unencodable(text: str) -> str | None:
    """Where ``text`` cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{text[exc.start]!r} at position {exc.start}"
    return None


def is_unicode(v: str) -> bool:
    """False for a string holding a lone surrogate (JSON "\\ud800"), which no tokenizer can encode."""
    return unencodable(v) is None


def _text(v: Any) -> str:
    """A JSON string that is valid Unicode."""
    if not isinstance(v, str):
        raise ValueError("expected a string")
    if not is_unicode(v):
        raise ValueError("not valid Unicode (lone surrogate escape)")
    return v


def _name(v: Any) -> str:
    """A non-empty string naming a file or an image."""
    v = _text(v)
    if not v.strip():
        raise ValueError("expected a non-empty string")
    return v


def _box(v: Any) -> tuple[float, float, float, float]:
    """[x, y, w, h]: four finite numbers (not bools), w and h > 0."""
    ok = isinstance(v, (list, tuple)) and len(v) == 4 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    if not ok or v[2] <= 0 or v[3] <= 0:
        raise ValueError("expected [x, y, w, h] with finite numbers and w, h > 0")
    return tuple(float(x) for x in v)  # type: ignore[return-value]


Id = Annotated[int, PlainValidator(_id)]
Text = Annotated[str, PlainValidator(_text)]
Name = Annotated[str, PlainValidator(_name)]
Box = Annotated[tuple[float, float, float, float], PlainValidator(_box)]


class Record(BaseModel):
    """Base: strict types, unknown keys ignored, immutable."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# ---------------------------------------------------------------- Karpathy (Flickr30K / MSCOCO)
class KarpathySentence(Record):
    raw: Text  # the caption as written; ``tokens`` is a lower-cased, punctuation-free copy we never use


class KarpathyImage(Record):
    filename: Name
    split: Text
    sentences: Annotated[list[KarpathySentence], Field(min_length=1)]
    filepath: Text | None = None
    cocoid: Id | None = None
    imgid: Id | None = None


# ---------------------------------------------------------------- TBPR (IRRA layouts)
class IrraBase(Record):
    id: Id
    split: Text
    captions: Annotated[list[Text], Field(min_length=1)]


@functools.cache
def irra_record(path_key: str) -> type[IrraBase]:
    """The IRRA record model whose image path is under ``path_key`` (file_path / img_path) → ``.path``."""
    return create_model(f"IrraRecord_{path_key}", __base__=IrraBase,
                        path=(Name, Field(validation_alias=path_key)))


# ---------------------------------------------------------------- CIRR / FashionIQ / CIRCO
class CirrImgSet(Record):
    members: Annotated[list[Name], Field(min_length=1)]


class CirrRecord(Record):
    pairid: Id
    reference: Name
    caption: Text
    img_set: CirrImgSet
    target_hard: Name | None = None


class FashionIQRecord(Record):
    candidate: Name
    captions: Annotated[list[Text], Field(min_length=2, max_length=2)]
    target: Name | None = None


class CocoImage(Record):
    id: Id
    file_name: Name


class CircoQuery(Record):
    id: Id
    reference_img_id: Id
    relative_caption: Text
    target_img_id: Id | None = None
    gt_img_ids: Annotated[list[Id], Field(min_length=1)] | None = None


# ---------------------------------------------------------------- GeneCIS
class VGEntry(Record):
    image_id: Id
    instance_bbox: Box


class CocoEntry(Record):
    val_image_id: Id


class GenecisAttribute(Record):
    reference: VGEntry
    target: VGEntry
    gallery: Annotated[list[VGEntry], Field(min_length=1)]
    condition: Text


class GenecisObject(Record):
    reference: CocoEntry
    target: CocoEntry
    gallery: Annotated[list[CocoEntry], Field(min_length=1)]
    condition: Text


# ---------------------------------------------------------------- checking
@functools.cache
def _list_adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(list[model])


def _shown(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def validate_records(path: Path, records: Any, model: Any, what: str, label: str = "record",
                     numbers: Sequence[int] | None = None) -> list[Any]:
    """``records`` (a parsed JSON list) as a list of ``model``; the first bad one → one-line UserError.

    The message names the file, ``label`` and number of the record (``numbers[i]`` when the records are
    a selection of the file's), the field path (``sentences.0.raw``) and what was found.
    """
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON list of records, found a JSON {type(records).__name__}; "
                        f"expected {what}.")
    try:
        return _list_adapter(model).validate_python(records)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = list(err["loc"])
        i = loc.pop(0) if loc and isinstance(loc[0], int) else "?"
        if numbers is not None and isinstance(i, int):
            i = numbers[i]
        # Union members add their type name to the path ("str", "function-plain[...]"): keep field names.
        parts = [str(p) for p in loc if isinstance(p, int) or not re.match(r"^[a-z_-]+\[|^(str|int|none)$", str(p))]
        field = ".".join(parts)
        if not field:
            raise UserError(f"{path}: {label} {i} is not a JSON object ({_shown(err['input'])}); "
                            f"expected {what}.") from None
        if err["type"] == "missing":
            raise UserError(f"{path}: {label} {i} has no '{field}' field; expected {what}.") from None
        msg = re.sub(r"^(Value error|Assertion failed), ", "", err["msg"])
        raise UserError(f"{path}: {label} {i} field '{field}': {msg[:1].lower() + msg[1:]} "
                        f"(found {_shown(err['input'])}); expected {what}.") from None


def validate_value(path: Path, value: Any, kind: Any, what: str) -> Any:
    """One whole-file value (e.g. an image-split list or map) checked against ``kind``."""
    try:
        return TypeAdapter(kind, config=ConfigDict(strict=True)).validate_python(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"] if not re.match(r"^[a-z_-]+\[", str(p)))
        at = f" at '{where}'" if where else ""
        msg = re.sub(r"^(Value error|Assertion failed), ", "", err["msg"])
        raise UserError(f"{path}: bad entry{at}: {msg[:1].lower() + msg[1:]} (found {_shown(err['input'])}); "
                        f"expected {what}.") from None
