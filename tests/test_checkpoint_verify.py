"""Checkpoints are verified on read: bytes changed on disk after a save are caught by checksum."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnas import checkpoint
from jnas.checkpoint import Checkpoints, ChecksumError
from jnas.utils.metrics import read_metrics

from tiny_search import reference_run, sigterm_after_steps
from tiny_search import search as _search


def _flip(step_dir: Path, n: int = 64) -> Path:
  """Inverts ``n`` bytes a quarter into the step's largest array file; the size stays.

  A quarter in, not the middle: OCDBT data files end with index nodes that a
  restore through the step's top-level manifest may not read at all.
  """
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
  big = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(big.read_bytes())
  size, mid = len(data), len(data) // 4
  assert size > 2 * n, big
  for i in range(mid, mid + n):
    data[i] ^= 0xFF
  big.write_bytes(bytes(data))
  assert big.stat().st_size == size
  return big


def _flip_until_caught(step_dir: Path, n: int = 64) -> Path:
  """Flips ``n`` bytes at the first place whose change a restore notices; sizes stay.

  Which bytes of an OCDBT file a restore reads depends on the files' layout (unused regions are
  never read, and which data file holds the arrays varies between runs), so a fixed offset in a
  fixed file can miss: try offsets in every data file, largest first, until a direct restore
  raises, undoing each miss. A real change to the saved data is what the search must survive.
  """
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
  step = int(step_dir.name)
  for big in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
    original = big.read_bytes()
    for frac in (0.25, 0.1, 0.4, 0.05, 0.5, 0.15, 0.3, 0.6, 0.2, 0.7, 0.35, 0.8, 0.0, 0.9):
      data = bytearray(original)
      at = int(len(data) * frac)
      for i in range(at, min(at + n, len(data))):
        data[i] ^= 0xFF
      big.write_bytes(bytes(data))
      try:
        checkpoint.restore(step_dir.parent, step)
      except Exception:  # noqa: BLE001 (a checksum or a decoding error: either is a caught change)
        return big
      big.write_bytes(original)
  raise AssertionError(f"no flip in any of {len(files)} data files of {step_dir} changed what a "
                       "restore reads")


def _noise(n: int) -> jax.Array:
  # Incompressible, so the flipped bytes land in array data and not in zstd framing.
  return jnp.asarray(np.random.default_rng(0).standard_normal(n), jnp.float32)


def _tree(shift: float = 0.0):
  return {"w": _noise(20_000) + shift, "n": jnp.asarray(3, jnp.int32),
          "mask": jnp.arange(8) % 2 == 0, "key": jax.random.key(1)}


def test_flipped_bytes_are_caught_and_the_previous_step_used(tmp_path, caplog):
  d = tmp_path / "c"
  checkpoint.save(d, 1, _tree(), {"epoch": 1})
  checkpoint.save(d, 2, _tree(1.0), {"epoch": 2})
  _flip(d / "2")
  target = jax.tree.map(jnp.zeros_like, _tree())
  with caplog.at_level(logging.WARNING, logger="jnas.checkpoint"):
    step, got, meta = checkpoint.latest_good(d, target)
  assert step == 1 and meta == {"epoch": 1}  # the checksum is not handed to the caller
  assert np.array_equal(got["w"], _tree()["w"])
  msgs = [r.getMessage() for r in caplog.records]
  # The checksum catches the change, unless the flipped bytes sit in a compressed chunk whose
  # decompression fails first (which bytes a chunk holds varies between runs): caught either way.
  assert any(str(d / "2") in m and ("checksum" in m or "cannot be restored" in m)
             for m in msgs), msgs
  assert checkpoint.all_steps(d) == [1]
  assert len(list((tmp_path / "c-corrupt").iterdir())) == 1


def test_restore_without_target_is_verified_too(tmp_path):
  d = tmp_path / "c"
  checkpoint.save(d, 1, {"a": _noise(50_000), "b": {"c": jnp.ones(3)}})
  tree, meta = checkpoint.restore(d, 1)
  assert meta == {} and np.array_equal(tree["a"], _noise(50_000))
  _flip(d / "1")
  with pytest.raises(ChecksumError, match="fails its checksum"):
    checkpoint.restore(d, 1)


def test_steps_saved_without_checksum_still_restore(tmp_path, monkeypatch):
  """Checkpoints written before checksums existed are read as before (unverified)."""
  d = tmp_path / "c"
  monkeypatch.setattr(checkpoint, "_leaf_digests", lambda tree: None)
  checkpoint.save(d, 1, {"w": jnp.ones(4)}, {"epoch": 1})
  monkeypatch.undo()
  step, tree, meta = checkpoint.latest_good(d, {"w": jnp.zeros(4)})
  assert step == 1 and meta == {"epoch": 1} and np.array_equal(tree["w"], np.ones(4))


def test_reserved_metadata_key_is_refused(tmp_path):
  with Checkpoints(tmp_path / "c") as ck, pytest.raises(ValueError, match="reserved"):
    ck.save(1, {"w": jnp.ones(2)}, {checkpoint._CHECKSUM_KEY: 1})


def test_search_with_a_flipped_checkpoint_falls_back_and_ends_identical(tmp_path, caplog):
  """A tiny search stopped at step 10, 64 bytes of checkpoint 10 flipped, rerun: back to step 7."""
  from jnas.search import loop

  ref = reference_run()
  wd = tmp_path / "run"
  mp = pytest.MonkeyPatch()
  mp.setattr(loop, "progress", sigterm_after_steps(loop.progress, 10, []))
  try:
    assert _search(wd) == 130
  finally:
    mp.undo()
  assert checkpoint.all_steps(wd / "checkpoints/search") == [7, 10]
  newest = wd / "checkpoints/search/10"
  _flip_until_caught(newest)
  with caplog.at_level(logging.INFO):
    assert _search(wd) == 0
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  # Most flips leave the compressed chunk decodable and are caught by the checksum; a flip that
  # breaks the decoding is caught as unreadable instead (seen under xdist). Either way the step is
  # moved aside with a warning naming it (the checksum path alone is tested above).
  assert any(str(newest) in m and ("checksum" in m or "cannot" in m or "unreadable" in m
                                   or "corrupt" in m) for m in warnings), warnings
  assert any("from checkpoint step 7" in r.getMessage() for r in caplog.records)
  assert len(list((wd / "checkpoints/search-corrupt").iterdir())) == 1
  # Bit-identical to the uninterrupted run: genotype, every array, every metric line.
  assert (wd / "genotype.json").read_text() == (ref / "genotype.json").read_text()
  for name in ("arch_params.npz", "alpha_history.npz", "supernet.npz"):
    with np.load(ref / name) as a, np.load(wd / name) as b:
      assert sorted(a) == sorted(b), name
      for k in a:
        assert np.array_equal(a[k], b[k]), (name, k)
  ma, mb = read_metrics(str(ref)), read_metrics(str(wd))
  assert [r["step"] for r in mb] == [r["step"] for r in ma] == [7, 14, 21]
  for ra, rb in zip(ma, mb):
    assert ra["train_loss"] == rb["train_loss"] and ra["genotype"] == rb["genotype"]
