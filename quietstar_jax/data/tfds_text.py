"""Random-access document texts of a user's tfds dataset, prepared as array_record (no TensorFlow needed).

Real runs use tfds datasets prepared where TensorFlow is available, e.g.

    tfds build c4/en --data_dir=gs://bucket/tfds --file_format=array_record

and read them here through ``builder.as_data_source`` (array_record random access). We never call
``tfds.data_source`` on an unprepared dataset: it would start a download-and-prepare (minutes of network
retries offline, and a TF/Beam requirement for C4); instead the error says how to prepare it.
OpenWebMath has no tfds builder; use its parquet files with data.source="parquet".
"""

from __future__ import annotations

from quietstar_jax.data.config import template_fields
from quietstar_jax.data.documents import render_record
from quietstar_jax.errors import ConfigError


class TfdsTexts:
    """Documents of ``data.tfds_name`` / ``data.split``: len() and texts[i] -> str (possibly empty)."""

    def __init__(self, data_cfg):
        import tensorflow_datasets as tfds

        self.name, self.split = data_cfg.tfds_name, data_cfg.split
        self.text_field, self.text_template = data_cfg.text_field, data_cfg.text_template
        builder = _builder(tfds, data_cfg.tfds_name, data_cfg.tfds_data_dir or None)
        if not builder.is_prepared():
            raise ConfigError(
                f"data.tfds_name={data_cfg.tfds_name!r} is not prepared in {builder.data_dir}; prepare it where "
                f"TensorFlow is available: `tfds build {data_cfg.tfds_name} --data_dir=<dir> "
                "--file_format=array_record`, then set data.tfds_data_dir=<dir>")
        fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
        if fmt != "array_record":
            raise ConfigError(f"data.tfds_name={data_cfg.tfds_name!r} in {builder.data_dir} is stored as {fmt}; "
                             "random access needs array_record: rebuild with --file_format=array_record")
        features = set(builder.info.features.keys())
        wanted = template_fields(data_cfg.text_template) if data_cfg.text_template else [data_cfg.text_field]
        if missing := [f for f in wanted if f not in features]:
            raise ConfigError(f"data.tfds_name={data_cfg.tfds_name!r} has no feature(s) {missing} "
                             f"(data.text_field / data.text_template); features: {sorted(features)}")
        try:
            self._source = builder.as_data_source(split=data_cfg.split)
        except ValueError as e:  # unknown split / bad slice
            raise ConfigError(f"data.split={data_cfg.split!r} for {data_cfg.tfds_name!r}: {e}") from None
        n = len(self._source)
        self._len = min(n, data_cfg.max_documents) if data_cfg.max_documents else n
        # Identifies the prepared data for the tokenised-cache key.
        self.fingerprint = [data_cfg.tfds_name, str(builder.data_dir), data_cfg.split, str(builder.info.version), n]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> str:
        return render_record(self._source[int(i)], self.text_field, self.text_template,
                             f"tfds {self.name}[{self.split}] record {i}")


def _builder(tfds, name: str, data_dir: str | None):
    """tfds.builder, registering tfds' text datasets (c4, gsm8k, ...) on demand, with a short error."""
    not_found = tfds.core.registered.DatasetNotFoundError
    try:
        return tfds.builder(name, data_dir=data_dir)
    except not_found:
        pass
    try:  # many text builders only register when their package is imported
        import tensorflow_datasets.text  # noqa: F401

        return tfds.builder(name, data_dir=data_dir)
    except (not_found, ImportError):
        # tfds' own message lists every dataset it knows (hundreds of lines): keep ours short.
        raise ConfigError(f"data.tfds_name={name!r}: unknown tfds dataset (not a registered builder and not "
                         f"found prepared in data_dir={data_dir or '<tfds default>'})") from None
