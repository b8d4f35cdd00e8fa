"""Load preference pairs from anywhere into one validated shape.

Every chapter trains and evaluates on a ``datasets.Dataset`` with the string columns
TRL uses, ``prompt``, ``chosen`` and ``rejected``, plus any metadata columns of the
source (``category``, ``subset``, ``is_flipped``...). :func:`load_preferences` is the
one way in: it reads the synthetic world, a local file or folder, data already in
memory, or a Hugging Face Hub dataset, brings the common public shapes to that form,
and checks every row.

Accepted shapes of a row:

1. plain strings: ``prompt``, ``chosen``, ``rejected``;
2. HH-RLHF: no ``prompt``; ``chosen`` and ``rejected`` are whole conversations
   (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``). The prompt is their shared history up
   to and including the last ``"Assistant:"``; chosen and rejected keep only the
   final reply (surrounding whitespace removed from both parts);
3. conversational: ``chosen`` / ``rejected`` are lists of ``{"role", "content"}``
   messages ending with an assistant message (UltraFeedback-binarized, TRL's
   conversational format). The messages before the final one must be the same in
   both and become the prompt; if there are none, the ``prompt`` field (a string or
   a message list) is used. A prompt message list is rendered to a string with
   :func:`render_conversation`; :func:`parse_conversation` turns it back.

Rows are numbered from 0 in the order of the source (the record order of a JSON file,
the line order of a JSONL file, ``dataset[i]`` of a Dataset). Invalid rows raise a
``ValueError`` naming the row and field, e.g. ``"row 17: 'chosen' is empty"``; with
``drop_invalid=True`` they are dropped instead and a ``UserWarning`` says how many.

Defined in Chapter 02.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Value, load_dataset, load_from_disk

from .generator import WorldConfig, generate_preference_pairs

CORE_COLUMNS = ("prompt", "chosen", "rejected")
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
HH_ASSISTANT = "Assistant:"
_LOOKS_LIKE_FILE = set(FILE_BUILDERS) | {".txt", ".tsv", ".xlsx", ".arrow", ".gz", ".zip", ".pkl"}
_SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def load_preferences(source, *, split: str = "train", drop_invalid: bool = False, **load_kwargs) -> Dataset:
    """Load preference pairs as a Dataset with string ``prompt``, ``chosen``, ``rejected``.

    ``source`` is one of:

    - a :class:`course_lib.world.WorldConfig`: pairs from ``generate_preference_pairs``;
    - a path (``str`` or ``Path``) to a ``.json``, ``.jsonl``, ``.parquet`` or ``.csv``
      file, or to a folder (one written by ``Dataset.save_to_disk``, or a folder of
      data files, which ``datasets.load_dataset`` reads);
    - a ``datasets.Dataset`` / ``DatasetDict`` or a list of dicts already in memory;
    - any other string: a Hub dataset name, read with
      ``datasets.load_dataset(source, split=split, **load_kwargs)``.

    ``split`` selects the split of a Hub dataset, a folder or a ``DatasetDict``
    (a single file is one split). Columns other than the three above are kept as
    metadata. Raises ``ValueError`` on the first invalid row (``"row 3: missing key
    'rejected'"``); with ``drop_invalid=True`` invalid rows are dropped and a
    ``UserWarning`` reports ``"dropped k of n rows ..."``.

    Defined in Chapter 02.
    """
    records = _read_source(source, split, load_kwargs)
    core, metadata, metadata_features = _split_columns(records)
    n_rows = len(core["chosen"])
    if n_rows == 0:
        raise ValueError(f"load_preferences: {_describe(source)} has no rows")
    prompts, chosens, rejecteds, problems = _normalize_rows(core)
    problems = {**find_invalid_pairs(prompts, chosens, rejecteds), **problems}
    keep = _handle_problems(problems, n_rows, drop_invalid)
    return _assemble((prompts, chosens, rejecteds), keep, metadata, metadata_features)


def normalize_row(prompt, chosen, rejected) -> tuple[str, str, str]:
    """Bring one row of any accepted shape to ``(prompt, chosen, rejected)`` strings.

    ``None`` stands for an absent key. Raises ``ValueError`` naming the field, without
    the row number (the caller adds it). Emptiness and ``chosen == rejected`` are
    checked afterwards, for all rows at once, by :func:`find_invalid_pairs`.
    """
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if value is None:
            raise ValueError(f"missing key '{field}'")
        if not isinstance(value, (str, list)):
            raise ValueError(f"'{field}' must be a string or a list of messages, got {type(value).__name__}")
    if prompt is not None and not isinstance(prompt, (str, list)):
        raise ValueError(f"'prompt' must be a string or a list of messages, got {type(prompt).__name__}")
    if type(chosen) is not type(rejected):
        raise ValueError(
            f"'chosen' is a {type(chosen).__name__} but 'rejected' is a {type(rejected).__name__}; "
            "both must be strings or both lists of messages"
        )
    if isinstance(chosen, list):
        return _normalize_conversation(prompt, chosen, rejected)
    if prompt is None:
        return _split_hh_conversation(chosen, rejected)
    if isinstance(prompt, list):
        _check_messages(prompt, "prompt")
        prompt = render_conversation(prompt)
    return prompt, chosen, rejected


def find_invalid_pairs(prompts, chosens, rejecteds) -> dict[int, str]:
    """Rows whose prompt, chosen or rejected text is empty, or whose chosen == rejected.

    Takes three equal-length sequences of strings (``None`` entries are skipped: those
    rows already failed :func:`normalize_row`) and returns ``{row: message}`` with the
    first problem of each invalid row. Vectorized with pandas, so 100k rows take
    milliseconds.
    """
    texts = (prompts, chosens, rejecteds)
    columns = {name: pd.Series(values, dtype=object) for name, values in zip(CORE_COLUMNS, texts)}
    problems: dict[int, str] = {}
    for name, values in columns.items():
        empty = values.notna() & values.str.strip().eq("")
        for row in np.flatnonzero(empty.to_numpy()):
            problems.setdefault(int(row), f"row {row}: '{name}' is empty")
    chosen, rejected = columns["chosen"], columns["rejected"]
    identical = chosen.notna() & (chosen == rejected)
    for row in np.flatnonzero(identical.to_numpy()):
        problems.setdefault(int(row), f"row {row}: 'chosen' and 'rejected' are identical")
    return problems


def render_conversation(messages: list[dict]) -> str:
    """Render a message list as one prompt string.

    A single user message renders as its bare content (so a one-turn conversation and
    a plain-string prompt give the same text). Anything longer puts one
    ``"Role: content"`` block per message, joined by newlines::

        System: Be brief.
        User: Hi!
        Assistant: Hello.
        User: What is 2+2?

    Roles are ``system``, ``user`` and ``assistant``. Inverse: :func:`parse_conversation`
    (exact unless a message itself contains a line starting with ``"User: "`` etc.).
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n".join(f"{ROLE_LABELS[m['role']]}: {m['content']}" for m in messages)


def parse_conversation(text: str) -> list[dict]:
    """Turn a string from :func:`render_conversation` back into a message list.

    Text that does not start with ``"System: "``, ``"User: "`` or ``"Assistant: "`` is
    one user message.
    """
    labels = {f"{label}: ": role for role, label in ROLE_LABELS.items()}
    if not text.startswith(tuple(labels)):
        return [{"role": "user", "content": text}]
    messages: list[dict] = []
    for line in text.split("\n"):
        label = next((label for label in labels if line.startswith(label)), None)
        if label is None:
            messages[-1]["content"] += "\n" + line
        else:
            messages.append({"role": labels[label], "content": line[len(label):]})
    return messages


def _normalize_conversation(prompt, chosen: list, rejected: list) -> tuple[str, str, str]:
    """Shape 3: the shared history (or the prompt field) is the prompt, the last reply the answer."""
    _check_messages(chosen, "chosen")
    _check_messages(rejected, "rejected")
    for field, messages in (("chosen", chosen), ("rejected", rejected)):
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"'{field}' must end with an assistant message, got role '{messages[-1]['role']}'")
    history = chosen[:-1]
    if _plain_messages(history) != _plain_messages(rejected[:-1]):
        raise ValueError("'chosen' and 'rejected' have different conversation histories before the final reply")
    if not history:
        if prompt is None:
            raise ValueError("missing key 'prompt' ('chosen' and 'rejected' hold only the final reply)")
        if isinstance(prompt, list):
            _check_messages(prompt, "prompt")
            prompt = render_conversation(prompt)
        return prompt, chosen[-1]["content"], rejected[-1]["content"]
    return render_conversation(history), chosen[-1]["content"], rejected[-1]["content"]


def _plain_messages(messages: list) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def _check_messages(messages: list, field: str) -> None:
    if not messages:
        raise ValueError(f"'{field}' is an empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"'{field}' message {i} must be a dict with 'role' and 'content', got {message!r:.60}")
        if message["role"] not in ROLE_LABELS:
            raise ValueError(
                f"'{field}' message {i} has role {message['role']!r}; expected one of {', '.join(ROLE_LABELS)}"
            )
        if not isinstance(message["content"], str):
            kind = type(message["content"]).__name__
            raise ValueError(f"'{field}' message {i} 'content' must be a string, got {kind}")


def _split_hh_conversation(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Shape 2: split the shared history up to the last ``Assistant:`` off as the prompt."""
    end = chosen.rfind(HH_ASSISTANT) + len(HH_ASSISTANT)
    if end < len(HH_ASSISTANT) or not rejected.startswith(chosen[:end]):
        shared = os.path.commonprefix([chosen, rejected])
        end = shared.rfind(HH_ASSISTANT) + len(HH_ASSISTANT)
    if end < len(HH_ASSISTANT):
        raise ValueError(
            "missing key 'prompt' (needed unless 'chosen' and 'rejected' are whole "
            "'Human: ... Assistant: ...' conversations with a shared history)"
        )
    return chosen[:end].strip(), chosen[end:].strip(), rejected[end:].strip()


def _normalize_rows(core: dict[str, list]):
    """Run :func:`normalize_row` on every row; failed rows get ``None`` and a message."""
    n_rows = len(core["chosen"])
    prompts, chosens, rejecteds = [None] * n_rows, [None] * n_rows, [None] * n_rows
    problems: dict[int, str] = {}
    for row, (prompt, chosen, rejected) in enumerate(zip(core["prompt"], core["chosen"], core["rejected"])):
        try:
            prompts[row], chosens[row], rejecteds[row] = normalize_row(prompt, chosen, rejected)
        except ValueError as err:
            problems[row] = f"row {row}: {err}"
    return prompts, chosens, rejecteds, problems


def _handle_problems(problems: dict[int, str], n_rows: int, drop_invalid: bool) -> list[int]:
    """Raise on the first invalid row, or drop them all with a warning; returns rows kept."""
    if not problems:
        return list(range(n_rows))
    first = problems[min(problems)]
    if len(problems) == n_rows:
        raise ValueError(f"{first} (all {n_rows} rows are invalid; is this a preference dataset?)")
    if not drop_invalid:
        if len(problems) > 1:
            first += f" ({len(problems) - 1} more invalid rows; pass drop_invalid=True to drop them)"
        raise ValueError(first)
    message = f"load_preferences: dropped {len(problems)} of {n_rows} rows as invalid; first: {first}"
    warnings.warn(message, stacklevel=3)
    return [row for row in range(n_rows) if row not in problems]


def _assemble(core: tuple[list, list, list], keep: list[int], metadata, metadata_features) -> Dataset:
    """The kept rows of the normalized core columns, followed by the metadata columns."""
    columns = {name: pa.array([texts[i] for i in keep], type=pa.string()) for name, texts in zip(CORE_COLUMNS, core)}
    table = pa.table(columns)
    features = Features({name: Value("string") for name in CORE_COLUMNS})
    if metadata is not None:
        metadata = metadata.take(keep) if len(keep) < metadata.num_rows else metadata
        for name in metadata.column_names:
            table = table.append_column(name, metadata.column(name))
        features.update(metadata_features)
    return Dataset(table, info=DatasetInfo(features=features))


def _split_columns(records: Dataset | list) -> tuple[dict[str, list], pa.Table | None, Features | None]:
    """The three core columns as Python lists (``None`` where absent), the other columns
    as an Arrow table (``None`` if there are none), and their features."""
    if isinstance(records, Dataset):
        table = records.with_format("arrow")[:]  # applies any select/shuffle index mapping
        core = {
            name: table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
            for name in CORE_COLUMNS
        }
        extra = [name for name in table.column_names if name not in CORE_COLUMNS]
        if not extra:
            return core, None, None
        return core, table.select(extra), Features({name: records.features[name] for name in extra})
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"row {row}: expected a dict with keys {CORE_COLUMNS}, got {type(record).__name__}")
    core = {name: [record.get(name) for record in records] for name in CORE_COLUMNS}
    extra = list(dict.fromkeys(key for record in records for key in record if key not in CORE_COLUMNS))
    if not extra:
        return core, None, None
    metadata = pa.Table.from_pylist([{key: record.get(key) for key in extra} for record in records])
    return core, metadata, Features.from_arrow_schema(metadata.schema)


def _read_source(source, split: str, load_kwargs: dict) -> Dataset | list:
    """Dispatch on the kind of ``source``; returns a Dataset or a list of records."""
    if _is_world_config(source):
        return _read_world(source)
    if isinstance(source, DatasetDict):
        return _pick_split(source, split, "the DatasetDict")
    if isinstance(source, (Dataset, list)):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir():
            return _read_folder(path, split, load_kwargs)
        if path.is_file():
            return _read_file(path)
        if isinstance(source, os.PathLike) or _looks_like_path(str(source)):
            raise FileNotFoundError(
                f"load_preferences: no such file or folder {str(source)!r} (resolved to {path.resolve()}); "
                "check the path and the working directory, or pass a Hub dataset name like 'Anthropic/hh-rlhf'"
            )
        return _read_hub(str(source), split, load_kwargs)
    raise TypeError(
        "load_preferences: source must be a WorldConfig, a file or folder path, a Hub dataset name, "
        f"a datasets.Dataset or a list of dicts; got {type(source).__name__}"
    )


def _is_world_config(source) -> bool:
    return isinstance(source, WorldConfig)


def _read_world(config) -> Dataset:
    return generate_preference_pairs(config)


def _read_file(path: Path) -> Dataset | list:
    suffix = path.suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise ValueError(
            f"load_preferences: unsupported file type {suffix or '(none)'!r} for {path}; use one of "
            f"{', '.join(FILE_BUILDERS)} (e.g. convert with pandas: df.to_json(path, orient='records', lines=True))"
        )
    if FILE_BUILDERS[suffix] == "json":
        return _read_json_records(path)
    extra = {"keep_default_na": False} if suffix == ".csv" else {}
    return load_dataset(FILE_BUILDERS[suffix], data_files=str(path), split="train", **extra)


def _read_json_records(path: Path) -> list:
    """A JSON list of objects, a JSON object of columns, or JSON Lines, as a list of records.

    Read with the standard library rather than Arrow so that a row with a wrong type
    gets a row-level error instead of an Arrow schema error.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # maybe JSON Lines in a .json file
        if isinstance(data, list):
            return data
        if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
            return [dict(zip(data, values)) for values in zip(*data.values())]
        if data is not None:
            raise ValueError(f"load_preferences: {path} must hold a list of objects, got a JSON {type(data).__name__}")
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"load_preferences: {path} line {line_number} is not valid JSON ({err.msg}); "
                    "expected a JSON list of objects or one object per line (JSON Lines)"
                ) from None
    return records


def _read_folder(path: Path, split: str, load_kwargs: dict) -> Dataset:
    if any((path / marker).exists() for marker in _SAVED_DATASET_MARKERS):
        saved = load_from_disk(str(path))
        return _pick_split(saved, split, str(path)) if isinstance(saved, DatasetDict) else saved
    return load_dataset(str(path), split=split, **load_kwargs)


def _read_hub(name: str, split: str, load_kwargs: dict) -> Dataset:
    try:
        return load_dataset(name, split=split, **load_kwargs)
    except (FileNotFoundError, ConnectionError) as err:
        raise FileNotFoundError(
            f"load_preferences: {name!r} is not a local file or folder, and loading it from the "
            f"Hugging Face Hub failed ({type(err).__name__}: {err}). Check the name and the network "
            "(HF_HUB_OFFLINE), or pass a path to a .json, .jsonl, .parquet or .csv file"
        ) from err


def _pick_split(splits: DatasetDict, split: str, where: str) -> Dataset:
    if split not in splits:
        raise ValueError(f"load_preferences: split {split!r} not in {where}; available: {', '.join(splits)}")
    return splits[split]


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", "\\")) or Path(text).suffix.lower() in _LOOKS_LIKE_FILE


def _describe(source) -> str:
    return repr(str(source)) if isinstance(source, (str, os.PathLike)) else f"the {type(source).__name__} source"
