"""Reading runs: find the files, check the schema from the footer, stream column-projected batches.

This and storage.py (runs in object stores) are the only modules that import pyarrow. A run
path may be local or a URL (s3://, gs://, abfs://, hf://, https://): storage.py resolves a URL
to a filesystem, and everything after that is the same code. It hands the rest of the program
plain numpy arrays, validated: labels are class indices in range, predictions are finite logits or
probabilities that sum to 1, lists are not ragged. Anything else is an InputError that names
the file, the column and (where it helps) the row, counted from 0 across the whole run.
"""

from __future__ import annotations

import glob
import json
import os
import re
import stat as stat_module
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .errors import InputError, UsageError

CLASSES_METADATA_KEY = b"metricdiff.classes"
TOPK_COLUMNS = ("topk_ids", "topk_logprobs", "label_logprob")
PRED_KINDS = ("logits", "probs")
# Each batch holds about this many prediction values (rows x classes): bounded memory at any K.
DEFAULT_BATCH_VALUES = 1 << 22


DEFAULT_ID_COL = "id"  # used when present; runs without it line up by row order


@dataclass(frozen=True)
class ReadOptions:
    """How to find the columns of a run. Defaults follow the documented run format."""

    label_col: str = "label"
    pred_col: str | None = None  # None: detect logits / probs / wide / top-k columns
    pred_kind: str | None = None  # "logits" or "probs"; needed only for a custom --pred-col name
    id_col: str | None = None  # None: the column "id" where the file has one; a name: required
    slice_cols: tuple[str, ...] = ()
    cluster_col: str | None = None  # examples that are not independent share a value here
    classes_file: str | None = None
    prob_tolerance: float = 1e-3  # |sum(probs) - 1| allowed per row
    min_prob: float | None = None  # opt-in floor on every probability, renormalised (--min-prob)
    batch_values: int = DEFAULT_BATCH_VALUES


@dataclass(frozen=True)
class Prediction:
    """Where the predictions are and what they hold."""

    kind: str  # "logits", "probs" or "topk"
    columns: tuple[str, ...]  # one list column, K wide columns, or the three top-k columns
    wide: bool = False  # one scalar column per class


@dataclass(frozen=True)
class RunLayout:
    """Everything known about a run before its rows are read (from the Parquet footers)."""

    path: str
    files: tuple[str, ...]
    group_rows: tuple[tuple[int, ...], ...]  # rows of each row group, per file
    prediction: Prediction
    num_classes: int | None  # None only for top-k runs without class names
    class_names: tuple[str, ...] | None
    label_col: str
    label_is_string: bool
    id_col: str | None
    slice_cols: tuple[str, ...]
    topk: int | None = None  # how many classes a top-k run lists per row
    cluster_col: str | None = None
    # each file as checked: device, inode, size, mtime; in an object store size and ETag
    stamps: tuple[tuple[int | str, ...], ...] = ()

    @property
    def n_rows(self) -> int:
        return sum(sum(groups) for groups in self.group_rows)


@dataclass
class Batch:
    """Validated rows of one run, in file order."""

    row_start: int  # index of the first row within the whole run
    labels: np.ndarray  # int64 class indices
    scores: np.ndarray | None  # (rows, K) float: logits, or log-probabilities for probs input
    topk_ids: np.ndarray | None = None  # (rows, k) int64, top-k runs only
    topk_logprobs: np.ndarray | None = None  # (rows, k) float64, descending
    label_logprob: np.ndarray | None = None  # (rows,) float64
    ids: np.ndarray | None = None
    slices: dict[str, np.ndarray] = field(default_factory=dict)
    clusters: np.ndarray | None = None  # the cluster key of each row, as text

    def __len__(self) -> int:
        return len(self.labels)


# ----------------------------------------------------------------------------- finding files

def find_files(path: str) -> list[str]:
    """The shard files of a run: one Parquet file, every *.parquet file below a folder, or the
    files a glob matches; in sorted order.

    A path that exists is taken as it is, whatever glob characters its name holds. Below a
    folder, links are followed but every file is read once, whatever links lead to it, and a
    link back to a folder already seen is not followed again (no loop multiplies rows);
    names starting with '.' or '_' (temporary and bookkeeping files) are skipped, and Spark's
    or Dask's `part.parquet/` folders are read like any folder. Only regular files are read:
    a FIFO, device or socket could block or never end. In an object store the same rules hold,
    a prefix being the folder (storage.find_files).
    """
    if storage.is_remote(path):
        return storage.find_files(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            _check_regular(path)
            return [path]
        files = _files_below(path)
        if not files:
            raise InputError("folder holds no *.parquet file", path=path)
        return files
    if any(ch in path for ch in "*?["):
        files = _once([f for f in sorted(glob.glob(path, recursive=True))
                       if not os.path.isdir(f)])
        if not files:
            raise InputError("no file matches this pattern", path=path)
        for file in files:
            _check_regular(file)
        return files
    raise InputError("no such file or folder", path=path)


def _files_below(folder: str) -> list[str]:
    def refuse(error: OSError) -> None:
        raise InputError(f"cannot list this folder: {error.strerror}",
                         path=error.filename or folder)

    seen_folders: set[tuple[int, int]] = set()
    found = []
    for root, dirs, names in os.walk(folder, onerror=refuse, followlinks=True):
        stat = os.stat(root)
        if (stat.st_dev, stat.st_ino) in seen_folders:  # reached again through a link
            dirs[:] = []
            continue
        seen_folders.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [os.path.join(root, name) for name in names
                  if name.endswith(".parquet") and not name.startswith((".", "_"))]
    files = _once(sorted(found))
    for file in files:
        _check_regular(file)
    return files


def _once(files: list[str]) -> list[str]:
    """Each file once, under the first name that leads to it (links, repeated matches)."""
    seen: set[tuple[int, int]] = set()
    kept = []
    for file in files:
        try:
            stat = os.stat(file)
        except OSError:  # a dangling link: let the regular-file check say so
            kept.append(file)
            continue
        if (stat.st_dev, stat.st_ino) not in seen:
            seen.add((stat.st_dev, stat.st_ino))
            kept.append(file)
    return kept


def _check_regular(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", path=path) from None
    if not stat_module.S_ISREG(mode):
        raise InputError("not a regular file (a FIFO, device or socket); expected a Parquet "
                         "file", path=path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the file name is not valid UTF-8; rename the file",
                         path=path.encode("utf-8", "backslashreplace").decode()) from None


def input_files(path: str) -> list[str]:
    """The files a run argument would read, as far as they can be found (for checking that no
    output overwrites an input); one that cannot be resolved adds nothing here, and reading
    it reports why."""
    if storage.is_remote(path):  # no output can be written over an object in a store
        return []
    try:
        if is_run_folder_pattern(path):
            return [f for folder in find_run_folders(path) for f in find_files(folder)]
        return find_files(path)
    except InputError:
        return []


def is_run_folder_pattern(path: str) -> bool:
    """A glob that ends in '/' matches folders only, and each folder it matches is one run of
    a group (the seeds of one configuration). A glob of shards matches files, so the two
    cannot be confused; a path that exists is taken as it is."""
    return (path.endswith(("/", os.sep)) and any(ch in path for ch in "*?[")
            and not os.path.exists(path))


def find_run_folders(pattern: str) -> list[str]:
    """The folders a run-folder pattern matches, in natural order (seed2 before seed10), so
    that the i-th run of every group is the i-th seed."""
    if storage.is_remote(pattern):
        folders = storage.find_folders(pattern)
    else:
        folders = [f for f in glob.glob(pattern) if os.path.isdir(f)]
    if not folders:
        raise InputError("no folder matches this pattern (a pattern ending in '/' names one "
                         "run per matching folder)", path=pattern)
    return sorted(folders, key=_natural_key)


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def find_checkpoints(path: str) -> list[str]:
    """The checkpoints one argument of `series` names, each a run: every folder a pattern
    ending in '/' matches, or every file a glob matches, in natural order (epoch9 before
    epoch10, as for seeds); any other path is one checkpoint, a file or a folder of shards."""
    if is_run_folder_pattern(path):
        return find_run_folders(path)
    if any(ch in path for ch in "*?[") and (storage.is_remote(path) or not os.path.exists(path)):
        if not storage.is_remote(path) and not any(os.path.isfile(f) for f in glob.glob(path)) \
                and any(os.path.isdir(f) for f in glob.glob(path)):
            raise InputError("the pattern matches folders only; end it with '/' to take each "
                             "folder as one checkpoint", path=path)
        return sorted(find_files(path), key=_natural_key)
    return [path]


def natural_order(names: list[str]) -> list[str]:
    """`names` sorted as find_checkpoints sorts the matches of a glob."""
    return sorted(names, key=_natural_key)


def has_column(layout: RunLayout, column: str) -> bool:
    """Whether the run's files have a column of that name (read from the first footer)."""
    return column in open_parquet(layout.files[0]).schema_arrow.names


def read_steps(layout: RunLayout, column: str) -> np.ndarray:
    """The step of every row of a run, in row order: a column of whole or real numbers, no
    nulls, no NaN or infinity (int64 or float64)."""
    schema = open_parquet(layout.files[0]).schema_arrow
    if column not in schema.names:
        raise UsageError(f"{layout.files[0]}: --step-col column '{column}' not found; columns "
                         f"are: {', '.join(schema.names)}")
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise InputError(f"type {kind}, expected numbers (the training step or epoch of each "
                         "row)", path=layout.files[0], column=column)
    parts, row_start = [], 0
    for path in layout.files:
        with decoding(path, f"cannot decode column '{column}'"):
            values = open_parquet(path).read(columns=[column]).column(column).combine_chunks()
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        if values.null_count:
            raise InputError("null step", path=path, column=column,
                             row=row_start + _first_true(np.asarray(values.is_null())))
        steps = numbers(values)
        if steps.dtype.kind == "f" and not np.isfinite(steps).all():
            raise InputError(f"step {steps[~np.isfinite(steps)][0]}, expected a finite number",
                             path=path, column=column,
                             row=row_start + _first_true(~np.isfinite(steps)))
        parts.append(steps.astype(np.float64 if steps.dtype.kind == "f" else np.int64))
        row_start += len(steps)
    return np.concatenate(parts)


# What pyarrow raises on a damaged file: its own errors, OSError for I/O and decompression,
# ValueError (UnicodeDecodeError among them) for metadata it cannot decode.
DECODE_ERRORS = (pa.ArrowException, OSError, ValueError)


@contextmanager
def decoding(path: str, what: str) -> Iterator[None]:
    """Turn pyarrow's errors on a damaged file into one InputError naming the file; in an
    object store, errors of the store itself (network, access) are said as such."""
    try:
        yield
    except DECODE_ERRORS as exc:
        if storage.is_remote(path) and storage.is_store_error(exc):
            raise storage.error(path, exc) from None
        if isinstance(exc, PermissionError):
            raise InputError("cannot read the file: permission denied", path=path) from None
        if isinstance(exc, IsADirectoryError):
            raise InputError("is a folder, expected a Parquet file", path=path) from None
        raise InputError(f"{what} ({_first_line(exc)}){_format_hint(path)}", path=path) from None


# Formats people save predictions in, and the one line that turns each into a run.
CONVERSIONS = {
    ".csv": "pandas.read_csv(PATH).to_parquet('run.parquet') (one column per class, named "
            "logit_<k> or prob_<k>)",
    ".tsv": "pandas.read_csv(PATH, sep='\\t').to_parquet('run.parquet') (one column per class, "
            "named logit_<k> or prob_<k>)",
    ".jsonl": "pandas.read_json(PATH, lines=True).to_parquet('run.parquet')",
    ".npy": "metricdiff.save_predictions('run.parquet', labels, logits=numpy.load(PATH))",
    ".npz": "metricdiff.save_predictions('run.parquet', labels, logits=numpy.load(PATH)[...])",
    ".pt": "metricdiff.save_predictions('run.parquet', labels, logits=torch.load(PATH))",
}


def _format_hint(path: str) -> str:
    """For a file in another format: that it is not a run format, and the conversion."""
    ending = os.path.splitext(path)[1].lower()
    if ending not in CONVERSIONS:
        return ""
    return (f"; {ending[1:].upper()} is not a run format: convert it once with "
            f"{CONVERSIONS[ending].replace('PATH', repr(path))}")


def file_stamp(path: str) -> tuple[int | str, ...]:
    """What identifies a file's content here: device, inode, size and modification time; in
    an object store, size and ETag (or modification time)."""
    if storage.is_remote(path):
        return storage.stamp(path)
    try:
        stat = os.stat(path)
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", path=path) from None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def open_parquet(path: str, buffer_size: int = 0) -> pq.ParquetFile:
    """Open a file for reading row group by row group. pre_buffer=False: pyarrow's default
    would buffer a row group's column chunks whole, more memory for no speed here. A positive
    buffer_size reads column chunks in pieces of that many bytes, for when only the first
    rows of a row group are wanted. An object in a store is opened for random access: only the
    footer and the column chunks read are fetched."""
    source = storage.open_input(path) if storage.is_remote(path) else path
    with decoding(path, "not a readable Parquet file"):
        # page CRCs are verified where the writer stored them (metricdiff's writer does)
        parquet_file = pq.ParquetFile(source, page_checksum_verification=True, pre_buffer=False,
                                      buffer_size=buffer_size)
        parquet_file.schema_arrow  # decode the schema now, inside the error handling
        return parquet_file


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- layout

def inspect_run(path: str, options: ReadOptions = ReadOptions()) -> RunLayout:
    """Read every footer, check the shards agree, and decide which columns mean what."""
    files = find_files(path)
    parquet_files = [open_parquet(f) for f in files]
    stamps = tuple(file_stamp(f) for f in files)  # of the files whose footers are checked
    schema = parquet_files[0].schema_arrow
    for f, pf in zip(files[1:], parquet_files[1:]):
        _check_same_schema(files[0], schema, f, pf.schema_arrow)
    group_rows = tuple(_checked_group_rows(f, pf) for f, pf in zip(files, parquet_files))
    if sum(sum(groups) for groups in group_rows) == 0:
        raise InputError("the run has zero rows", path=path)

    first = files[0]
    label_is_string = _check_label_type(first, schema, options.label_col)
    prediction = _find_prediction(first, schema, options)
    if options.id_col is not None and options.id_col not in schema.names:
        raise UsageError(f"{first}: --id-col column '{options.id_col}' not found; columns are: "
                         f"{', '.join(schema.names)}")
    id_col = options.id_col or (DEFAULT_ID_COL if DEFAULT_ID_COL in schema.names else None)
    for col in options.slice_cols:
        if col not in schema.names:
            raise UsageError(f"{first}: --by column '{col}' not found; columns are: "
                             f"{', '.join(schema.names)}")
    if options.cluster_col is not None and options.cluster_col not in schema.names:
        raise UsageError(f"{first}: --cluster column '{options.cluster_col}' not found; "
                         f"columns are: {', '.join(schema.names)}")

    class_names = _class_names(first, schema, prediction, options)
    num_classes, topk = _num_classes(first, parquet_files[0], schema, prediction, class_names)
    if num_classes == 0 or topk == 0:
        raise InputError("the prediction lists are empty (0 classes); expected one score per "
                         "class", path=first, column=prediction.columns[0])
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        source = options.classes_file or f"metadata '{CLASSES_METADATA_KEY.decode()}'"
        raise InputError(f"{len(class_names)} class names in {source}, but predictions have "
                         f"{num_classes} classes", path=first, column=prediction.columns[0])
    if label_is_string and class_names is None:
        raise InputError("labels are strings but no class names were found; expected "
                         f"'{CLASSES_METADATA_KEY.decode()}' metadata or --classes FILE",
                         path=first, column=options.label_col)
    return RunLayout(path=path, files=tuple(files), group_rows=group_rows, prediction=prediction,
                     num_classes=num_classes, class_names=class_names,
                     label_col=options.label_col, label_is_string=label_is_string, id_col=id_col,
                     slice_cols=tuple(options.slice_cols), topk=topk,
                     cluster_col=options.cluster_col, stamps=stamps)


def _checked_group_rows(path: str, parquet_file: pq.ParquetFile) -> tuple[int, ...]:
    """The rows of each row group, from a footer checked for what damage can do to it: repeat a
    column, or list row groups that do not add up to its row count."""
    names = parquet_file.schema_arrow.names
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"column '{repeated[0]}' appears more than once; expected unique "
                         "column names", path=path)
    metadata = parquet_file.metadata
    group_rows = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    if any(rows < 0 for rows in group_rows) or sum(group_rows) != metadata.num_rows:
        raise InputError(f"the footer lists {metadata.num_rows} rows but its row groups hold "
                         f"{sum(group_rows)}: the file is damaged", path=path)
    return tuple(group_rows)


def _check_same_schema(first: str, schema: pa.Schema, other: str, other_schema: pa.Schema) -> None:
    if schema.names != other_schema.names:
        raise InputError(f"shard columns differ from {first}: [{', '.join(other_schema.names)}] "
                         f"vs [{', '.join(schema.names)}]", path=other)
    for name in schema.names:
        if schema.field(name).type != other_schema.field(name).type:
            raise InputError(f"type {other_schema.field(name).type} differs from "
                             f"{schema.field(name).type} in {first}", path=other, column=name)


def _check_label_type(path: str, schema: pa.Schema, label_col: str) -> bool:
    """Return True for string labels; integers are class indices; anything else is an error."""
    if label_col not in schema.names:
        raise InputError(f"no label column '{label_col}' (set --label-col); columns are: "
                         f"{', '.join(schema.names)}", path=path)
    label_type = schema.field(label_col).type
    if pa.types.is_dictionary(label_type):
        label_type = label_type.value_type
    if pa.types.is_integer(label_type):
        return False
    if pa.types.is_string(label_type) or pa.types.is_large_string(label_type):
        return True
    raise InputError(f"labels are {label_type}, expected integer class indices or string "
                     "class names", path=path, column=label_col)


def _find_prediction(path: str, schema: pa.Schema, options: ReadOptions) -> Prediction:
    names = schema.names
    if options.pred_col is not None:
        if options.pred_col not in names:
            raise InputError(f"no prediction column '{options.pred_col}'; columns are: "
                             f"{', '.join(names)}", path=path)
        kind = options.pred_kind or _kind_from_name(options.pred_col)
        if kind is None:
            raise InputError(f"cannot tell whether '{options.pred_col}' holds logits or "
                             "probabilities: pass --pred-kind logits or --pred-kind probs",
                             path=path, column=options.pred_col)
        _check_list_type(path, schema, options.pred_col)
        return Prediction(kind=kind, columns=(options.pred_col,))

    found: list[Prediction] = []
    for kind in PRED_KINDS:
        if kind in names:
            found.append(Prediction(kind=kind, columns=(kind,)))
        prefix = kind[:-1] + "_"  # logit_<class>, prob_<class>
        wide = tuple(n for n in names if n.startswith(prefix))
        if wide:
            found.append(Prediction(kind=kind, columns=wide, wide=True))
    if all(c in names for c in TOPK_COLUMNS):
        found.append(Prediction(kind="topk", columns=TOPK_COLUMNS))
    elif any(c in names for c in TOPK_COLUMNS):
        missing = [c for c in TOPK_COLUMNS if c not in names]
        raise InputError(f"top-k predictions need columns {', '.join(TOPK_COLUMNS)}; missing "
                         f"{', '.join(missing)}", path=path)

    if not found:
        numbered = [n for n in names if n.isdigit()]
        hint = (f"; columns {numbered[0]}..{numbered[-1]} look like one column per class: name "
                f"them logit_{numbered[0]}.. or prob_{numbered[0]}.. (the wide layout)"
                if len(numbered) >= 2 else "")
        raise InputError("no prediction column: expected 'logits' or 'probs' (a list of floats), "
                         "wide 'logit_<class>'/'prob_<class>' columns, or top-k columns "
                         f"{', '.join(TOPK_COLUMNS)}; columns are: {', '.join(names)}{hint}",
                         path=path)
    if len(found) > 1:
        described = " and ".join(_describe(p) for p in found)
        raise InputError(f"more than one prediction column: {described}; choose one with "
                         "--pred-col", path=path)
    prediction = found[0]
    if prediction.wide:
        for col in prediction.columns:
            if not pa.types.is_floating(schema.field(col).type):
                raise InputError(f"type {schema.field(col).type}, expected float", path=path,
                                 column=col)
    elif prediction.kind == "topk":
        _check_list_type(path, schema, "topk_ids", integer=True)
        _check_list_type(path, schema, "topk_logprobs")
        if not pa.types.is_floating(schema.field("label_logprob").type):
            raise InputError(f"type {schema.field('label_logprob').type}, expected float",
                             path=path, column="label_logprob")
    else:
        _check_list_type(path, schema, prediction.columns[0])
    return prediction


def _describe(prediction: Prediction) -> str:
    cols = prediction.columns
    if prediction.wide:
        return f"{len(cols)} wide columns '{cols[0]}'..."
    return "+".join(f"'{c}'" for c in cols) if len(cols) > 1 else f"'{cols[0]}'"


def _kind_from_name(name: str) -> str | None:
    lowered = name.lower()
    if "logit" in lowered or "logprob" in lowered or "log_prob" in lowered:
        return "logits"
    if "prob" in lowered:
        return "probs"
    return None


def _list_value_type(list_type: pa.DataType) -> pa.DataType | None:
    if (pa.types.is_list(list_type) or pa.types.is_large_list(list_type)
            or pa.types.is_fixed_size_list(list_type)):
        return list_type.value_type
    return None


def _check_list_type(path: str, schema: pa.Schema, col: str, integer: bool = False) -> None:
    col_type = schema.field(col).type
    value_type = _list_value_type(col_type)
    wanted = "integers" if integer else "floats"
    ok = value_type is not None and (pa.types.is_integer(value_type) if integer
                                     else pa.types.is_floating(value_type))
    if not ok:
        raise InputError(f"type {col_type}, expected a list of {wanted}", path=path, column=col)


def _class_names(path: str, schema: pa.Schema, prediction: Prediction,
                 options: ReadOptions) -> tuple[str, ...] | None:
    if options.classes_file is not None:
        return _read_classes_file(options.classes_file)
    metadata = schema.metadata or {}
    if CLASSES_METADATA_KEY in metadata:
        try:
            names = json.loads(metadata[CLASSES_METADATA_KEY])
        except (ValueError, UnicodeDecodeError):
            names = None
        if not isinstance(names, list) or not all(_is_name(n) for n in names):
            raise InputError(f"metadata '{CLASSES_METADATA_KEY.decode()}' is not a JSON list of "
                             "class names (strings or whole numbers)", path=path)
        return _unique_names(path, [str(n) for n in names])
    if prediction.wide:
        prefix_len = len(prediction.kind)  # "logit_" / "prob_" are kind[:-1] + "_"
        return _unique_names(path, [c[prefix_len:] for c in prediction.columns])
    return None


def _is_name(value) -> bool:
    """A class name is a string or a whole number, never a boolean, null, list or object."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _read_classes_file(classes_file: str) -> tuple[str, ...]:
    """A JSON list of names, or one name per line; UTF-8, with or without a byte-order mark."""
    try:
        _check_regular(classes_file)
        with open(classes_file, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read classes file ({exc.strerror})", path=classes_file) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"classes file is not UTF-8 text (byte {exc.start}: "
                         f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8",
                         path=classes_file) from None
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            names = json.loads(stripped)
        except ValueError:
            raise InputError("starts with '[' but is not a JSON list", path=classes_file) from None
        if not isinstance(names, list) or not all(_is_name(n) for n in names):
            raise InputError("expected a JSON list of class names (strings or whole numbers)",
                             path=classes_file)
        names = [str(n) for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError("holds no class names", path=classes_file)
    return _unique_names(classes_file, names)


def _unique_names(path: str, names: list[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"class name '{name}' appears twice", path=path)
        seen.add(name)
    return tuple(names)


def _num_classes(path: str, parquet_file: pq.ParquetFile, schema: pa.Schema,
                 prediction: Prediction, class_names: tuple[str, ...] | None
                 ) -> tuple[int | None, int | None]:
    """K from the type, the wide columns, or the first row; and k for top-k runs."""
    if prediction.wide:
        return len(prediction.columns), None
    if prediction.kind == "topk":
        k = _first_list_length(parquet_file, "topk_ids", path)
        return (len(class_names) if class_names is not None else None), k
    col = prediction.columns[0]
    return _first_list_length(parquet_file, col, path), None


def _first_list_length(parquet_file: pq.ParquetFile, col: str, path: str) -> int:
    col_type = parquet_file.schema_arrow.field(col).type
    if pa.types.is_fixed_size_list(col_type):
        return col_type.list_size
    with decoding(path, "cannot decode the first row"):
        batch = next(parquet_file.iter_batches(batch_size=1, columns=[col]), None)
    if batch is None or batch.num_rows == 0:
        raise InputError("no rows", path=path, column=col)
    first = batch.column(0)
    if first.null_count:
        raise InputError("row 0 is null, expected a list", path=path, column=col)
    return int(_list_lengths(first)[0])


# ----------------------------------------------------------------------------- streaming

def iter_batches(layout: RunLayout, options: ReadOptions = ReadOptions(),
                 plan: dict[int, list[tuple[int, int]]] | None = None,
                 keys_only: bool = False, whole_groups: bool = False,
                 with_clusters: bool = False) -> Iterator[Batch]:
    """Yield validated batches of the whole run, or of a sample plan: for each file index, the
    row groups to read and how many of their first rows to take. `keys_only`: read the labels
    and ids alone (scores stay None), a fraction of the run's bytes; `with_clusters`: and the
    cluster column. `whole_groups`: the plan takes whole row groups (a cluster's partition),
    read as the whole run is."""
    keys_only = keys_only or with_clusters
    columns = _columns_to_read(layout, keys_only, with_clusters)
    # values decoded per row: K, or for a top-k run its two lists of k (ids and
    # log-probabilities; its K, the vocabulary, may be far larger)
    width = 1 if keys_only else 2 * layout.topk if layout.topk else layout.num_classes or 1
    batch_rows = max(1, options.batch_values // width)
    row_start = 0
    for file_index, (path, group_rows) in enumerate(zip(layout.files, layout.group_rows)):
        # a sample reads the head of row groups: read their column chunks a piece at a time
        heads = plan is not None and not whole_groups
        parquet_file = open_parquet(path, buffer_size=SAMPLE_BUFFER if heads else 0)
        if layout.stamps and file_stamp(path) != layout.stamps[file_index]:
            # opened after the check: what is read must be the file whose footer was checked
            raise InputError("the file changed after its footer was checked (replaced or "
                             "rewritten while metricdiff ran); run again once it is complete",
                             path=path)
        group_starts = np.cumsum([0, *group_rows])
        groups = list(enumerate(group_rows))
        if plan is not None:
            groups = plan.get(file_index, [])
        for group, wanted in groups:
            if wanted == 0:
                continue
            first_row = row_start + int(group_starts[group])
            taken = 0
            what = f"cannot decode row group {group}"
            with decoding(path, what):
                record_batches = parquet_file.iter_batches(
                    batch_size=min(batch_rows, wanted), row_groups=[group], columns=columns)
            while taken < wanted:
                with decoding(path, what):  # only pyarrow's work: our own errors pass through
                    record_batch = next(record_batches, None)
                if record_batch is None:
                    break
                record_batch = record_batch.slice(0, wanted - taken)
                # every value is checked and a bad one reported by name: numpy's warnings on
                # casting them (a signalling NaN raises "invalid") would only be stray lines,
                # and errstate is per thread, so the CLI's own setting does not reach readers
                with np.errstate(all="ignore"):
                    batch = _validate(layout, options, path, first_row + taken, record_batch,
                                      keys_only, with_clusters)
                yield batch
                taken += record_batch.num_rows
            if taken < wanted:  # a damaged file can decode fewer rows than its footer lists
                raise InputError(f"row group {group} decoded {taken} rows, but the footer "
                                 f"lists {group_rows[group]}: the file is damaged", path=path)
        row_start += sum(group_rows)


def _columns_to_read(layout: RunLayout, keys_only: bool = False,
                     with_clusters: bool = False) -> list[str]:
    columns = [layout.label_col] if keys_only else [layout.label_col, *layout.prediction.columns]
    if layout.id_col is not None:
        columns.append(layout.id_col)
    if not keys_only:
        columns.extend(c for c in layout.slice_cols if c not in columns)
    if (layout.cluster_col is not None and layout.cluster_col not in columns
            and (with_clusters or not keys_only)):
        columns.append(layout.cluster_col)
    return columns


def _validate(layout: RunLayout, options: ReadOptions, path: str, row_start: int,
              record_batch: pa.RecordBatch, keys_only: bool = False,
              with_clusters: bool = False) -> Batch:
    if keys_only:
        batch = Batch(row_start=row_start, scores=None, labels=_labels(
            layout, path, row_start, record_batch.column(layout.label_col)))
        if layout.id_col is not None:
            batch.ids = _ids(path, row_start, record_batch.column(layout.id_col), layout.id_col)
        if with_clusters and layout.cluster_col is not None:
            batch.clusters = _slice_values(record_batch.column(layout.cluster_col))
        return batch
    prediction = layout.prediction
    matrix = np.empty((0, 0))
    if prediction.kind != "topk":  # the width first: a changed K is not a label's fault
        if prediction.wide:
            matrix = _wide_matrix(path, row_start, record_batch, prediction.columns)
        else:
            matrix = _list_matrix(path, row_start, record_batch.column(prediction.columns[0]),
                                  prediction.columns[0], layout.num_classes)
    labels = _labels(layout, path, row_start, record_batch.column(layout.label_col))
    batch = Batch(row_start=row_start, labels=labels, scores=None)
    if prediction.kind == "topk":
        _read_topk(layout, path, row_start, record_batch, batch)
    else:
        if prediction.kind == "probs":
            batch.scores = _log_probs(path, row_start, matrix, prediction, options.prob_tolerance)
        else:
            _check_logits(path, row_start, matrix, prediction)
            batch.scores = matrix
    if layout.id_col is not None:
        batch.ids = _ids(path, row_start, record_batch.column(layout.id_col), layout.id_col)
    for col in layout.slice_cols:
        batch.slices[col] = _slice_values(record_batch.column(col))
    if layout.cluster_col is not None:
        batch.clusters = _slice_values(record_batch.column(layout.cluster_col))
    return batch


def _labels(layout: RunLayout, path: str, row_start: int, column: pa.Array) -> np.ndarray:
    if column.null_count:
        row = row_start + _first_true(np.asarray(column.is_null()))
        raise InputError("null label, expected a class", path=path, column=layout.label_col,
                         row=row)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if layout.label_is_string:
        assert layout.class_names is not None  # inspect refuses string labels without names
        lookup = {name: i for i, name in enumerate(layout.class_names)}
        values = column.to_pylist()
        labels = np.empty(len(values), dtype=np.int64)
        for i, value in enumerate(values):
            index = lookup.get(value)
            if index is None:
                raise InputError(f"label '{value}' is not among the {len(lookup)} class names",
                                 path=path, column=layout.label_col, row=row_start + i)
            labels[i] = index
        return labels
    raw = numbers(column)  # checked as stored: a uint64 above 2^63 is not a negative label
    bad = raw < 0
    if layout.num_classes is not None:
        bad |= raw >= layout.num_classes
    if bad.any():
        i = _first_true(bad)
        expected = (f"in [0, {layout.num_classes})" if layout.num_classes is not None
                    else "non-negative")
        raise InputError(f"label {raw[i]} out of range, expected {expected}", path=path,
                         column=layout.label_col, row=row_start + i)
    return raw.astype(np.int64, copy=False)


def _list_matrix(path: str, row_start: int, column: pa.Array, name: str,
                 width: int | None) -> np.ndarray:
    """A list column as a (rows, width) float array; ragged or null rows are errors."""
    if column.null_count:
        raise InputError("null prediction list", path=path, column=name,
                         row=row_start + _first_true(np.asarray(column.is_null())))
    lengths = _list_lengths(column)
    if width is None:
        width = int(lengths[0]) if len(lengths) else 0
    if len(lengths) and (lengths != width).any():
        i = _first_true(lengths != width)
        raise InputError(f"list has {lengths[i]} values, expected {width} like the first row "
                         "(ragged predictions)", path=path, column=name, row=row_start + i)
    values = _list_values(column)
    if values.null_count:
        i = _first_true(np.asarray(values.is_null())) // max(width, 1)
        raise InputError("null value inside the prediction list", path=path, column=name,
                         row=row_start + i)
    matrix = numbers(values).reshape(len(column), width)
    if matrix.dtype == np.float16:
        matrix = matrix.astype(np.float32)
    return matrix


def _wide_matrix(path: str, row_start: int, record_batch: pa.RecordBatch,
                 columns: tuple[str, ...]) -> np.ndarray:
    stored = np.result_type(*(record_batch.column(c).type.to_pandas_dtype() for c in columns))
    dtype = np.float64 if stored == np.float64 else np.float32
    matrix = np.empty((record_batch.num_rows, len(columns)), dtype=dtype)
    for j, col in enumerate(columns):
        array = record_batch.column(col)
        if array.null_count:
            raise InputError("null prediction value", path=path, column=col,
                             row=row_start + _first_true(np.asarray(array.is_null())))
        matrix[:, j] = numbers(array)
    return matrix


def bad_logit(matrix: np.ndarray) -> tuple[int, int | None] | None:
    """Where logits break the rule, else None: (row, class) of a NaN or +inf, or (row, None)
    for a row whose logits are all -inf. -inf alone is a probability of exactly 0. One pass
    in the usual case: a row's maximum is NaN if it holds a NaN, +inf if it holds +inf, -inf
    if it holds nothing else; only then is the culprit looked for."""
    if matrix.size == 0 or np.isfinite(matrix.max(axis=1)).all():
        return None
    valid = matrix < np.inf  # False for NaN and +inf, True for finite values and -inf
    if not valid.all():
        row, col = (int(i) for i in np.unravel_index(int(np.argmin(valid)), matrix.shape))
        return row, col
    return _first_true(~(matrix.max(axis=1) > -np.inf)), None


def _check_logits(path: str, row_start: int, matrix: np.ndarray, prediction: Prediction) -> None:
    bad = bad_logit(matrix)
    if bad is None:
        return
    row, col = bad
    if col is not None:
        raise InputError(f"{matrix[row, col]} at class {col}, expected finite logits (or -inf "
                         "for a probability of 0)", path=path,
                         column=_column_name(prediction, col), row=row_start + row)
    raise InputError("every logit of the row is -inf, expected at least one class with a "
                     "positive probability", path=path,
                     column=_column_name(prediction, 0) if not prediction.wide else None,
                     row=row_start + row)


# Probabilities above 1 are refused; this much above it is float rounding of a softmax.
PROB_ROUNDING = 1e-9


def _log_probs(path: str, row_start: int, probs: np.ndarray, prediction: Prediction,
               tolerance: float) -> np.ndarray:
    """Check probabilities and return their logarithm (0 becomes -inf, which is exact)."""
    # NaN fails both comparisons and infinities one of them: no separate finiteness pass
    valid = (probs >= 0) & (probs <= 1 + PROB_ROUNDING)
    if not valid.all():
        row, col = (int(i) for i in np.unravel_index(int(np.argmin(valid)), probs.shape))
        raise InputError(f"probability {probs[row, col]} at class {col}, expected a number in "
                         "[0, 1]", path=path, column=_column_name(prediction, col),
                         row=row_start + int(row))
    sums = probs.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > tolerance
    if off.any():
        row = _first_true(off)
        raise InputError(f"probabilities sum to {sums[row]:.6g}, expected 1 within {tolerance:g} "
                         "(pass logits, or --prob-tolerance)", path=path,
                         column=_column_name(prediction, 0) if not prediction.wide else None,
                         row=row_start + row)
    with np.errstate(divide="ignore"):
        return np.log(probs)


def _column_name(prediction: Prediction, class_index: int) -> str:
    if prediction.wide:
        return prediction.columns[class_index]
    return prediction.columns[0]


def _read_topk(layout: RunLayout, path: str, row_start: int, record_batch: pa.RecordBatch,
               batch: Batch) -> None:
    k = layout.topk
    ids = _list_matrix(path, row_start, record_batch.column("topk_ids"), "topk_ids", k)
    logprobs = _list_matrix(path, row_start, record_batch.column("topk_logprobs"),
                            "topk_logprobs", k).astype(np.float64)
    label_col = record_batch.column("label_logprob")
    if label_col.null_count:
        raise InputError("null value", path=path, column="label_logprob",
                         row=row_start + _first_true(np.asarray(label_col.is_null())))
    label_logprob = numbers(label_col).astype(np.float64)
    ids = ids.astype(np.int64)

    def fail(mask: np.ndarray | np.bool_, column: str, what: str) -> None:
        if mask.any():
            raise InputError(what, path=path, column=column,
                             row=row_start + _first_true(np.asarray(mask)))

    bad_id = ids < 0
    if layout.num_classes is not None:
        bad_id |= ids >= layout.num_classes
    fail(bad_id.any(axis=1), "topk_ids", "class id out of range")
    fail(~(np.isfinite(logprobs) | np.isneginf(logprobs)).all(axis=1)
         | (logprobs > 1e-9).any(axis=1) | np.isneginf(logprobs[:, 0]), "topk_logprobs",
         "expected log-probabilities <= 0 (-inf for a probability of 0, but not for the top "
         "class)")
    fail((np.diff(logprobs, axis=1) > 0).any(axis=1), "topk_logprobs",
         "log-probabilities not in descending order")
    ordered = np.sort(ids, axis=1)
    fail((ordered[:, 1:] == ordered[:, :-1]).any(axis=1), "topk_ids",
         "a class is listed twice in the row; expected k different classes")
    fail(np.exp(logprobs).sum(axis=1) > 1 + PROB_ROUNDING, "topk_logprobs",
         "the listed probabilities add up to more than 1")
    fail(np.isnan(label_logprob) | (label_logprob > 1e-9), "label_logprob",
         "expected a log-probability <= 0 (-inf for a probability of 0)")
    fail(label_logprob > logprobs[:, 0] + 1e-6, "label_logprob",
         "log-probability of the true class is above the top-1 log-probability")
    listed = ids == batch.labels[:, None]
    listed_logprob = np.where(listed, logprobs, 0.0).sum(axis=1)
    fail(listed.any(axis=1) & (np.abs(listed_logprob - label_logprob) > 1e-4), "label_logprob",
         "differs from the true class's entry in topk_logprobs")
    fail(~listed.any(axis=1) & (label_logprob > logprobs[:, -1] + 1e-6), "label_logprob",
         "true class is not in topk_ids but is more likely than the k-th class")
    batch.topk_ids, batch.topk_logprobs, batch.label_logprob = ids, logprobs, label_logprob


def _ids(path: str, row_start: int, column: pa.Array, name: str) -> np.ndarray:
    if column.null_count:
        raise InputError("null id", path=path, column=name,
                         row=row_start + _first_true(np.asarray(column.is_null())))
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_integer(column.type):
        ids = numbers(column)
        if ids.dtype == np.uint64 and (ids > np.iinfo(np.int64).max).any():
            return ids  # kept unsigned: as int64 they would print negative
        return ids.astype(np.int64, copy=False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return np.asarray(column.to_pylist(), dtype=object)
    raise InputError(f"type {column.type}, expected integer or string ids", path=path, column=name)


def _slice_values(column: pa.Array) -> np.ndarray:
    """Slice keys as strings; nulls get their own slice."""
    return np.asarray(["(null)" if v is None else str(v) for v in column.to_pylist()],
                      dtype=object)


def numbers(array: pa.Array) -> np.ndarray:
    """A null-free array of integers or floats as numpy, without a copy.

    Read straight from the values buffer: pyarrow's own to_numpy() imports pandas on first
    use, 0.2 s of every start-up.
    """
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        return array.to_numpy(zero_copy_only=False)
    dtype = np.dtype(array.type.to_pandas_dtype())
    if len(array) == 0:
        return np.empty(0, dtype)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array),
                         offset=array.offset * dtype.itemsize)


def _list_values(column: pa.Array) -> pa.Array:
    """The values of a null-free list column's own rows: what column.flatten() gives, without
    the import of pyarrow.compute that flatten() makes (0.08 s of every start-up)."""
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        return column.values.slice(column.offset * width, len(column) * width)
    offsets = numbers(column.offsets)  # this slice's own offsets, into all the values
    if len(offsets) == 0:
        return column.values.slice(0, 0)
    return column.values.slice(offsets[0], offsets[-1] - offsets[0])


def _list_lengths(column: pa.Array) -> np.ndarray:
    """Values in each row of a null-free list column."""
    if pa.types.is_fixed_size_list(column.type):
        return np.full(len(column), column.type.list_size)
    return np.diff(numbers(column.offsets))


def _first_true(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


MAX_SAMPLED_GROUPS = 16
SAMPLE_BUFFER = 1 << 20  # bytes read at a time from a sampled column chunk
# One temperature needs no more rows than this to be fitted to four digits or so; more only
# costs passes over the sample.
MAX_SAMPLED_ROWS = 32_768


def sample_plan(layout: RunLayout, max_values: int
                ) -> tuple[dict[int, list[tuple[int, int]]], bool]:
    """A deterministic sample of at most max_values prediction values (rows x classes) and
    MAX_SAMPLED_ROWS rows.

    The whole run when it fits; otherwise the first rows of up to MAX_SAMPLED_GROUPS row groups
    spread evenly over the run, in equal numbers. Reading the head of a row group decodes only
    those rows, so the sample costs about its own size. It depends only on the footers, so the
    same files always give the same sample. Returns the plan and whether it is the whole run.
    """
    width = layout.num_classes or 1
    groups = [(file_index, g, rows)  # (file index, row group, rows) of every non-empty group
              for file_index, file_groups in enumerate(layout.group_rows)
              for g, rows in enumerate(file_groups) if rows > 0]
    budget_rows = max(1, min(max_values // width, MAX_SAMPLED_ROWS))
    if layout.n_rows <= budget_rows:
        chosen = [(f, g, rows) for f, g, rows in groups]
    else:
        count = min(len(groups), MAX_SAMPLED_GROUPS, budget_rows)
        picks = np.unique(np.linspace(0, len(groups) - 1, count).round().astype(int))
        per_group = budget_rows // len(picks)
        chosen = [(groups[i][0], groups[i][1], min(groups[i][2], per_group)) for i in picks]
    plan: dict[int, list[tuple[int, int]]] = {}
    for file_index, group, rows in chosen:
        plan.setdefault(file_index, []).append((group, rows))
    return plan, layout.n_rows <= budget_rows
