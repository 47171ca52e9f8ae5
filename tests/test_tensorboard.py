"""TensorBoard event files written by MetricWriter (tensorboardX, no TensorFlow) read back."""

from __future__ import annotations

import glob
import sys

import pytest

from jnas.utils.metrics import (MetricWriter, read_metrics, read_tensorboard_scalars,
                                replace_phase)


def test_scalars_round_trip_through_event_records(tmp_path):
  with MetricWriter(str(tmp_path), tensorboard="search") as w:
    w.write(7, phase="search", train_loss=1.5, train_acc=0.25, genotype="{}", ok=True)
    w.write(14, phase="search", train_loss=1.25, train_acc=0.5)
  scalars = read_tensorboard_scalars(str(tmp_path / "tb/search"))
  # Strings and bools stay out of TensorBoard; numbers go in with their step.
  assert scalars == {"train_loss": [(7, 1.5), (14, 1.25)], "train_acc": [(7, 0.25), (14, 0.5)]}
  assert "tensorflow" not in sys.modules and "torch" not in sys.modules


def test_damaged_record_is_detected(tmp_path):
  with MetricWriter(str(tmp_path), tensorboard="x") as w:
    w.write(1, loss=0.5)
  (path,) = glob.glob(str(tmp_path / "tb/x/events.out.tfevents.*"))
  data = bytearray(open(path, "rb").read())
  data[-6] ^= 0xFF  # flip bits inside the last record's payload
  open(path, "wb").write(bytes(data))
  with pytest.raises(ValueError, match="CRC"):
    read_tensorboard_scalars(str(tmp_path / "tb/x"))


def test_replace_phase_drops_later_lines_and_rebuilds_tensorboard(tmp_path):
  d = str(tmp_path)
  with MetricWriter(d, tensorboard="search") as w:
    kept = w.write(7, phase="search", loss=1.0)
    w.write(14, phase="search", loss=0.5)  # written after the checkpoint a resume goes back to
  with MetricWriter(d, tensorboard="retrain") as w:
    w.write(1, phase="retrain", retrain_loss=0.625)
  replace_phase(d, "search", [kept])
  assert [(r.get("phase"), r["step"]) for r in read_metrics(d)] == [("retrain", 1), ("search", 7)]
  with MetricWriter(d, tensorboard="search") as w:  # the resumed run goes on
    w.write(14, phase="search", loss=0.375)
  assert read_tensorboard_scalars(d + "/tb/search") == {"loss": [(7, 1.0), (14, 0.375)]}
  assert read_tensorboard_scalars(d + "/tb/retrain") == {"retrain_loss": [(1, 0.625)]}
