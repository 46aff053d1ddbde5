"""Writing runs: validation predictions to the Parquet layout metricdiff reads.

Two entry points:

- :func:`save_predictions` writes a whole run at once, from arrays already in memory;
- :class:`PredictionWriter` appends batch after batch from an evaluation loop, with memory
  bounded by one row group, and can keep only the top-k classes of each example.

Inputs may be numpy arrays, pandas Series/DataFrames, lists, or any object numpy can convert
(PyTorch and JAX tensors included). Those libraries are never imported: tensors are
duck-typed (``.detach()``, ``.cpu()``, then ``numpy.asarray``).

Everything the reader would refuse is refused here, at write time, with a
:class:`~metricdiff.errors.UsageError` whose message starts with the argument at fault.
Files are written atomically: to a hidden temporary file in the destination folder, renamed
into place only when complete, so a reader never sees a partial run.
"""

from __future__ import annotations

import json
import operator
import os
import secrets
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UsageError
from .io import CLASSES_METADATA_KEY, PROB_ROUNDING, TOPK_COLUMNS, bad_logit

__all__ = ["PredictionWriter", "save_predictions"]

#: Rows whose probabilities sum further than this from 1 are refused (the reader's default).
PROB_TOLERANCE = 1e-3
#: Default row group: this many prediction values (rows x K), ~64 MB of float32 logits.
ROW_GROUP_VALUES = 1 << 24
#: Default row group of a top-k run: about this many bytes of stored top-k values.
TOPK_ROW_GROUP_BYTES = 1 << 26
#: Column names with a meaning in the run format; metadata columns may not use them.
RESERVED_COLUMNS = ("id", "label", "logits", "probs", *TOPK_COLUMNS)
#: Prefixes the reader takes for wide prediction columns (``logit_<class>``, ``prob_<class>``).
RESERVED_PREFIXES = ("logit_", "prob_")
KINDS = ("logits", "probs", "topk")
_FLOATS = (np.float16, np.float32, np.float64)


def save_predictions(path: str | os.PathLike, labels: Any, *, logits: Any = None,
                     probs: Any = None, ids: Any = None, class_names: Any = None,
                     **metadata: Any) -> Path:
    """Write one run: a row per validation example, in the format ``metricdiff`` reads.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.parquet`` file; its folder must exist. An existing file is replaced,
        atomically: a temporary file in the same folder is renamed over it once complete.
    labels : array-like, shape (n,)
        True classes: integer indices in ``[0, K)``, or class names (strings, which need
        `class_names`). Stored as int64 indices.
    logits, probs : array-like, shape (n, K)
        Exactly one of them. Raw scores (log-probabilities are fine too), or probabilities
        whose rows sum to 1 within 1e-3. float16, float32 and float64 are stored as they are
        (bfloat16 becomes float32); values must be finite.
    ids : array-like of int or str, shape (n,), optional
        Unique example keys; ``metricdiff compare`` lines runs up on them.
    class_names : sequence of str, optional
        K class names, stored in the Parquet metadata ``metricdiff.classes``.
    **metadata : array-like, shape (n,)
        Extra per-example columns (``source=[...]``), usable as slices with ``--by``.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    metricdiff.UsageError
        When an argument is not what the run format needs; the message names the argument
        (and the row), and nothing is written.

    Notes
    -----
    Tensors are accepted without importing their library: anything with ``.detach()`` and
    ``.cpu()`` is moved to host memory first, then converted with ``numpy.asarray``.

    Examples
    --------
    >>> import numpy as np, metricdiff
    >>> from metricdiff.writer import save_predictions
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(size=(100, 3)).astype(np.float32)
    >>> labels = rng.integers(0, 3, 100)
    >>> path = save_predictions(tmp / "val.parquet", labels, logits=logits,  # doctest: +SKIP
    ...                         class_names=["cat", "dog", "fox"],
    ...                         source=rng.choice(["web", "app"], 100))
    >>> metricdiff.report(str(path), by=["source"]).metrics["accuracy"]  # doctest: +SKIP
    """
    writer = PredictionWriter(path, class_names=class_names)
    writer._single = True
    with writer:
        writer.add(labels, logits=logits, probs=probs, ids=ids, **metadata)
    return writer.path


class PredictionWriter:
    """Write a run batch by batch from an evaluation loop, in bounded memory.

    Rows are buffered until a row group is full, then appended to the file, so memory holds
    at most one row group plus one batch whatever the size of the run. The first batch fixes
    the columns and their types; every later batch must match it. The file appears, atomically,
    only when the writer is closed; leaving a ``with`` block through an exception (or calling
    :meth:`abort`) removes the partial file instead.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.parquet`` file; its folder must exist. An existing file is replaced
        when the writer closes.
    num_classes : int, optional
        K; when given, every batch must have K columns. Otherwise the first batch sets it.
    class_names : sequence of str, optional
        K class names, stored in the Parquet metadata ``metricdiff.classes``; they also let
        `labels` be given as names.
    kind : {"logits", "probs", "topk"}, optional
        What to store. By default, whichever of ``logits=`` / ``probs=`` the first batch
        passes. ``"topk"``: every batch passes full ``logits=``, and only the `k` most probable
        classes are stored (``topk_ids``, ``topk_logprobs``) with the log-probability of the
        true class (``label_logprob``), from a float64 log-softmax: for very large K. Loss,
        accuracy, top-j accuracy (j <= k) and calibration errors stay exact; Brier score,
        entropy and the temperature are then unavailable. Class names (``"0"``...``"K-1"``
        when none are given) are stored so that the reader knows K.
    k : int, optional
        Classes kept per example with ``kind="topk"`` (at most K); required there, refused
        otherwise.
    row_group_size : int, optional
        Rows per row group (the last may be shorter). Default: ``max(1, 2**24 // K)``, about
        64 MB of float32 predictions; for top-k runs about 64 MB of stored top-k values.

    Attributes
    ----------
    path : pathlib.Path
        The destination file.
    num_rows : int
        Rows added so far.

    Raises
    ------
    metricdiff.UsageError
        From the constructor, :meth:`add` or :meth:`close`, naming the argument at fault. A
        batch refused by :meth:`add` leaves the writer as it was: nothing of it is written.

    See Also
    --------
    save_predictions : the same for a run already in memory.

    Examples
    --------
    >>> from metricdiff.writer import PredictionWriter
    >>> with PredictionWriter("val.parquet", class_names=names) as w:  # doctest: +SKIP
    ...     for images, targets, paths in loader:
    ...         w.add(targets, logits=model(images), ids=paths)
    >>> with PredictionWriter("val-top20.parquet", kind="topk", k=20) as w:  # doctest: +SKIP
    ...     for images, targets in loader:
    ...         w.add(targets, logits=model(images))
    """

    def __init__(self, path: str | os.PathLike, *, num_classes: int | None = None,
                 class_names: Any = None, kind: str | None = None, k: int | None = None,
                 row_group_size: int | None = None):
        self.path = _destination(path)
        if kind is not None and kind not in KINDS:
            raise UsageError(f"kind: expected 'logits', 'probs' or 'topk', got {kind!r}")
        if kind == "topk" and k is None:
            raise UsageError("k: kind='topk' needs k, the number of classes to keep per example")
        if k is not None and kind != "topk":
            raise UsageError(f"k: only used with kind='topk', got k={k!r} with kind={kind!r}")
        self._kind = kind
        self._k = _positive_int(k, "k") if k is not None else None
        self._num_classes = (_positive_int(num_classes, "num_classes")
                             if num_classes is not None else None)
        self._class_names = _check_class_names(class_names)
        if self._class_names is not None:
            if self._num_classes is not None and len(self._class_names) != self._num_classes:
                raise UsageError(f"class_names: {len(self._class_names)} names, but "
                                 f"num_classes={self._num_classes}")
            self._num_classes = len(self._class_names)
        if self._k is not None and self._num_classes is not None and self._k > self._num_classes:
            raise UsageError(f"k: {self._k} is more than the {self._num_classes} classes")
        self._row_group_size = (_positive_int(row_group_size, "row_group_size")
                                if row_group_size is not None else None)
        self._single = False  # True inside save_predictions: messages do not mention batches
        self._schema: pa.Schema | None = None
        self._pred_dtype: np.dtype | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._rows = 0
        self._batches = 0
        self._pending: _Pending | None = None
        self._finalizer: weakref.finalize | None = None
        self._state = "open"  # "open", "closed" or "aborted"

    # ------------------------------------------------------------------------- public

    @property
    def num_rows(self) -> int:
        """Rows added so far (buffered or written)."""
        return self._rows

    def add(self, labels: Any, *, logits: Any = None, probs: Any = None, ids: Any = None,
            **metadata: Any) -> None:
        """Append one batch of examples.

        Parameters
        ----------
        labels : array-like, shape (b,)
            True classes: integer indices in ``[0, K)``, or class names when the writer has
            `class_names`.
        logits, probs : array-like, shape (b, K)
            Exactly one of them, the same one in every batch (``kind="topk"`` takes logits).
            Tensors are detached and moved to the CPU without importing their library.
        ids : array-like of int or str, shape (b,), optional
            Example keys; pass them in every batch or in none. Unique within a batch (across
            batches, ``metricdiff compare`` reports repeats).
        **metadata : array-like, shape (b,)
            Extra per-example columns; the first batch fixes their names and types.

        Raises
        ------
        metricdiff.UsageError
            When the batch does not fit the run format or the first batch; nothing of it is
            written and the writer stays usable. Messages count rows from 0 over the whole
            run, and batches from 1 in the order of the calls to ``add``.

        Examples
        --------
        >>> w.add([0, 2], logits=[[2.0, 0.1, 0.3], [0.2, 0.1, 1.5]],  # doctest: +SKIP
        ...       ids=["a.jpg", "b.jpg"], source=["web", "app"])
        """
        if self._state != "open":
            raise UsageError(f"PredictionWriter.add: the writer is {self._state}; create a new "
                             "one to write another run")
        self._batches += 1  # numbered from 1 in call order, refused batches included
        record_batch = self._prepare(labels, logits, probs, ids, metadata)
        if record_batch is None:
            return
        try:
            if self._schema is None:
                self._start(record_batch.schema)
            self._buffer.append(record_batch)
            self._buffered += record_batch.num_rows
            self._rows += record_batch.num_rows
            if self._buffered >= self._row_group_size_fixed():
                self._flush(final=False)
        except BaseException:  # a failed write (disk full...) leaves no usable file
            self.abort()
            raise

    def close(self) -> Path:
        """Write the buffered rows and move the finished file into place.

        Returns
        -------
        pathlib.Path
            The file written. Closing again returns it again.

        Raises
        ------
        metricdiff.UsageError
            When no row was added (a run needs at least one); no file is written.

        Examples
        --------
        >>> w = PredictionWriter("val.parquet")  # doctest: +SKIP
        >>> w.add([1, 0], logits=[[0.0, 1.0], [2.0, 0.5]])  # doctest: +SKIP
        >>> w.close()  # doctest: +SKIP
        PosixPath('val.parquet')
        """
        if self._state == "closed":
            return self.path
        if self._state == "aborted":
            raise UsageError("PredictionWriter.close: the writer was aborted; nothing was written")
        if self._rows == 0:
            self.abort()
            raise UsageError(f"labels: no rows were added to {self.path}; a run needs at least "
                             "one example")
        try:
            self._flush(final=True)
            pending = self._pending
            assert pending is not None and pending.writer is not None  # rows were added
            pending.writer.close()
            pending.writer = None
            with open(pending.tmp, "r+b") as fh:  # on disk before it takes the name
                os.fsync(fh.fileno())
            os.replace(pending.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        if self._finalizer is not None:
            self._finalizer.detach()
        self._buffer = []
        self._state = "closed"
        return self.path

    def abort(self) -> None:
        """Discard everything: close and delete the temporary file; `path` is left untouched.

        Examples
        --------
        >>> w = PredictionWriter("val.parquet")  # doctest: +SKIP
        >>> w.abort()  # doctest: +SKIP
        """
        if self._state == "closed":
            return
        if self._finalizer is not None:
            self._finalizer()  # runs _Pending.discard once
        self._buffer = []
        self._buffered = 0
        self._state = "aborted"

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return (f"PredictionWriter({str(self.path)!r}, kind={self._kind!r}, "
                f"rows={self._rows}, {self._state})")

    # ------------------------------------------------------------------------- internals

    def _where(self, row: int) -> str:
        """A row, counted from 0 over the whole run (and within its batch, for add())."""
        if self._single:
            return f"row {row}"
        return f"row {self._rows + row} (batch {self._batches}, row {row})"

    def _batch_label(self) -> str:
        return "" if self._single else f"batch {self._batches}: "

    def _prepare(self, labels, logits, probs, ids, metadata) -> pa.RecordBatch | None:
        """Validate one batch and convert it to Arrow, without changing the writer's state."""
        if (logits is None) == (probs is None):
            got = "both" if logits is not None else "neither"
            raise UsageError(f"logits, probs: pass exactly one of logits= or probs=, got {got}")
        given = "logits" if logits is not None else "probs"
        kind = self._kind or given
        if kind == "topk" and given != "logits":
            raise UsageError("probs: kind='topk' takes full logits= per batch (log-probabilities "
                             "are fine too), got probs=")
        if kind != "topk" and given != kind:
            raise UsageError(f"{given}: this run stores {kind} (set by "
                             f"{'kind=' if self._kind else 'the first batch'}), got {given}=")
        matrix = _prediction_matrix(logits if given == "logits" else probs, given)
        n, width = matrix.shape
        self._check_width(given, matrix.shape)
        if self._pred_dtype is not None and kind != "topk" and matrix.dtype != self._pred_dtype:
            raise UsageError(f"{given}: {self._batch_label()}dtype {matrix.dtype}, but the first "
                             f"batch was {self._pred_dtype}; every batch needs the same dtype "
                             f"(cast with .astype(np.{self._pred_dtype}))")
        if self._single and n == 0:
            raise UsageError(f"{given}: 0 rows; a run needs at least one example")
        label_index = _label_indices(labels, n, width, self._class_names, given, self._where)
        if given == "logits":
            _check_logits(matrix, self._where)
        else:
            _check_probs(matrix, self._where)
        id_array = _ids_array(ids, n, self._where) if ids is not None else None
        columns = {name: _metadata_column(name, values, n) for name, values in metadata.items()}
        if self._schema is not None:
            self._check_same_columns(id_array, columns)
        if n == 0:
            return None

        arrays: dict[str, pa.Array] = {}
        if id_array is not None:
            arrays["id"] = id_array
        arrays["label"] = pa.array(label_index, type=pa.int64())
        if kind == "topk":
            k = self._k
            assert k is not None  # kind="topk" requires k
            if k > width:
                raise UsageError(f"k: {k} is more than the {width} classes of logits")
            top_ids, top_logprobs, label_logprob = _topk(matrix, label_index, k)
            arrays["topk_ids"] = _fixed_list(top_ids, k)
            arrays["topk_logprobs"] = _fixed_list(top_logprobs, k)
            arrays["label_logprob"] = pa.array(label_logprob, type=pa.float64())
        else:
            arrays[kind] = _fixed_list(np.array(matrix, copy=True, order="C"), width)
        arrays.update(columns)
        if self._schema is not None:
            names = self._schema.names
            arrays = {name: self._conform(name, arrays[name]) for name in names}
        else:
            self._pred_dtype = matrix.dtype
            self._kind = kind
            self._num_classes = width
        return pa.RecordBatch.from_arrays(list(arrays.values()), names=list(arrays))

    def _check_width(self, given: str, shape: tuple[int, int]) -> None:
        width = shape[1]
        if self._num_classes is None or width == self._num_classes:
            return
        if self._schema is not None:
            raise UsageError(f"{given}: {self._batch_label()}{width} classes (shape {shape}), but "
                             f"the first batch had {self._num_classes}; every batch needs the "
                             "same number of classes")
        if self._class_names is not None:
            raise UsageError(f"class_names: {len(self._class_names)} names, but {given} has "
                             f"{width} columns (shape {shape}); expected one name per class")
        raise UsageError(f"{given}: {width} columns (shape {shape}), but "
                         f"num_classes={self._num_classes}")

    def _check_same_columns(self, id_array: pa.Array | None, columns: dict) -> None:
        assert self._schema is not None  # fixed by the first batch
        had_ids = "id" in self._schema.names
        if had_ids != (id_array is not None):
            raise UsageError("ids: " + (f"{self._batch_label()}no ids, but the first batch had "
                                        "ids; pass ids= in every batch" if had_ids else
                                        f"{self._batch_label()}ids, but the first batch had "
                                        "none; pass ids= in every batch or in none"))
        expected = [n for n in self._schema.names if n not in ("id", "label", "logits", "probs",
                                                                 *TOPK_COLUMNS)]
        if set(expected) != set(columns):
            missing = [n for n in expected if n not in columns]
            extra = [n for n in columns if n not in expected]
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(extra)}")
            raise UsageError(f"metadata: {self._batch_label()}{'; '.join(parts)}; the first "
                             f"batch fixed the metadata columns as [{', '.join(expected)}]")

    def _conform(self, name: str, array: pa.Array) -> pa.Array:
        """Cast a later batch's column to the type the first batch fixed, when lossless."""
        assert self._schema is not None  # fixed by the first batch
        expected = self._schema.field(name).type
        if array.type == expected:
            return array
        if pa.types.is_null(array.type) or _type_family(array.type) == _type_family(expected):
            try:
                return array.cast(expected, safe=True)  # int32 -> int64, all-None -> nulls
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                pass
        what = "ids" if name == "id" else f"metadata column '{name}'"
        raise UsageError(f"{what}: {self._batch_label()}type {array.type}, but the first "
                         f"batch fixed it as {expected}")

    def _start(self, schema: pa.Schema) -> None:
        """Fix the schema and open the temporary file (first non-empty batch)."""
        kind = self._kind
        width = self._num_classes
        assert width is not None  # the first batch fixed it
        names = self._class_names
        if names is None and kind == "topk":
            names = tuple(str(c) for c in range(width))  # so that the reader knows K
        if names is not None:
            schema = schema.with_metadata({CLASSES_METADATA_KEY: json.dumps(
                list(names), ensure_ascii=False).encode("utf-8")})
        if self._row_group_size is None:
            if kind == "topk":
                assert self._k is not None  # kind="topk" requires k
                self._row_group_size = max(1, TOPK_ROW_GROUP_BYTES // (16 * self._k + 8))
            else:
                self._row_group_size = max(1, ROW_GROUP_VALUES // width)
        tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        pending = _Pending(tmp)
        self._finalizer = weakref.finalize(self, pending.discard)
        self._pending = pending
        dictionary = [n for n in schema.names if n not in ("logits", "probs", *TOPK_COLUMNS)]
        try:
            pending.writer = pq.ParquetWriter(str(tmp), schema, compression="zstd",
                                              write_page_checksum=True,
                                              use_dictionary=dictionary)
        except (OSError, pa.ArrowException) as exc:
            self.abort()
            raise UsageError(f"path: cannot write {self.path} ({exc})") from None
        self._schema = schema

    def _row_group_size_fixed(self) -> int:
        assert self._row_group_size is not None  # _start fixes it with the first batch
        return self._row_group_size

    def _flush(self, final: bool) -> None:
        if not self._buffer:
            return
        size = self._row_group_size_fixed()
        table = pa.Table.from_batches(self._buffer, schema=self._schema)
        whole = table.num_rows if final else (table.num_rows // size) * size
        if whole:
            assert self._pending is not None and self._pending.writer is not None  # _start ran
            self._pending.writer.write_table(table.slice(0, whole), row_group_size=size)
        rest = table.slice(whole)
        self._buffer = rest.to_batches() if rest.num_rows else []
        self._buffered = rest.num_rows


def _type_family(data_type: pa.DataType) -> str:
    """Types a later batch may be cast to losslessly: integers to integers, and so on."""
    for family, test in (("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                         ("string", pa.types.is_string), ("string", pa.types.is_large_string),
                         ("boolean", pa.types.is_boolean), ("temporal", pa.types.is_temporal)):
        if test(data_type):
            return family
    return str(data_type)


class _Pending:
    """The temporary file of an unfinished run; discard() closes and deletes it (once)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.writer: pq.ParquetWriter | None = None

    def discard(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # the file is deleted anyway
                pass
            self.writer = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- arguments

def _destination(path: Any) -> Path:
    try:
        destination = Path(os.fspath(path))
    except TypeError:
        raise UsageError(f"path: expected a file path (str or os.PathLike), got "
                         f"{type(path).__name__}") from None
    if destination.is_dir():
        raise UsageError(f"path: {destination} is a folder; expected a .parquet file name")
    parent = destination.parent
    if not parent.is_dir():
        raise UsageError(f"path: folder {parent} does not exist; create it first")
    return destination


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise UsageError(f"{name}: expected a positive integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise UsageError(f"{name}: expected a positive integer, got {value!r}") from None
    if number < 1:
        raise UsageError(f"{name}: expected a positive integer, got {number}")
    return number


def _check_class_names(class_names: Any) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)):
        raise UsageError("class_names: expected a sequence of names, got a single string")
    try:
        names = list(_as_numpy(class_names, "class_names").tolist()
                     if hasattr(class_names, "__array__") else class_names)
    except TypeError:
        raise UsageError(f"class_names: expected a sequence of names, got "
                         f"{type(class_names).__name__}") from None
    if not names:
        raise UsageError("class_names: empty; expected one name per class")
    checked = []
    for i, name in enumerate(names):
        if isinstance(name, (bool, np.bool_)) or not isinstance(name, (str, int, np.integer)):
            raise UsageError(f"class_names: entry {i} is {_shown(name)} ({type(name).__name__}); "
                             "expected strings")
        checked.append(str(name))
    seen: dict[str, int] = {}
    for i, name in enumerate(checked):
        if name in seen:
            raise UsageError(f"class_names: '{name}' appears twice (entries {seen[name]} and "
                             f"{i}); expected unique names")
        seen[name] = i
    return tuple(checked)


# ----------------------------------------------------------------------------- conversion

def _as_numpy(value: Any, name: str, keep_objects: bool = False) -> np.ndarray:
    """Any array-like as a numpy array; tensors are detached and moved to the CPU first.

    With keep_objects, a Python list or tuple keeps its elements as they are (an object
    array), so that [1, "b"] is refused instead of silently becoming ["1", "b"].
    """
    if keep_objects and isinstance(value, (list, tuple)):
        try:
            return np.array(value, dtype=object)
        except ValueError:  # ragged nesting; treated below like any other conversion
            pass
    detach = getattr(value, "detach", None)
    if callable(detach):
        value = detach()
    cpu = getattr(value, "cpu", None)
    if callable(cpu):
        value = cpu()
    # numpy has no bfloat16: a torch bfloat16 tensor cannot be converted as it is
    if str(getattr(value, "dtype", "")).endswith("bfloat16") and callable(getattr(value, "float",
                                                                                  None)):
        value = value.float()
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists, device arrays numpy cannot read
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{name}: cannot convert {type(value).__name__} to a numpy array "
                         f"({message})") from None
    if array.dtype.name == "bfloat16":  # e.g. JAX, through ml_dtypes
        array = array.astype(np.float32)
    return array


def _prediction_matrix(value: Any, name: str) -> np.ndarray:
    matrix = _as_numpy(value, name)
    if matrix.dtype.kind != "f":
        raise UsageError(f"{name}: dtype {matrix.dtype}, expected floating point numbers "
                         "(float16, float32 or float64)")
    if matrix.dtype not in _FLOATS:  # long double: Parquet has no such type
        matrix = matrix.astype(np.float64)
    if matrix.ndim == 1:
        recipe = ("probs=np.stack([1 - p, p], axis=1) for the probability p of class 1"
                  if name == "probs" else
                  "logits=np.stack([np.zeros_like(z), z], axis=1) for the one logit z")
        raise UsageError(f"{name}: 1-D (shape {matrix.shape}), expected a 2-D array (examples, "
                         f"classes); for a binary classifier pass {recipe}")
    if matrix.ndim != 2:
        raise UsageError(f"{name}: shape {matrix.shape}, expected a 2-D array (examples, "
                         "classes)")
    if matrix.shape[1] == 0:
        raise UsageError(f"{name}: shape {matrix.shape} has no class columns")
    return matrix


def _label_indices(value: Any, n: int, width: int, class_names: tuple[str, ...] | None,
                   pred_name: str, where) -> np.ndarray:
    labels = _as_numpy(value, "labels", keep_objects=True)
    if labels.ndim == 2 and labels.shape[0] == n and labels.shape[1] == width and width > 1:
        raise UsageError(f"labels: shape {labels.shape}, expected a 1-D array of class indices "
                         "(one-hot labels? pass labels.argmax(axis=1))")
    if labels.ndim != 1:
        raise UsageError(f"labels: shape {labels.shape}, expected a 1-D array of class indices")
    if len(labels) != n:
        raise UsageError(f"labels: {len(labels)} labels, but {pred_name} has {n} rows; expected "
                         "one label per row")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    kind = labels.dtype.kind
    if kind == "O":
        if all(isinstance(v, str) for v in labels):
            kind = "U"
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                 for v in labels):
            labels, kind = labels.astype(np.int64), "i"
        else:
            first_kind = isinstance(labels[0], str)
            at = next(i for i, v in enumerate(labels)
                      if not isinstance(v, (str, int, np.integer)) or isinstance(v, bool)
                      or isinstance(v, str) != first_kind)
            raise UsageError(f"labels: {_shown(labels[at])} at {where(at)}, expected integer class "
                             "indices or class-name strings")
    if kind == "U":
        if class_names is None:
            raise UsageError("labels: strings, but no class_names were given; pass class_names "
                             "(K names) or integer class indices")
        lookup = {name: i for i, name in enumerate(class_names)}
        index = np.empty(n, dtype=np.int64)
        for i, name in enumerate(labels.tolist()):
            found = lookup.get(name)
            if found is None:
                raise UsageError(f"labels: '{name}' at {where(i)} is not among the "
                                 f"{len(class_names)} class_names")
            index[i] = found
        return index
    if kind == "b":
        raise UsageError("labels: booleans, expected integer class indices (for classes 0 and "
                         "1, pass labels.astype(int))")
    if kind not in "iu":
        raise UsageError(f"labels: dtype {labels.dtype}, expected integer class indices or "
                         "class-name strings (cast with .astype(np.int64) or .long())")
    bad = (labels < 0) | (labels >= width)
    if bad.any():
        i = int(np.argmax(bad))
        raise UsageError(f"labels: {labels[i]} at {where(i)} is out of range; expected class "
                         f"indices in [0, {width}) for the {width} columns of {pred_name}")
    return labels.astype(np.int64)


def _check_logits(matrix: np.ndarray, where) -> None:
    """The reader's rule (io.bad_logit): finite, or -inf for a probability of 0; each row
    needs one finite value."""
    bad = bad_logit(matrix)
    if bad is None:
        return
    row, col = bad
    if col is not None:
        raise UsageError(f"logits: {matrix[row, col]} at {where(row)}, class {col}; "
                         "expected finite numbers (or -inf for a probability of 0)")
    raise UsageError(f"logits: every logit is -inf at {where(row)}; expected at least one "
                     "class with a positive probability")


def _check_probs(matrix: np.ndarray, where) -> None:
    valid = (matrix >= 0) & (matrix <= 1 + PROB_ROUNDING)  # NaN fails both
    if not valid.all():
        row, col = (int(i) for i in np.unravel_index(int(np.argmin(valid)), matrix.shape))
        raise UsageError(f"probs: {matrix[row, col]} at {where(int(row))}, class {col}; "
                         "expected probabilities in [0, 1]")
    sums = matrix.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > PROB_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise UsageError(f"probs: {where(row)} sums to {sums[row]:.6g}, expected 1 within "
                         f"{PROB_TOLERANCE:g} (pass logits= instead, or normalise)")


def _shown(value: Any) -> str:
    """A value as a user wrote it: 0 and 'a', never np.int64(0) or np.str_('a')."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _ids_array(value: Any, n: int, where) -> pa.Array:
    ids = _as_numpy(value, "ids", keep_objects=True)
    if ids.ndim != 1:
        raise UsageError(f"ids: shape {ids.shape}, expected a 1-D array of integers or strings")
    if len(ids) != n:
        raise UsageError(f"ids: {len(ids)} ids for {n} rows; expected one id per row")
    kind = ids.dtype.kind
    if kind == "O":
        if all(isinstance(v, str) for v in ids):
            kind = "U"
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                 for v in ids):
            kind = "i"
        else:
            first_kind = isinstance(ids[0], str)
            bad = next(i for i, v in enumerate(ids)
                       if not isinstance(v, (str, int, np.integer)) or isinstance(v, bool)
                       or isinstance(v, str) != first_kind)
            raise UsageError(f"ids: {_shown(ids[bad])} at {where(bad)}, expected integers or "
                             "strings (all of one kind)")
    if kind in "iu":
        if n and kind == "u" and ids.max() > np.iinfo(np.int64).max:
            raise UsageError("ids: values above 2**63 - 1 do not fit int64")
        if n and kind == "i" and ids.dtype == object and (
                max(ids) > np.iinfo(np.int64).max or min(ids) < np.iinfo(np.int64).min):
            raise UsageError("ids: values do not fit int64")
        ids = ids.astype(np.int64)
    elif kind == "U":
        ids = ids.astype(object) if ids.dtype.kind == "U" else ids
    else:
        raise UsageError(f"ids: dtype {ids.dtype}, expected integers or strings")
    if n > 1:
        order = np.argsort(ids, kind="stable")
        ordered = ids[order]
        repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
        if len(repeated):
            first, second = sorted((int(order[repeated[0]]), int(order[repeated[0] + 1])))
            raise UsageError(f"ids: {_shown(ids[first])} appears twice, at {where(first)} and "
                             f"{where(second)}; expected unique ids")
    return pa.array(ids, type=pa.int64() if kind in "iu" else pa.string())


def _metadata_column(name: str, value: Any, n: int) -> pa.Array:
    if name in RESERVED_COLUMNS:
        hint = {"id": " (pass ids=)", "label": " (pass labels)", "logits": "", "probs": ""}.get(
            name, "")
        raise UsageError(f"metadata column '{name}': the name is reserved by the run format"
                         f"{hint}; reserved: {', '.join(RESERVED_COLUMNS)}")
    if name.startswith(RESERVED_PREFIXES):
        raise UsageError(f"metadata column '{name}': names starting with 'logit_' or 'prob_' "
                         "are read as per-class prediction columns; rename it")
    values = _as_numpy(value, f"metadata column '{name}'", keep_objects=True)
    if values.ndim != 1:
        raise UsageError(f"metadata column '{name}': shape {values.shape}, expected one value "
                         "per row (1-D)")
    if len(values) != n:
        raise UsageError(f"metadata column '{name}': {len(values)} values for {n} rows; "
                         "expected one value per row")
    if values.dtype.kind in "biufcmM":
        values = np.array(values, copy=True)  # the caller may reuse its buffer
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise UsageError(f"metadata column '{name}': cannot store these values "
                         f"({str(exc).splitlines()[0]})") from None


def _fixed_list(matrix: np.ndarray, width: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), width)


#: Top-k selection works on chunks of about this many values (its temporaries are ~20 bytes each).
TOPK_CHUNK_VALUES = 1 << 22


def _topk(logits: np.ndarray, labels: np.ndarray, k: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k ids, their log-probabilities and the true class's, chunk by chunk of rows."""
    step = max(1, TOPK_CHUNK_VALUES // logits.shape[1])
    parts = [_topk_chunk(logits[start:start + step], labels[start:start + step], k)
             for start in range(0, len(labels), step)]
    if len(parts) == 1:
        return parts[0]
    ids, logprobs, label_logprob = (np.concatenate(columns) for columns in zip(*parts))
    return ids, logprobs, label_logprob


def _topk_chunk(logits: np.ndarray, labels: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k most probable classes of each row, their log-probabilities, the true class's.

    Classes are selected on the logits themselves (exact in float64 for any float input), in
    the reader's order: higher score first, ties by lower class index, so the top-1 class is
    the argmax the full-logits run would give. Log-probabilities come from a float64
    log-softmax (row maximum subtracted, log of the summed exponentials).
    """
    x = logits.astype(np.float64)  # a copy, overwritten below
    n, width = x.shape
    rows = np.arange(n)
    if k < width:
        top = np.argpartition(x, width - k, axis=1)[:, width - k:]
        kth = np.take_along_axis(x, top, axis=1).min(axis=1, keepdims=True)
        # rows where classes tied at the k-th score straddle the cut: take the lowest indices
        above = x > kth
        tied = x == kth
        straddle = np.flatnonzero(above.sum(axis=1) + tied.sum(axis=1) > k)
        if len(straddle):
            need = k - above[straddle].sum(axis=1, keepdims=True)
            chosen = above[straddle] | (tied[straddle]
                                        & (np.cumsum(tied[straddle], axis=1) <= need))
            top[straddle] = np.nonzero(chosen)[1].reshape(len(straddle), k)
        del above, tied
    else:
        top = np.broadcast_to(np.arange(width), (n, width)).copy()
    values = np.take_along_axis(x, top, axis=1)
    order = np.lexsort((top, -values), axis=-1)  # score descending, then class index
    top = np.take_along_axis(top, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    true_values = x[rows, labels]
    row_max = x.max(axis=1, keepdims=True)
    np.subtract(x, row_max, out=x)
    np.exp(x, out=x)
    log_total = np.log(x.sum(axis=1, keepdims=True))
    top_logprobs = (values - row_max) - log_total
    label_logprob = (true_values - row_max[:, 0]) - log_total[:, 0]
    return top.astype(np.int64), top_logprobs, label_logprob
